"""No function longer than a screen and a half (``make lint``): split a long one at its steps.

Ruff has no rule that counts a function's lines (``PLR0915`` counts statements, and a wrapped
call or literal is one statement over many lines), so this walks the sources with ``ast``.
Docstrings do not count: documentation is never the reason to split a function.

Usage: ``python scripts/function_length.py [FOLDER ...]`` (default: the project's sources);
prints each function over the limit and exits 1 when there is one.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("src", "tests", "benchmarks", "scripts")
MAX_LINES = 80


def python_files(folders: list[Path]) -> list[Path]:
    return sorted(path for folder in folders for path in folder.rglob("*.py"))


def code_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from ``def`` to the last statement, without the docstring."""
    lines = (function.end_lineno or function.lineno) - function.lineno + 1
    if ast.get_docstring(function, clean=False) is not None:
        docstring = function.body[0]
        lines -= (docstring.end_lineno or docstring.lineno) - docstring.lineno + 1
    return lines


def long_functions(path: Path) -> list[str]:
    """``file:line name: N lines`` for each function of ``path`` over :data:`MAX_LINES`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        f"{path}:{node.lineno} {node.name}: {code_lines(node)} lines (at most {MAX_LINES})"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and code_lines(node) > MAX_LINES
    ]


def main(arguments: list[str]) -> int:
    folders = [Path(name) for name in arguments] or [ROOT / name for name in SOURCE_DIRS]
    found = [line for path in python_files(folders) for line in long_functions(path)]
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
