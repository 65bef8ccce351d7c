"""The README's configuration table is the user's only map of the settings: keep it exact."""

import re
from dataclasses import fields
from pathlib import Path

from backend.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
ROW = re.compile(r"^\| `([A-Z0-9_]+)` \| (`[^`]*`|\(empty\)) \|", re.MULTILINE)


def documented() -> dict[str, str]:
    return {name: default for name, default in ROW.findall(README)}


def shown(value: object) -> str:
    if value == "":
        return "(empty)"
    return f"`{str(value).lower() if isinstance(value, bool) else value}`"


def test_every_setting_is_in_the_readme_table_with_its_default():
    table = documented()
    for field in fields(Settings):
        name = field.name.upper()
        assert name in table, f"{name} is read by backend/settings.py but missing from the README table"
        assert table[name] == shown(field.default), f"README shows {name}={table[name]}, code says {field.default!r}"


def test_the_table_documents_nothing_that_does_not_exist():
    known = {f.name.upper() for f in fields(Settings)}
    assert set(documented()) - known == set()
