"""The generated repository's automation: GitHub workflows, Dependabot and Renovate.

Every workflow passes actionlint (with shellcheck on the ``run:`` scripts); every action is
pinned to a full commit SHA with its version in a comment; every token is read-only; CI runs the
developer's make targets; the image workflow caches BuildKit layers between runs, attests pushed
images (SBOM, provenance) and scans the checked image, failing only where the user opts in;
Dependabot and Renovate between them cover the actions, the Python dependencies and the base
images of every Dockerfile.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import MATRIX, bake, run, tool

WORKFLOWS = (".github/workflows/ci.yml", ".github/workflows/images.yml")
PINNED = re.compile(r"^(?P<action>[\w.-]+/[\w.-]+)@(?P<sha>[0-9a-f]{40})$")
VERSION_COMMENT = re.compile(r"#\s+v\d+(\.\d+)*\s*$")


@pytest.fixture(scope="module", params=["none", "auto"])
def project(request, cookies_session) -> Path:
    """A stub executor and the default one (MMDetection), with every matrix line."""
    return bake(
        cookies_session,
        executor_name=f"Workflows {request.param}",
        framework=request.param,
        cuda_variants=",".join(MATRIX),
    )


def load(project: Path, name: str) -> dict:
    return yaml.safe_load((project / name).read_text())


def steps(workflow: dict):
    """(job name, step) for every step of every job."""
    for job_name, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            yield job_name, step


def test_workflows_pass_actionlint(project):
    run(
        [tool("actionlint"), "-shellcheck", tool("shellcheck"), *WORKFLOWS],
        cwd=project,
    )


def test_actions_are_pinned_to_commits_with_the_version_in_a_comment(project):
    shas: dict[str, str] = {}
    for name in WORKFLOWS:
        lines = (project / name).read_text().splitlines()
        uses = [line for line in lines if re.match(r"^\s*(- )?uses:", line)]
        assert uses, name
        for line in uses:
            reference = line.split("uses:", 1)[1].split("#", 1)[0].strip()
            match = PINNED.match(reference)
            assert match, f"{name}: {line.strip()} is not pinned to a commit SHA"
            assert VERSION_COMMENT.search(line), f"{name}: {line.strip()} has no version comment"
            # one action, one commit, in every workflow
            assert shas.setdefault(match["action"], match["sha"]) == match["sha"], line


def test_tokens_only_read(project):
    for name in WORKFLOWS:
        workflow = load(project, name)
        assert workflow["permissions"] == {}, f"{name}: the default token must have no rights"
        for job_name, job in workflow["jobs"].items():
            permissions = job.get("permissions")
            assert isinstance(permissions, dict), f"{name}: {job_name} names no permissions"
            assert set(permissions.values()) <= {"read", "none"}, (name, job_name, permissions)
        for job_name, step in steps(workflow):
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, (name, job_name)


def test_ci_runs_the_developer_make_targets(project):
    workflow = load(project, ".github/workflows/ci.yml")
    commands = [step["run"] for _job, step in steps(workflow) if "run" in step]
    test_commands = [
        step["run"] for job, step in steps(workflow) if job == "test" and "run" in step
    ]
    assert test_commands == ["make install", "make test", "make run-local"]
    assert "make lint" in commands
    makefile = (project / "Makefile").read_text()
    for target in ("install", "test", "run-local", "lint"):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), target
    # the framework executors test on the cpu image's Python, whose prebuilt wheels make
    # `make install` quick; pip's cache keeps the downloads
    matrix = workflow["jobs"]["test"]["strategy"]["matrix"]["include"]
    if (project / "scripts" / "install-cpu-stack.sh").exists():
        assert [entry["python"] for entry in matrix] == [MATRIX["cpu"]["python"]]
    setup = next(
        s for j, s in steps(workflow) if j == "test" and "setup-python" in s.get("uses", "")
    )
    assert setup["with"]["cache"] == "pip"


def test_image_builds_share_a_layer_cache_and_attest_what_they_push(project):
    workflow = load(project, ".github/workflows/images.yml")
    bakes = {
        job: step for job, step in steps(workflow) if "docker/bake-action@" in step.get("uses", "")
    }
    assert set(bakes) == {"build", "container-check"}
    for job, step in bakes.items():
        settings = step["with"]["set"]
        assert re.search(r"\*\.cache-from=type=gha,scope=", settings), job
        assert re.search(r"\*\.cache-to=type=gha,mode=max,scope=", settings), job
        assert step["with"]["source"] == "."
    build = bakes["build"]["with"]
    push = "${{ steps.settings.outputs.push }}"
    assert build["push"] == push and build["sbom"] == push
    assert build["provenance"] == (
        "${{ steps.settings.outputs.push == 'true' && 'mode=max' || 'false' }}"
    )


def test_the_checked_image_is_scanned_and_fails_only_on_request(project):
    workflow = load(project, ".github/workflows/images.yml")
    check = workflow["jobs"]["container-check"]["steps"]
    scans = [step for step in check if "aquasecurity/trivy-action@" in step.get("uses", "")]
    assert len(scans) == 2
    report, gate = scans
    assert report["with"]["exit-code"] == "0" and report["with"]["image-ref"] == "${{ env.IMAGE }}"
    assert report["with"]["output"] == "${{ env.SCAN_REPORT }}"
    uploads = [
        step
        for step in check
        if "upload-artifact@" in step.get("uses", "")
        and step["with"]["path"] == "${{ env.SCAN_REPORT }}"
    ]
    assert len(uploads) == 1
    assert gate["with"]["exit-code"] == "1"
    assert "vars.VULNERABILITY_FAIL_SEVERITY != ''" in gate["if"]
    assert gate["with"]["severity"] == "${{ vars.VULNERABILITY_FAIL_SEVERITY }}"
    # the report comes before the devkit chain, the gate after it
    names = [step.get("name", "") for step in check]
    chain = next(i for i, name in enumerate(names) if name.startswith("Devkit chain"))
    assert check.index(report) < chain < check.index(gate)


def test_dependabot_updates_actions_and_python_dependencies(project):
    config = load(project, ".github/dependabot.yml")
    assert config["version"] == 2
    ecosystems = {update["package-ecosystem"]: update for update in config["updates"]}
    assert set(ecosystems) == {"github-actions", "pip"}
    for update in ecosystems.values():
        assert update["directory"] == "/"
        assert update["schedule"]["interval"] == "weekly"
    ignored = {entry["dependency-name"] for entry in ecosystems["pip"].get("ignore", [])}
    dependencies = (project / "pyproject.toml").read_text()
    # what the version matrix pins is left to it
    for name in ("mmengine", "mmdet", "mmsegmentation"):
        assert (name in ignored) == (f'"{name}==' in dependencies), name


def renovate_patterns(project: Path) -> list[re.Pattern]:
    config = json.loads((project / "renovate.json").read_text())
    assert config["enabledManagers"] == ["custom.regex"]
    patterns = []
    for manager in config["customManagers"]:
        assert manager["datasourceTemplate"] == "docker"
        assert manager["managerFilePatterns"] == ["/^docker/[^/]+\\.Dockerfile$/"]
        for expression in manager["matchStrings"]:
            patterns.append(re.compile(expression.replace("(?<", "(?P<")))
    return patterns


def test_renovate_sees_every_base_image(project):
    """Renovate's patterns find each Dockerfile's base image (and -devel image), exactly as the
    version matrix has it."""
    patterns = renovate_patterns(project)
    for variant, line in MATRIX.items():
        text = (project / "docker" / f"{variant}.Dockerfile").read_text()
        found = {
            f"{match['depName']}:{match['currentValue']}"
            for pattern in patterns
            for match in pattern.finditer(text)
        }
        expected = {line["base_image"]}
        if "ARG DEVEL_IMAGE=" in text:
            expected.add(line["devel_image"])
        assert found == expected, variant
