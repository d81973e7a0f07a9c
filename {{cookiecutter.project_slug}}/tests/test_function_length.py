"""No function longer than a screen and a half: a long one is split where its steps are.

Ruff has no rule that counts a function's lines (``PLR0915`` counts statements, and a wrapped
call or literal is one statement over many lines), so this walks the sources with ``ast``.
Docstrings do not count: documentation is never the reason to split a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("src", "tests", "benchmarks", "scripts")
MAX_LINES = 80


def python_files() -> list[Path]:
    return sorted(path for name in SOURCE_DIRS for path in (ROOT / name).rglob("*.py"))


def code_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from ``def`` to the last statement, without the docstring."""
    lines = function.end_lineno - function.lineno + 1
    if ast.get_docstring(function, clean=False) is not None:
        docstring = function.body[0]
        lines -= docstring.end_lineno - docstring.lineno + 1
    return lines


def long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {code_lines(node)} lines"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and code_lines(node) > MAX_LINES
    ]


def test_no_function_is_longer_than_max_lines():
    assert [found for path in python_files() for found in long_functions(path)] == []


def test_a_long_function_is_found(tmp_path):
    body = "".join(f"    x{index} = {index}\n" for index in range(MAX_LINES))
    source = tmp_path / "long.py"
    source.write_text(f'def long():\n    """Docstrings do not count."""\n{body}', encoding="utf-8")
    tree = ast.parse(source.read_text(encoding="utf-8"))
    assert [code_lines(node) for node in tree.body] == [MAX_LINES + 1]
