"""scripts/check-disk.sh: the test command refuses a disk too small for a full run, up front."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check-disk.sh"
HUGE = str(10**9)  # GB: more than any disk


def check(tmp_path: Path, script: Path = SCRIPT, **environment: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "TMPDIR": str(tmp_path),
        "YMIR_DOCKER_STATE": str(tmp_path / "docker-state"),
        **environment,
    }
    return subprocess.run([str(script)], capture_output=True, text=True, env=env, timeout=60)


def test_the_measured_needs_are_filled_in():
    text = SCRIPT.read_text(encoding="utf-8")
    assert re.search(r"^TEMP_GB=[1-9][0-9]*$", text, re.MULTILINE), "TEMP_GB is not a number"
    assert re.search(r"^DOCKER_GB=[1-9][0-9]*$", text, re.MULTILINE), "DOCKER_GB is not a number"


def test_a_disk_too_small_is_refused_with_what_to_do(tmp_path):
    result = check(tmp_path, YMIR_TEST_MIN_FREE_GB=HUGE)
    assert result.returncode == 1, result
    assert f"a full test run needs about {HUGE} GB there" in result.stderr
    # One disk holds both here: the message names both, and says how to go on.
    assert f"the temporary folder ({tmp_path})" in result.stderr
    assert "the Docker engine's state" in result.stderr
    assert "YMIR_TEST_MIN_FREE_GB=0" in result.stderr and "TMPDIR" in result.stderr


def test_zero_skips_the_check(tmp_path):
    result = check(tmp_path, YMIR_TEST_MIN_FREE_GB="0")
    assert result.returncode == 0 and result.stderr == "", result


def test_enough_space_passes(tmp_path):
    assert check(tmp_path, YMIR_TEST_MIN_FREE_GB="1").returncode == 0


def test_a_bad_value_is_named(tmp_path):
    result = check(tmp_path, YMIR_TEST_MIN_FREE_GB="ten")
    assert result.returncode == 2
    assert "YMIR_TEST_MIN_FREE_GB must be a whole number of GB, got 'ten'" in result.stderr


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs /dev/shm, another file system")
def test_two_disks_are_checked_each_for_its_part(tmp_path):
    result = check(tmp_path, TMPDIR="/dev/shm", YMIR_TEST_MIN_FREE_GB=HUGE)
    assert result.returncode == 1
    # The override asks for it all under the temporary folder, which alone is named.
    assert "for the temporary folder (/dev/shm);" in result.stderr
    assert "Docker" not in result.stderr.splitlines()[0]


def test_the_test_command_checks_before_installing_anything(tmp_path):
    result = check(tmp_path, ROOT / "scripts" / "test.sh", YMIR_TEST_MIN_FREE_GB=HUGE)
    assert result.returncode == 1
    assert "check-disk: error:" in result.stderr
    assert result.stdout == ""  # neither pip, ruff nor pytest ran
