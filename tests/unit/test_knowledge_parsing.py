import pytest

from models.knowledge.parsing import JSON, RAW, REPAIRED, answer_complete, parse_knowledge

CASES = {
    "plain json": (
        '{"description": "A heist film.", "summarization": "Crime fans."}',
        ("A heist film.", "Crime fans.", JSON),
    ),
    "chatty with code fence": (
        'Sure! Here it is:\n```json\n{"description": "A heist film.", '
        '"summarization": "Crime fans."}\n```\nHope this helps!',
        ("A heist film.", "Crime fans.", REPAIRED),
    ),
    "chatty without fence": (
        'Here you go: {"description": "A heist film.", "summarization": "Crime fans."} Enjoy!',
        ("A heist film.", "Crime fans.", REPAIRED),
    ),
    "truncated mid value": (
        '{"description": "A heist film.", "summarization": "Fans of slow-bu',
        ("A heist film.", "Fans of slow-bu", REPAIRED),
    ),
    "truncated after a key": (
        '{"description": "A heist film.", "summarization": ',
        ("A heist film.", "", REPAIRED),
    ),
    "unquoted keys and values": (
        "{description: A gritty heist film, summarization: Crime fans}",
        ("A gritty heist film", "Crime fans", REPAIRED),
    ),
    "single quotes and another spelling": (
        "{'description': 'A heist film', 'summary': 'Crime fans'}",
        ("A heist film", "Crime fans", REPAIRED),
    ),
    "quotes inside a value": (
        '{"description": "The film "Heat" is a heist film.", "summarization": "Crime fans."}',
        ('The film "Heat" is a heist film.', "Crime fans.", REPAIRED),
    ),
    "one object per field, trailing comma": (
        '{"description": "A heist film."},\n{\n  "summary_text": "Crime fans.",\n}',
        ("A heist film.", "Crime fans.", REPAIRED),
    ),
    "no json at all": (
        "  I am sorry,\nI cannot describe that movie. ",
        ("I am sorry, I cannot describe that movie.", "", RAW),
    ),
}


@pytest.mark.parametrize("raw, expected", CASES.values(), ids=CASES.keys())
def test_parse(raw, expected):
    parsed = parse_knowledge(raw)
    assert (parsed.description, parsed.summarization, parsed.how) == expected


def test_text_joins_description_and_summarization():
    assert parse_knowledge(CASES["plain json"][0]).text == "A heist film. Crime fans."
    assert parse_knowledge(CASES["truncated after a key"][0]).text == "A heist film."


def test_json_without_the_fields_falls_back_to_raw():
    parsed = parse_knowledge('{"title": "Heat"}')
    assert parsed.how == RAW and parsed.description == '{"title": "Heat"}'


def test_answer_complete_once_both_fields_are_closed_or_two_objects_ended():
    assert not answer_complete('{"description": "A heist')
    assert not answer_complete('{"description": "A heist film."}')
    assert answer_complete('{"description": "A", "summarization": "B"}')
    assert answer_complete('{"description": "A"},\n{"note": "B"}')
