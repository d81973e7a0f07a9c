"""The generated README against the code: the facts it states that the project's own files can
check. The Python versions CI runs (from ci.yml's test matrix), the hyper-parameter table (every
key and default of the img-man templates, nothing else), the model table (the framework's model
list, in order, with its default). The make targets it names are checked in ``test_make.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import LETTER_TASK, bake, task_answers

BAKES = {
    "stub-det": {"framework": "none"},
    "stub-sem-ti": {"framework": "none", "target": "semantic-segmentation", **task_answers("ti")},
    "mmdet-det": {"framework": "auto"},
    "mmdet-ins-mi": {
        "framework": "auto",
        "target": "instance-segmentation",
        **task_answers("mi"),
    },
    "mmseg-sem": {"framework": "auto", "target": "semantic-segmentation"},
}
FRAMEWORK_BAKES = ["mmdet-det", "mmdet-ins-mi", "mmseg-sem"]


@pytest.fixture(scope="module")
def projects(cookies_session) -> dict[str, Path]:
    return {
        name: bake(cookies_session, executor_name=f"Readme {name}", **answers)
        for name, answers in BAKES.items()
    }


def readme(project: Path) -> str:
    return (project / "README.md").read_text(encoding="utf-8")


def table_rows(text: str, header: str) -> list[list[str]]:
    """The cells of the Markdown table under the header row that starts with ``header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows


def unquoted(cell: str) -> str:
    return cell.strip().strip("`")


@pytest.mark.parametrize("name", sorted(BAKES))
def test_readme_states_the_python_versions_ci_runs(projects, name):
    project = projects[name]
    workflow = yaml.safe_load((project / ".github/workflows/ci.yml").read_text())
    matrix = workflow["jobs"]["test"]["strategy"]["matrix"]
    ran = [str(entry["python"]) for entry in matrix.get("include", [])]
    ran += [str(python) for python in matrix.get("python", [])]
    text = " ".join(readme(project).split())
    stated = re.search(r"ci\.yml`, Python ([0-9.]+(?:(?:, | and )[0-9.]+)*)", text)
    assert stated, "the README does not say which Python versions CI runs"
    assert sorted(re.split(r", | and ", stated.group(1))) == sorted(ran)


@pytest.mark.parametrize("name", sorted(BAKES))
def test_readme_hyper_parameter_table_is_the_templates(projects, name):
    project = projects[name]
    documented = {
        (task, unquoted(key)): yaml.safe_load(unquoted(default))
        for task, key, default, *_ in table_rows(readme(project), "| task | key | default |")
    }
    templates = {}
    for task in LETTER_TASK.values():
        path = project / "img-man" / f"{task}-template.yaml"
        if path.exists():
            for key, value in yaml.safe_load(path.read_text()).items():
                templates[(task, key)] = value
    assert documented == templates


# The model list as the code has it: models.py imports neither torch nor the frameworks.
MODEL_LIST = {
    "mmdetection": "[s.name for s in m.models_for(o)], m.default_model(o).name",
    "mmsegmentation": "list(m.MODELS), m.DEFAULT_MODEL",
}


def model_list(project: Path, framework: str) -> tuple[list[str], str]:
    """``(names in order, default)`` of the bake's framework, for its target."""
    package = next(path.name for path in (project / "src").iterdir() if path.is_dir())
    manifest = yaml.safe_load((project / "img-man" / "manifest.yaml").read_text())
    code = "\n".join(
        [
            "import json",
            f"from {package}.frameworks.{framework} import models as m",
            f"o = {manifest['object_type']}",
            f"print(json.dumps([{MODEL_LIST[framework]}]))",
        ]
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(project / "src")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    names, default = json.loads(completed.stdout)
    return names, default


@pytest.mark.parametrize("name", FRAMEWORK_BAKES)
def test_readme_model_table_is_the_model_list(projects, name):
    project = projects[name]
    framework = "mmsegmentation" if "mmseg" in name else "mmdetection"
    names, default = model_list(project, framework)
    rows = table_rows(readme(project), "| `model` |")
    assert [unquoted(row[0].replace("(default)", "")) for row in rows] == names
    marked = [unquoted(row[0].replace("(default)", "")) for row in rows if "(default)" in row[0]]
    assert marked == [default]
    # The hyper-parameter table offers the same models for `model` (when training is offered).
    for task, key, _default, values, *_ in table_rows(readme(project), "| task | key |"):
        if (task, unquoted(key)) == ("training", "model"):
            assert [unquoted(value) for value in values.split(", ")] == names
