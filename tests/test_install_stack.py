"""`make install` of a framework executor: scripts/install-cpu-stack.sh and its choices.

Fast tier: ``install-cpu-stack.sh --plan`` prints what it would install and changes nothing. It
runs here with stand-in interpreters on PATH (small scripts that print a Python version) and a
stand-in ``uv``, so that every choice is seen: the cpu image's stack from prebuilt wheels when
python3 has them, uv's CPython when it does not, another python3.x on PATH, and only then the
compile fallback, announced with its time before anything is installed; the wheelhouse, index
and mirror settings; an existing environment.

Slow tier: ``make install`` for real in a fresh default bake, with PyTorch and mmcv served by an
HTTP server on 127.0.0.1 that stands for PyTorch's CPU index (PEP 503, built from the CPU
PyTorch wheel on this machine and its dependencies) and OpenMMLab's wheel page (a find-links page
with the shared wheelhouse's mmcv). pip's own configuration is switched off, so those two can
come from nowhere else. Once through python3 (the common case) and once through uv with
python3 a Python without the wheels (3.12 or newer). The public indexes are not reachable here,
so both serve PyTorch 2.13.0 and the mmcv wheel built for it, not the cpu image's 2.1.2; the
installs' times are printed.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import resource
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import MATRIX, TEMPLATE, bake, run, tool

CONTEXT = json.loads((TEMPLATE / "cookiecutter.json").read_text())
STACK = CONTEXT["_openmmlab_stack"]
CPU = MATRIX["cpu"]
PREBUILT_PYTHONS = CONTEXT["_dev_stack"]["prebuilt_pythons"].split()
# The tools the script needs besides the interpreters (the stand-ins' PATH has nothing else).
PLAN_TOOLS = ("bash", "dirname", "nproc", "sh")
MMCV_WHEELHOUSE = Path(
    os.environ.get("MMCV_WHEELHOUSE", str(TEMPLATE.parent / "shared" / "wheelhouse"))
)
LOCAL_TORCH = "2.13.0"


@pytest.fixture(scope="module")
def project(cookies_session) -> Path:
    """The default executor (MMDetection), which has scripts/install-cpu-stack.sh."""
    return bake(cookies_session, executor_name="Install Plan", cuda_variants="cpu")


class Interpreters:
    """A PATH of stand-ins: ``add("python3", "3.12")`` makes a python3 that reports 3.12."""

    def __init__(self, folder: Path):
        self.bin = folder / "bin"
        self.bin.mkdir(parents=True)
        for name in PLAN_TOOLS:
            (self.bin / name).symlink_to(shutil.which(name))

    def add(self, name: str, version: str = "") -> Path:
        path = self.bin / name
        path.write_text(f"#!/bin/sh\necho {version}\n" if version else "#!/bin/sh\nexit 0\n")
        path.chmod(0o755)
        return path


def plan(project: Path, interpreters: Interpreters, **environment: str) -> dict[str, str]:
    """``--plan``'s lines by their label ("environment", "PyTorch", "mmcv", "then", "NOTE"...)."""
    completed = run(
        [str(project / "scripts" / "install-cpu-stack.sh"), "--plan"],
        cwd=project,
        env={"PATH": str(interpreters.bin), "HOME": str(interpreters.bin.parent), **environment},
        timeout=60,
    )
    lines: dict[str, str] = {"output": completed.stdout}
    for line in completed.stdout.splitlines():
        match = re.match(r"^(\w+):\s+(.*)$", line)
        if match:
            lines.setdefault(match.group(1), match.group(2))
    return lines


@pytest.fixture
def interpreters(tmp_path) -> Interpreters:
    return Interpreters(tmp_path)


def assert_image_stack(lines: dict[str, str]) -> None:
    """The cpu image's PyTorch and mmcv, both prebuilt, from their public indexes."""
    assert lines["PyTorch"] == (
        f"{CPU['torch']} (CPU build, as in the cpu image) from {CPU['torch_index']}"
    )
    assert lines["mmcv"] == f"{STACK['mmcv']}, a prebuilt wheel from {CPU['mmcv_index']}"
    assert "COMPILED" not in lines["output"] and "NOTE" not in lines["output"]


@pytest.mark.parametrize("version", PREBUILT_PYTHONS)
def test_python3_with_wheels_gets_the_image_stack(project, interpreters, version):
    python3 = interpreters.add("python3", version)
    interpreters.add("uv")  # not needed, so not used
    lines = plan(project, interpreters)
    assert lines["environment"] == f".venv, new, from {python3} (Python {version})"
    assert_image_stack(lines)


def test_newer_python3_uses_uv_for_the_image_python(project, interpreters):
    interpreters.add("python3", "3.12")
    interpreters.add("python3.11", "3.11")  # uv comes first: it gets the image's own Python
    interpreters.add("uv")
    lines = plan(project, interpreters)
    assert lines["environment"] == (
        f".venv, new: uv makes it with CPython {CPU['python']} (an installed one, else downloaded)"
    )
    assert_image_stack(lines)


def test_newer_python3_without_uv_takes_another_python_on_path(project, interpreters):
    interpreters.add("python3", "3.13")
    python39 = interpreters.add("python3.9", "3.9")
    lines = plan(project, interpreters)
    assert lines["environment"] == f".venv, new, from {python39} (Python 3.9)"
    assert_image_stack(lines)


def test_without_a_python_with_wheels_it_compiles_and_says_so_first(project, interpreters):
    python3 = interpreters.add("python3", "3.12")
    interpreters.add("python3.12", "3.12")
    lines = plan(project, interpreters, MAX_JOBS="4")
    assert lines["environment"] == f".venv, new, from {python3} (Python 3.12)"
    assert lines["PyTorch"] == f"{STACK['dev_cpu_torch']} (CPU build) from {CPU['torch_index']}"
    assert lines["mmcv"] == (
        f"{STACK['mmcv']}, COMPILED from source: about 15 minutes with 4 jobs (MAX_JOBS)"
    )
    output = lines["output"]
    assert f"exist for Python {', '.join(PREBUILT_PYTHONS)} only, not 3.12" in output
    assert "install uv" in output and "remove .venv" in output


def test_python_given_fills_its_environment(project, interpreters):
    python = interpreters.add("python-of-mine", "3.10")
    lines = plan(project, interpreters, PYTHON=str(python))
    assert lines["environment"] == f"the environment of {python} (Python 3.10)"
    assert_image_stack(lines)
    newer = interpreters.add("newer-python", "3.13")
    lines = plan(project, interpreters, PYTHON=str(newer))
    assert lines["mmcv"].startswith(f"{STACK['mmcv']}, COMPILED")
    assert "unset PYTHON" in lines["output"]


def test_an_existing_environment_is_kept(project, interpreters, tmp_path):
    venv = tmp_path / "env"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("#!/bin/sh\necho 3.11\n")
    (venv / "bin" / "python").chmod(0o755)
    interpreters.add("python3", "3.12")
    lines = plan(project, interpreters, VENV=str(venv))
    assert lines["environment"] == (
        f"{venv} (Python 3.11; remove it to let this script choose again)"
    )
    assert_image_stack(lines)


def test_wheelhouse_and_mirrors(project, interpreters, tmp_path):
    interpreters.add("python3", "3.11")
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    wheel = wheelhouse / f"mmcv-{STACK['mmcv']}-cp311-cp311-linux_x86_64.whl"
    wheel.write_bytes(b"")
    # Offline: this machine's PyTorch from pip's configured sources, mmcv from the wheelhouse.
    lines = plan(
        project,
        interpreters,
        TORCH_VERSION=LOCAL_TORCH,
        TORCH_INDEX_URL="",
        MMCV_WHEELHOUSE=str(wheelhouse),
    )
    assert lines["PyTorch"] == f"{LOCAL_TORCH} (CPU build) from the configured package index"
    assert lines["mmcv"] == f"{STACK['mmcv']}, the prebuilt wheel {wheel}"
    # Another PyTorch: OpenMMLab's page is for the image's PyTorch only, so mmcv compiles.
    lines = plan(project, interpreters, TORCH_VERSION=LOCAL_TORCH)
    assert lines["mmcv"].startswith(f"{STACK['mmcv']}, COMPILED")
    # Mirrors of both indexes.
    lines = plan(
        project,
        interpreters,
        TORCH_INDEX_URL="https://mirror.example/torch-cpu",
        MMCV_INDEX_URL="https://mirror.example/mmcv/index.html",
    )
    assert lines["PyTorch"].endswith(" from https://mirror.example/torch-cpu")
    assert lines["mmcv"] == (
        f"{STACK['mmcv']}, a prebuilt wheel from https://mirror.example/mmcv/index.html"
    )
    # An empty MMCV_INDEX_URL and no wheelhouse: compile.
    lines = plan(project, interpreters, MMCV_INDEX_URL="")
    assert lines["mmcv"].startswith(f"{STACK['mmcv']}, COMPILED")


def test_unknown_argument_is_refused(project):
    completed = subprocess.run(
        ["bash", "scripts/install-cpu-stack.sh", "--frobnicate"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 2
    assert "usage:" in completed.stderr


# ------------------------------------------------------------------------------------------------
# slow: make install for real, against a local index


class IndexHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the index folder; remembers every path asked for."""

    requested: list[str]

    def log_message(self, format, *args):
        self.requested.append(self.path)


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def write_index(root: Path) -> None:
    """A PEP 503 index under simple/ of every wheel in files/, and a find-links page of the
    mmcv wheels under mmcv/ (OpenMMLab's pages are flat lists of links)."""
    projects: dict[str, list[str]] = {}
    for wheel in sorted((root / "files").glob("*.whl")):
        projects.setdefault(normalise(wheel.name.split("-")[0]), []).append(wheel.name)
    for name, wheels in projects.items():
        folder = root / "simple" / name
        folder.mkdir(parents=True)
        links = "".join(f'<a href="../../files/{w}">{w}</a><br>\n' for w in wheels)
        (folder / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
    (root / "mmcv").mkdir()
    links = "".join(f'<a href="../files/{w}">{w}</a><br>\n' for w in projects["mmcv"])
    (root / "mmcv" / "index.html").write_text(f"<html><body>\n{links}</body></html>\n")


@pytest.fixture(scope="module")
def local_index(tmp_path_factory):
    """``(url, requested paths)`` of the local stand-in for PyTorch's and OpenMMLab's indexes."""
    mmcv = sorted(MMCV_WHEELHOUSE.glob(f"mmcv-{STACK['mmcv']}-*.whl"))
    if not mmcv:
        pytest.skip(f"no mmcv {STACK['mmcv']} wheel in {MMCV_WHEELHOUSE}")
    root = tmp_path_factory.mktemp("index")
    files = root / "files"
    # PyTorch's CPU wheel from this machine's disk, with its dependencies, as wheels; the
    # script pins setuptools below 82 while it installs PyTorch, which needs one.
    run(
        [
            "python3",
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--dest",
            str(files),
            f"torch=={LOCAL_TORCH}",
            f"setuptools{STACK['setuptools']}",
        ],
        timeout=900,
    )
    shutil.copy2(mmcv[0], files / mmcv[0].name)
    write_index(root)
    requested: list[str] = []
    handler = type("Handler", (IndexHandler,), {"requested": requested})

    def serve(*args, **kwargs):
        return handler(*args, directory=str(root), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), serve)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()
        server.server_close()


def install_environment(index_url: str, path: str) -> dict[str, str]:
    """The environment of a `make install` whose PyTorch and mmcv can only come from the local
    index: pip's configuration files and find-links (this machine's wheels) are switched off."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV", "PYTEST", "UV_"))
    }
    environment.update(
        PATH=path,
        PIP_CONFIG_FILE=os.devnull,
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        TORCH_VERSION=LOCAL_TORCH,
        TORCH_INDEX_URL=f"{index_url}/simple",
        MMCV_INDEX_URL=f"{index_url}/mmcv/index.html",
    )
    if os.environ.get("PIP_CERT"):  # a TLS-intercepting proxy's CA, for the package index
        environment["PIP_CERT"] = os.environ["PIP_CERT"]
    return environment


def load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def make_install(project: Path, environment: dict[str, str], requested: list[str]) -> str:
    requested.clear()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    completed = run(["make", "install"], cwd=project, env=environment, timeout=3000)
    seconds = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    output = completed.stdout
    # the CPU time says more than the wall time on a busy machine; nothing is asserted on either
    print(f"\nmake install ({project.name}): {seconds:.0f} s, {cpu:.0f} CPU s, load {load()}")
    print(output[:1500])
    # the plan first, then the installs; nothing compiled; both wheels from the local index
    assert output.index("== plan") < output.index(f"== PyTorch {LOCAL_TORCH}")
    assert "COMPILED" not in output
    assert f"a prebuilt wheel from {environment['MMCV_INDEX_URL']}" in output
    fetched = {Path(path).name.split("-")[0] for path in requested if path.endswith(".whl")}
    assert {"torch", "mmcv"} <= fetched, requested
    # the project's environment has the stack, and make's targets use it
    python = project / ".venv" / "bin" / "python"
    check = run(
        [str(python), "-c", "import mmcv, mmcv.ops, mmdet, torch; print(torch.__version__)"],
        env=environment,
    )
    assert check.stdout.strip().startswith(LOCAL_TORCH)
    tests = run(
        ["make", "test", "PYTEST_ARGS=-q -p no:cacheprovider tests/test_env.py"],
        cwd=project,
        env=environment,
        timeout=600,
    )
    assert " passed" in tests.stdout and ".venv/bin/python -m pytest" in tests.stdout
    return output


@pytest.mark.slow
@pytest.mark.xdist_group("install-stack")
def test_make_install_with_python3_from_prebuilt_wheels(cookies_session, local_index):
    url, requested = local_index
    project = bake(cookies_session, executor_name="Install Python3", cuda_variants="cpu")
    environment = install_environment(url, os.environ["PATH"])
    output = make_install(project, environment, requested)
    assert re.search(r"environment: \.venv, new, from \S+ \(Python 3\.11\)", output), output


def newer_python() -> str | None:
    """An interpreter of Python 3.12 or newer on this machine, if there is one."""
    for name in ("python3.12", "python3.13", "python3.14"):
        found = shutil.which(name)
        if found and subprocess.run([found, "-c", ""], capture_output=True).returncode == 0:
            return found
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for candidate in sorted(pyenv.glob("3.1[2-9]*/bin/python3")):
        return str(candidate)
    return None


@pytest.mark.slow
@pytest.mark.xdist_group("install-stack")
def test_make_install_with_uv_when_python3_has_no_wheels(cookies_session, local_index, tmp_path):
    """python3 is 3.12 or newer: the script has uv make .venv. UV_PYTHON=3.11 (the wheels at
    hand are for 3.11; users get the image's 3.10) from a python3.11 on PATH, no download."""
    newer = newer_python()
    if newer is None:
        pytest.skip("no Python 3.12 or newer on this machine")
    url, requested = local_index
    project = bake(cookies_session, executor_name="Install Uv", cuda_variants="cpu")
    stand_ins = tmp_path / "bin"
    stand_ins.mkdir()
    (stand_ins / "python3").symlink_to(newer)
    (stand_ins / "uv").symlink_to(tool("uv"))
    (stand_ins / "python3.11").symlink_to(interpreter("python3.11"))
    environment = install_environment(url, f"{stand_ins}:/usr/local/bin:/usr/bin:/bin")
    environment.update(
        UV_PYTHON="3.11", UV_PYTHON_DOWNLOADS="never", UV_CACHE_DIR=str(tmp_path / "uv-cache")
    )
    output = make_install(project, environment, requested)
    assert "environment: .venv, new: uv makes it with CPython 3.11" in output, output


def interpreter(name: str) -> str:
    """The binary behind ``name`` on PATH (through version managers' shims)."""
    completed = run([name, "-c", "import sys; print(sys.executable)"])
    return completed.stdout.strip()
