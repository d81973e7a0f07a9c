"""The benchmark scripts run and print every number they promise (tiny settings, CPU).

The scripts measure and assert nothing (``benchmarks/README.md``); this keeps them working as
the executor changes under them. The numbers of such tiny runs mean nothing and are not
checked, only that each is there.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_mining_benchmark_pins_one_core, assert_mining_report, requires
from {{ cookiecutter.package_name }}.contract.params import manifest_object_type
from {{ cookiecutter.package_name }}.devkit.synth import default_img_man
from {{ cookiecutter.package_name }}.frameworks.mmdetection import models

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[1]
NUMBER = r"[-+]?[0-9][0-9,]*(?:\.[0-9]+)?"
# A training as small as the scripts accept: two images, one or two epochs, 64 px.
TINY_TRAINING = ["--train-images", "2", "--val-images", "1", "--img-size", "64"]
TINY_TRAINING += ["--batch-size", "2", "--workers", "0"]


def run_benchmark(name: str, *args: str, timeout: int = 900) -> str:
    """The standard output of ``benchmarks/mmdetection_<name>.py`` (it must exit 0)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(PROJECT / "src"), env.get("PYTHONPATH")) if part
    )
    script = PROJECT / "benchmarks" / f"mmdetection_{name}.py"
    completed = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed.stdout


@requires("infer")
def test_inference_benchmark_prints_a_line_per_model(tmp_path: Path) -> None:
    output = run_benchmark(
        "inference",
        *("--device", "cpu", "--images", "2", "--img-size", "64", "--batch-size", "2"),
        *("--image-width", "96", "--image-height", "64", "--rounds", "1"),
        *("--json", str(tmp_path / "rates.json")),
    )
    assert output.startswith("device cpu (")
    specs = models.models_for(manifest_object_type(default_img_man()))
    for spec in specs:
        rates = rf"\s+{NUMBER}" * 3  # executor, per-image and bare img/s
        assert re.search(rf"^{spec.name}{rates}\s+{NUMBER}x\s+{NUMBER}%$", output, re.M), output
    # the same rates for make gpu-check
    written = json.loads((tmp_path / "rates.json").read_text(encoding="utf-8"))
    assert written["device"] == "cpu" and written["fp16"] is False
    assert [row["model"] for row in written["rates"]] == [spec.name for spec in specs]
    for row in written["rates"]:
        assert all(row[path] > 0 for path in ("executor", "per-image", "bare")), row


@requires("training")
def test_training_benchmark_prints_both_overheads() -> None:
    output = run_benchmark("training", *TINY_TRAINING, "--epochs", "1", "--rounds", "1")
    assert re.search(rf"^round 1: executor {NUMBER} s \(preparation", output, re.M), output
    assert re.search(
        rf"overhead end to end {NUMBER}% .*executor hooks {NUMBER}% of the runner", output
    ), output


@requires("training")
def test_data_benchmark_prints_throughput_and_share_of_training() -> None:
    output = run_benchmark(
        "data", *TINY_TRAINING, "--epochs", "2", "--annotations", "40", "--per-image", "4"
    )
    formats = re.findall(rf"^\s*([\w-]+): 40 annotations in {NUMBER} s = {NUMBER} ", output, re.M)
    assert formats, output
    assert re.search(rf"^training \S+ at img_size 64, .* {NUMBER} s/image$", output, re.M)
    for name in formats:
        assert re.search(rf"{name}: conversion / one-epoch training time = {NUMBER}%", output)


@requires("training", "mining", "infer")
def test_mining_benchmark_prints_every_algorithm_against_random(tmp_path: Path) -> None:
    # about 15 short tasks, each a process that loads the framework
    work = str(tmp_path / "work")
    output = run_benchmark("mining", "--setting", "smoke", "--work", work, timeout=1800)
    metric = "mAP_50" if manifest_object_type(default_img_man()) == 2 else "maskAP_50"
    assert_mining_report(output, metric, ["random", "entropy", "cald", "aldd"])


def test_mining_benchmark_runs_its_cpu_tasks_on_one_thread() -> None:
    assert_mining_benchmark_pins_one_core(PROJECT / "benchmarks" / "mmdetection_mining.py")
