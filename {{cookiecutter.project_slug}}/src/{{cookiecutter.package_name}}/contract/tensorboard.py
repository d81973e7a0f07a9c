"""TensorBoard scalars in the platform's TensorBoard folder, without TensorBoard.

YMIR mounts ``/out/tensorboard`` (``env.output.tensorboard_dir``) into its own TensorBoard
server: whatever event files a training writes there become the task's training curves. The
frameworks write them through their own TensorBoard backends; this module lets any executor
(the stubs included) do the same without depending on tensorboard, torch or protobuf
(docs/protocol.md#tensorboard).

An event file is a sequence of TFRecords (``length: uint64 LE, masked CRC-32C of length,
data, masked CRC-32C of data``), each holding one serialized ``tensorflow.Event``; the first
record only carries ``file_version: "brain.Event:2"``. A scalar is an ``Event`` with
``wall_time``, ``step`` and a ``Summary`` of ``Value(tag, simple_value)``: the same bytes
torch's and tensorboardX's ``SummaryWriter.add_scalar`` write. :func:`read_scalars` reads
those back (any writer's), so that tests and the devkit's verifier can check the curves.
"""

from __future__ import annotations

import math
import os
import socket
import struct
import time
from pathlib import Path
from typing import Iterator, Mapping

# TensorBoard lists a file when its name contains "tfevents".
FILE_PREFIX = "events.out.tfevents"
_FILE_VERSION = b"brain.Event:2"


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum TFRecords use (not zlib's CRC-32)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _record(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return (
        length
        + struct.pack("<I", _masked_crc(length))
        + data
        + struct.pack("<I", _masked_crc(data))
    )


# --- the few protobuf fields an Event needs ----------------------------------------------------


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 fields: negative numbers take ten bytes, as protobuf does
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    key = _varint(number << 3 | wire_type)
    if wire_type == 2:
        return key + _varint(len(payload)) + payload
    return key + payload


def _event(wall_time: float, step: int | None = None, summary: bytes | None = None) -> bytes:
    data = _field(1, 1, struct.pack("<d", wall_time))
    if step is not None:
        data += _field(2, 0, _varint(step))
    if summary is None:
        return data + _field(3, 2, _FILE_VERSION)
    return data + _field(5, 2, summary)


def _scalar_summary(tag: str, value: float) -> bytes:
    entry = _field(1, 2, tag.encode("utf-8")) + _field(2, 5, struct.pack("<f", value))
    return _field(1, 2, entry)


class ScalarWriter:
    """Appends scalars to one new event file in ``folder``.

    Every call writes whole records and closes the file again, so a killed training leaves a
    readable file (TensorBoard skips a torn last record anyway) and nothing needs closing.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        # Unique per process and writer, like TensorBoard's own names.
        name = f"{FILE_PREFIX}.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.{id(self)}"
        self.path = self.folder / name
        self._append(_record(_event(time.time())))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        """One point of the curve ``tag`` (e.g. ``train/loss``, ``val/mAP``) at ``step``."""
        self.add_scalars({tag: value}, step)

    def add_scalars(self, values: Mapping[str, float], step: int) -> None:
        """Several curves at the same ``step``; non-finite values are refused (TensorBoard
        draws nothing for them, so they are a bug in the caller)."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an integer >= 0, got {step!r}")
        records = []
        now = time.time()
        for tag, value in values.items():
            if not isinstance(tag, str) or not tag.strip():
                raise ValueError(f"a scalar's tag must be a non-empty string, got {tag!r}")
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(f"scalar {tag!r} must be finite, got {value!r}")
            records.append(_record(_event(now, step, _scalar_summary(tag, number))))
        self._append(b"".join(records))

    def _append(self, data: bytes) -> None:
        with open(self.path, "ab") as handle:
            handle.write(data)


# --- reading ---------------------------------------------------------------------------------


class EventFileError(ValueError):
    """An event file that is not a sequence of valid TFRecords."""


def _records(data: bytes, source: str) -> Iterator[bytes]:
    offset = 0
    while offset < len(data):
        if len(data) - offset < 12:
            raise EventFileError(f"{source}: truncated record header at byte {offset}")
        header = data[offset : offset + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[offset + 8 : offset + 12])
        if header_crc != _masked_crc(header):
            raise EventFileError(f"{source}: bad length checksum at byte {offset}")
        start, end = offset + 12, offset + 12 + length
        if end + 4 > len(data):
            raise EventFileError(f"{source}: truncated record at byte {offset}")
        payload = data[start:end]
        if struct.unpack("<I", data[end : end + 4])[0] != _masked_crc(payload):
            raise EventFileError(f"{source}: bad data checksum at byte {offset}")
        yield payload
        offset = end + 4


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of one protobuf message: an int for a varint, else the raw bytes
    (little-endian fixed64 / fixed32, or a length-delimited payload)."""
    offset = 0

    def varint() -> int:
        nonlocal offset
        result, shift = 0, 0
        while True:
            if offset >= len(data):
                raise EventFileError("truncated varint")
            byte = data[offset]
            offset += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while offset < len(data):
        key = varint()
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            yield number, varint()
            continue
        if wire_type == 2:
            size = varint()
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
        else:
            raise EventFileError(f"unsupported protobuf wire type {wire_type}")
        if offset + size > len(data):
            raise EventFileError("truncated protobuf field")
        yield number, data[offset : offset + size]
        offset += size


def read_event_file(path: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of the scalars in one event file, in file order.

    Raises:
        EventFileError: the file is not a valid sequence of TFRecords / events.
    """
    source = str(path)
    scalars: dict[str, list[tuple[int, float]]] = {}
    for payload in _records(Path(path).read_bytes(), source):
        step, summary = 0, b""
        for number, value in _fields(payload):
            if number == 2 and isinstance(value, int):
                step = value
            elif number == 5 and isinstance(value, bytes):
                summary = value
        for tag, scalar in _summary_values(summary):
            scalars.setdefault(tag, []).append((step, scalar))
    return scalars


def _summary_values(summary: bytes) -> Iterator[tuple[str, float]]:
    for number, entry in _fields(summary):
        if number != 1 or not isinstance(entry, bytes):
            continue
        tag, scalar = None, None
        for field_number, value in _fields(entry):
            if not isinstance(value, bytes):
                continue
            if field_number == 1:
                tag = value.decode("utf-8", errors="replace")
            elif field_number == 2 and len(value) == 4:
                scalar = struct.unpack("<f", value)[0]
        if tag is not None and scalar is not None:
            yield tag, float(scalar)


def event_files(folder: str | os.PathLike) -> list[Path]:
    """Every TensorBoard event file under ``folder`` (TensorBoard reads sub-folders too)."""
    root = Path(folder)
    if not root.is_dir():
        return []
    return sorted(path for path in root.rglob("*tfevents*") if path.is_file())


def read_scalars(folder: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """The scalars of every event file under ``folder``, merged by tag.

    Raises:
        EventFileError: one of the files is not a valid event file.
    """
    merged: dict[str, list[tuple[int, float]]] = {}
    for path in event_files(folder):
        for tag, points in read_event_file(path).items():
            merged.setdefault(tag, []).extend(points)
    return merged
