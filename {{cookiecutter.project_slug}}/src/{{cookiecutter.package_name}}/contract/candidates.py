"""The candidate images of a mining or inference task, held compactly.

A task may have a million candidates. As ``pathlib.Path`` objects they would cost about half a
kilobyte each before any model runs, and the result writers need to find a candidate by its
file name (the key the platform maps results by) for every ``add()``. So the paths are kept as
plain strings, handed out as ``Path`` objects only when asked for, and the file-name lookup is a
sorted array of 64-bit hashes (16 bytes per candidate) instead of a dict of strings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence, Union, overload

import numpy as np

from .errors import ErrorCode, ExecutorError

PathLike = Union[str, "os.PathLike[str]"]


class CandidateList(Sequence[Path]):
    """Candidate paths in index order: a read-only sequence of :class:`~pathlib.Path`.

    ``texts`` are the paths as strings, as given (:func:`read_candidates` gives
    ``str(Path(line))`` of each index line, what ``read_index`` made of it); the mining result
    writes them. :meth:`find` looks a candidate up by file name (and full path).
    """

    def __init__(self, paths: Iterable[PathLike]) -> None:
        self.texts: list[str] = [os.fspath(path) for path in paths]
        self._hashes: np.ndarray | None = None  # sorted basename hashes
        self._order: np.ndarray | None = None  # candidate index of each sorted hash
        self._hint = 0  # where the next in-order lookup is expected

    @classmethod
    def of(cls, candidates: Sequence[PathLike]) -> CandidateList:
        """``candidates`` itself when it already is a :class:`CandidateList`, else a copy."""
        return candidates if isinstance(candidates, CandidateList) else cls(candidates)

    def __len__(self) -> int:
        return len(self.texts)

    @overload
    def __getitem__(self, index: int) -> Path: ...

    @overload
    def __getitem__(self, index: slice) -> list[Path]: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [Path(text) for text in self.texts[index]]
        return Path(self.texts[index])

    def __iter__(self) -> Iterator[Path]:
        for text in self.texts:
            yield Path(text)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CandidateList):
            return self.texts == other.texts
        if isinstance(other, (list, tuple)):
            return len(other) == len(self.texts) and all(
                Path(item) == Path(text) for item, text in zip(other, self.texts)
            )
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking sequence, like a list

    def __repr__(self) -> str:
        return f"CandidateList({len(self.texts)} candidates)"

    def basename(self, index: int) -> str:
        """The file name of candidate ``index`` (the platform's key for its result)."""
        return os.path.basename(self.texts[index])

    def duplicate_basename(self) -> str | None:
        """A file name that two candidates share, or ``None`` when all names are unique."""
        for group in self._hash_groups():
            names = [self.basename(index) for index in group]
            for name in names:
                if names.count(name) > 1:
                    return name
        return None

    def duplicate_path(self) -> str | None:
        """A path listed twice, or ``None``."""
        for group in self._hash_groups():
            texts = [self.texts[index] for index in group]
            for text in texts:
                if texts.count(text) > 1:
                    return text
        return None

    def find(self, image: PathLike, *, exact: bool = False) -> int | None:
        """The index of the candidate ``image`` names, or ``None``.

        By file name (the platform's key); with ``exact`` the full path decides between
        candidates that share a file name, and a path matching none of them is accepted only
        when exactly one candidate has that file name.
        """
        # str() for anything else, like the dicts the writers used to look results up in.
        text = os.fspath(image) if isinstance(image, (str, os.PathLike)) else str(image)
        if not isinstance(text, str):
            return None  # a bytes path names no candidate
        name = os.path.basename(text)
        hint = self._hint
        # Results usually come in candidate order: check the next expected one first.
        if (
            hint < len(self.texts)
            and os.path.basename(self.texts[hint]) == name
            and (not exact or self.texts[hint] == text or self._unique_name(hint, name))
        ):
            self._hint = hint + 1
            return hint
        matches = self._with_basename(name)
        if not matches:
            return None
        if exact and len(matches) > 1:
            same = [index for index in matches if self.texts[index] == text]
            if not same:
                return None
            matches = same
        index = matches[0]
        self._hint = index + 1
        return index

    # -- internals ------------------------------------------------------------------------

    def _unique_name(self, index: int, name: str) -> bool:
        return self._with_basename(name) == [index]

    def _hash_groups(self) -> Iterator[list[int]]:
        """The candidates whose file names share a hash (same name, or a rare collision)."""
        hashes, order = self._table()
        previous = -2
        for position in np.flatnonzero(hashes[1:] == hashes[:-1]).tolist():
            inside = position == previous + 1  # a group of three or more, already reported
            previous = position
            if inside:
                continue
            end = position + 1
            while end < len(hashes) and hashes[end] == hashes[position]:
                end += 1
            yield [int(index) for index in order[position:end]]

    def _table(self) -> tuple[np.ndarray, np.ndarray]:
        if self._hashes is None or self._order is None:
            hashes = np.fromiter(
                (hash(os.path.basename(text)) for text in self.texts),
                dtype=np.int64,
                count=len(self.texts),
            )
            order = np.argsort(hashes, kind="stable")
            self._hashes, self._order = hashes[order], order
        return self._hashes, self._order

    def _with_basename(self, name: str) -> list[int]:
        hashes, order = self._table()
        key = hash(name)
        start = int(np.searchsorted(hashes, key, side="left"))
        end = start
        while end < len(hashes) and hashes[end] == key:
            end += 1
        return [int(index) for index in order[start:end] if self.basename(int(index)) == name]


def read_candidates(index_file: PathLike) -> CandidateList:
    """The images of a mining / inference index, in file order (first column only).

    Read line by line (a million-line index never sits in memory as text), with the rules of
    :func:`.dataset.read_index`: lines split on ``\\n`` only, blank lines skipped, at most two
    tab-separated columns.

    Raises:
        ExecutorError: DATASET when the file is missing, not UTF-8, or a line is malformed.
    """
    index = Path(index_file)

    def first_columns() -> Iterator[str]:
        with open(index, "rb") as stream:
            # Binary lines end at b"\n" only, like read_index's text.split("\n").
            for number, raw in enumerate(stream, start=1):
                line = raw.rstrip(b"\n").rstrip(b"\r").decode("utf-8")
                if not line.strip():
                    continue
                columns = line.split("\t")
                if len(columns) > 2 or not columns[0].strip():
                    raise ExecutorError(
                        ErrorCode.DATASET,
                        f"{index}:{number}: expected '<image>' or '<image>\\t<annotation>', "
                        f"got {line!r}",
                    )
                # Path's normalisation (repeated or trailing slashes, "." parts), as read_index.
                yield str(Path(columns[0]))

    try:
        return CandidateList(first_columns())
    except (OSError, UnicodeDecodeError) as error:
        raise ExecutorError(
            ErrorCode.DATASET, f"cannot read index file {index}: {error}"
        ) from error
