"""docs/architecture.md names every module of the package, and names none that is gone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "oai_gateway"
DOC = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def _modules() -> set[str]:
    found = {
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*.py")
        if p.name != "__init__.py" and "__pycache__" not in p.parts
    }
    return found | {"openapi.json"}


def _named_in_doc() -> set[str]:
    """Module paths in backticks; `a.py`, `b.py` after a `dir/a.py` inherit its folder."""
    named: set[str] = set()
    for row in DOC.splitlines():
        folder = ""
        for token in re.findall(r"`([\w/]+\.(?:py|json))`", row):
            if "/" in token:
                folder = token.rsplit("/", 1)[0] + "/"
                named.add(token)
            else:
                named.add(folder + token)
    return named


def test_every_module_is_described() -> None:
    missing = _modules() - _named_in_doc()
    assert not missing, f"docs/architecture.md does not describe: {sorted(missing)}"


def test_every_described_module_exists() -> None:
    stale = {n for n in _named_in_doc() if n.endswith((".py", ".json"))} - _modules()
    stale = {n for n in stale if not (ROOT / n).exists()}
    assert not stale, f"docs/architecture.md names modules that do not exist: {sorted(stale)}"
