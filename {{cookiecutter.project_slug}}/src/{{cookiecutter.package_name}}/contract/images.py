"""Reading images the way the YMIR platform sees them.

The platform names exported assets after the type it detected (``jpg``, ``png``, ``bmp``), but
the extension is not guaranteed, so the type is sniffed from the content. Its width and height
metadata come from Pillow *without* EXIF rotation: annotations live in the stored pixel frame,
so images are never rotated here either. Every image is handed out as 8-bit RGB, whatever its
channel count, because models and result writers expect one layout. See
docs/protocol.md#assets.
"""

from __future__ import annotations

import os
import struct

import numpy as np
from PIL import Image

from .errors import ErrorCode, ExecutorError

# Magic numbers of the only types the platform imports (2.x refuses anything else).
_MAGIC = (
    (b"\xff\xd8\xff", "jpg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"BM", "bmp"),
)
# Pillow raises a zoo of exception types on broken files; all of them mean "unreadable".
_READ_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)
# How far from the end a JPEG end-of-image marker is looked for (some writers pad the file).
_JPEG_TAIL = 4096


def sniff_image_type(path: str | os.PathLike) -> str | None:
    """``"jpg"``, ``"png"`` or ``"bmp"`` from the file's magic bytes; ``None`` if none matches.

    A missing or unreadable file is ``None`` too: the caller decides whether that is an error.
    """
    try:
        with open(path, "rb") as stream:
            head = stream.read(8)
    except OSError:
        return None
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return None


def open_image(path: str | os.PathLike) -> Image.Image:
    """The image as an 8-bit RGB :class:`PIL.Image.Image`, fully decoded, not EXIF-rotated.

    Grey, grey+alpha, palette, RGBA, CMYK and 16-bit images are converted; alpha is dropped
    (as OpenCV's ``IMREAD_COLOR`` does), 16-bit values are scaled down by 256.

    Raises:
        ExecutorError: code IMAGE, ``cannot read image <path>: <reason>``.
    """
    try:
        # Pillow sniffs the content itself, so a PNG named ``.jpg`` opens fine.
        with Image.open(path) as image:
            image.load()
            return _to_rgb(image)
    except _READ_ERRORS as error:
        raise _image_error(path, error) from error


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` from the header only (no pixel decoding, no EXIF rotation).

    Raises:
        ExecutorError: code IMAGE when the file is missing or not a readable image.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
    except _READ_ERRORS as error:
        raise _image_error(path, error) from error
    if width < 1 or height < 1:
        raise _image_error(path, f"empty image ({width}x{height})")
    return int(width), int(height)


def check_image(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image that is believed to be complete; cheap for good files.

    :func:`image_size` reads only the header, so a truncated file would pass it and fail later,
    in the middle of training. This also checks the file's end (JPEG end-of-image marker, PNG
    ``IEND`` chunk, BMP declared size) and, only when that looks wrong, decodes the image to
    decide: some writers append bytes after the JPEG marker and such files are still valid.

    Raises:
        ExecutorError: code IMAGE when the image cannot be used.
    """
    size = image_size(path)
    if not _tail_looks_complete(path):
        open_image(path)
    return size


def _tail_looks_complete(path: str | os.PathLike) -> bool:
    kind = sniff_image_type(path)
    try:
        with open(path, "rb") as stream:
            if kind == "bmp":
                header = stream.read(6)
                declared = struct.unpack("<I", header[2:6])[0] if len(header) == 6 else 0
                # Some writers leave the size field 0; only a file shorter than declared is bad.
                return os.fstat(stream.fileno()).st_size >= declared
            stream.seek(0, os.SEEK_END)
            length = stream.tell()
            stream.seek(max(0, length - _JPEG_TAIL))
            tail = stream.read()
    except OSError:
        return False
    if kind == "jpg":
        return b"\xff\xd9" in tail
    if kind == "png":
        return b"IEND" in tail[-16:]
    # Other types Pillow reads: no cheap check, decode to be sure.
    return False


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode in ("I", "F") or mode.startswith("I;16"):
        # Pillow's own I;16 -> RGB conversion clips at 255; scale like OpenCV does instead.
        # Older Pillow opens 16-bit PNGs as "I", newer as "I;16": treat both as 16-bit.
        array = np.asarray(image)
        if mode != "F":
            array = array.astype(np.int64) >> 8
        array = np.clip(array, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        # Through RGBA, so Pillow applies the palette transparency without warning.
        return image.convert("RGBA").convert("RGB")
    return image.convert("RGB")


def _image_error(path: str | os.PathLike, reason: object) -> ExecutorError:
    text = str(reason) or type(reason).__name__
    return ExecutorError(ErrorCode.IMAGE, f"cannot read image {os.fspath(path)}: {text}")
