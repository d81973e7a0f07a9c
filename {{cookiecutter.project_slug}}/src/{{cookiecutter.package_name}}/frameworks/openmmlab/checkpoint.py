"""Loading and saving the checkpoints the executor trusts, on every torch version.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7 calls
``torch.load`` without the argument, so its checkpoints (which pickle mmengine objects such as
``HistoryBuffer`` and numpy scalars in their ``meta``) no longer load. The fix here is
deliberately *not* global (no ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` in the image): full
unpickling is allowed only for the files below and only inside :func:`trusted_load` or
:func:`load_checkpoint`.

Trust model. Unpickling a file can run code, so a checkpoint is loaded fully only when it
comes from where the executor's own code comes from:

- ``/out`` (``ctx.env.output``, ``ctx.work_dir``): checkpoints this executor wrote itself;
- ``/in/models``: a model package the platform extracted for this task. YMIR only offers
  packages produced by training tasks (of this executor image or one the platform
  administrator registered), and the user picked it; it has the same trust as the image;
- ``/weights`` (``YMIR_WEIGHTS_DIR``): weights baked into the image when it was built.

Nothing else is ever given to ``torch.load``: never an asset, an annotation or a path taken
from a dataset or from free-form hyper-parameters. ``cfg_options`` can set ``load_from``; that
is the author's or operator's own choice, inside the container they configured.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator

import torch

from ...contract.errors import ErrorCode, ExecutorError
from . import checkpoint_file, weights

log = logging.getLogger(__name__)

# torch < 1.13 has no weights_only argument and always unpickles fully.
_HAS_WEIGHTS_ONLY = "weights_only" in inspect.signature(torch.load).parameters
_PATCH_MARK = "_ymir_trusted_load"


@contextlib.contextmanager
def trusted_load() -> Iterator[None]:
    """Inside this block, ``torch.load`` unpickles fully unless a caller says otherwise.

    For code that loads checkpoints the executor trusts (see the module docstring) through
    mmengine or mmdet, which call ``torch.load`` without ``weights_only``: ``runner.train()``
    with ``load_from``, ``init_detector``, ``mmengine.runner.load_checkpoint``. The original
    function is restored on exit, also after an exception; nesting is harmless. Not meant for
    use from several threads at once (the executor loads checkpoints from one thread).
    """
    original = torch.load
    if not _HAS_WEIGHTS_ONLY or getattr(original, _PATCH_MARK, False):
        yield
        return

    @functools.wraps(original)
    def load(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("weights_only", False)
        return original(*args, **kwargs)

    setattr(load, _PATCH_MARK, True)
    torch.load = load
    try:
        yield
    finally:
        torch.load = original


def torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load`` of a trusted file, unpickling fully on every torch version."""
    if _HAS_WEIGHTS_ONLY:
        return torch.load(str(path), map_location=map_location, weights_only=False)
    return torch.load(str(path), map_location=map_location)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """A trusted checkpoint as ``{"state_dict": ..., "meta": ...}`` (plus its other keys).

    Accepts mmengine checkpoints (``state_dict`` + ``meta``), bare state dicts and the
    ``model`` / ``module`` wrappers some trainers write.

    Raises:
        ExecutorError: MODEL, with a message that tells apart a missing file, one the task's
            user may not read, a damaged one, one that is no PyTorch checkpoint and one
            without tensors, and says what to do.
    """
    path = Path(path)
    try:
        with open(path, "rb"):
            pass
    except PermissionError as error:
        raise ExecutorError(ErrorCode.MODEL, _unreadable(path)) from error
    except OSError as error:  # FileNotFoundError, IsADirectoryError, ...
        raise ExecutorError(ErrorCode.MODEL, f"model weights {path} do not exist") from error
    try:
        loaded = torch_load(path, map_location=map_location)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise ExecutorError(ErrorCode.MODEL, _unloadable(path, error)) from error
    return normalise(loaded, path)


def _unreadable(path: Path) -> str:
    """Why the task's user cannot read ``path``, and the fix: for a Permission denied."""
    try:
        status = path.stat()
        found = f"the file is mode {stat.S_IMODE(status.st_mode):04o}, owned by uid {status.st_uid}"
    except OSError:
        found = "a folder on its path cannot be searched"
    if weights.weights_dir() in path.parents:
        fix = (
            "rebuild the image with this project's Dockerfile, which makes the baked weights "
            "readable by every user (YMIR may run the image as any uid)"
        )
    else:
        fix = "make it readable by every user (chmod a+rX) where it is stored"
    return (
        f"model weights {path} cannot be read by the user this task runs as (uid "
        f"{os.getuid()}, gid {os.getgid()}): {found}; {fix}"
    )


def _unloadable(path: Path, error: BaseException) -> str:
    """Why ``torch.load`` refused ``path``, told apart by reading the file's structure."""
    try:
        found = checkpoint_file.examine(path)
    except checkpoint_file.CheckpointFileError as problem:
        if problem.problem in ("truncated", "corrupt"):
            return (
                f"model weights {path.name} are damaged ({problem}); "
                "copy, export or train them again"
            )
        if problem.problem == "not-a-checkpoint":
            return f"model weights {path.name} are not a PyTorch checkpoint: {problem}"
        return f"model weights {path.name} contain no tensors: {problem}"
    except OSError as problem:
        return f"model weights {path.name} cannot be read: {_one_line(problem)}"
    return (
        f"model weights {path.name} ({found.describe()}) cannot be loaded by PyTorch "
        f"{torch.__version__}: {_one_line(error)}"
    )


def normalise(loaded: Any, path: str | os.PathLike = "checkpoint") -> dict:
    """``{"state_dict": {name: tensor}, "meta": dict, ...}`` from what ``torch.load`` gave.

    Raises:
        ExecutorError: MODEL when there is no state dict of tensors in it.
    """
    name = Path(path).name
    if not isinstance(loaded, Mapping):
        raise ExecutorError(
            ErrorCode.MODEL,
            f"model weights {name} hold a {type(loaded).__name__}, not a checkpoint dict",
        )
    state = checkpoint_file.state_dict_of(loaded, torch.is_tensor)
    if state is None:
        raise ExecutorError(ErrorCode.MODEL, f"model weights {name} contain no tensors")
    checkpoint = {} if state is loaded else dict(loaded)
    checkpoint["state_dict"] = dict(state)
    meta = checkpoint.get("meta")
    checkpoint["meta"] = dict(meta) if isinstance(meta, Mapping) else {}
    return checkpoint


def class_names(checkpoint: Mapping) -> list[str] | None:
    """The classes a checkpoint was trained on, when it says so.

    Our own stages store ``meta.class_names``; mmdet / mmseg checkpoints usually carry
    ``meta.dataset_meta.classes``; older OpenMMLab ones ``meta.CLASSES``.
    """
    meta = checkpoint.get("meta") or {}
    names = meta.get("class_names")
    if names is None and isinstance(meta.get("dataset_meta"), Mapping):
        names = meta["dataset_meta"].get("classes")
    if names is None:
        names = meta.get("CLASSES")
    if isinstance(names, (list, tuple)) and names:
        return [str(name) for name in names]
    return None


def save_checkpoint(path: str | os.PathLike, state_dict: Mapping, meta: Mapping) -> Path:
    """Write ``{"meta": meta, "state_dict": state_dict}`` atomically (temp file + rename).

    Tensors are moved to the CPU first, so the file loads on any device. A reader never sees a
    half-written file, which keeps a stage valid when the run is killed mid-save.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = {
        key: value.detach().cpu() if torch.is_tensor(value) else value
        for key, value in state_dict.items()
    }
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".pth", dir=str(path.parent))
    os.close(handle)
    try:
        torch.save({"meta": dict(meta), "state_dict": weights}, temporary)
        os.replace(temporary, str(path))
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:300]
