"""Shared helpers for the template tests: baking, the expected file sets, walking outputs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TEMPLATE = Path(__file__).resolve().parents[1]
MATRIX = json.loads((TEMPLATE / "cookiecutter.json").read_text())["_version_matrix"]
DEFAULT_VARIANTS = ["cu118", "cu121", "cpu"]
TARGETS = ["detection", "semantic-segmentation", "instance-segmentation"]
OBJECT_TYPES = {"detection": 2, "semantic-segmentation": 3, "instance-segmentation": 4}
TASKS = ("training", "mining", "infer")
# The implementations each target can be generated with (framework=auto picks the second).
TARGET_FRAMEWORKS = {
    "detection": ["none", "mmdetection"],
    "semantic-segmentation": ["none", "mmsegmentation"],
    "instance-segmentation": ["none", "mmdetection"],
}
# Every non-empty subset of the tasks, by the letters used in image tags.
TASK_SUBSETS = ["t", "m", "i", "tm", "ti", "mi", "tmi"]
LETTER_TASK = {"t": "training", "m": "mining", "i": "infer"}


def task_answers(letters: str) -> dict:
    return {f"task_{task}": letter in letters for letter, task in LETTER_TASK.items()}


def bake(cookies, **answers):
    """Bake with ``answers`` and return the project path; fail the test on any error."""
    result = cookies.bake(extra_context=answers)
    assert result.exception is None, result.exception
    assert result.exit_code == 0
    return Path(result.project_path)


@pytest.fixture(scope="session")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mypy cache for the bakes of a test process. Bakes name their modules alike, so a
    module whose text the process already checked is not checked again (mypy compares the text's
    hash). Each xdist worker has its own: mypy writes a module's two cache files one after the
    other, and a check running beside another one's write can read a mismatched pair."""
    return tmp_path_factory.getbasetemp() / "mypy-cache"


def type_check(project: Path, cache: Path) -> None:
    """The generated ``make lint``'s mypy run (the project's own configuration), cache shared."""
    completed = run([tool("mypy"), "--cache-dir", str(cache)], cwd=project)
    assert completed.stdout.startswith("Success: no issues found"), completed.stdout


def project_files(project: Path) -> set[str]:
    """Every file of a baked project, relative, with '/' separators."""
    return {
        path.relative_to(project).as_posix()
        for path in project.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def expected_files(
    package: str, letters: str, variants: list[str], framework: str = "none"
) -> set[str]:
    """The file set a bake must produce, written down from the template's rules."""
    files = {
        ".cookiecutter.json",
        ".devcontainer/devcontainer.json",
        ".devcontainer/post-create.sh",
        ".dockerignore",
        ".gitattributes",
        ".gitignore",
        ".hadolint.yaml",
        ".pre-commit-config.yaml",
        ".github/dependabot.yml",
        ".github/workflows/ci.yml",
        ".github/workflows/images.yml",
        "Makefile",
        "README.md",
        "docker-bake.hcl",
        "docker/check-permissions.sh",
        "docker/start.sh",
        "docs/protocol.md",
        "scripts/function_length.py",
        "img-man/manifest.yaml",
        "pyproject.toml",
        "renovate.json",
    }
    package_files = [
        "__init__.py",
        "__main__.py",
        "evaluation.py",
        "contract/__init__.py",
        "contract/atomic.py",
        "contract/booleans.py",
        "contract/box_json.py",
        "contract/candidates.py",
        "contract/context.py",
        "contract/dataset.py",
        "contract/env.py",
        "contract/errors.py",
        "contract/handover.py",
        "contract/hyperparams.py",
        "contract/images.py",
        "contract/masks.py",
        "contract/models.py",
        "contract/monitor.py",
        "contract/object_types.py",
        "contract/params.py",
        "contract/results.py",
        "contract/tensorboard.py",
        "devkit/__init__.py",
        "devkit/__main__.py",
        "devkit/al_dataset.py",
        "devkit/al_loop.py",
        "devkit/al_report.py",
        "devkit/al_scoring.py",
        "devkit/chain.py",
        "devkit/hyperparams.py",
        "devkit/run.py",
        "devkit/synth.py",
        "devkit/pool.py",
        "devkit/verify/__init__.py",
        "devkit/verify/detection.py",
        "devkit/verify/failure.py",
        "devkit/verify/findings.py",
        "devkit/verify/img_man.py",
        "devkit/verify/infer.py",
        "devkit/verify/inputs.py",
        "devkit/verify/mining.py",
        "devkit/verify/monitor.py",
        "devkit/verify/segmentation.py",
        "devkit/verify/training.py",
        "devkit/verify/values.py",
        "devkit/verify/work_dir.py",
        "py.typed",
        "tasks/__init__.py",
        "tasks/hyperparams.py",
    ]
    files |= {f"src/{package}/{name}" for name in package_files}
    test_files = [
        "conftest.py",
        "test_al_loop.py",
        "test_box_json.py",
        "test_chain.py",
        "test_context.py",
        "test_dataset.py",
        "test_devkit.py",
        "test_env.py",
        "test_evaluation.py",
        "test_function_length.py",
        "test_handover.py",
        "test_hyperparams.py",
        "test_images.py",
        "test_main.py",
        "test_masks.py",
        "test_models.py",
        "test_monitor.py",
        "test_params.py",
        "test_results.py",
        "test_results_streamed.py",
        "test_scale_benchmark.py",
        "test_tensorboard.py",
        "test_verify.py",
        "test_atomic.py",
    ]
    files |= {f"tests/{name}" for name in test_files}
    files |= set(BENCHMARKS)
    files |= framework_files(package, framework)
    for letter in letters:
        task = LETTER_TASK[letter]
        files.add(f"img-man/{task}-template.yaml")
        files.add(f"src/{package}/tasks/{task}.py")
    files |= {f"docker/{variant}.Dockerfile" for variant in variants}
    return files


# What each implementation adds to the package and the tests.
OPENMMLAB_FILES = [
    "frameworks/__init__.py",
    "frameworks/openmmlab/__init__.py",
    "frameworks/openmmlab/bake_weights.py",
    "frameworks/openmmlab/checkpoint.py",
    "frameworks/openmmlab/checkpoint_file.py",
    "frameworks/openmmlab/distributed.py",
    "frameworks/openmmlab/failures.py",
    "frameworks/openmmlab/hooks.py",
    "frameworks/openmmlab/options.py",
    "frameworks/openmmlab/package.py",
    "frameworks/openmmlab/preflight.py",
    "frameworks/openmmlab/rows.py",
    "frameworks/openmmlab/weights.py",
]
OPENMMLAB_TESTS = [
    "test_openmmlab_checkpoint.py",
    "test_openmmlab_checkpoint_file.py",
    "test_openmmlab_distributed.py",
    "test_openmmlab_failures.py",
    "test_openmmlab_gpu_check.py",
    "test_openmmlab_hooks.py",
    "test_openmmlab_options.py",
    "test_openmmlab_preflight.py",
    "test_openmmlab_rows.py",
    "test_openmmlab_weights.py",
]
FRAMEWORK_FILES = {
    "mmdetection": [
        "frameworks/mmdetection/__init__.py",
        "frameworks/mmdetection/config.py",
        "frameworks/mmdetection/data.py",
        "frameworks/mmdetection/detector.py",
        "frameworks/mmdetection/inference.py",
        "frameworks/mmdetection/jobs.py",
        "frameworks/mmdetection/mining.py",
        "frameworks/mmdetection/models.py",
        "frameworks/mmdetection/package.py",
        "frameworks/mmdetection/predictor.py",
        "frameworks/mmdetection/training.py",
    ],
    "mmsegmentation": [
        "frameworks/mmsegmentation/__init__.py",
        "frameworks/mmsegmentation/config.py",
        "frameworks/mmsegmentation/data.py",
        "frameworks/mmsegmentation/inference.py",
        "frameworks/mmsegmentation/jobs.py",
        "frameworks/mmsegmentation/metric.py",
        "frameworks/mmsegmentation/mining.py",
        "frameworks/mmsegmentation/models.py",
        "frameworks/mmsegmentation/package.py",
        "frameworks/mmsegmentation/predictor.py",
        "frameworks/mmsegmentation/training.py",
    ],
}
FRAMEWORK_TESTS = {
    "mmdetection": [
        "test_mmdetection_benchmarks.py",
        "test_mmdetection_inference.py",
        "test_mmdetection_mining.py",
        "test_mmdetection_training.py",
    ],
    "mmsegmentation": [
        "test_mmsegmentation_benchmarks.py",
        "test_mmsegmentation_inference.py",
        "test_mmsegmentation_models.py",
        "test_mmsegmentation_training.py",
    ],
}
# Framework-free: in every project.
BENCHMARKS = [
    "benchmarks/README.md",
    "benchmarks/reference_results.py",
    "benchmarks/scale.py",
]
# Each reference framework's own.
FRAMEWORK_BENCHMARKS = {
    "mmdetection": [
        "benchmarks/mmdetection_data.py",
        "benchmarks/mmdetection_inference.py",
        "benchmarks/mmdetection_mining.py",
        "benchmarks/mmdetection_training.py",
    ],
    "mmsegmentation": ["benchmarks/mmsegmentation_mining.py"],
}


def framework_files(package: str, framework: str) -> set[str]:
    if framework == "none":
        return {f"src/{package}/baseline.py", "tests/test_baseline.py"}
    files = {f"src/{package}/{name}" for name in OPENMMLAB_FILES + FRAMEWORK_FILES[framework]}
    files |= {f"tests/{name}" for name in OPENMMLAB_TESTS + FRAMEWORK_TESTS[framework]}
    files.add("scripts/install-cpu-stack.sh")
    files.add("docker/build-mmcv.sh")
    files.add("scripts/gpu_check.py")
    files |= set(FRAMEWORK_BENCHMARKS[framework])
    return files


def run(command: list[str], cwd: Path | None = None, timeout: int = 600, **kwargs):
    """Run a command; on failure show its output in the assertion message."""
    completed = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=timeout, **kwargs
    )
    assert completed.returncode == 0, (
        f"{' '.join(map(str, command))} failed ({completed.returncode}):\n"
        f"{completed.stdout[-4000:]}\n{completed.stderr[-4000:]}"
    )
    return completed


def make() -> str:
    """``make``: the generated projects' commands are its targets."""
    found = shutil.which("make")
    if not found:
        pytest.fail("make is not installed; the generated projects' commands are make targets")
    return found


def tool(name: str) -> str:
    """A command-line tool from this interpreter's environment (or PATH)."""
    candidate = Path(sys.executable).with_name(name)
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed; run scripts/test.sh, which installs it")
    return found


# ------------------------------------------------------------------------------------------------
# the private Docker engine, shared by the tiers that build and run images (test_containers,
# test_platform): scripts/docker-engine.sh, base-image.sh and wheelhouse.sh

SCRIPTS = TEMPLATE / "scripts"
BASE_IMAGE = os.environ.get("YMIR_BASE_IMAGE", "ymir-test-base:bookworm-py311")
TORCH_VERSION = "2.13.0"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# The mmcv wheel the OpenMMLab images install (OpenMMLab's wheel index is not reachable from
# here): the shared prebuilt wheel when there is one.
MMCV_WHEELHOUSE = Path(
    os.environ.get("MMCV_WHEELHOUSE", str(TEMPLATE.parent / "shared" / "wheelhouse"))
)


def bridges() -> set[str]:
    """Names of the bridge interfaces of this machine (the engine must never add one)."""
    if not shutil.which("ip"):
        return set()
    completed = subprocess.run(
        ["ip", "-o", "link", "show", "type", "bridge"], capture_output=True, text=True
    )
    return {line.split(":")[1].strip() for line in completed.stdout.splitlines() if ":" in line}


def docker_cli() -> str:
    """Debian's docker client (20.10 builds with BuildKit without the buildx plugin newer clients
    need for it); YMIR_DOCKER_CLI overrides, like for scripts/docker-engine.sh."""
    if os.environ.get("YMIR_DOCKER_CLI"):
        return os.environ["YMIR_DOCKER_CLI"]
    if Path("/usr/bin/docker").exists():
        return "/usr/bin/docker"
    return shutil.which("docker") or "docker"


class Engine:
    """The private engine: the environment for the docker client, and the client itself."""

    def __init__(self, docker_host: str):
        self.cli = docker_cli()
        self.env = {**os.environ, "DOCKER_HOST": docker_host, "DOCKER_BUILDKIT": "1"}

    def docker(self, *args: str, timeout: int = 600, check: bool = True, **kwargs):
        command = [self.cli, *args]
        if check:
            return run(command, timeout=timeout, env=self.env, **kwargs)
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=self.env, **kwargs
        )


@pytest.fixture(scope="session")
def engine():
    """Install and start the private engine; stop it (by PID) when the session is done.

    One engine for every module that builds or runs images (the container and platform
    tiers share its base image, build cache and wheelhouse: they run in one xdist group).
    """
    if os.geteuid() != 0:
        pytest.skip("the container tier runs dockerd and debootstrap: run it as root")
    bridges_before = bridges()
    script = str(SCRIPTS / "docker-engine.sh")
    run([script, "install"], timeout=900)
    started = run([script, "start"], timeout=180)
    match = re.search(r"^export DOCKER_HOST=(\S+)$", started.stdout, re.MULTILINE)
    assert match, started.stdout
    try:
        yield Engine(match.group(1))
    finally:
        if os.environ.get("YMIR_DOCKER_KEEP") != "1":
            run([script, "stop"], timeout=180)
        new = bridges() - bridges_before
        assert not new, f"the engine created bridge interfaces {sorted(new)}"


@pytest.fixture(scope="session")
def base_image(engine):
    completed = run([str(SCRIPTS / "base-image.sh"), BASE_IMAGE], timeout=900, env=engine.env)
    return completed.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wheelhouse")
    run([str(SCRIPTS / "wheelhouse.sh"), str(folder), f"torch=={TORCH_VERSION}"], timeout=900)
    wheels = sorted(folder.glob("torch-*.whl"))
    assert wheels, f"no torch wheel in {folder}"
    return folder


def add_wheels(project: Path, wheels) -> None:
    """Put ``wheels`` into the build context's ./wheels folder (the Dockerfiles' wheelhouse)."""
    folder = project / "wheels"
    folder.mkdir(exist_ok=True)
    for wheel in wheels:
        try:
            os.link(wheel, folder / wheel.name)
        except OSError:
            shutil.copy2(wheel, folder / wheel.name)


def build_args(base_image: str) -> list[str]:
    """The only thing the tests change about a build: its options and build arguments."""
    return [
        "--network",
        "host",
        "--progress",
        "plain",
        "--secret",
        f"id=pip_ca,src={CA_BUNDLE}",
        "--build-arg",
        f"BASE_IMAGE={base_image}",
        "--build-arg",
        f"TORCH_VERSION={TORCH_VERSION}",
        # the CPU wheel comes from the wheelhouse; its dependencies from the default index
        "--build-arg",
        "TORCH_INDEX_URL=",
        "--build-arg",
        "PIP_FIND_LINKS=/wheels",
    ]
