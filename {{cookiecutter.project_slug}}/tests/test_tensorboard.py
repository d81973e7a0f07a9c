"""TensorBoard event files without TensorBoard: what YMIR's TensorBoard shows of a training."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest
import yaml

from conftest import FRAMEWORK, OBJECT_TYPE, QUICK_PARAMS, requires
from {{ cookiecutter.package_name }}.__main__ import main
from {{ cookiecutter.package_name }}.contract.object_types import ObjectType
from {{ cookiecutter.package_name }}.contract.tensorboard import (
    EventFileError,
    ScalarWriter,
    crc32c,
    event_files,
    read_event_file,
    read_scalars,
)
from {{ cookiecutter.package_name }}.devkit.synth import synthesize


def test_crc32c_is_castagnoli():
    # the check value of CRC-32C (RFC 3720); zlib's CRC-32 of the same bytes is 0xCBF43926
    assert crc32c(b"123456789") == 0xE3069283


def test_scalars_round_trip(tmp_path: Path):
    writer = ScalarWriter(tmp_path)
    for step in range(3):
        writer.add_scalars({"train/loss": 1.0 / (step + 1), "val/mAP": step / 4}, step)
    writer.add_scalar("val/mAP", 0.875, 10)
    (path,) = event_files(tmp_path)
    assert "tfevents" in path.name
    scalars = read_event_file(path)
    assert [step for step, _ in scalars["train/loss"]] == [0, 1, 2]
    assert [value for _, value in scalars["val/mAP"]] == [0.0, 0.25, 0.5, 0.875]
    assert math.isclose(scalars["train/loss"][2][1], 1 / 3, rel_tol=1e-6)  # stored as float32


def test_every_file_and_sub_folder_is_read(tmp_path: Path):
    ScalarWriter(tmp_path).add_scalar("a", 1.0, 1)
    ScalarWriter(tmp_path / "run-2").add_scalar("a", 2.0, 2)
    (tmp_path / "executor.log").write_text("not an event file")
    assert sorted(read_scalars(tmp_path)["a"]) == [(1, 1.0), (2, 2.0)]


def test_a_torn_or_corrupt_file_is_an_error(tmp_path: Path):
    writer = ScalarWriter(tmp_path / "torn")
    writer.add_scalar("loss", 0.5, 1)
    data = writer.path.read_bytes()
    writer.path.write_bytes(data[:-3])
    with pytest.raises(EventFileError, match="truncated"):
        read_scalars(tmp_path / "torn")
    flipped = bytearray(data)
    flipped[-6] ^= 0xFF  # inside the last record's payload
    writer.path.write_bytes(bytes(flipped))
    with pytest.raises(EventFileError, match="checksum"):
        read_scalars(tmp_path / "torn")


def test_the_first_record_is_the_file_version(tmp_path: Path):
    """TensorBoard expects 'brain.Event:2' first; a file with no scalar holds just that."""
    writer = ScalarWriter(tmp_path)
    data = writer.path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    assert len(data) == 8 + 4 + length + 4
    assert data[12 : 12 + length].endswith(b"brain.Event:2")
    assert read_scalars(tmp_path) == {}


@pytest.mark.parametrize(
    ("values", "step"),
    [({"loss": math.nan}, 1), ({"loss": math.inf}, 1), ({"": 1.0}, 1), ({"loss": 1.0}, -1)],
)
def test_bad_points_are_refused(tmp_path: Path, values: dict, step: int):
    writer = ScalarWriter(tmp_path)
    with pytest.raises(ValueError):
        writer.add_scalars(values, step)
    assert read_scalars(tmp_path) == {}  # nothing half-written


@requires("training")
def test_training_draws_its_curves(tmp_path: Path, capsys):
    """A training run leaves event files in env.yaml's tensorboard_dir, where YMIR's
    TensorBoard reads them: a training curve and the validation metrics."""
    work = tmp_path / "work"
    synthesize(work, "training", OBJECT_TYPE, params=QUICK_PARAMS)
    status = main(work / "in" / "env.yaml")
    assert status == 0, capsys.readouterr().err[-2000:]
    env = yaml.safe_load((work / "in" / "env.yaml").read_text(encoding="utf-8"))
    scalars = read_scalars(env["output"]["tensorboard_dir"])
    if FRAMEWORK == "none":
        metric = ObjectType(OBJECT_TYPE).main_metric
        progress = [value for _step, value in scalars["train/fit_progress"]]
        assert progress == sorted(progress) and progress[-1] == 1.0
        assert 2 <= len(progress) <= 21
        assert [step for step, _value in scalars[f"val/{metric}"]] == [12]  # the train images
    else:
        # the framework's own TensorBoard backend: its loss curve (its evaluation scalars need
        # predictions, which a one-epoch model need not make)
        steps = [step for step, _value in scalars["loss"]]
        assert steps and steps == sorted(steps)
