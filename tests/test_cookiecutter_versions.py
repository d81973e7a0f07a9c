"""The Cookiecutter versions users have: those that cannot generate this template correctly are
refused before anything is written, with one line naming the version found, the version needed
and the upgrade command; 2.7 and newer generate it (a ``no`` answer arrives as a boolean).

Found by trying ``cookiecutter --no-input <template> task_mining=no`` as a new user would:
2.2 to 2.6 kept mining (``no`` arrived as a true string), 2.1 recorded ``"True"`` strings, 1.7
(Debian 12's package) refused with a misleading message built from unrendered private variables.
Each version is installed from the package index into a fresh virtual environment of its own,
cached under pytest's base temp dir.
"""

from __future__ import annotations

import json
import subprocess
import venv
from pathlib import Path

import pytest
from conftest import TEMPLATE, run

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cookiecutter-versions")]

# Where users get them: pip pins and distribution packages (2.6 to 2.2), older pins (2.1.1),
# Debian 12's `apt install cookiecutter` (1.7.3).
REFUSED = ["1.7.3", "2.1.1", "2.2.3", "2.4.0", "2.5.0", "2.6.0"]
# The oldest version served (the suite itself runs the pinned newest, 2.7.1).
SERVED = ["2.7.0"]
UPGRADE = 'pip install --upgrade "cookiecutter>=2.7"'


def cookiecutter_of(version: str, factory: pytest.TempPathFactory) -> Path:
    """The ``cookiecutter`` command of a venv holding only that version (made once)."""
    environment = factory.getbasetemp() / "cookiecutter-venvs" / version
    command = environment / "bin" / "cookiecutter"
    if not command.exists():
        venv.create(environment, with_pip=True, clear=True)
        pip = [str(environment / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        run([*pip, "--disable-pip-version-check", f"cookiecutter=={version}"], timeout=600)
    return command


def generate(command: Path, output: Path):
    output.mkdir()
    return subprocess.run(
        [str(command), "--no-input", str(TEMPLATE), "task_mining=no"],
        cwd=output,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("version", REFUSED)
def test_older_cookiecutter_is_refused_before_anything_is_written(
    version, tmp_path, tmp_path_factory
):
    command = cookiecutter_of(version, tmp_path_factory)
    output = tmp_path / "out"
    completed = generate(command, output)
    assert completed.returncode != 0
    errors = [
        line for line in completed.stderr.splitlines() if line.startswith("ERROR: Cookiecutter")
    ]
    assert errors == [
        f"ERROR: Cookiecutter {version} cannot generate this template correctly; 2.7 or newer "
        f"is needed: {UPGRADE}"
    ], completed.stderr
    # The refusal comes first and alone: no verdict on answers that arrived wrongly.
    assert "image tag" not in completed.stderr and "Nothing was generated" not in completed.stderr
    assert list(output.rglob("*")) == []


@pytest.mark.parametrize("version", SERVED)
def test_cookiecutter_27_reads_a_no_answer_as_false(version, tmp_path, tmp_path_factory):
    command = cookiecutter_of(version, tmp_path_factory)
    output = tmp_path / "out"
    completed = generate(command, output)
    assert completed.returncode == 0, completed.stderr
    project = output / "my-executor"
    assert not (project / "img-man" / "mining-template.yaml").exists()
    assert (project / "img-man" / "infer-template.yaml").exists()
    recorded = json.loads((project / ".cookiecutter.json").read_text())["default_context"]
    assert recorded["task_mining"] is False and recorded["task_training"] is True
