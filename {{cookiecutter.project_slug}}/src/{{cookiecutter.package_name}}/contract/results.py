"""Validated, atomic writers for the task results the platform reads from ``/out``.

The formats and the platform's rules: docs/protocol.md#outputs.

Each writer accepts the author's values, checks them against the rules the platform's parsers
apply (and the stricter ones of the verifier), and refuses anything invalid with ``ValueError``
*before* writing: a file on disk is always complete and valid. Files are replaced atomically.

* :class:`TrainingResult` -> ``models/result.yaml`` (modern ``model_stages`` or legacy
  ``model`` + ``map``; rewritten after every stage so a killed run still leaves a usable model);
* :class:`DetectionResult` -> ``infer-result.json`` (``detection`` dict, integer boxes);
* :class:`SegmentationResult` -> ``infer-result.json`` (COCO with compressed RLE masks);
* :class:`MiningResult` -> ``result.tsv`` (one line per candidate, sorted descending).

The inference and mining writers scale to a million candidates: memory holds a few dozen bytes
per candidate and nothing per box. Each ``add()`` validates its values at once; they are
serialised (detection: a few thousand images at a time) to an anonymous spool file beside the
result, and ``write()`` assembles the file from it in candidate order, piece by piece, into a
temporary file that replaces the result atomically.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import numbers
import os
import struct
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO, Iterator, Sequence, Tuple, Union

import numpy as np
import yaml

from .atomic import open_atomic, write_text_atomic
from .box_json import BoxRowEncoder
from .candidates import CandidateList
from .errors import ExecutorError
from .images import image_size
from .masks import (
    decode_rle,
    encode_rle,
    mask_area,
    mask_bbox,
    rle_runs,
    runs_area,
    runs_bbox,
    runs_to_rle,
)
from .object_types import ObjectType

if TYPE_CHECKING:
    from .env import OutputPaths

PathLike = Union[str, "os.PathLike[str]"]


# Stage fields the platform reads as counts (ints >= 0), not as [0, 1] metrics.
COUNT_METRICS = frozenset({"tp", "fp", "fn"})
# Keys of a stage entry that are not metrics; a metric with one of these names would clash.
_STAGE_FIELDS = frozenset({"stage_name", "files", "timestamp"})

# The SDK's default: the 10 newest stages plus the best one (docs/protocol.md#training-result).
DEFAULT_MAX_STAGES = 11


def _number(value: Any, what: str) -> float:
    """A finite Python float from a Python/numpy/torch scalar; booleans and NaN are refused.

    yaml.safe_dump cannot represent numpy or torch scalars, and the platform's pydantic models
    would misread booleans, so everything is converted (and checked) here.
    """
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    if not isinstance(value, numbers.Real):
        item = getattr(value, "item", None)
        if item is None:
            raise ValueError(f"{what} must be a number, got {value!r}")
        try:
            value = item()
        except (TypeError, ValueError):
            raise ValueError(f"{what} must be a scalar number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{what} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return number


def _unit_float(value: Any, what: str) -> float:
    number = _number(value, what)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{what} must be in [0, 1] (not a percentage), got {value!r}")
    return number


def _count(value: Any, what: str) -> int:
    number = _number(value, what)
    if number < 0 or number != int(number):
        raise ValueError(f"{what} must be an integer >= 0, got {value!r}")
    return int(number)


def _stage_name(name: Any) -> str:
    """The SDK's stage-name rule: numbers become ``stage_<n>``, others must be identifiers."""
    if isinstance(name, bool):
        raise ValueError(f"stage name must be a string, got {name!r}")
    if isinstance(name, numbers.Integral):
        name = f"stage_{int(name)}"
    name = str(name)
    if name.isdigit():
        name = "stage_" + name
    if "@" in name:
        # The platform refers to stages as "<model_hash>@<stage_name>".
        raise ValueError(f"stage name must not contain '@': {name!r}")
    if not name.replace("-", "_").isidentifier():
        raise ValueError(
            "stage name must be an identifier (letters, digits, '_' or '-', not starting with a "
            f"digit), got {name!r}"
        )
    return name


def _normalise_class_names(class_names: Sequence[str]) -> tuple[list[str], dict[str, int]]:
    names = [str(name) for name in class_names]
    if not names:
        raise ValueError("class_names must not be empty")
    lookup: dict[str, int] = {}
    for index, name in enumerate(names):
        key = name.strip().lower()
        if not key:
            raise ValueError("class_names must not contain empty names")
        if key in lookup:
            raise ValueError(f"class_names must be unique, {name!r} appears twice")
        lookup[key] = index
    return names, lookup


def _class_index(value: Any, names: list[str], lookup: dict[str, int]) -> int:
    """Class index from an index into ``class_names`` or from a name (case/space-insensitive)."""
    if isinstance(value, (str, bytes)):
        text = value.decode("utf-8") if isinstance(value, bytes) else value
        key = text.strip().lower()
        if key not in lookup:
            raise ValueError(f"unknown class name {text!r}; class_names are {names}")
        return lookup[key]
    index = _number(value, "class id")
    if index != int(index) or not 0 <= int(index) < len(names):
        raise ValueError(f"class id {value!r} is out of range for {len(names)} class_names")
    return int(index)


def _dump_json(data: Any) -> str:
    # allow_nan=False: NaN/Infinity are not JSON and the platform's json.loads would accept
    # them only to fail later; ASCII output keeps non-ASCII file names independent of encodings.
    return json.dumps(data, allow_nan=False, ensure_ascii=True) + "\n"


class TrainingResult:
    """Writes ``result.yaml`` (docs/protocol.md#training-result) after every :meth:`add_stage`.

    Modern protocol: ``model_stages`` with one entry per stage, files looked up (like the
    platform when it packs the model) in ``<models_dir>/<stage>/`` then ``<models_dir>/``.
    Legacy protocol (YMIR 1.1, detection only): ``model`` (the best stage's files, which must lie
    directly in ``models_dir``) and ``map``. The two formats are never mixed: a top-level
    ``model`` key would make the platform ignore ``model_stages``.

    ``mAP`` is written in every stage because YMIR 2.0 requires it: detection's own metric;
    for instance segmentation the given ``mAP``, else ``boxAP``; for semantic segmentation the
    given ``mAP``, else 0.0 (box AP does not apply to a label map, and 0.0 is the platform's own
    default for a missing metric).
    """

    def __init__(
        self,
        output: OutputPaths,
        object_type: int,
        legacy: bool,
        max_stages: int = DEFAULT_MAX_STAGES,
    ) -> None:
        if object_type not in {member.value for member in ObjectType}:
            raise ValueError(f"object_type must be {ObjectType.names()}, got {object_type!r}")
        if legacy and object_type != ObjectType.DETECTION:
            raise ValueError("the legacy protocol (YMIR 1.1) supports detection only")
        if isinstance(max_stages, bool) or not isinstance(max_stages, int) or max_stages < 1:
            raise ValueError(f"max_stages must be a positive integer, got {max_stages!r}")
        self.output = output
        self.object_type = ObjectType(object_type)
        self.legacy = bool(legacy)
        self.max_stages = max_stages
        self.result_file = Path(output.training_result_file)
        self.models_dir = Path(output.models_dir)
        self.main_metric = self.object_type.main_metric
        self._stages: dict[str, dict[str, Any]] = {}
        self._order: dict[str, int] = {}
        self._counter = 0
        self._evaluate_config: dict[str, float] | None = None

    # -- public API ---------------------------------------------------------------------

    def stage_dir(self, name: str) -> Path:
        """The folder to save stage ``name``'s files into: ``models_dir/<name>/``, or
        ``models_dir`` itself on the legacy protocol, where YMIR 1.1 extracts a single model,
        flat (docs/protocol.md#training-result). Frameworks that keep a ``last`` and a ``best``
        stage get one folder for both there: only the best fits."""
        return self.models_dir if self.legacy else self.models_dir / _stage_name(name)

    @property
    def best_stage_name(self) -> str | None:
        """The stage with the highest main metric (newest on ties); ``None`` before any stage."""
        if not self._stages:
            return None
        return max(self._stages, key=self._rank)

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        """A copy of the stages kept so far, as they are written."""
        return {name: dict(stage) for name, stage in self._stages.items()}

    def add_stage(
        self,
        name: str | int,
        files: Sequence[PathLike],
        metrics: dict[str, Any],
        timestamp: int | None = None,
        evaluate_config: dict[str, Any] | None = None,
    ) -> None:
        """Record a stage (a saved model) and rewrite ``result.yaml``.

        Args:
            name: stage name; an identifier (``-`` allowed), numbers become ``stage_<n>``.
                Re-using a name replaces that stage.
            files: the stage's files, relative to ``models_dir/<name>/`` or ``models_dir``
                (absolute paths inside ``models_dir`` are accepted and made relative). They
                must exist and must not be symlinks. Legacy: directly inside ``models_dir``.
            metrics: floats in [0, 1] (numpy/torch scalars are converted); must include the
                target's main metric (``ObjectType.main_metric``). ``tp``/``fp``/``fn`` are counts.
            timestamp: seconds since the epoch (default: now).
            evaluate_config: ``{name: float}`` stored with the model (e.g. ``conf_thr``).

        Raises:
            ValueError: for anything the platform would reject; nothing is written then.
        """
        stage_name = _stage_name(name)
        stage_files = self._check_files(stage_name, files)
        stage_metrics = self._check_metrics(metrics)
        if timestamp is None:
            timestamp = int(time.time())
        stamp = _number(timestamp, "timestamp")
        if stamp != int(stamp) or stamp <= 0:
            # The platform rejects a zero timestamp ("not values['timestamp']").
            raise ValueError(f"timestamp must be a positive integer, got {timestamp!r}")
        config = self._check_evaluate_config(evaluate_config)

        stage: dict[str, Any] = {
            "stage_name": stage_name,
            "files": stage_files,
            "timestamp": int(stamp),
        }
        stage.update(stage_metrics)

        stages = dict(self._stages)
        order = dict(self._order)
        stages[stage_name] = stage
        order[stage_name] = self._counter
        stages, order = self._trim(stages, order)
        evaluate = config if config is not None else self._evaluate_config
        document = self._document(stages, order, evaluate)
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
        # The file must read back exactly as the platform will read it.
        if yaml.safe_load(text) != document:
            raise ValueError("result.yaml would not read back as written")
        write_text_atomic(self.result_file, text)

        self._stages, self._order = stages, order
        self._counter += 1
        self._evaluate_config = evaluate

    # -- validation ---------------------------------------------------------------------

    def _check_files(self, stage_name: str, files: Sequence[PathLike]) -> list[str]:
        if isinstance(files, (str, bytes, os.PathLike)):
            raise ValueError(f"files must be a list of paths, got a single {files!r}")
        checked: list[str] = []
        for item in files:
            relative = self._relative(stage_name, item)
            if relative not in checked:
                checked.append(relative)
        if not checked:
            raise ValueError(f"stage {stage_name!r} lists no files")
        return checked

    def _bases(self, stage_name: str) -> list[Path]:
        # The platform's packing order: the stage folder first, then the models folder.
        if self.legacy:
            return [self.models_dir]
        return [self.models_dir / stage_name, self.models_dir]

    def _relative(self, stage_name: str, item: PathLike) -> str:
        path = Path(item)
        bases = self._bases(stage_name)
        if path.is_absolute():
            absolute = os.path.normpath(str(path))
            options = []
            for base in bases:
                prefix = os.path.normpath(str(base)) + os.sep
                if absolute.startswith(prefix):
                    options.append(absolute[len(prefix) :])
            if not options:
                raise ValueError(
                    f"model file {path} is outside the models folder {self.models_dir}"
                )
            # Relative to the innermost folder, i.e. the one the platform looks in first.
            relative = options[0]
        else:
            relative = str(path)
        parts = PurePosixPath(relative.replace(os.sep, "/")).parts
        if not parts or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"model file name {str(item)!r} must stay inside the models folder")
        relative = "/".join(parts)
        if self.legacy and len(parts) != 1:
            raise ValueError(
                f"legacy protocol: model files must lie directly in {self.models_dir}, "
                f"got {relative!r}"
            )
        for base in bases:
            candidate = base / relative
            if candidate.is_symlink():
                raise ValueError(
                    f"model file {candidate} is a symlink; the platform packs real files only"
                )
            if candidate.is_file():
                return relative
            if candidate.exists():
                raise ValueError(f"model file {candidate} is not a regular file")
        raise ValueError(
            "model file {!r} not found in {}".format(
                relative, " or ".join(str(base) for base in bases)
            )
        )

    def _check_metrics(self, metrics: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(metrics, dict):
            raise ValueError(f"metrics must be a dict, got {metrics!r}")
        checked: dict[str, Any] = {}
        for key, value in metrics.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"metric names must be non-empty strings, got {key!r}")
            if key in _STAGE_FIELDS:
                raise ValueError(f"{key!r} is a stage field, not a metric")
            if key in COUNT_METRICS:
                checked[key] = _count(value, f"metric {key!r}")
            else:
                checked[key] = _unit_float(value, f"metric {key!r}")
        if self.main_metric not in checked:
            raise ValueError(
                f"metrics must include {self.main_metric!r}, the main metric of this target"
            )
        if "mAP" not in checked:
            instance = self.object_type is ObjectType.INSTANCE_SEGMENTATION
            checked["mAP"] = checked.get("boxAP", 0.0) if instance else 0.0
        # mAP first: it is the one field every platform version reads.
        ordered = {"mAP": checked.pop("mAP")}
        ordered.update(checked)
        return ordered

    @staticmethod
    def _check_evaluate_config(config: dict[str, Any] | None) -> dict[str, float] | None:
        if config is None:
            return None
        if not isinstance(config, dict):
            raise ValueError(f"evaluate_config must be a dict, got {config!r}")
        checked: dict[str, float] = {}
        for key, value in config.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"evaluate_config keys must be strings, got {key!r}")
            # The platform's model meta declares Dict[str, float].
            checked[key] = _number(value, f"evaluate_config {key!r}")
        return checked

    # -- document -----------------------------------------------------------------------

    def _rank(
        self,
        name: str,
        stages: dict[str, dict[str, Any]] | None = None,
        order: dict[str, int] | None = None,
    ) -> tuple[float, int, int]:
        stages = self._stages if stages is None else stages
        order = self._order if order is None else order
        stage = stages[name]
        return (stage[self.main_metric], stage["timestamp"], order[name])

    def _best(self, stages: dict[str, dict[str, Any]], order: dict[str, int]) -> str:
        return max(stages, key=lambda name: self._rank(name, stages, order))

    def _trim(self, stages: dict[str, dict[str, Any]], order: dict[str, int]):
        """Keep the newest stages plus the best one (files of dropped stages are left alone)."""
        if len(stages) <= self.max_stages:
            return stages, order
        best = self._best(stages, order)
        newest_first = sorted(
            (name for name in stages if name != best),
            key=lambda name: (stages[name]["timestamp"], order[name]),
            reverse=True,
        )
        keep = set(newest_first[: self.max_stages - 1]) | {best}
        return (
            {name: stage for name, stage in stages.items() if name in keep},
            {name: rank for name, rank in order.items() if name in keep},
        )

    def _document(
        self,
        stages: dict[str, dict[str, Any]],
        order: dict[str, int],
        evaluate: dict[str, float] | None,
    ) -> dict[str, Any]:
        best = self._best(stages, order)
        if self.legacy:
            # YMIR 1.1 reads exactly these two keys (and KeyErrors without "map").
            return {"model": list(stages[best]["files"]), "map": stages[best]["mAP"]}
        document: dict[str, Any] = {
            "best_stage_name": best,
            "model_stages": {
                name: stages[name]
                for name in sorted(stages, key=lambda key: (stages[key]["timestamp"], order[key]))
            },
            self.main_metric: stages[best][self.main_metric],
            "mAP": stages[best]["mAP"],
        }
        if evaluate:
            document["evaluate_config"] = dict(evaluate)
        # Read by YMIR 2.1 to 2.3 (model type), ignored by 2.4+.
        document["object_type"] = int(self.object_type)
        return document


# -- the streamed writers: inference and mining -----------------------------------------------


class _Spool:
    """Per-candidate byte records kept on disk until the result file is assembled.

    A million candidates' results do not fit in memory, so each ``add()`` serialises its
    entries at once into an anonymous temporary file beside the result (the kernel frees it
    when the process ends, also on ``docker kill``: nothing is left in ``/out``). Memory holds
    only where each candidate's record starts and how long it is: 16 bytes per candidate.
    """

    def __init__(self, directory: Path, count: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        # Closed by close() or with the writer; the OS removes it in any case.
        self._file = tempfile.TemporaryFile(  # noqa: SIM115
            dir=str(directory), prefix=".spool-", buffering=_SPOOL_BUFFER
        )
        self._end = 0
        self._offsets = np.full(count, -1, dtype=np.int64)
        self._lengths = np.zeros(count, dtype=np.int64)

    def put(self, index: int, record: bytes) -> None:
        """Store ``record`` as candidate ``index``'s (replacing an earlier one)."""
        self._file.write(record)
        self._offsets[index] = self._end
        self._lengths[index] = len(record)
        self._end += len(record)

    def put_new(self, indices: list[int], records: list[bytes]) -> bool:
        """Store each of ``records`` as the record of the candidate at the same place in
        ``indices``, in one write; ``False`` (nothing stored) if one of them has a record
        already or appears twice, for :meth:`put` to extend them one by one."""
        where = np.array(indices, dtype=np.int64)
        if len(set(indices)) < len(indices) or (self._offsets[where] >= 0).any():
            return False
        lengths = np.fromiter(map(len, records), dtype=np.int64, count=len(records))
        ends = self._end + np.cumsum(lengths)
        self._file.write(b"".join(records))
        self._offsets[where] = ends - lengths
        self._lengths[where] = lengths
        self._end = int(ends[-1]) if len(ends) else self._end
        return True

    def get(self, index: int) -> bytes | None:
        """Candidate ``index``'s record, or ``None`` when it has none."""
        offset = int(self._offsets[index])
        if offset < 0:
            return None
        self._file.flush()
        return os.pread(self._file.fileno(), int(self._lengths[index]), offset)

    def records(self) -> Iterator[bytes | None]:
        """Every candidate's record (``None``: none), in candidate order.

        Records added in candidate order lie one after the other: they are read in blocks of
        a few megabytes; others one by one.
        """
        self._file.flush()
        fd = self._file.fileno()
        block, block_start = b"", 0
        for offset, length in zip(self._offsets.tolist(), self._lengths.tolist()):
            if offset < 0:
                yield None
                continue
            position = offset - block_start
            if position >= 0 and position + length <= len(block):
                yield block[position : position + length]
                continue
            block_start = offset
            block = os.pread(fd, max(length, _SPOOL_BLOCK), offset)
            yield block[:length]

    def runs(self) -> Iterator[tuple[int, int, int, int]]:
        """``(first, end, offset, length)``: runs of candidates ``first`` to ``end - 1`` whose
        records lie one after the other in the file, in candidate order (records added in
        candidate order make one run); the candidates between runs have no record."""
        offsets, lengths = self._offsets, self._lengths
        present = offsets >= 0
        follows = np.zeros(len(offsets) + 1, dtype=bool)  # the last entry ends the last run
        follows[1:-1] = present[1:] & present[:-1] & (offsets[1:] == offsets[:-1] + lengths[:-1])
        starts = np.flatnonzero(present & ~follows[:-1])
        breaks = np.flatnonzero(~follows[1:]) + 1  # where each run ends
        ends = breaks[np.searchsorted(breaks, starts, side="right")]
        for first, end in zip(starts.tolist(), ends.tolist()):
            offset = int(offsets[first])
            yield first, end, offset, int(offsets[end - 1] + lengths[end - 1]) - offset

    def copy(self, stream: BinaryIO, offset: int, length: int) -> None:
        """Append ``length`` bytes of the file from ``offset`` to ``stream``.

        The kernel copies them (``copy_file_range``) without passing through Python where the
        system allows it; otherwise they are read and written a few megabytes at a time.
        """
        self._file.flush()
        source = self._file.fileno()
        if _kernel_copy(source, stream, offset, length):
            return
        for start in range(offset, offset + length, _SPOOL_BLOCK):
            stream.write(os.pread(source, min(_SPOOL_BLOCK, offset + length - start), start))

    def close(self) -> None:
        self._file.close()


def _kernel_copy(source: int, stream: BinaryIO, offset: int, length: int) -> bool:
    """Append a byte range of file ``source`` to ``stream`` in the kernel; False if it cannot.

    ``copy_file_range`` writes at the target's file position: ``stream`` is flushed first,
    and it writes there afterwards. Python < 3.8 lacks it, and some file systems refuse it
    (EXDEV, ENOSYS, EINVAL, EOPNOTSUPP): nothing is copied then.
    """
    copy_file_range = getattr(os, "copy_file_range", None)
    if copy_file_range is None or not length:
        return not length
    stream.flush()
    target = stream.fileno()
    try:
        copied = copy_file_range(source, target, length, offset)
    except OSError:
        return False
    if not copied:  # nothing copied: a file system that only pretends to support it
        return False
    while copied < length:
        step = copy_file_range(source, target, length - copied, offset + copied)
        if step <= 0:
            raise OSError(f"copy_file_range stopped {length - copied} bytes short")
        copied += step
    return True


# Records read at once when assembling a result (and the size of the pieces written out).
_SPOOL_BLOCK = 4 << 20
# Records written to the spool file at once: one system call per megabyte, not per record.
_SPOOL_BUFFER = 1 << 20

# Types whose values the array path of DetectionResult.add() takes as they are (anything else,
# e.g. booleans, strings or torch scalars, goes through the per-box checks).
_PLAIN_NUMBERS = frozenset({float, int, np.float64, np.float32, np.int64, np.int32})
# Coordinates beyond this are handled box by box: float64 rounding stays exact below it.
_EXACT_LIMIT = float(2**52)
# Boxes (and images) gathered before they are formatted: a few megabytes at most.
_BATCH_BOXES = 1 << 13
_BATCH_ITEMS = 1 << 12

# One detection entry exactly as json.dumps writes it (default separators, ensure_ascii); the
# fields in this order are what BoxRowEncoder lays out (see _BoxBatch).
_BOX_JSON = (
    '{"box": {"x": %s, "y": %s, "w": %s, "h": %s, "rotate_angle": 0.0}, '
    '"class_name": %s, "score": %r}'
)
# YMIR 1.1's Rect has no rotate_angle: its protobuf parser refuses the whole result with one.
_LEGACY_BOX_JSON = '{"box": {"x": %s, "y": %s, "w": %s, "h": %s}, "class_name": %s, "score": %r}'

Box = Tuple[Any, Any, Any, Any, Any, Any]


@functools.lru_cache(maxsize=256)
def _doubles(count: int) -> struct.Struct:
    """Packs ``count`` numbers into doubles (one per box count seen)."""
    return struct.Struct(f"{count}d")


class _BoxCheck:
    """``add()``'s checks of many boxes at once, for plain numbers (the array path).

    Calling it returns the boxes as a new float64 ``(n, 6)`` array when every value is a plain
    number within its limits and every class id is whole; ``None`` for anything else (class
    names, booleans, torch scalars, NaN, out-of-range values), and the per-box path then
    decides and names the first bad box. At 30 boxes an image numpy's fixed cost per call is
    most of the time, so the values are checked as one flat array in four calls.
    """

    def __init__(self, classes: int) -> None:
        # The lowest and highest value of each of a box's six numbers, and both repeated for
        # the most boxes seen so far.
        self._low = np.array([-_EXACT_LIMIT] * 4 + [0.0, 0.0])
        self._high = np.array([_EXACT_LIMIT] * 4 + [classes - 1.0, 1.0])
        self._lows = self._highs = np.empty(0)

    def __call__(self, boxes: Sequence[Box] | np.ndarray) -> np.ndarray | None:
        if isinstance(boxes, np.ndarray):
            if boxes.dtype.kind not in "fiu" or boxes.ndim != 2 or boxes.shape[1] != 6:
                return None  # booleans and objects: checked box by box
            values = boxes.astype(np.float64).ravel()  # a copy: the caller may reuse its buffer
        else:
            try:
                flat = list(itertools.chain.from_iterable(boxes))
                if set(map(len, boxes)) != {6} or not set(map(type, flat)) <= _PLAIN_NUMBERS:
                    return None
                # struct packs a list of numbers into doubles twice as fast as numpy reads it.
                values = np.frombuffer(_doubles(len(flat)).pack(*flat), dtype=np.float64)
            except (TypeError, ValueError, OverflowError):
                return None
        return values.reshape(-1, 6) if self._valid(values) else None

    def _valid(self, values: np.ndarray) -> bool:
        if len(values) > len(self._lows):
            self._lows = np.tile(self._low, len(values) // 6)
            self._highs = np.tile(self._high, len(values) // 6)
        # What the values would be if they were valid, bit for bit (fmax and fmin turn NaN into
        # a limit, -0.0 may become 0.0: both then take the per-box path).
        valid = np.fmin(np.fmax(values, self._lows[: len(values)]), self._highs[: len(values)])
        classes = valid[4::6]
        np.floor(classes, out=classes)
        return valid.tobytes() == values.tobytes()


class _BoxBatch:
    """Checked boxes of many ``add()`` calls, made integer and formatted together.

    At 30 boxes per image numpy's cost per call, not per box, is what counts: clipping and
    rounding one image's boxes took more time than formatting them. Gathered over thousands of
    images, the arithmetic costs nearly nothing per box, and :class:`BoxRowEncoder` writes all
    their JSON at once. The arithmetic is :meth:`DetectionResult._entry`'s: float64
    throughout, numpy's rounding is Python's (half to even), and an image of unknown size has
    infinite bounds.
    """

    def __init__(self, box_json: str, name_json: list[str]) -> None:
        self._box_json = box_json
        self._name_json = name_json
        self._encoder = BoxRowEncoder(box_json, name_json)
        # (candidate index, float64 boxes or their JSON, (width, height) or None), in add order.
        self._items: list[tuple[int, Any, Any]] = []
        self._boxes = 0

    def add_values(self, index: int, values: np.ndarray, bounds: tuple[int, int] | None) -> None:
        self._items.append((index, values, (np.inf, np.inf) if bounds is None else bounds))
        self._boxes += len(values)

    def add_text(self, index: int, entries: list[str]) -> None:
        """Boxes the per-box path checked and formatted."""
        self._items.append((index, ", ".join(entries).encode("ascii"), None))
        self._boxes += len(entries)

    def full(self) -> bool:
        return self._boxes >= _BATCH_BOXES or len(self._items) >= _BATCH_ITEMS

    def render(self) -> tuple[list[int], list[bytes]]:
        """The items with kept boxes and their JSON (the boxes joined by ", "), in add order;
        the batch empties."""
        items, self._items, self._boxes = self._items, [], 0
        arrays = [item for item in items if not isinstance(item[1], bytes)]
        formatted = iter(self._format(arrays)) if arrays else iter(())
        indices, texts = [], []
        for index, boxes, _ in items:
            text = boxes if isinstance(boxes, bytes) else next(formatted)
            if text:
                indices.append(index)
                texts.append(text)
        return indices, texts

    def _format(self, items: list[tuple[int, Any, Any]]) -> list[bytes]:
        counts = [len(values) for _, values, _ in items]
        values = np.concatenate([values for _, values, _ in items])
        limits = np.array([bounds for _, _, bounds in items], dtype=np.float64)
        integers = np.empty((len(values), 4), dtype=np.int64)  # x, y, w, h
        kept = np.ones(len(values), dtype=bool)
        # x and w, then y and h: 1-D arithmetic (on (n, 2) slices it took 2.5 times as long).
        for axis in (0, 1):
            limit = np.repeat(limits[:, axis], counts)
            near = np.maximum(values[:, axis], 0.0)
            far = np.minimum(values[:, axis] + values[:, axis + 2], limit)
            kept &= far > near
            start = np.round(near)
            # A sliver thinner than a pixel still marks an object: keep it one pixel wide.
            size = np.maximum(np.round(far) - start, 1.0)
            integers[:, axis] = np.maximum(np.minimum(start, limit - size), 0.0)
            integers[:, axis + 2] = size
        classes, scores = values[:, 4].astype(np.int64), values[:, 5]
        kept_counts = counts
        if not kept.all():
            integers, classes, scores = integers[kept], classes[kept], scores[kept]
            owners = np.repeat(np.arange(len(items)), counts)
            kept_counts = np.bincount(owners[kept], minlength=len(items)).tolist()
        texts, position = [], 0
        for text, count in zip(
            self._encoder.encode(integers, classes, scores, kept_counts), kept_counts
        ):
            if text is None:  # a box only the template writes exactly
                rows = range(position, position + count)
                text = self._template_text(integers[rows], classes[rows], scores[rows])
            texts.append(text)
            position += count
        return texts

    def _template_text(
        self, integers: np.ndarray, classes: np.ndarray, scores: np.ndarray
    ) -> bytes:
        entries = [
            self._box_json % (*box, self._name_json[label], score)
            for box, label, score in zip(integers.tolist(), classes.tolist(), scores.tolist())
        ]
        return ", ".join(entries).encode("ascii")


def _image_size(size: Any) -> tuple[int, int]:
    """``(width, height)`` given to ``add()``: positive integers (floats are truncated)."""
    width, height = size
    if type(width) is not int or type(height) is not int:  # the usual case needs no checks
        width, height = int(_number(width, "image size")), int(_number(height, "image size"))
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {size!r}")
    return width, height


def _json_string(text: str) -> str:
    # What json.dumps(text, ensure_ascii=True) writes, without its per-call overhead.
    return json.encoder.encode_basestring_ascii(text)


class DetectionResult:
    """Collects boxes per candidate and writes the detection ``infer-result.json``.

    See docs/protocol.md#infer-result-detection.

    Boxes become integer ``x, y, w, h`` (top-left corner and size), clipped to the image when
    its size is known; boxes that end up empty are dropped. Class ids or names are turned into
    names from ``class_names``; scores must be in [0, 1]. Every candidate appears in the file.
    Legacy protocol: the per-image key is ``annotations`` (YMIR 1.1), otherwise ``boxes``.

    A candidate without boxes is written as ``{"boxes": [], "annotations": []}`` (legacy:
    ``{"annotations": []}``): YMIR 2.3 reads ``entry.get("boxes") or entry.get("annotations")``,
    so an empty ``boxes`` alone falls through to the missing key and logs ``invalid
    annotations: None`` once per such candidate; with both keys every version reads an empty
    list.

    Each :meth:`add` checks its boxes at once; their JSON goes to a spool file (see
    :class:`_Spool`) with that of a few thousand other images (see :class:`_BoxBatch`), and
    :meth:`write` assembles the file in candidate order. Memory does not grow with the boxes:
    a few dozen bytes per candidate.
    """

    def __init__(
        self,
        output: OutputPaths,
        candidates: Sequence[PathLike],
        class_names: Sequence[str],
        legacy: bool,
    ) -> None:
        self.output = output
        self.result_file = Path(output.infer_result_file)
        self.legacy = bool(legacy)
        self._box_json = _LEGACY_BOX_JSON if self.legacy else _BOX_JSON
        self._candidates = _unique_names(candidates)
        self._names, self._lookup = _normalise_class_names(class_names)
        self._name_json = [_json_string(name) for name in self._names]
        self._batch = _BoxBatch(self._box_json, self._name_json)
        self._check_boxes = _BoxCheck(len(self._names))
        self._list_key = b'"annotations": [' if self.legacy else b'"boxes": ['
        count = len(self._candidates)
        # Image sizes: 0 = not looked up yet, -1 = unreadable (boxes only clipped at 0).
        self._widths = np.zeros(count, dtype=np.int64)
        self._heights = np.zeros(count, dtype=np.int64)
        self._spool = _Spool(self.result_file.parent, count)

    def _size(self, index: int) -> tuple[int, int] | None:
        if self._widths[index] == 0:
            try:
                width, height = image_size(self._candidates[index])
            except (ExecutorError, OSError):
                # An unreadable image is reported by whoever reads it; boxes are then only
                # clipped at the top-left.
                width = height = -1
            self._widths[index], self._heights[index] = width, height
        if self._widths[index] < 0:
            return None
        return int(self._widths[index]), int(self._heights[index])

    def add(
        self, image: PathLike, boxes: Sequence[Box], size: tuple[int, int] | None = None
    ) -> None:
        """Add boxes ``(x, y, w, h, class_id_or_name, score)`` for one candidate image.

        ``size`` is the image's ``(width, height)``; when omitted it is read from the file's
        header. Raises ``ValueError`` for unknown images or classes, bad numbers or scores;
        nothing is added then.
        """
        index = _candidate_index(image, self._candidates)
        bounds: tuple[int, int] | None
        if size is not None:
            bounds = self._widths[index], self._heights[index] = _image_size(size)
        else:
            bounds = self._size(index)
        if not isinstance(boxes, (list, tuple, np.ndarray)) and not isinstance(boxes, Sequence):
            boxes = list(boxes)  # e.g. a generator
        # The array path is faster from one box on (14 us against 15 for one box, 15 against
        # 42 for four); the per-box path decides what it refuses, and names the bad box.
        values = self._check_boxes(boxes) if len(boxes) else None
        if values is not None:
            self._batch.add_values(index, values, bounds)
        else:
            entries = (self._entry(box, bounds) for box in boxes)
            texts = [self._box_json % entry for entry in entries if entry is not None]
            if texts:
                self._batch.add_text(index, texts)
        if self._batch.full():
            self._flush()

    def _entry(self, box: Box, bounds: tuple[int, int] | None) -> tuple | None:
        """One box checked and made integer: the values of ``_BOX_JSON``; None when empty."""
        try:
            x, y, w, h, label, score = box
        except (TypeError, ValueError):
            raise ValueError(f"a box must be (x, y, w, h, class, score), got {box!r}") from None
        x0, y0 = _number(x, "box x"), _number(y, "box y")
        x1, y1 = x0 + _number(w, "box w"), y0 + _number(h, "box h")
        class_index = _class_index(label, self._names, self._lookup)
        confidence = _unit_float(score, "score")
        x0, y0 = max(0.0, x0), max(0.0, y0)
        if bounds is not None:
            x1, y1 = min(float(bounds[0]), x1), min(float(bounds[1]), y1)
        if x1 <= x0 or y1 <= y0:
            return None
        left, top = round(x0), round(y0)
        # A sliver thinner than a pixel still marks an object: keep it one pixel wide.
        width = max(1, round(x1) - left)
        height = max(1, round(y1) - top)
        if bounds is not None:
            left = max(0, min(left, bounds[0] - width))
            top = max(0, min(top, bounds[1] - height))
        return (left, top, width, height, self._name_json[class_index], confidence)

    def _flush(self) -> None:
        """Move the batch's boxes, formatted, into the spool (after earlier ones of an image).

        A record is the image's whole entry with the separator before it,
        ``, "<name>": {"boxes": [...]}``: :meth:`write` then copies runs of records as they lie.
        """
        indices, texts = self._batch.render()
        names = map(_json_string, map(self._candidates.basename, indices))
        records = [
            b"".join((b", ", name.encode("ascii"), b": {", self._list_key, boxes, b"]}"))
            for name, boxes in zip(names, texts)
        ]
        if self._spool.put_new(indices, records):  # the usual case: images added once
            return
        for index, boxes, record in zip(indices, texts, records):
            earlier = self._spool.get(index)
            if earlier is not None:
                record = earlier[:-2] + b", " + boxes + b"]}"
            self._spool.put(index, record)

    def _empty_entries(self, start: int, end: int) -> Iterator[bytes]:
        """The entries of candidates ``start`` to ``end - 1``, none of which has boxes."""
        empty = b'{"annotations": []}' if self.legacy else b'{"boxes": [], "annotations": []}'
        for first in range(start, end, 65536):
            names = map(self._candidates.basename, range(first, min(end, first + 65536)))
            yield b"".join(
                [b", %s: %s" % (_json_string(name).encode("ascii"), empty) for name in names]
            )

    def write(self) -> None:
        """Write ``infer-result.json`` atomically, every candidate present."""
        self._flush()
        with open_atomic(self.result_file) as stream:
            stream.write(b'{"detection": {')
            skip = 2  # the ", " before the first entry
            written = 0
            for first, end, offset, length in self._spool.runs():
                for piece in self._empty_entries(written, first):
                    stream.write(piece[skip:])
                    skip = 0
                self._spool.copy(stream, offset + skip, length - skip)
                skip, written = 0, end
            for piece in self._empty_entries(written, len(self._candidates)):
                stream.write(piece[skip:])
                skip = 0
            stream.write(b"}}\n")


MaskSpec = Tuple[Any, Any, Any]


class SegmentationResult:
    """Collects masks and writes the COCO-style segmentation ``infer-result.json``.

    See docs/protocol.md#infer-result-segmentation.

    Semantic segmentation (object_type 3): one annotation per (image, class); masks of the same
    class are merged, ``iscrowd`` is 1 and there is no ``confidence``. Instance segmentation
    (4): one annotation per instance with its ``confidence``. Every annotation has ``bbox``
    ``[x, y, w, h]``, ``area`` and ``segmentation`` as compressed RLE with a string ``counts``;
    empty masks are dropped. ``file_name`` is the candidate's bare basename and every candidate
    is listed in ``images``; ``categories`` use ``id`` = index in ``class_names``.

    Like :class:`DetectionResult`, each :meth:`add` writes its annotations to a spool file and
    :meth:`write` assembles the document, numbering the annotations. Masks given as RLE are
    checked and measured on their runs, without decoding them to pixels.
    """

    def __init__(
        self,
        output: OutputPaths,
        candidates: Sequence[PathLike],
        class_names: Sequence[str],
        object_type: int,
    ) -> None:
        if object_type not in (ObjectType.SEMANTIC_SEGMENTATION, ObjectType.INSTANCE_SEGMENTATION):
            raise ValueError(f"object_type must be 3 or 4, got {object_type!r}")
        self.output = output
        self.result_file = Path(output.infer_result_file)
        self.object_type = ObjectType(object_type)
        self._candidates = _unique_names(candidates)
        self._names, self._lookup = _normalise_class_names(class_names)
        count = len(self._candidates)
        # The size each image was added with; 0 = not added.
        self._widths = np.zeros(count, dtype=np.int64)
        self._heights = np.zeros(count, dtype=np.int64)
        # Per candidate: its annotations' JSON without the leading "{", one per line (the
        # "id" and "image_id" that come first are only known when the file is assembled).
        self._spool = _Spool(self.result_file.parent, count)

    def _mask(self, spec: Any, width: int, height: int) -> Any:
        """A boolean mask, or ``(runs, height)`` of an RLE (checked, never decoded)."""
        if isinstance(spec, dict):
            size: Any = spec.get("size")
            try:
                matches = [int(size[0]), int(size[1])] == [height, width]
            except (TypeError, ValueError, IndexError):
                matches = False
            if not matches:
                raise ValueError(
                    f"RLE size {size!r} does not match the image ([h, w] = [{height}, {width}])"
                )
            return rle_runs(spec)[0], height
        mask = np.asarray(spec)
        if mask.shape != (height, width):
            raise ValueError(
                f"mask shape {mask.shape} does not match the image size "
                f"(h, w) = ({height}, {width})"
            )
        return mask.astype(bool)

    def add(self, image: PathLike, width: int, height: int, masks: Sequence[MaskSpec]) -> None:
        """Add ``(mask, class_id_or_name, score)`` items for one candidate image.

        ``mask`` is a boolean ``height x width`` array or an RLE dict of that size. ``score``
        is required (in [0, 1]) for instance segmentation and ignored for semantic.
        Raises ``ValueError`` for anything invalid; nothing is added then.
        """
        index = _candidate_index(image, self._candidates)
        width_i = int(_number(width, "width"))
        height_i = int(_number(height, "height"))
        if width_i < 1 or height_i < 1 or width_i != width or height_i != height:
            raise ValueError(f"image size must be positive integers, got {width!r}x{height!r}")
        added = (int(self._widths[index]), int(self._heights[index]))
        if added[0] and added != (width_i, height_i):
            raise ValueError(
                f"image {self._candidates.basename(index)!r} was added before with size "
                f"{added[0]}x{added[1]}"
            )

        items: list[tuple[int, Any, float]] = []
        for spec in masks:
            try:
                mask_spec, label, score = spec
            except (TypeError, ValueError):
                raise ValueError(
                    f"a mask item must be (mask, class, score), got {spec!r}"
                ) from None
            mask = self._mask(mask_spec, width_i, height_i)
            class_index = _class_index(label, self._names, self._lookup)
            if self.object_type is ObjectType.INSTANCE_SEGMENTATION:
                if score is None:
                    raise ValueError("instance segmentation needs a score for every mask")
                confidence = _unit_float(score, "score")
            else:
                confidence = 0.0
            items.append((class_index, mask, confidence))

        self._widths[index], self._heights[index] = width_i, height_i
        items = [item for item in items if _mask_area(item[1])]  # empty masks are dropped
        if not items:
            return
        earlier = self._spool.get(index)
        if self.object_type is ObjectType.SEMANTIC_SEGMENTATION:
            lines = self._semantic_lines(items, earlier, height_i, width_i)
        else:
            lines = [] if earlier is None else [earlier.decode("ascii")]
            for class_index, mask, confidence in items:
                body = dict(_annotation(class_index, mask), iscrowd=0, confidence=confidence)
                lines.append(_dump_json(body)[1:-1])
        self._spool.put(index, "\n".join(lines).encode("ascii"))

    def _semantic_lines(
        self, items: list, earlier: bytes | None, height: int, width: int
    ) -> list[str]:
        """One annotation per class, merged with this image's earlier ones, by class."""
        by_class: dict[int, list] = {}
        for class_index, mask, _ in items:
            by_class.setdefault(class_index, []).append(mask)
        annotations: dict[int, Any] = {}
        if earlier is not None:
            for line in earlier.decode("ascii").split("\n"):
                annotation = json.loads("{" + line)
                annotations[int(annotation["category_id"])] = annotation
        for class_index, masks in by_class.items():
            if class_index in annotations:
                masks = [decode_rle(annotations[class_index]["segmentation"]), *masks]
            if len(masks) == 1:
                mask = masks[0]
            else:
                mask = np.zeros((height, width), dtype=bool)
                for part in masks:
                    mask |= _pixels(part, height, width)
            annotations[class_index] = dict(_annotation(class_index, mask), iscrowd=1)
        return [_dump_json(annotations[key])[1:-1] for key in sorted(annotations)]

    def _image_size(self, index: int) -> tuple[int, int]:
        if self._widths[index]:
            return int(self._widths[index]), int(self._heights[index])
        try:
            return image_size(self._candidates[index])
        except (ExecutorError, OSError):
            # An unreadable candidate keeps its place in "images" with an unknown (0) size.
            return (0, 0)

    def write(self) -> None:
        """Write ``infer-result.json`` atomically."""
        categories = [
            {"id": index, "name": name, "supercategory": "none"}
            for index, name in enumerate(self._names)
        ]
        with open_atomic(self.result_file) as stream:
            pieces = [b'{"images": [']
            for index in range(len(self._candidates)):
                width, height = self._image_size(index)
                pieces.append(
                    b'%s{"id": %d, "file_name": %s, "width": %d, "height": %d}'
                    % (
                        b", " if index else b"",
                        index + 1,
                        _json_string(self._candidates.basename(index)).encode("ascii"),
                        width,
                        height,
                    )
                )
                if len(pieces) >= 65536:
                    stream.write(b"".join(pieces))
                    pieces = []
            categories_json = json.dumps(categories, ensure_ascii=True).encode("ascii")
            pieces.append(b'], "categories": ' + categories_json + b', "annotations": [')
            number, size = 0, 0
            for index, record in enumerate(self._spool.records()):
                if record is None:
                    continue
                for body in record.split(b"\n"):
                    number += 1
                    pieces.append(
                        b'%s{"id": %d, "image_id": %d, %s'
                        % (b", " if number > 1 else b"", number, index + 1, body)
                    )
                size += len(record)
                if size >= _SPOOL_BLOCK or len(pieces) >= 65536:
                    stream.write(b"".join(pieces))
                    pieces, size = [], 0
            pieces.append(b"]}\n")
            stream.write(b"".join(pieces))


def _mask_area(mask: Any) -> int:
    if isinstance(mask, tuple):
        return runs_area(mask[0])
    return int(mask_area(mask))


def _pixels(mask: Any, height: int, width: int) -> np.ndarray:
    """The boolean mask of either form (RLE runs are decoded: masks are being merged)."""
    if isinstance(mask, tuple):
        return decode_rle(runs_to_rle(mask[0], height, width))
    return mask


def _annotation(index: int, mask: Any) -> dict[str, Any]:
    if isinstance(mask, tuple):
        runs, height = mask
        width = int(runs.sum()) // height
        rle = runs_to_rle(runs, height, width)
        bbox, area = runs_bbox(runs, height), runs_area(runs)
    else:
        rle = encode_rle(mask)
        bbox, area = mask_bbox(mask), mask_area(mask)
    return {
        "category_id": index,
        "bbox": [int(value) for value in bbox],
        "area": int(area),
        "segmentation": {
            "size": [int(rle["size"][0]), int(rle["size"][1])],
            "counts": str(rle["counts"]),
        },
    }


class MiningResult:
    """Collects one score per candidate and writes ``result.tsv`` (docs/protocol.md#mining-result).

    The platform takes the first top-k lines in file order, so lines are sorted by descending
    score (ties keep the candidate order). Every candidate appears exactly once, with its path
    exactly as given in the candidate index; candidates that got no score (e.g. unreadable
    images) are written last with ``lowest score - 1`` (``-1.0`` when nothing was scored).
    Scores are kept in one array (8 bytes per candidate).
    """

    def __init__(self, output: OutputPaths, candidates: Sequence[PathLike]) -> None:
        self.output = output
        self.result_file = Path(output.mining_result_file)
        self._candidates = CandidateList.of(candidates)
        for path in self._candidates.texts:
            if "\t" in path or "\r" in path or "\n" in path:
                raise ValueError(f"candidate path {path!r} contains a tab or newline")
        duplicate = self._candidates.duplicate_path()
        if duplicate is not None:
            raise ValueError(f"candidate {duplicate!r} is listed twice")
        self._scores = np.full(len(self._candidates), np.nan)

    def add(self, image: PathLike, score: Any) -> None:
        """Set the score of one candidate (a finite number; a later call replaces it).

        The candidate is found by its path as given in the index, else (for callers that pass
        resolved paths) by its file name when no other candidate has that name.
        """
        index = self._candidates.find(str(image), exact=True)
        if index is None:
            raise ValueError(f"{str(image)!r} is not one of the candidate images")
        self._scores[index] = _number(score, "mining score")

    def write(self) -> None:
        """Write ``result.tsv`` atomically."""
        scores = self._scores.copy()
        missing = np.isnan(scores)
        floor = (float(scores[~missing].min()) if not missing.all() else 0.0) - 1.0
        scores[missing] = floor
        # A stable sort of the negated scores: ties keep the candidate order.
        order = np.argsort(-scores, kind="stable")
        paths = self._candidates.texts
        with open_atomic(self.result_file) as stream:
            for start in range(0, len(order), 65536):
                chunk = order[start : start + 65536]
                lines = [
                    f"{paths[index]}\t{score!r}\n"
                    for index, score in zip(chunk.tolist(), scores[chunk].tolist())
                ]
                stream.write("".join(lines).encode("utf-8"))


# -- candidates ---------------------------------------------------------------------------


def _unique_names(candidates: Sequence[PathLike]) -> CandidateList:
    """The candidates, whose file names (the keys the platform maps results by) are unique."""
    if not isinstance(candidates, CandidateList):
        # Path's normalisation, as read_candidates applies it (a trailing slash, "//").
        candidates = CandidateList(str(Path(candidate)) for candidate in candidates)
    listed = candidates
    for index in range(len(listed)):
        if not listed.basename(index):
            raise ValueError(f"candidate {listed.texts[index]!r} has no file name")
    duplicate = listed.duplicate_basename()
    if duplicate is not None:
        # The platform rejects such a task before the run; results could not be told apart.
        raise ValueError(f"two candidates share the file name {duplicate!r}")
    return listed


def _candidate_index(image: PathLike, candidates: CandidateList) -> int:
    index = candidates.find(image)
    if index is None:
        raise ValueError(f"{str(image)!r} is not one of the candidate images")
    return index
