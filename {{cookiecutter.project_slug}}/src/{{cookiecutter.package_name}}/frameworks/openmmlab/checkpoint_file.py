"""What a checkpoint file holds, read without PyTorch and without running any of its code.

The image build checks every weights file it bakes with :func:`examine` (its build stage has no
PyTorch), and :mod:`.checkpoint` uses it to say *why* a file that ``torch.load`` refused cannot
be loaded. Only the structure is read: the pickle inside is walked by an unpickler that replaces
every class it names with an inert stand-in, so a foreign or hostile pickle runs nothing here.

Both formats ``torch.save`` writes are understood:

- zip (PyTorch 1.6 and newer): ``<name>/data.pkl`` and one ``<name>/data/<key>`` member per
  storage. Every member's CRC is checked, and every storage the pickle refers to must be there
  with the bytes it says it has: a truncated or damaged download cannot pass.
- legacy (before PyTorch 1.6; OpenMMLab's checkpoints of 2019-2020 are of this kind): five
  pickles (magic number, protocol, system info, the object, the storage keys), then each storage
  as its element count (int64) and its bytes. Every storage must be there in full.

"The format the framework expects" is a dict holding a state dict of tensors (``state_dict``,
``model`` or ``module``, or the dict itself), as :func:`.checkpoint.normalise` reads it.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Mapping

# The first pickle of a legacy file (torch.serialization's MAGIC_NUMBER) and its protocol.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
ZIP_SIGNATURE = b"PK\x03\x04"
# Bytes per element of the storage classes torch pickles as ``torch.<Name>Storage``.
ELEMENT_SIZES = {
    "DoubleStorage": 8,
    "FloatStorage": 4,
    "HalfStorage": 2,
    "BFloat16Storage": 2,
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
    "ComplexFloatStorage": 8,
    "ComplexDoubleStorage": 16,
    "QInt8Storage": 1,
    "QUInt8Storage": 1,
    "QInt32Storage": 4,
    "QUInt4x2Storage": 1,
    "QUInt2x4Storage": 1,
    "UntypedStorage": 1,
}
# What the pickle may build for real: plain containers, nothing that runs code.
SAFE_CLASSES = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
    ("builtins", "bytearray"): bytearray,
}
STATE_DICT_KEYS = ("state_dict", "model", "module")


class CheckpointFileError(ValueError):
    """The file is not a usable PyTorch checkpoint.

    ``problem`` is one of ``not-a-checkpoint`` (another kind of file), ``truncated`` (it ends
    early), ``corrupt`` (damaged inside) or ``no-tensors`` (a checkpoint without weights); the
    message says what was found, in one line, without the file's name.
    """

    def __init__(self, problem: str, message: str):
        super().__init__(message)
        self.problem = problem


@dataclass(frozen=True)
class CheckpointFile:
    """What :func:`examine` found: the format, and the tensors of the state dict."""

    format: str  # "zip" or "legacy"
    tensors: int
    size: int  # bytes

    def describe(self) -> str:
        return f"{self.format} format, {self.tensors} tensors, {self.size / 1e6:.1f} MB"


def examine(path: str | os.PathLike) -> CheckpointFile:
    """Check that ``path`` is a complete PyTorch checkpoint holding a state dict of tensors.

    Raises:
        CheckpointFileError: it is not (the problem and a one-line reason).
        OSError: it cannot be opened or read (missing, permission denied).
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as stream:
        head = stream.read(len(ZIP_SIGNATURE))
        stream.seek(0)
        if size == 0:
            raise CheckpointFileError("not-a-checkpoint", "the file is empty")
        if head == ZIP_SIGNATURE:
            top = _examine_zip(stream)
            file_format = "zip"
        elif head[:1] == b"\x80":  # a pickle: the legacy format starts with one
            top = _examine_legacy(stream, size)
            file_format = "legacy"
        else:
            raise CheckpointFileError("not-a-checkpoint", f"it starts with {_show(stream)}")
    state = state_dict_of(top, lambda value: isinstance(value, _Tensor))
    if state is None:
        raise CheckpointFileError(
            "no-tensors",
            f"a PyTorch file, but it holds a {type(top).__name__} without a state dict of tensors",
        )
    tensors = sum(isinstance(value, _Tensor) for value in state.values())
    return CheckpointFile(file_format, tensors, size)


def state_dict_of(loaded: Any, is_tensor: Callable[[Any], bool]) -> Mapping | None:
    """The state dict inside a loaded checkpoint: under ``state_dict`` / ``model`` /
    ``module``, or the mapping itself when it holds only tensors; None when there is none
    with at least one tensor."""
    if not isinstance(loaded, Mapping):
        return None
    state = None
    for key in STATE_DICT_KEYS:
        if isinstance(loaded.get(key), Mapping):
            state = loaded[key]
            break
    if state is None and loaded and all(is_tensor(value) for value in loaded.values()):
        state = loaded
    if not state or not any(is_tensor(value) for value in state.values()):
        return None
    return state


# ---------------------------------------------------------------------------------------------
# the two formats


def _examine_zip(stream: IO[bytes]) -> Any:
    try:
        archive = zipfile.ZipFile(stream)
    except zipfile.BadZipFile as error:
        raise CheckpointFileError(
            "truncated", f"the zip archive has no directory at its end ({error}): cut short?"
        ) from error
    with archive:
        pickles = [name for name in archive.namelist() if name.rsplit("/", 1)[-1] == "data.pkl"]
        if len(pickles) != 1:
            raise CheckpointFileError(
                "not-a-checkpoint", "a zip archive, but not one torch.save wrote (no data.pkl)"
            )
        try:
            damaged = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise CheckpointFileError("corrupt", f"the zip archive is damaged: {error}") from error
        if damaged is not None:
            raise CheckpointFileError("corrupt", f"member {damaged} fails its CRC check")
        prefix = pickles[0][: -len("data.pkl")]
        unpickler = _Unpickler(io.BytesIO(archive.read(pickles[0])))
        try:
            top = unpickler.load_checked()
        except EOFError as error:
            raise CheckpointFileError("corrupt", "its data.pkl ends early") from error
        members = {info.filename: info.file_size for info in archive.infolist()}
        for storage in unpickler.storages.values():
            name = f"{prefix}data/{storage.key}"
            if name not in members:
                raise CheckpointFileError("corrupt", f"the archive lacks storage {name}")
            expected = storage.nbytes
            if expected is not None and members[name] != expected:
                raise CheckpointFileError(
                    "corrupt",
                    f"storage {name} has {members[name]} bytes, the tensors need {expected}",
                )
    return top


def _examine_legacy(stream: IO[bytes], size: int) -> Any:
    try:
        magic = _safe_load(stream)
    except Exception:  # any pickle error: a pickle of something else, or not a pickle at all
        magic = None
    if magic != LEGACY_MAGIC:
        stream.seek(0)
        raise CheckpointFileError(
            "not-a-checkpoint",
            f"a pickle, but not one torch.save wrote (it starts with {_show(stream)})",
        )
    try:
        protocol = _safe_load(stream)
        _safe_load(stream)  # system info: byte order and type sizes
        unpickler = _Unpickler(stream)
        top = unpickler.load_checked()
        keys = _safe_load(stream)
    except EOFError as error:
        raise CheckpointFileError("truncated", "the file ends inside its pickles") from error
    except pickle.UnpicklingError as error:
        raise CheckpointFileError("corrupt", f"its pickles are damaged: {error}") from error
    if protocol != LEGACY_PROTOCOL or not isinstance(keys, list):
        raise CheckpointFileError("corrupt", f"unknown legacy layout (protocol {protocol!r})")
    for key in keys:
        storage = unpickler.storages.get(str(key))
        header = stream.read(8)
        if len(header) < 8:
            raise CheckpointFileError("truncated", f"the file ends before storage {key}")
        (count,) = struct.unpack("<q", header)
        element_size = storage.element_size if storage and storage.element_size else None
        if element_size is None:
            raise CheckpointFileError("corrupt", f"storage {key} is of an unknown type")
        end = stream.tell() + count * element_size
        if end > size:
            raise CheckpointFileError(
                "truncated",
                f"the file ends {end - size} bytes before the end of storage {key}",
            )
        stream.seek(end)
    return top


# ---------------------------------------------------------------------------------------------
# unpickling without running anything


class _Inert:
    """Stands in for every class a checkpoint names: takes any arguments, state and items."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass

    def add(self, value: Any) -> None:
        pass


@dataclass
class _Storage:
    key: str
    count: int
    element_size: int | None  # None: a storage type this module does not know

    @property
    def nbytes(self) -> int | None:
        return None if self.element_size is None else self.count * self.element_size


class _Tensor(_Inert):
    """A tensor of the checkpoint: only where its data is matters here."""


def _rebuild(*args: Any, **kwargs: Any) -> Any:
    """torch's tensor and parameter rebuild functions: a tensor when they get one's data."""
    if any(isinstance(arg, (_Storage, _Tensor)) for arg in args):
        return _Tensor()
    return _Inert()


class _Unpickler(pickle.Unpickler):
    def __init__(self, stream: IO[bytes]):
        super().__init__(stream)
        self.storages: dict[str, _Storage] = {}

    def load_checked(self) -> Any:
        try:
            return self.load()
        except EOFError:
            raise
        except (pickle.UnpicklingError, ValueError, TypeError, IndexError, KeyError) as error:
            if "truncated" in str(error):  # how the C unpickler says it ran out of data
                raise EOFError(str(error)) from error
            raise CheckpointFileError("corrupt", f"its pickle is damaged: {error}") from error

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in SAFE_CLASSES:
            return SAFE_CLASSES[(module, name)]
        if module.startswith("torch") and name.startswith("_rebuild"):
            return _rebuild
        if module == "torch" and name.endswith("Storage"):
            return type(name, (_Inert,), {"element_size": ELEMENT_SIZES.get(name)})
        return type(name, (_Inert,), {})

    def persistent_load(self, pid: Any) -> _Storage:
        # ('storage', storage type, key, location, element count[, view metadata])
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.80}")
        storage = _Storage(str(pid[2]), int(pid[4]), getattr(pid[1], "element_size", None))
        return self.storages.setdefault(storage.key, storage)


class _NoClasses(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"unexpected class {module}.{name}")


def _safe_load(stream: IO[bytes]) -> Any:
    """One pickle of plain data (numbers, strings, lists, dicts)."""
    return _NoClasses(stream).load()


def _show(stream: IO[bytes]) -> str:
    """The first bytes of a file, as a person would recognise them."""
    head = stream.read(32)
    text = head.decode("utf-8", "replace")
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html", b"<?xml")):
        return f"{text.strip()[:32]!r} (a web page: an error page of the server or mirror?)"
    if all(32 <= byte < 127 or byte in (9, 10, 13) for byte in head):
        return f"{text[:32]!r} (text)"
    return repr(head[:16])
