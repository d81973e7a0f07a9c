"""Shared helpers for the template tests: baking, the expected file sets, walking outputs."""

from __future__ import annotations

import json
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
        ".dockerignore",
        ".gitattributes",
        ".gitignore",
        ".hadolint.yaml",
        ".pre-commit-config.yaml",
        ".github/workflows/ci.yml",
        ".github/workflows/images.yml",
        "Makefile",
        "README.md",
        "docker-bake.hcl",
        "docker/start.sh",
        "img-man/manifest.yaml",
        "pyproject.toml",
    }
    package_files = [
        "__init__.py",
        "__main__.py",
        "evaluation.py",
        "contract/__init__.py",
        "contract/atomic.py",
        "contract/context.py",
        "contract/dataset.py",
        "contract/env.py",
        "contract/errors.py",
        "contract/images.py",
        "contract/masks.py",
        "contract/models.py",
        "contract/monitor.py",
        "contract/params.py",
        "contract/results.py",
        "devkit/__init__.py",
        "devkit/__main__.py",
        "devkit/al_dataset.py",
        "devkit/al_loop.py",
        "devkit/al_report.py",
        "devkit/al_scoring.py",
        "devkit/chain.py",
        "devkit/run.py",
        "devkit/synth.py",
        "devkit/pool.py",
        "devkit/verify.py",
        "tasks/__init__.py",
    ]
    files |= {f"src/{package}/{name}" for name in package_files}
    test_files = [
        "conftest.py",
        "test_al_loop.py",
        "test_chain.py",
        "test_dataset.py",
        "test_devkit.py",
        "test_env.py",
        "test_evaluation.py",
        "test_images.py",
        "test_main.py",
        "test_masks.py",
        "test_models.py",
        "test_monitor.py",
        "test_params.py",
        "test_results.py",
        "test_verify.py",
        "test_atomic.py",
    ]
    files |= {f"tests/{name}" for name in test_files}
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
    "frameworks/openmmlab/checkpoint.py",
    "frameworks/openmmlab/distributed.py",
    "frameworks/openmmlab/failures.py",
    "frameworks/openmmlab/hooks.py",
    "frameworks/openmmlab/options.py",
    "frameworks/openmmlab/package.py",
    "frameworks/openmmlab/weights.py",
]
OPENMMLAB_TESTS = [
    "test_openmmlab_checkpoint.py",
    "test_openmmlab_distributed.py",
    "test_openmmlab_failures.py",
    "test_openmmlab_hooks.py",
    "test_openmmlab_options.py",
    "test_openmmlab_weights.py",
]
FRAMEWORK_FILES = {
    "mmdetection": [
        "frameworks/mmdetection/__init__.py",
        "frameworks/mmdetection/config.py",
        "frameworks/mmdetection/data.py",
        "frameworks/mmdetection/inference.py",
        "frameworks/mmdetection/mining.py",
        "frameworks/mmdetection/models.py",
        "frameworks/mmdetection/package.py",
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
BENCHMARKS = {
    "mmdetection": [
        "benchmarks/README.md",
        "benchmarks/mmdetection_data.py",
        "benchmarks/mmdetection_inference.py",
        "benchmarks/mmdetection_mining.py",
        "benchmarks/mmdetection_training.py",
    ],
    "mmsegmentation": ["benchmarks/README.md", "benchmarks/mmsegmentation_mining.py"],
}


def framework_files(package: str, framework: str) -> set[str]:
    if framework == "none":
        return {f"src/{package}/baseline.py", "tests/test_baseline.py"}
    files = {f"src/{package}/{name}" for name in OPENMMLAB_FILES + FRAMEWORK_FILES[framework]}
    files |= {f"tests/{name}" for name in OPENMMLAB_TESTS + FRAMEWORK_TESTS[framework]}
    files.add("scripts/install-cpu-stack.sh")
    files |= set(BENCHMARKS[framework])
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


def tool(name: str) -> str:
    """A command-line tool from this interpreter's environment (or PATH)."""
    candidate = Path(sys.executable).with_name(name)
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed; run scripts/test.sh, which installs it")
    return found
