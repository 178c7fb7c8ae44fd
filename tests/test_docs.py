"""The docs cannot drift from the code: the configuration table is the settings model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic.fields import FieldInfo

from oai_gateway.config.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CONFIGURATION = ROOT / "docs" / "configuration.md"
TABLE_HEADER = "| variable | default | accepted values |"


def variable_table(text: str) -> dict[str, str]:
    """`ENV_NAME` → default cell, from the table that follows TABLE_HEADER."""
    lines = text.splitlines()
    start = lines.index(TABLE_HEADER)
    assert re.fullmatch(r"\|(-+\|)+", lines[start + 1].replace(" ", "")), lines[start + 1]
    rows: dict[str, str] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        match = re.fullmatch(r"`([A-Z0-9_]+)`", cells[0])
        assert match, f"first cell is not one `VARIABLE`: {line}"
        assert match.group(1) not in rows, f"{match.group(1)} documented twice"
        rows[match.group(1)] = cells[1]
    return rows


def env_name(name: str, field: FieldInfo) -> str:
    alias = field.validation_alias
    return (alias if isinstance(alias, str) else name).upper()


def documented_default(field: FieldInfo) -> str:
    """How the table writes a field's default: `value`, or `empty` for none."""
    value = field.get_default()
    if value is None or value == ():
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    return f"`{value}`"


TABLE = variable_table(CONFIGURATION.read_text(encoding="utf-8"))
FIELDS = {env_name(name, field): field for name, field in Settings.model_fields.items()}


def test_every_setting_is_documented() -> None:
    missing = sorted(set(FIELDS) - set(TABLE))
    assert not missing, f"settings missing from docs/configuration.md: {missing}"


def test_every_documented_variable_is_a_setting() -> None:
    unknown = sorted(set(TABLE) - set(FIELDS))
    assert not unknown, f"docs/configuration.md documents variables that do not exist: {unknown}"


@pytest.mark.parametrize("variable", sorted(FIELDS))
def test_documented_default_is_the_real_one(variable: str) -> None:
    if variable not in TABLE:
        pytest.fail(f"{variable} is not in the table (see test_every_setting_is_documented)")
    assert TABLE[variable] == documented_default(FIELDS[variable])


def test_table_parser_reads_rows() -> None:
    text = (
        "intro\n\n"
        f"{TABLE_HEADER}\n|---|---|---|\n"
        "| `A_B` | `1` | x |\n| `C` | empty | y \\| z |\n\nafter\n"
    )
    assert variable_table(text) == {"A_B": "`1`", "C": "empty"}


def test_readme_links_the_operations_guide() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\((docs/[^)#]+\.md)", readme))
    assert {"docs/operations.md", "docs/configuration.md"} <= linked
    assert (ROOT / "docs" / "operations.md").is_file()
