import json
from dataclasses import replace

import pytest

from models.knowledge.prompts import TEMPLATES, ItemInfo, template_for
from tests.unit.knowledge_helpers import real_tokenizer

HEAT = ItemInfo(5, "Heat", 1995, ("Action", "Crime", "Thriller"))


def test_every_domain_has_a_template_with_its_own_version():
    versions = {template_for(domain).version for domain in ("movies", "books", "generic")}
    assert len(versions) == 3
    assert sorted(version.split("-")[0] for version in versions) == ["books", "generic", "movies"]


def test_version_follows_the_wording():
    movies = template_for("movies")
    reworded = replace(movies, instruction=movies.instruction + " Be brief.")
    assert reworded.version != movies.version
    assert replace(movies).version == movies.version


def test_unknown_domain_is_a_clear_error():
    with pytest.raises(ValueError, match="no knowledge prompt for domain 'music'"):
        template_for("music")


def test_item_goes_in_as_json_with_the_domain_field_names():
    movie = json.loads(template_for("movies").item_json(HEAT))
    assert movie == {"title": "Heat", "year": 1995, "genres": ["Action", "Crime", "Thriller"]}
    book = json.loads(template_for("books").item_json(ItemInfo(9, "Emma", None, ("Classics",))))
    assert book == {"title": "Emma", "categories": ["Classics"]}


def test_messages_ask_for_both_fields_about_the_item():
    system, user = template_for("movies").messages(HEAT)
    assert system["role"] == "system" and user["role"] == "user"
    for expected in ('"title": "Heat"', '"description"', '"summarization"', "movie"):
        assert expected in user["content"]


def test_chat_template_renders_the_prompt_for_the_assistant_to_continue():
    tokenizer = real_tokenizer()
    template = TEMPLATES["movies"]
    text = tokenizer.apply_chat_template(
        template.messages(HEAT), tokenize=False, add_generation_prompt=True
    )
    assert template.system in text and '"title": "Heat"' in text
    assert text.rstrip().endswith("assistant")


def test_fingerprint_changes_with_what_the_prompt_shows():
    assert HEAT.fingerprint() == replace(HEAT).fingerprint()
    assert HEAT.fingerprint() != replace(HEAT, title="Heat (director's cut)").fingerprint()
    assert HEAT.fingerprint() != replace(HEAT, categories=("Crime",)).fingerprint()


def test_document_opens_with_the_items_facts_then_the_knowledge():
    movies = template_for("movies")
    document = movies.document(HEAT, "A tense heist film. For fans of crime dramas.")
    assert document == (
        "Heat (1995). Genres: Action, Crime, Thriller. "
        "A tense heist film. For fans of crime dramas."
    )
    emma = ItemInfo(9, "Emma")
    assert template_for("books").document(emma, "") == "Emma."


def test_knowledge_alone_is_a_document_of_its_own_version():
    movies = template_for("movies")
    knowledge_only = replace(movies, facts_in_document=False)
    assert knowledge_only.document(HEAT, "A heist film.") == "A heist film."
    assert knowledge_only.version != movies.version
