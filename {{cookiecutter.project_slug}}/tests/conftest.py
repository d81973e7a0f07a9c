"""Fixtures shared by the test modules: what this executor supports, a ready model package, and
the check of the mining benchmark's output."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import {{ cookiecutter.package_name }} as executor
from {{ cookiecutter.package_name }}.contract.params import TEMPLATE_FILES, manifest_object_type
from {{ cookiecutter.package_name }}.devkit.synth import CLASS_NAMES, default_img_man, synthesize
from {{ cookiecutter.package_name }}.devkit.verify import format_findings, has_errors, verify_work_dir

IMG_MAN = default_img_man()
OBJECT_TYPE = manifest_object_type(IMG_MAN)
# A task is supported when its img-man template exists, exactly as YMIR decides at registration.
SUPPORTED_TASKS = {task for task, name in TEMPLATE_FILES.items() if (IMG_MAN / name).is_file()}
# The implementation behind the tasks: a reference framework, or the stub baseline ("none").
FRAMEWORK = "none"
if importlib.util.find_spec(f"{executor.__name__}.frameworks") is not None:
    FRAMEWORK = next(
        name
        for name in ("mmdetection", "mmsegmentation")
        if importlib.util.find_spec(f"{executor.__name__}.frameworks.{name}") is not None
    )
# Hyper-parameters that keep a real training run to seconds on a CPU; only the keys the
# executor's templates declare are set (the stub baseline has none of them).
QUICK_SETTINGS = {
    "epochs": 1,
    "max_iters": 2,
    "val_interval": 1,
    "img_size": 64,
    "batch_size_per_gpu": 2,
    "num_workers_per_gpu": 0,
}
TEMPLATE_KEYS = {
    key
    for name in TEMPLATE_FILES.values()
    if (IMG_MAN / name).is_file()
    for key in yaml.safe_load((IMG_MAN / name).read_text(encoding="utf-8"))
}
QUICK_PARAMS = {key: value for key, value in QUICK_SETTINGS.items() if key in TEMPLATE_KEYS}
# A JPEG header followed by garbage: an image file no decoder can read.
CORRUPT_JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x13" * 64


def requires(*tasks: str):
    """Skip a test that needs tasks this executor was generated without."""
    missing = sorted(set(tasks) - SUPPORTED_TASKS)
    return pytest.mark.skipif(bool(missing), reason=f"generated without {', '.join(missing)}")


@pytest.fixture(scope="session")
def stub_model_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A platform model package the executor's mining and inference can load.

    It lets them be tested without a training run (and in executors generated without
    training): the stub baseline fitted on synthetic data, or a framework model with random
    weights. When you replace the stubs, package your own model files here instead.
    """
    root = tmp_path_factory.mktemp("model")
    tar = root / "model.tar"
    if FRAMEWORK == "mmdetection":
        from {{ cookiecutter.package_name }}.frameworks.mmdetection import models, package

        name = models.default_model(OBJECT_TYPE).name
        package.untrained_package(tar, name, OBJECT_TYPE, CLASS_NAMES, img_size=64)
    elif FRAMEWORK == "mmsegmentation":
        from {{ cookiecutter.package_name }}.frameworks.mmsegmentation import models, package

        package.untrained_package(tar, models.DEFAULT_MODEL, CLASS_NAMES, img_size=64)
    else:
        from {{ cookiecutter.package_name }}.devkit.chain import baseline_package

        baseline_package(root, tar, OBJECT_TYPE, IMG_MAN, root / "asset_cache")
    return tar


def synthesize_task(
    work: Path, task: str, model_tar: Path, params: dict, *, corrupt: int = 0, **synth_args
):
    """A synthetic /in for mining or inference with ``model_tar`` installed and ``params`` set;
    the first ``corrupt`` candidates are made unreadable (their files, not the links to them).
    Skips the test when the executor was generated without the task."""
    missing = sorted(set(task.split("+")) - SUPPORTED_TASKS)
    if missing:
        pytest.skip(f"generated without {', '.join(missing)}")
    syn = synthesize(work, task, OBJECT_TYPE, model_params=model_tar, params=params, **synth_args)
    for path in syn.candidates[:corrupt]:
        Path(os.path.realpath(path)).write_bytes(CORRUPT_JPEG)
    return syn


def assert_verified(syn) -> None:
    """What the executor wrote passes the platform's parsing rules (the devkit verifier)."""
    findings = verify_work_dir(syn.work_dir)
    assert not has_errors(findings), format_findings(findings)


def untrained_mmdetection_package(
    factory: pytest.TempPathFactory, name: str, object_type: int = OBJECT_TYPE
) -> Path:
    """An MMDetection model package with random weights (64 px input), built once per session.

    The head's weights get some noise, so even an untrained model predicts boxes to check.
    """
    from {{ cookiecutter.package_name }}.frameworks.mmdetection import package

    folder = factory.getbasetemp() / "mmdetection-packages"
    tar = folder / f"{name}-{object_type}.tar"
    if not tar.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        package.untrained_package(tar, name, object_type, CLASS_NAMES, img_size=64, noise=0.02)
    return tar


# A number as the benchmarks print it.
_NUMBER = r"[-+]?[0-9][0-9,]*(?:\.[0-9]+)?"


def assert_mining_report(output: str, metric: str, algorithms: list) -> None:
    """Every number the mining benchmark promises: per algorithm and round the metric (mean ±
    spread), the last round against random, the one-round enrichment, the verdict, the time."""
    cell = rf"{_NUMBER} ± {_NUMBER}"
    for algorithm in algorithms:
        row = rf"^\| {algorithm} \| {cell} \| {cell} \|"
        if algorithm == "random":
            row += r"  \|$"  # random is the reference: no difference to itself
        else:
            row += rf" [-+]{_NUMBER} ± {_NUMBER} \|$"
            assert re.search(
                rf"^{algorithm} vs random after round 1: {metric} [-+]{cell}$", output, re.M
            ), output
        assert re.search(row, output, re.M), output
        assert re.search(rf"^\| {algorithm} \| {cell} \| {cell} \|$", output, re.M), output
    assert re.search(
        rf"^best: \w+, [-+]{_NUMBER} {metric} over random after round 1 ", output, re.M
    )
    assert re.search(r"^the default mining_algorithm '\w+' (measures best|does NOT)", output, re.M)
    assert re.search(rf"^time: {_NUMBER} min wall, {_NUMBER} min CPU$", output, re.M), output


def assert_mining_benchmark_pins_one_core(script: Path) -> None:
    """The CPU settings run a seed per core, so every task with one PyTorch thread: the
    benchmark asks the loop for ``one_job_per_core()``, whose jobs are pinned to a core each
    (as the loop pins a job: ``al_loop._job_cores``), and a task started there starts one
    thread."""
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs a system that pins processes, with at least 2 cores")
    assert "one_job_per_core(settings.seeds)" in script.read_text(encoding="utf-8")
    probe = "import os, torch; print(len(os.sched_getaffinity(0)), torch.get_num_threads())"
    code = (
        "import os, subprocess, sys\n"
        "from {{ cookiecutter.package_name }}.devkit import al_loop\n"
        "jobs, cores_per_job, line = al_loop.one_job_per_core(2)\n"
        "print(jobs, cores_per_job, line, flush=True)\n"
        "os.sched_setaffinity(0, al_loop._job_cores(jobs, cores_per_job)[-1])\n"
        f"subprocess.run([sys.executable, '-c', {probe!r}], check=True)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    pinned, task = completed.stdout.splitlines()
    assert pinned == "2 1 2 seed(s) at once, each on a CPU core of its own (one PyTorch thread)"
    assert task == "1 1", completed.stdout
