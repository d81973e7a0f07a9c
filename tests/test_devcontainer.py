"""Developing inside the image: the generated ``.devcontainer/`` and ``make shell``.

Static (every tier): devcontainer.json builds the project's own cpu Dockerfile (the first
variant's where there is no cpu one), with the project mounted and dev tools added after
creation.

Container tier: with the private engine of ``test_containers`` (its fixtures are shared), the dev
container is built from devcontainer.json's ``build`` section and created the way a dev
container tool does it: the image built as configured (plus the tests' usual build arguments:
local base image, CPU torch wheel, CA bundle), the project mounted at ``workspaceFolder``,
``containerEnv`` set, and ``postCreateCommand`` run once in the container (with the network: it
installs make and git from Debian and the dev tools from PyPI). Then ``make test`` runs inside,
with no network. ``make shell`` builds the cpu image and opens it with the project mounted,
the mounted code first on the path, as the calling user.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from conftest import CA_BUNDLE, MATRIX, add_wheels, bake, build_args, run

container = pytest.mark.container
docker_group = pytest.mark.xdist_group("docker")
PACKAGE = "dev_container"


def devcontainer(project: Path) -> dict:
    return json.loads((project / ".devcontainer" / "devcontainer.json").read_text())


@pytest.mark.parametrize(
    ("variants", "expected"), [("cu118,cu121,cpu", "cpu"), ("cu121,cu128", "cu121")]
)
def test_devcontainer_builds_the_projects_own_image(cookies, variants, expected):
    project = bake(cookies, executor_name="Dev Static", cuda_variants=variants)
    config = devcontainer(project)
    folder = project / ".devcontainer"
    build = config["build"]
    assert (folder / build["dockerfile"]).resolve() == project / "docker" / f"{expected}.Dockerfile"
    assert (folder / build["context"]).resolve() == project
    assert config["name"] == f"Dev Static ({expected} image)"
    assert config["workspaceMount"].endswith(f"target={config['workspaceFolder']},type=bind")
    # make in the container uses the image's Python, never a .venv the host left in the mount
    assert config["containerEnv"]["VENV"] == ""
    script = config["postCreateCommand"].split()[-1]
    assert os.access(project / script, os.X_OK), script
    assert '-c /etc/pip-constraints.txt -e ".[dev]"' in (project / script).read_text()
    assert expected in MATRIX


@pytest.fixture(scope="module")
def dev_project(cookies_session, wheelhouse):
    """A stub executor (its whole suite runs in minutes), cpu image only, with the CPU torch
    wheel in its build context's wheelhouse."""
    path = bake(
        cookies_session, executor_name="Dev Container", framework="none", cuda_variants="cpu"
    )
    add_wheels(path, wheelhouse.glob("*.whl"))
    return path


@container
@docker_group
def test_dev_container_runs_make_test(engine, base_image, dev_project):
    config = devcontainer(dev_project)
    folder = dev_project / ".devcontainer"
    build = config["build"]
    suffix = uuid.uuid4().hex[:8]
    image = f"ymir-template-test/devcontainer:{suffix}"
    created = f"{image}-created"
    name = f"ymir-devcontainer-{suffix}"
    configured = [
        arg
        for key, value in build.get("args", {}).items()
        for arg in ("--build-arg", f"{key}={value}")
    ]
    workspace = config["workspaceFolder"]
    mount = ["-v", f"{dev_project}:{workspace}", "-w", workspace]
    environment = [
        arg for key, value in config["containerEnv"].items() for arg in ("-e", f"{key}={value}")
    ]
    try:
        engine.docker(
            "build",
            *build_args(base_image),
            *configured,
            "-f",
            str((folder / build["dockerfile"]).resolve()),
            "-t",
            image,
            str((folder / build["context"]).resolve()),
            timeout=1800,
        )
        # postCreateCommand, once, in the container that development then happens in; pip
        # needs this machine's CA bundle (TLS is intercepted here)
        engine.docker(
            "run",
            "--name",
            name,
            "--network",
            "host",
            *mount,
            *environment,
            "-v",
            f"{CA_BUNDLE}:/tmp/host-ca.crt:ro",
            "-e",
            "PIP_CERT=/tmp/host-ca.crt",
            image,
            "bash",
            "-c",
            config["postCreateCommand"],
            timeout=1200,
        )
        engine.docker("commit", name, created)
        completed = engine.docker(
            "run",
            "--rm",
            "--network",
            "none",
            *mount,
            *environment,
            created,
            "make",
            "test",
            "PYTEST_ARGS=-q -p no:cacheprovider",
            timeout=1800,
        )
        output = completed.stdout
        print(output[-3000:])
        assert "python3 -m pytest" in output and " passed" in output, output[-3000:]
        tools = engine.docker("run", "--rm", "--network", "none", created, "ruff", "--version")
        assert tools.stdout.startswith("ruff ")
    finally:
        engine.docker("rm", "--force", name, check=False)
        engine.docker("image", "rm", "--force", created, image, check=False)


@container
@docker_group
def test_make_shell_opens_the_image_with_the_project_mounted(engine, base_image, dev_project):
    """Commands on make shell's standard input run in the cpu image, in the mounted project,
    importing its mounted code, as the user who called make."""
    command = [
        "make",
        "shell",
        f"DOCKER={engine.cli}",
        "DOCKER_BUILD_ARGS=" + " ".join(build_args(base_image)),
        "SHELL_ARGS=--network none",
    ]
    script = f'python3 -c "import {PACKAGE}; print({PACKAGE}.__file__)"\nid -u\npwd\n'
    try:
        completed = run(command, cwd=dev_project, env=engine.env, input=script, timeout=1800)
    finally:
        listed = engine.docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}")
        for tag in listed.stdout.split():
            if tag.endswith("-dev-container-cpu-tmi"):
                engine.docker("image", "rm", tag, check=False)
    lines = completed.stdout.strip().splitlines()
    assert lines[-3:] == [f"/workspace/src/{PACKAGE}/__init__.py", str(os.getuid()), "/workspace"]
