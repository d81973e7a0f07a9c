"""Every variable is prompted for and documented; the README's commands are the real ones."""

from __future__ import annotations

import json

from conftest import TEMPLATE

CONTEXT = json.loads((TEMPLATE / "cookiecutter.json").read_text())
PUBLIC = [key for key in CONTEXT if not key.startswith("_")]
README = (TEMPLATE / "README.md").read_text()


def test_every_variable_has_a_prompt():
    assert sorted(CONTEXT["__prompts__"]) == sorted(PUBLIC)
    for key, value in CONTEXT.items():
        if isinstance(value, list) and not key.startswith("_"):
            labels = CONTEXT["__prompts__"][key]
            assert set(labels) - {"__prompt__"} == set(value), key


def test_every_variable_is_documented_in_the_readme():
    table_rows = [line for line in README.splitlines() if line.startswith("| `")]
    for key in PUBLIC:
        assert any(f"`{key}`" in row for row in table_rows), key


def test_ci_runs_the_readme_test_command():
    assert "\n    scripts/test.sh\n" in README
    assert "scripts/test.sh" in (TEMPLATE / ".ci" / "run").read_text()
