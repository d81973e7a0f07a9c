"""Trusted checkpoint loading on torch >= 2.6 (weights_only), scoped, and its failures."""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

from {{ cookiecutter.package_name }}.contract.errors import ErrorCode, ExecutorError
from {{ cookiecutter.package_name }}.frameworks.openmmlab import checkpoint, weights

WEIGHTS_ONLY_DEFAULT = "weights_only" in inspect.signature(torch.load).parameters and tuple(
    int(part) for part in torch.__version__.split("+")[0].split(".")[:2]
) >= (2, 6)


def mmengine_like_checkpoint(path: Path) -> Path:
    """A checkpoint with the objects mmengine puts in ``meta`` (not loadable weights-only)."""
    buffer = HistoryBuffer()
    buffer.update(1.0)
    torch.save(
        {
            "meta": {
                "class_names": ["cat", "dog"],
                "message_hub": dict(log_scalars=dict(loss=buffer)),
                "seed": np.int64(3),
            },
            "state_dict": {"layer.weight": torch.ones(2, 2)},
        },
        str(path),
    )
    return path


def test_trusted_checkpoint_loads_without_a_global_switch(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    path = mmengine_like_checkpoint(tmp_path / "model.pth")
    loaded = checkpoint.load_checkpoint(path)
    assert torch.equal(loaded["state_dict"]["layer.weight"], torch.ones(2, 2))
    assert checkpoint.class_names(loaded) == ["cat", "dog"]


@pytest.mark.skipif(not WEIGHTS_ONLY_DEFAULT, reason="torch < 2.6 unpickles fully by default")
def test_plain_torch_load_still_refuses_outside_the_scope(tmp_path: Path) -> None:
    path = mmengine_like_checkpoint(tmp_path / "model.pth")
    with pytest.raises(Exception, match=r"(?i)weights_only|unsupported global"):
        torch.load(str(path))
    with checkpoint.trusted_load():
        assert "meta" in torch.load(str(path))
    # The switch is scoped: gone after the block, also after an exception inside it.
    original = torch.load
    with pytest.raises(ValueError), checkpoint.trusted_load():
        raise ValueError("inside")
    assert torch.load is original
    with pytest.raises(Exception, match=r"(?i)weights_only|unsupported global"):
        torch.load(str(path))


def test_trusted_load_reaches_mmengine(tmp_path: Path) -> None:
    from mmengine.runner.checkpoint import _load_checkpoint

    path = mmengine_like_checkpoint(tmp_path / "model.pth")
    with checkpoint.trusted_load(), checkpoint.trusted_load():  # nesting is harmless
        loaded = _load_checkpoint(str(path), map_location="cpu")
    assert "state_dict" in loaded


def test_explicit_weights_only_is_respected(tmp_path: Path) -> None:
    path = tmp_path / "plain.pth"
    torch.save(dict(state_dict=dict(w=torch.zeros(1))), str(path))
    with checkpoint.trusted_load():
        assert "state_dict" in torch.load(str(path), weights_only=True)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "are not a PyTorch checkpoint: the file is empty"),
        (b"not a checkpoint at all", "are not a PyTorch checkpoint: it starts with 'not a"),
        (b"PK\x03\x04truncated zip", "are damaged (the zip archive has no directory"),
    ],
)
def test_corrupt_files_are_model_errors(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(ExecutorError) as raised:
        checkpoint.load_checkpoint(path)
    assert raised.value.code == ErrorCode.MODEL
    assert reason in raised.value.message


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_truncated_checkpoint_is_called_damaged(tmp_path: Path, legacy: bool) -> None:
    path = mmengine_like_checkpoint(tmp_path / "model.pth")
    torch.save(
        torch.load(str(path), weights_only=False),
        str(path),
        _use_new_zipfile_serialization=not legacy,
    )
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ExecutorError) as raised:
        checkpoint.load_checkpoint(path)
    assert raised.value.code == ErrorCode.MODEL
    assert "model weights model.pth are damaged" in raised.value.message
    assert "train them again" in raised.value.message


def test_missing_and_tensorless_files_are_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ExecutorError) as raised:
        checkpoint.load_checkpoint(tmp_path / "absent.pth")
    assert raised.value.code == ErrorCode.MODEL
    assert raised.value.message == f"model weights {tmp_path / 'absent.pth'} do not exist"
    torch.save(dict(meta=dict(), state_dict=dict()), str(tmp_path / "empty.pth"))
    with pytest.raises(ExecutorError, match="no tensors"):
        checkpoint.load_checkpoint(tmp_path / "empty.pth")
    torch.save([1, 2, 3], str(tmp_path / "list.pth"))
    with pytest.raises(ExecutorError, match="not a checkpoint"):
        checkpoint.load_checkpoint(tmp_path / "list.pth")


def load_as_another_user(path: Path) -> str:
    """The message :func:`checkpoint.load_checkpoint` gives for ``path`` when a user who may
    not read it loads it: this process when it is not root, else a forked child that drops to
    uid/gid 65534 (root reads every file, which would hide the failure)."""
    if os.geteuid() != 0:
        with pytest.raises(ExecutorError) as raised:
            checkpoint.load_checkpoint(path)
        return f"{raised.value.code} {raised.value.message}"
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                checkpoint.load_checkpoint(path)
                text = "loaded"
            except ExecutorError as error:
                text = f"{error.code} {error.message}"
            os.write(write, text.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as stream:
        text = stream.read().decode()
    os.waitpid(child, 0)
    return text


@pytest.mark.parametrize("baked", [True, False], ids=["baked", "model package"])
def test_unreadable_weights_say_so_with_the_uid_and_the_fix(
    tmp_path: Path, monkeypatch, baked: bool
) -> None:
    folder = Path(tempfile.mkdtemp(prefix="weights-"))  # searchable by others, unlike tmp_path
    try:
        folder.chmod(0o755)
        if baked:
            monkeypatch.setenv(weights.WEIGHTS_DIR_VARIABLE, str(folder))
        path = mmengine_like_checkpoint(folder / "rtmdet_tiny-78e30dcc.pth")
        path.chmod(0o600)  # what mkstemp made of every baked file before
        message = load_as_another_user(path)
    finally:
        shutil.rmtree(folder)
    assert message.startswith(f"{int(ErrorCode.MODEL)} model weights {path} cannot be read by ")
    assert "(uid " in message and "the file is mode 0600, owned by uid " in message
    if baked:
        assert "rebuild the image with this project's Dockerfile" in message
    else:
        assert "chmod a+rX" in message
    assert "corrupt" not in message and "damaged" not in message


def test_bare_state_dicts_and_dataset_meta_classes(tmp_path: Path) -> None:
    torch.save({"w": torch.zeros(3)}, str(tmp_path / "bare.pth"))
    loaded = checkpoint.load_checkpoint(tmp_path / "bare.pth")
    assert list(loaded["state_dict"]) == ["w"] and loaded["meta"] == {}
    assert checkpoint.class_names(loaded) is None
    meta = dict(dataset_meta=dict(classes=("person", "car")))
    coco_style = dict(meta=meta, state_dict={})
    assert checkpoint.class_names(coco_style) == ["person", "car"]


def test_save_is_atomic_and_cpu_only(tmp_path: Path) -> None:
    target = tmp_path / "stage" / "model.pth"
    checkpoint.save_checkpoint(target, {"w": torch.ones(2, requires_grad=True)}, {"epoch": 1})
    assert sorted(path.name for path in target.parent.iterdir()) == ["model.pth"]
    loaded = checkpoint.load_checkpoint(target)
    assert loaded["meta"] == {"epoch": 1}
    assert loaded["state_dict"]["w"].device.type == "cpu"
