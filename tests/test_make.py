"""The generated Makefile's targets that need no installed project, each run once for real.

``help`` lists every target the generated README tells the user to run; ``format`` fixes what
``lint`` refuses (``lint`` itself runs on every bake in ``test_matrix.py``). The targets that
drive Docker run against a stand-in ``docker`` (``DOCKER=...``) that records its arguments and
environment and answers ``run --rm IMAGE cat /img-man/<file>`` from the project's img-man, as a
built image would: ``build`` and ``build-all`` (the real build is the container tier's
``test_make_container_check``), ``check-registration``, and ``bake``, whose ``docker buildx
bake`` call is checked against the groups and variables of docker-bake.hcl (no buildx here:
Debian 12's docker.io has none and its releases come from GitHub).

The targets that need an installed project (``install``, ``test``, ``run-local``, ``verify``,
``benchmark``) run in the slow tier (``test_generated_projects.py``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import hcl2
import pytest
from conftest import bake, make, run, task_answers

# A stand-in for the docker CLI: records each call, and plays an image whose /img-man is the
# folder in $FAKE_IMAGE_IMG_MAN.
FAKE_DOCKER = """#!{python}
import json, os, sys
arguments = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps({{
        "args": arguments,
        "env": {{k: v for k, v in os.environ.items() if k.isupper()}},
    }}) + "\\n")
if arguments[:2] == ["run", "--rm"] and arguments[-2] == "cat":
    path = os.path.join(os.environ["FAKE_IMAGE_IMG_MAN"], os.path.basename(arguments[-1]))
    if not os.path.isfile(path):
        sys.exit(f"cat: {{arguments[-1]}}: No such file or directory")
    sys.stdout.write(open(path).read())
"""
# The make commands the README gives: in code blocks (indented) and in `inline code`.
README_MAKE = re.compile(r"(?:^ {4,}|`)make ([a-z][a-z-]*)", re.M)


@pytest.fixture
def docker(tmp_path):
    """``(DOCKER=... setting, read_calls)`` for a stand-in docker."""
    script = tmp_path / "docker"
    script.write_text(FAKE_DOCKER.format(python=sys.executable))
    script.chmod(0o755)
    log = tmp_path / "docker-calls.jsonl"

    def calls() -> list[dict]:
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    return f"DOCKER={script}", log, calls


def make_in(project: Path, *args: str, log: Path | None = None, check: bool = True):
    env = {**os.environ, "MAKEFLAGS": ""}
    if log is not None:
        env |= {"FAKE_DOCKER_LOG": str(log), "FAKE_IMAGE_IMG_MAN": str(project / "img-man")}
    if check:
        return run([make(), *args], cwd=project, env=env)
    return subprocess.run(
        [make(), *args], cwd=project, env=env, capture_output=True, text=True, timeout=600
    )


def help_targets(project: Path) -> set[str]:
    output = make_in(project, "help").stdout
    listed = {line.split()[0] for line in output.splitlines() if line.strip()}
    assert listed, output
    return listed


BAKES = {
    "stub": {"framework": "none"},
    "mmdetection": {"framework": "auto"},
    "mmsegmentation": {"framework": "auto", "target": "semantic-segmentation"},
}


@pytest.mark.parametrize("name", sorted(BAKES))
def test_help_lists_every_target_the_readme_names(cookies, name):
    project = bake(cookies, **BAKES[name])
    readme = (project / "README.md").read_text()
    named = set(README_MAKE.findall(readme))
    assert {"test", "lint", "run-local", "verify", "build", "bake"} <= named, named
    listed = help_targets(project)
    assert named <= listed, f"the README names targets make help does not list: {named - listed}"
    for target in named:  # and each is a real target: make knows how to make it
        make_in(project, "-n", target)


def test_format_fixes_what_lint_refuses(cookies):
    project = bake(cookies, framework="none")
    module = next((project / "src").glob("*/tasks/infer.py"))
    original = module.read_text()
    # Unsorted imports and unformatted code: ruff check and ruff format --check refuse both.
    module.write_text("import sys\nimport os\n" + original + "\nX = [ 1,2 ,\n 3]\n")
    python = f"PYTHON={sys.executable}"
    assert make_in(project, "lint", python, check=False).returncode != 0
    make_in(project, "format", python)
    assert make_in(project, "lint", python, check=False).returncode == 0
    fixed = module.read_text()
    assert fixed != original and "X = [1, 2, 3]" in fixed


def version_of(project: Path) -> str:
    init = next((project / "src").glob("*/__init__.py")).read_text()
    return re.search(r'^__version__ = "(.*)"$', init, re.M).group(1)


def test_build_and_build_all_call_docker_build_per_variant(cookies, docker):
    project = bake(cookies, framework="none", cuda_variants="cu121,cpu", **task_answers("ti"))
    setting, log, calls = docker
    make_in(project, "build", setting, log=log)
    make_in(project, "build-all", setting, log=log)
    builds = [call for call in calls() if call["args"][0] == "build"]
    tag = "myorg/ymir-executor:ymir2.5.0-my-executor-{}-ti"
    version = f"EXECUTOR_VERSION={version_of(project)}"
    expected = [
        ["build", "-f", f"docker/{variant}.Dockerfile", "-t", tag.format(variant)]
        for variant in ("cu121", "cu121", "cpu")  # build: the first; build-all: each
    ]
    expected = [[*args, "--build-arg", version, "."] for args in expected]
    assert [call["args"] for call in builds] == expected
    assert all(call["env"].get("DOCKER_BUILDKIT") == "1" for call in builds)


def test_check_registration_prints_what_ymir_reads(cookies, docker):
    project = bake(cookies, framework="none", **task_answers("ti"))
    setting, log, calls = docker
    output = make_in(project, "check-registration", setting, "IMAGE=some/image:tag", log=log).stdout
    assert (project / "img-man" / "manifest.yaml").read_text() in output
    for task in ("training", "infer"):
        printed = output.split(f"--- {task}-template.yaml\n", 1)[1]
        assert printed.startswith((project / "img-man" / f"{task}-template.yaml").read_text())
    assert "--- mining-template.yaml\n(none: the image does not offer mining)" in output
    assert {tuple(call["args"][:3]) for call in calls()} == {("run", "--rm", "some/image:tag")}


@pytest.mark.parametrize("group", ["", "all", "compile"])
def test_bake_calls_buildx_bake_with_a_group_and_the_variables_of_the_bake_file(
    cookies, docker, group
):
    project = bake(cookies, cuda_variants="cu118,cu124,cpu", image_repository="reg:5000/me/x")
    setting, log, calls = docker
    make_in(project, "bake", setting, *([f"GROUP={group}"] if group else []), log=log)
    (call,) = calls()
    assert call["args"] == ["buildx", "bake", group or "default"]
    bake_file = hcl2.loads(
        (project / "docker-bake.hcl").read_text(),
        serialization_options=hcl2.utils.SerializationOptions(strip_string_quotes=True),
    )
    groups = {name for block in bake_file["group"] for name in block}
    variables = {name for block in bake_file["variable"] for name in block}
    assert call["args"][2] in groups
    passed = {"IMAGE_REPOSITORY": "reg:5000/me/x", "YMIR_VERSION": "2.5.0"}
    passed["EXECUTOR_VERSION"] = version_of(project)
    assert set(passed) <= variables
    for name, value in passed.items():
        assert call["env"].get(name) == value, name
