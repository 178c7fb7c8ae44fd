"""Report functions of 35 lines or more and classes over 200 lines in src/ (the project's limits).

    uv run python scripts/source_limits.py [--top N]

A definition's length is its line span, decorators excluded, docstring included. Exits 1 when
anything is over a limit, so it can gate a change; it is not part of the test suite.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
MAX_FUNCTION = 34
MAX_CLASS = 200


def _spans(root: Path) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    functions: list[tuple[int, str]] = []
    classes: list[tuple[int, str]] = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                span = (node.end_lineno or node.lineno) - node.lineno + 1
                where = f"{path.relative_to(root)}:{node.lineno} {node.name}"
                (classes if isinstance(node, ast.ClassDef) else functions).append((span, where))
    return sorted(functions, reverse=True), sorted(classes, reverse=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=5)
    top = parser.parse_args().top
    functions, classes = _spans(SRC)
    print("longest functions:", *(f"  {n:4} {w}" for n, w in functions[:top]), sep="\n")
    print("largest classes:", *(f"  {n:4} {w}" for n, w in classes[:top]), sep="\n")
    over = [f for f in functions if f[0] > MAX_FUNCTION] + [c for c in classes if c[0] > MAX_CLASS]
    for span, where in over:
        print(f"over the limit: {where} ({span} lines)", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
