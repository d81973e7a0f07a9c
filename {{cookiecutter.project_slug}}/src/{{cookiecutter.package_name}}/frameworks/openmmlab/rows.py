"""Per-candidate rows of a prediction job, handed to the executor through files.

A job over a million candidates must not gather its predictions in memory: rank 0 used to hold
every rank's rows, the executor a second copy, and the result writer a third. Instead each
rank appends its rows, one JSON line per candidate, to a file of its own in a folder the
executor chose (:class:`RowFiles`), as it predicts them. When the job is done the executor
reads every rank's file back, merged in candidate order (:meth:`RowFiles.merged`), and hands
one row at a time to the result writer: memory holds one row per rank.

The merge relies on each file being in increasing candidate index. A rank's shard is
``candidates[rank::world]`` in order, but a loader may predict them in another order (in
batches of equal image size, say): then :class:`RowWriter` puts its file in order when it
closes, from the offsets it noted (16 bytes per row, no row in memory).
:meth:`RowFiles.merged` checks that every candidate comes exactly once. The folder lives under
the task's work dir and is removed by :meth:`RowFiles.remove` (mining keeps it for the
inference task that reuses its predictions).
"""

from __future__ import annotations

import heapq
import json
import os
import shutil
import time
from array import array
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np


class RowWriter:
    """One rank's rows file: ``write(index, row)`` per candidate, in any order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stream = open(path, "wb")  # noqa: SIM115 (closed by close())
        self._indices = array("q")
        self._offsets = array("q")
        self._end = 0
        self._ordered = True

    def write(self, index: int, row: Any) -> None:
        line = (json.dumps([index, row], ensure_ascii=True) + "\n").encode("ascii")
        if self._indices and index <= self._indices[-1]:
            self._ordered = False
        self._indices.append(index)
        self._offsets.append(self._end)
        self._stream.write(line)
        self._end += len(line)

    def close(self) -> None:
        if self._stream.closed:
            return
        self._stream.close()
        if not self._ordered:
            self._reorder()

    def _reorder(self) -> None:
        """Rewrite the file in candidate order, one row at a time."""
        indices = np.frombuffer(self._indices, dtype=np.int64)
        offsets = np.frombuffer(self._offsets, dtype=np.int64)
        lengths = np.diff(offsets, append=self._end)
        ordered = self.path.with_name(self.path.name + ".ordered")
        with open(self.path, "rb") as source, open(ordered, "wb") as target:
            for position in np.argsort(indices, kind="stable").tolist():
                source.seek(int(offsets[position]))
                target.write(source.read(int(lengths[position])))
        os.replace(ordered, self.path)

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class RowFiles:
    """The folder of one job's rows files (one per rank)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    @classmethod
    def create(cls, work_dir: Path, name: str) -> RowFiles:
        """A new, empty folder ``<work_dir>/<name>-<pid>-<time>``."""
        directory = Path(work_dir) / f"{name}-{os.getpid()}-{time.time_ns()}"
        directory.mkdir(parents=True)
        return cls(directory)

    def writer(self, rank: int) -> RowWriter:
        """The rows file of ``rank`` (inside a job: ``RowFiles(payload[...]).writer(rank())``)."""
        return RowWriter(self.directory / f"rank-{rank:04d}.jsonl")

    def merged(self, count: int) -> Iterator[tuple[int, Any]]:
        """``(candidate index, row)`` for candidates ``0 .. count - 1``, in order.

        Raises:
            RuntimeError: a candidate comes twice or not at all (a rank lost or repeated
                images; this cannot happen unless sharding broke, so it fails loudly).
        """
        paths = sorted(self.directory.glob("rank-*.jsonl"))
        streams = [open(path, "rb") for path in paths]  # noqa: SIM115 (closed below)
        try:
            expected = 0
            rows = heapq.merge(*(_read(stream) for stream in streams), key=lambda row: row[0])
            for index, row in rows:
                if index != expected:
                    what = "twice" if index < expected else "not at all"
                    missing = index if index < expected else expected
                    raise RuntimeError(f"candidate {missing} came {what} from the job's ranks")
                yield index, row
                expected += 1
            if expected != count:
                raise RuntimeError(f"candidate {expected} came not at all from the job's ranks")
        finally:
            for stream in streams:
                stream.close()

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _read(stream: BinaryIO) -> Iterator[tuple[int, Any]]:
    for line in stream:
        index, row = json.loads(line)
        yield int(index), row
