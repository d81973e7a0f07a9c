"""The mining benchmark runs and prints every number it promises (tiny settings, CPU).

The script measures and asserts nothing (``benchmarks/README.md``); this keeps it working as
the executor changes under it. The numbers of such a tiny run mean nothing and are not checked,
only that each is there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_mining_benchmark_pins_one_core, assert_mining_report, requires

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[1]


@requires("training", "mining", "infer")
def test_mining_benchmark_prints_every_algorithm_against_random(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(PROJECT / "src"), env.get("PYTHONPATH")) if part
    )
    script = PROJECT / "benchmarks" / "mmsegmentation_mining.py"
    completed = subprocess.run(
        [sys.executable, str(script), "--setting", "smoke", "--work", str(tmp_path / "work")],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert_mining_report(completed.stdout, "mIoU", ["random", "entropy", "margin"])


def test_mining_benchmark_runs_its_cpu_tasks_on_one_thread() -> None:
    assert_mining_benchmark_pins_one_core(PROJECT / "benchmarks" / "mmsegmentation_mining.py")
