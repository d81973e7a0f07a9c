"""Reading a checkpoint file's structure without PyTorch: what the image build checks every
baked file with, and what tells the executor's load failures apart."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

from {{ cookiecutter.package_name }}.frameworks.openmmlab.checkpoint_file import (
    CheckpointFileError,
    examine,
)


def mmengine_checkpoint(path: Path, legacy: bool = False) -> Path:
    """What mmengine's runner saves: meta with mmengine objects and numpy scalars, a state
    dict of several dtypes, and more top-level keys."""
    buffer = HistoryBuffer()
    buffer.update(1.0)
    torch.save(
        {
            "meta": {"epoch": np.int64(3), "seed": 7, "hub": {"loss": buffer}},
            "state_dict": {
                "backbone.weight": torch.randn(8, 3, 3, 3),
                "backbone.bn.num_batches_tracked": torch.tensor(5),
                "head.bias": torch.zeros(4, dtype=torch.float16),
                "head.mask": torch.ones(2, dtype=torch.bool),
            },
            "message_hub": {"iter": np.float32(0.5)},
        },
        str(path),
        _use_new_zipfile_serialization=not legacy,
    )
    return path


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_complete_checkpoints_of_both_formats(tmp_path: Path, legacy: bool) -> None:
    path = mmengine_checkpoint(tmp_path / "model.pth", legacy)
    found = examine(path)
    assert found.format == ("legacy" if legacy else "zip")
    assert found.tensors == 4 and found.size == path.stat().st_size


def test_bare_state_dicts_and_wrappers(tmp_path: Path) -> None:
    torch.save({"w": torch.zeros(2), "b": torch.zeros(1)}, str(tmp_path / "bare.pth"))
    assert examine(tmp_path / "bare.pth").tensors == 2
    torch.save({"model": {"w": torch.zeros(2)}, "optimizer": {}}, str(tmp_path / "wrapped.pth"))
    assert examine(tmp_path / "wrapped.pth").tensors == 1


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, -1])
def test_a_file_cut_anywhere_fails(tmp_path: Path, legacy: bool, keep: float) -> None:
    data = mmengine_checkpoint(tmp_path / "model.pth", legacy).read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[:-1] if keep == -1 else data[: int(len(data) * keep)])
    with pytest.raises(CheckpointFileError) as raised:
        examine(cut)
    assert raised.value.problem in ("truncated", "corrupt")


def test_a_damaged_tensor_fails_its_crc(tmp_path: Path) -> None:
    path = mmengine_checkpoint(tmp_path / "model.pth")
    with zipfile.ZipFile(path) as archive:
        member = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size > 64)
    data = bytearray(path.read_bytes())
    header = member.header_offset
    start = header + 30 + int.from_bytes(data[header + 26 : header + 28], "little")
    start += int.from_bytes(data[header + 28 : header + 30], "little")
    data[start + 10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointFileError, match="CRC") as raised:
        examine(path)
    assert raised.value.problem == "corrupt"


@pytest.mark.parametrize(
    "content, words",
    [
        (b"", "empty"),
        (b"<!DOCTYPE html><html><body>403 Forbidden</body></html>", "web page"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:0\n", "(text)"),
        (pickle.dumps({"state_dict": "not tensors"}), "not one torch.save wrote"),
        (b"\x00\x01\x02\x03 binary", "starts with b'\\x00"),
    ],
)
def test_other_files_are_not_checkpoints(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointFileError) as raised:
        examine(path)
    assert raised.value.problem == "not-a-checkpoint"
    assert words in str(raised.value)


def test_checkpoints_without_tensors(tmp_path: Path) -> None:
    torch.save({"meta": {}, "state_dict": {}}, str(tmp_path / "empty.pth"))
    torch.save([torch.zeros(1)], str(tmp_path / "list.pth"))
    for name in ("empty.pth", "list.pth"):
        with pytest.raises(CheckpointFileError) as raised:
            examine(tmp_path / name)
        assert raised.value.problem == "no-tensors"


class RunsCode:
    """A pickle that runs a command when it is unpickled for real."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_nothing_in_the_file_is_run(tmp_path: Path) -> None:
    marker = tmp_path / "was-run"
    path = tmp_path / "model.pth"
    torch.save({"meta": {"x": RunsCode(marker)}, "state_dict": {"w": torch.ones(1)}}, str(path))
    assert examine(path).tensors == 1
    assert not marker.exists()
