"""``benchmarks/scale.py`` runs and prints every number it promises (tiny settings).

The script measures and asserts nothing (``benchmarks/README.md``); this keeps it working as
the executor changes under it. The numbers of such a tiny run mean nothing and are not
checked, only that each is there.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.devkit.chain import supported_tasks
from {{ cookiecutter.package_name }}.devkit.synth import default_img_man

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[1]
NUMBER = r"[-+]?[0-9][0-9,]*(?:\.[0-9]+)?"


def run_scale(tmp_path: Path, *args: str) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(PROJECT / "src"), env.get("PYTHONPATH")) if part
    )
    completed = subprocess.run(
        [sys.executable, str(PROJECT / "benchmarks" / "scale.py"), *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed.stdout


def rows(output: str, pattern: str) -> list[re.Match]:
    return [match for match in re.finditer(pattern, output, re.MULTILINE)]


@pytest.mark.parametrize("target", ["detection", "instance-segmentation"])
def test_scale_benchmark_prints_every_number(tmp_path: Path, target: str) -> None:
    detection = target == "detection"
    per_image = ["--boxes", "0,3"] if detection else ["--masks", "0,2"]
    # The readers and the executor run do not depend on the writers' target: once is enough.
    rest = ["--inputs", "50", "--e2e", "30", "--e2e-boxes", "2"] if detection else []
    output = run_scale(
        tmp_path,
        "--target",
        target,
        "--sizes",
        "40,60",
        *per_image,
        "--mask-size",
        "24x16",
        "--old-max",
        "40",
        *(rest or ["--inputs", "0", "--e2e", "0"]),
        "--clock",
        "cpu",
        *(["--repeat", "2"] if detection else []),
        "--scratch",
        str(tmp_path),
    )
    runs = 2 if detection else 1
    assert f"clock cpu, fastest of {runs} runs each" in output
    numbers = rf"\s+({NUMBER})" * 7
    # Writers: old and new at 40 candidates, new only at 60 (above --old-max), 0 and 2-3 each.
    writer_rows = rows(output, rf"^\s+({NUMBER})\s+(\d+)\s+(old|new){numbers}\s*$")
    expected = [
        (size, count, impl)
        for size in ("40", "60")
        for count in per_image[1].split(",")
        for impl in (("old", "new") if size == "40" else ("new",))
    ]
    assert sorted((row[1], row[2], row[3]) for row in writer_rows) == sorted(expected)
    assert len(rows(output, r"^\s+60\s+\d+\s+old\s+skipped: above --old-max")) == 2
    assert len(rows(output, rf"^\s+40\s+0\s+{NUMBER}x time\s+{NUMBER}x memory$")) == 1
    unit = "box" if detection else "mask"
    ratio = rf"^\s+40\s+[23]\s+{NUMBER}x time\s+{NUMBER}x per {unit}\s+{NUMBER}x memory$"
    assert len(rows(output, ratio)) == 1
    # Mining: old and new at 40, new at 60.
    five = rf"(?:\s+{NUMBER})" * 5
    mining = rows(output, rf"^\s+({NUMBER})\s+(old|new){five}\s*$")
    assert sorted((row[1], row[2]) for row in mining) == [
        ("40", "new"),
        ("40", "old"),
        ("60", "new"),
    ]
    if not detection:
        return
    # Readers: the candidate index old and new, the training index, the COCO export.
    readers = rows(output, rf"^\s+(candidates|training-index|coco)\s+(old|new){five}\s*$")
    assert sorted((row[1], row[2]) for row in readers) == [
        ("candidates", "new"),
        ("candidates", "old"),
        ("coco", "new"),
        ("training-index", "new"),
    ]
    # The executor, end to end: the tasks it declares.
    declared = supported_tasks(default_img_man())
    tasks = [task for task in ("mining", "infer") if task in declared]
    if not tasks:
        assert "End to end: skipped, the executor declares neither" in output
        return
    assert f"End to end: {' + '.join(tasks)} through the executor" in output
    assert re.search(r"^executor exit status\s+0$", output, re.MULTILINE)
    for label in ("executor wall time", "executor peak RSS", "peak RSS per candidate"):
        assert re.search(rf"^{label}\s+{NUMBER} (s|MB|B)$", output, re.MULTILINE), label
    assert bool(re.search(r"^result\.tsv lines\s+30$", output, re.MULTILINE)) == ("mining" in tasks)


def test_repeated_cases_take_turns_and_the_fastest_run_counts(monkeypatch, tmp_path) -> None:
    sys.path.insert(0, str(PROJECT / "benchmarks"))
    try:
        import scale
    finally:
        sys.path.remove(str(PROJECT / "benchmarks"))
    runs = []
    timings = {"old": iter([3.0, 2.0, 4.0]), "new": iter([0.5, 0.7, 0.4])}
    peaks = {"old": iter([10, 30, 20]), "new": iter([5, 4, 6])}

    def measure(case: dict) -> dict:
        name = case["impl"]
        runs.append(name)
        return {"add_s": next(timings[name]), "write_s": 0.0, "peak": next(peaks[name])}

    monkeypatch.setattr(scale, "measure", measure)
    cases = {name: {"impl": name, "out": str(tmp_path / name)} for name in ("old", "new")}
    best = scale.measure_interleaved(cases, 3)
    assert runs == ["old", "new"] * 3
    assert (best["old"]["add_s"], best["new"]["add_s"]) == (2.0, 0.4)
    assert (best["old"]["peak"], best["new"]["peak"]) == (30, 6)  # the highest of the runs
