"""Atomic file writes for everything the executor puts under ``/out``.

The platform polls ``monitor.txt`` while the executor runs and reads the result files as soon
as the container exits, and a failed run must leave no half-written result behind. So every
output is written to a temporary file in the destination folder and moved into place with
``os.replace``: a reader sees either the old content or the new one, never a torn file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]

# mkstemp creates files with mode 0600; the platform (or a user inspecting a failed task's
# leftover out/ folder) may read them as another uid, so give them ordinary permissions.
_FILE_MODE = 0o644


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, creating missing parent folders."""
    with open_atomic(path) as stream:
        stream.write(data)


@contextlib.contextmanager
def open_atomic(path: PathLike) -> Iterator[BinaryIO]:
    """A binary stream that becomes ``path`` atomically when the ``with`` block succeeds.

    For files too large to hold in memory (a million candidates' results): write them piece by
    piece. If the block raises, the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # The temporary file must live in the same folder: os.replace is only atomic within one
    # file system, and /out may be a different mount than /tmp.
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp", dir=str(target.parent)
    )
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            # Without fsync a crash right after the rename can leave an empty file on some
            # file systems, which is exactly the torn result this module exists to prevent.
            os.fsync(handle.fileno())
        os.chmod(tmp_name, _FILE_MODE)
        os.replace(tmp_name, str(target))
    except BaseException:
        # Also on KeyboardInterrupt: never leave stray temporary files in /out.
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


def write_text_atomic(path: PathLike, text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` atomically, creating missing parent folders.

    Line endings are written exactly as given (no platform newline translation): the platform
    parses ``monitor.txt`` and ``result.tsv`` line by line and expects ``\\n``.
    """
    write_bytes_atomic(path, text.encode("utf-8"))
