"""Generated projects for real, through the make targets their README gives: installed into
fresh virtual environments (``make install``: pip's editable install for the stubs, the
project's own scripts/install-cpu-stack.sh for the reference frameworks), their own test suites
passing (``make test``), and, for the stubs, the devkit chain (train -> model package -> infer /
mine / mine+infer) passing for the modern and the legacy protocol (``make run-local``, one step
checked again with ``make verify``); ``make benchmark`` runs one tiny benchmark. A framework
bake's own suite runs that chain with the real framework for every protocol (its
tests/test_chain.py), so the make targets are not run again for it.

These tests install packages, so they are marked slow; ``-m "not slow"`` skips them.

The reference frameworks' suites train every listed model on the CPU (about half an hour in
all, each bake on whichever xdist worker is free; one venv per framework stack and worker).
They need mmcv 2.1.0, which compiles for about 30 minutes unless the shared wheelhouse
(``../shared/wheelhouse`` beside this repository, or ``$MMCV_WHEELHOUSE``) has it.
"""

from __future__ import annotations

import os
import re
import subprocess
import venv
from pathlib import Path

import pytest
from conftest import TEMPLATE, bake, make, run, task_answers

# Stub executors: one bake per target with every task, and the smallest task subsets.
STUB_BAKES = {
    "det-tmi": {"target": "detection", **task_answers("tmi")},
    "sem-tmi": {"target": "semantic-segmentation", **task_answers("tmi")},
    "ins-tmi": {"target": "instance-segmentation", **task_answers("tmi")},
    "det-t": {"target": "detection", **task_answers("t")},
    "det-m": {"target": "detection", **task_answers("m")},
    "ins-i": {"target": "instance-segmentation", **task_answers("i")},
}
# Reference implementations: one bake per target, and an executor without training.
FRAMEWORK_BAKES = {
    "mmdet-det": {"target": "detection", **task_answers("tmi")},
    "mmdet-ins": {"target": "instance-segmentation", **task_answers("tmi")},
    "mmseg-sem": {"target": "semantic-segmentation", **task_answers("tmi")},
    "mmdet-det-mi": {"target": "detection", **task_answers("mi")},
}
# The quick settings the chain trains with here (the template defaults take long on a CPU).
QUICK_PARAMS = [
    "--param=epochs=1",
    "--param=max_iters=2",
    "--param=val_interval=1",
    "--param=img_size=64",
    "--param=batch_size_per_gpu=2",
    "--param=num_workers_per_gpu=0",
]
MMCV_WHEELHOUSE = Path(
    os.environ.get("MMCV_WHEELHOUSE", str(TEMPLATE.parent / "shared" / "wheelhouse"))
)
LOCAL_TORCH = "2.13.0"

pytestmark = pytest.mark.slow
# The stub projects share one venv, so their tests form one xdist group.
stub_group = pytest.mark.xdist_group("stub-projects")


def bake_all(cookies_session, bakes: dict, framework: str) -> dict:
    return {
        name: bake(
            cookies_session,
            executor_name=f"Gen {name}",
            cuda_variants="cpu",
            framework=framework,
            **answers,
        )
        for name, answers in bakes.items()
    }


def new_venv(tmp_path_factory) -> Path:
    environment = tmp_path_factory.mktemp("venv") / "venv"
    venv.create(environment, with_pip=True)
    return environment / "bin" / "python"


@pytest.fixture(scope="module")
def stub_projects(cookies_session, tmp_path_factory):
    """The stub bakes installed into one fresh venv by their ``make install``."""
    projects = bake_all(cookies_session, STUB_BAKES, "none")
    python = new_venv(tmp_path_factory)
    for project in projects.values():
        run([make(), "install", f"PYTHON={python}"], cwd=project, timeout=1200, env=clean_env())
    return python, projects


@pytest.fixture(scope="module")
def framework_installs() -> dict:
    """The framework bakes installed so far on this xdist worker: name -> (python, project)."""
    return {}


@pytest.fixture(scope="module")
def framework_venvs() -> dict:
    """One venv per framework stack on this xdist worker: stack -> python."""
    return {}


@pytest.fixture
def framework_project(
    request, framework_installs, framework_venvs, cookies_session, tmp_path_factory
):
    """``(name, python, project)``: the framework bake the test names, baked and installed by
    its ``make install`` (its scripts/install-cpu-stack.sh) on first use. The first bake of a
    stack installs into a fresh venv; the other bakes of that stack (MMDetection's three) into
    the same one, where the script finds PyTorch and mmcv installed and adds the package: the
    fresh install is the one worth its minutes, and test_install_stack.py covers it too."""
    name = request.param
    if name not in framework_installs:
        project = bake(
            cookies_session,
            executor_name=f"Gen {name}",
            cuda_variants="cpu",
            framework="auto",
            **FRAMEWORK_BAKES[name],
        )
        stack = "mmsegmentation" if name.startswith("mmseg") else "mmdetection"
        if stack not in framework_venvs:
            framework_venvs[stack] = new_venv(tmp_path_factory)
        python = framework_venvs[stack]
        # The stack at hand, offline: PyTorch 2.13.0 (a CPU wheel on this machine's disk, from
        # pip's configured sources) and the wheelhouse's mmcv built for it, instead of the cpu
        # image's stack from PyTorch's and OpenMMLab's indexes (the script's default).
        environment = {
            **clean_env(),
            "TORCH_VERSION": LOCAL_TORCH,
            "TORCH_INDEX_URL": "",
            "MMCV_WHEELHOUSE": str(MMCV_WHEELHOUSE),
        }
        command = [make(), "install", f"PYTHON={python}"]
        run(command, cwd=project, timeout=3600, env=environment)
        framework_installs[name] = (python, project)
    return (name, *framework_installs[name])


def framework_bakes(*names: str) -> list:
    """Test parameters for the bakes, each bake an xdist group of its own: the framework suites
    are the longest part of the slow tier, and one worker alone took them past CI's budget.
    They run with one torch thread (see :func:`run_make`)."""
    return [
        pytest.param(name, marks=pytest.mark.xdist_group(f"framework-{name}"))
        for name in names or sorted(FRAMEWORK_BAKES)
    ]


def clean_env():
    """The generated tests must not see this repository's interpreter or paths."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "VIRTUAL_ENV", "PYTEST"))
    }


def run_make(project: Path, target: str, python: Path, *settings: str):
    """``make <target> PYTHON=<python> <settings>`` in the project; its completed process.

    One OpenMP thread: two suites side by side (or a suite beside the container tier) with
    torch's default of a thread per core oversubscribed the two cores, and OpenMP's spinning
    made them three times slower than one after the other (measured)."""
    return subprocess.run(
        [make(), target, f"PYTHON={python}", *settings],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=3000,
        env={"OMP_NUM_THREADS": "1", **clean_env()},
    )


def run_suite(python: Path, project: Path) -> None:
    completed = run_make(project, "test", python)
    assert completed.returncode == 0, completed.stdout[-6000:] + completed.stderr[-3000:]
    assert " passed" in completed.stdout


def run_chain(python: Path, project: Path, work: Path, protocol: str, target: str) -> None:
    """``make run-local`` for one protocol, then ``make verify`` on one of its steps again."""
    completed = run_make(
        project,
        "run-local",
        python,
        f"WORK={work}",
        f"PROTOCOL={protocol}",
        "RUN_LOCAL_ARGS=" + " ".join(QUICK_PARAMS),
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-6000:]
    if protocol == "legacy" and target != "detection":
        # YMIR 1.1 had no segmentation: the executor must refuse with 300005.
        assert "300005" in output
        return
    steps = sorted(path.parent.parent for path in work.rglob("out/monitor.txt"))
    assert steps, f"no step of the chain under {work}"
    verified = run_make(project, "verify", python, f"WORK={steps[-1]}")
    assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr[-3000:]


@stub_group
@pytest.mark.parametrize("name", sorted(STUB_BAKES))
def test_stub_test_suite_passes(stub_projects, name):
    python, projects = stub_projects
    run_suite(python, projects[name])


@stub_group
@pytest.mark.parametrize("protocol", ["1.1.0", "legacy"])
@pytest.mark.parametrize("name", sorted(STUB_BAKES))
def test_stub_devkit_chain_passes(stub_projects, tmp_path, name, protocol):
    python, projects = stub_projects
    target = STUB_BAKES[name]["target"]
    run_chain(python, projects[name], tmp_path / "work", protocol, target)


@pytest.mark.parametrize("framework_project", framework_bakes(), indirect=True)
def test_framework_test_suite_passes(framework_project):
    _name, python, project = framework_project
    run_suite(python, project)


@pytest.mark.parametrize("framework_project", framework_bakes("mmdet-det"), indirect=True)
def test_make_benchmark_runs_a_tiny_benchmark(framework_project):
    _name, python, project = framework_project
    tiny = "--models rtmdet_tiny --device cpu --images 2 --image-width 96 --image-height 64"
    tiny += " --img-size 64 --batch-size 2 --workers 0 --rounds 1"
    completed = run_make(
        project, "benchmark", python, "BENCHMARK=inference", f"BENCHMARK_ARGS={tiny}"
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "== benchmarks/mmdetection_inference.py" in completed.stdout
    assert re.search(r"^rtmdet_tiny\s+[0-9]", completed.stdout, re.M), completed.stdout
