"""Generated projects for real: installed from their own pyproject.toml into a fresh virtual
environment, their own test suites passing, and the devkit chain (train -> model package ->
infer / mine / mine+infer) passing for the modern and the legacy protocol.

These tests install packages, so they are marked slow; ``-m "not slow"`` skips them.
"""

from __future__ import annotations

import os
import subprocess
import venv

import pytest
from conftest import bake, run, task_answers

# One bake per target with every task, and the smallest task subsets.
BAKES = {
    "det-tmi": {"target": "detection", **task_answers("tmi")},
    "sem-tmi": {"target": "semantic-segmentation", **task_answers("tmi")},
    "ins-tmi": {"target": "instance-segmentation", **task_answers("tmi")},
    "det-t": {"target": "detection", **task_answers("t")},
    "det-m": {"target": "detection", **task_answers("m")},
    "ins-i": {"target": "instance-segmentation", **task_answers("i")},
}

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("generated-projects")]


@pytest.fixture(scope="module")
def installed(cookies_session, tmp_path_factory):
    """Every bake installed (non-editable, with its dev extra) into one fresh venv."""
    projects = {
        name: bake(cookies_session, executor_name=f"Gen {name}", cuda_variants="cpu", **answers)
        for name, answers in BAKES.items()
    }
    environment = tmp_path_factory.mktemp("venv") / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    requirements = [f"{project}[dev]" for project in projects.values()]
    run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *requirements,
        ],
        timeout=1200,
    )
    return python, projects


def clean_env():
    """The generated tests must not see this repository's interpreter or paths."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "VIRTUAL_ENV", "PYTEST"))
    }


@pytest.mark.parametrize("name", sorted(BAKES))
def test_generated_test_suite_passes(installed, name):
    python, projects = installed
    project = projects[name]
    completed = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=1200,
        env=clean_env(),
    )
    assert completed.returncode == 0, completed.stdout[-6000:] + completed.stderr[-3000:]
    assert " passed" in completed.stdout


@pytest.mark.parametrize("protocol", ["1.1.0", "legacy"])
@pytest.mark.parametrize("name", sorted(BAKES))
def test_devkit_chain_passes(installed, tmp_path, name, protocol):
    python, _projects = installed
    package = f"gen_{name.replace('-', '_')}"
    completed = subprocess.run(
        [
            str(python),
            "-m",
            f"{package}.devkit",
            "chain",
            "--work",
            str(tmp_path / "work"),
            "--protocol",
            protocol,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1200,
        env=clean_env(),
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-6000:]
    if protocol == "legacy" and BAKES[name]["target"] != "detection":
        # YMIR 1.1 had no segmentation: the executor must refuse with 300005.
        assert "300005" in output
