"""The user docs agree with the code: every setting is documented with its default, every
variable a page names is a setting, and no page links outside the repository."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import BaseModel

from streamrec.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "deploy" / "README.md"]
CONFIGURATION = ROOT / "docs" / "configuration.md"
# Defaults that depend on the machine: documented by their rule, not their value.
MACHINE_DEFAULTS = {"STREAMREC_CACHE_DIR"}


def settings_defaults(model: type[BaseModel] = Settings, prefix: str = "STREAMREC_") -> dict:
    """Every environment variable of the settings tree and its default."""
    found = {}
    for name, field in model.model_fields.items():
        variable = prefix + name.upper()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            found |= settings_defaults(field.annotation, variable + "__")
        else:
            found[variable] = field.get_default(call_default_factory=True)
    return found


def shown(value) -> str:
    """A default as configuration.md writes it: strings bare, the rest as JSON."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str):
        return value or '""'
    return json.dumps(value)


def documented() -> dict[str, str]:
    rows = re.findall(r"^\| `(STREAMREC_\w+)` \| `([^`]*)` \|", CONFIGURATION.read_text(), re.M)
    return dict(rows)


def test_every_setting_is_documented_with_its_default():
    rows = documented()
    defaults = settings_defaults()
    missing = sorted(set(defaults) - set(rows))
    assert not missing, f"docs/configuration.md lacks {missing}"
    wrong = {
        name: (rows[name], shown(value))
        for name, value in defaults.items()
        if name not in MACHINE_DEFAULTS and rows[name] != shown(value)
    }
    assert not wrong, f"docs/configuration.md gives wrong defaults (doc, code): {wrong}"


def test_every_variable_a_page_names_is_a_setting():
    known = set(settings_defaults())
    sections = {name.rsplit("__", 1)[0] + "__" for name in known if "__" in name}
    compose = (ROOT / "deploy" / "docker-compose.yml").read_text()
    interpolated = set(re.findall(r"\$\{(\w+)", compose))
    for page in PAGES:
        for name in set(re.findall(r"STREAMREC_[A-Z0-9_]*", page.read_text())):
            if name in {"STREAMREC_", *sections, *interpolated}:
                continue
            assert name in known, f"{page.relative_to(ROOT)} names {name}, which no setting reads"


def test_pages_link_only_inside_the_repository():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)", page.read_text()):
            if target.startswith(("http://127.0.0.1", "http://localhost")):
                continue
            assert "://" not in target, f"{page.relative_to(ROOT)} links {target}"
            resolved = (page.parent / target).resolve()
            assert resolved.is_relative_to(ROOT), f"{page.relative_to(ROOT)} links {target}"
            assert resolved.exists(), f"{page.relative_to(ROOT)} links {target}, which is absent"
