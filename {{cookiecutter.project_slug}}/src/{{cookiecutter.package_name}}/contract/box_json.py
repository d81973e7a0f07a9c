"""Detection boxes as JSON text, thousands at a time, byte for byte what ``json.dumps`` writes.

At a million candidates with 30 boxes each, Python's ``%`` formatting of every box, above all
the shortest ``repr()`` of every score, was most of what the detection writer cost (about
1.5 us of 2.6 us per box). Here numpy does it for a whole batch:

* each box becomes one fixed-width row of bytes laid out like the writer's ``%`` template,
  NUL where a field is shorter than its column, and one ``bytes.translate`` drops the NULs;
* integers come from a table of their decimal texts;
* scores are written as ``repr()`` writes them (the shortest digits that read back as the
  same float, the nearest of those if several) by :func:`score_texts`, with exact integer and
  double-double arithmetic instead of Python's per-value big-number conversion.

A box this cannot write exactly as ``%`` would (a score below 1e-4, which ``repr()`` writes
with an exponent; a coordinate of 100,000 or more) marks its image for the caller, which
formats that image with the template itself.
"""

from __future__ import annotations

import functools
import re
from typing import Sequence

import numpy as np

# Integers below this come from a table of their decimal texts; a table up to _USUAL_INTS
# (images up to 10,000 pixels wide) is built first: the full one takes 30 ms.
INT_LIMIT = 100_000
_USUAL_INTS = 10_000
_INT_COLUMNS = 5
# The digits of a score after "0.": up to 3 zeros (1e-4 <= score < 1e-3), then up to 17.
_DIGIT_COLUMNS = 20
# Veltkamp's constant (2**27 + 1): splits a double into two halves of 26 bits.
_SPLIT = 134217729.0
# 10**n for n <= 22 are exact doubles; 10**17 is the first 18-digit integer.
_POWERS = np.array([10.0**n for n in range(23)])
_INT_POWERS = 10 ** np.arange(18, dtype=np.int64)
_TOP = 10**17


@functools.lru_cache(maxsize=None)
def _int_texts(limit: int) -> np.ndarray:
    """The decimal text of every integer below ``limit``, NUL-padded to 8 bytes (one uint64)."""
    return np.arange(limit).astype("S8").view(np.uint64)


@functools.lru_cache(maxsize=None)
def _four_digits() -> np.ndarray:
    """The texts "0000" to "9999" as uint32, four ASCII digits each in memory order."""
    texts = np.array([b"%04d" % n for n in range(10_000)], dtype="S4")
    return texts.view(np.uint32)


def _two_product(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(p, e)``: ``p + e == a * b`` exactly, ``p`` the rounded product (Dekker, no FMA)."""
    p = a * b
    c = _SPLIT * a
    a_high = c - (c - a)
    a_low = a - a_high
    c = _SPLIT * b
    b_high = c - (c - b)
    b_low = b - b_high
    e = ((a_high * b_high - p) + a_high * b_low + a_low * b_high) + a_low * b_low
    return p, e


def _seventeen_digits(x: np.ndarray) -> tuple[np.ndarray, ...]:
    """For ``x`` in [1e-4, 1): the decimal exponent ``k`` (``10**k <= x < 10**(k + 1)``), the
    17-digit integer ``d`` nearest ``x * 10**(16 - k)`` (ties to even) and ``rest``, the exact
    ``x * 10**(16 - k) - d``; the half-gap to ``x``'s neighbours at that scale (a decimal
    closer than it reads back as ``x``); and whether all of it is exact (the rare ``False``
    rows are left to ``repr()``)."""
    bits = x.view(np.int64)
    exponent = (bits >> 52) - 1023  # x in [2**exponent, 2**(exponent + 1))
    k = np.floor(exponent * np.log10(2.0)).astype(np.int64)
    k += x >= _POWERS[0] / _POWERS[-k - 1]  # x >= 10**(k + 1): one more
    scale = _POWERS[16 - k]
    product, error = _two_product(x, scale)
    # Above 2**53 the product is an even whole number: the fraction is all in the error, and
    # rounding the error half to even rounds the sum half to even.
    whole = np.rint(error)
    rest = error - whole
    digits = product.astype(np.int64) + whole.astype(np.int64)
    # Half the gap to the neighbours. Below a power of two the gap is half as wide, but in
    # [1e-4, 1) their exact decimals have at most 14 digits and no shorter one comes close.
    half_gap = ((exponent - 53 + 1023) << 52).view(np.float64) * scale
    exact = (product >= 1e16) & (digits < _TOP)
    return k, digits, rest, half_gap, exact


def _shortest(digits: np.ndarray, rest: np.ndarray, half_gap: np.ndarray, exact: np.ndarray):
    """The fewest leading digits of the 17 that still read back as the same float.

    Drops one digit at a time from the rows that still fit: ``d // 10**j`` rounded (ties to
    even, on the exact value), kept while its distance to the exact value is below the
    half-gap. Returns the digits and their count; rows too close to a boundary to decide
    exactly are marked in ``exact``.
    """
    shortest = digits.copy()
    count = np.full(len(digits), 17, dtype=np.int64)
    rows = np.flatnonzero(exact)
    if len(rows) < len(digits):
        digits, rest, half_gap = digits[rows], rest[rows], half_gap[rows]
    for dropped in range(1, 17):
        if not len(rows):
            break
        unit = _INT_POWERS[dropped]
        kept, dropped_part = np.divmod(digits, unit)
        up = dropped_part > unit // 2
        tie = dropped_part == unit // 2
        if tie.any():  # the exact value decides, and an exact tie goes to the even one
            up |= tie & ((rest > 0) | ((rest == 0) & ((kept & 1) == 1)))
        kept += up
        distance = np.abs((kept * unit - digits).astype(np.float64) - rest)
        fits = distance < half_gap
        # A decimal never lies exactly on the boundary (a midpoint between doubles has over
        # 50 decimals): only rounding in the line above can decide wrongly, so close calls,
        # and a rounding up to 10**n (one digit more), go to repr().
        unsure = np.abs(distance - half_gap) < 1e-12 * half_gap
        unsure |= fits & (kept >= _INT_POWERS[17 - dropped])
        if unsure.any():
            exact[rows[unsure]] = False
            fits &= ~unsure
        rows, digits, rest, half_gap = rows[fits], digits[fits], rest[fits], half_gap[fits]
        shortest[rows] = kept[fits]
        count[rows] = 17 - dropped
    return shortest, count


@functools.lru_cache(maxsize=None)
def _digit_masks() -> np.ndarray:
    """Row ``n``: five uint32 lanes keeping the last ``n`` of 20 digit bytes, NUL before them."""
    keep = np.arange(_DIGIT_COLUMNS)[None, :] >= _DIGIT_COLUMNS - np.arange(21)[:, None]
    return (keep * np.uint8(0xFF)).astype(np.uint8).view(np.uint32)


def score_texts(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``repr()`` of every score: ``(whole, fraction, exact)``.

    ``whole`` is the ASCII digit before the point; ``fraction`` the digits after it,
    ``(n, 20)`` bytes, right-aligned behind NULs; ``exact`` where the two are ``repr()``'s:
    for 0, 1 and scores in [1e-4, 1). Elsewhere the bytes are undefined.
    """
    scores = np.asarray(scores, dtype=np.float64)
    inside = (scores >= 1e-4) & (scores < 1.0)
    x = np.where(inside, scores, 0.5)
    k, digits, rest, half_gap, exact = _seventeen_digits(x)
    exact &= inside
    shortest, count = _shortest(digits, rest, half_gap, exact)
    # 0 and 1 are "0.0" and "1.0" (but repr(-0.0) is "-0.0"): the digit 0 after the point.
    whole = scores == 1.0
    round_number = whole | ((scores == 0.0) & ~np.signbit(scores))
    shortest[~exact] = 0
    columns = np.where(exact, count - k - 1, 1)  # -k - 1 zeros, then the significant digits
    exact |= round_number
    chunks = np.empty((len(x), 5), dtype=np.int64)
    for column in range(4, 0, -1):
        shortest, chunks[:, column] = np.divmod(shortest, 10_000)
    chunks[:, 0] = shortest
    fraction = _four_digits()[chunks]
    fraction &= np.take(_digit_masks(), columns, axis=0)
    return whole.astype(np.uint8) + ord("0"), fraction.view(np.uint8), exact


class BoxRowEncoder:
    """Writes boxes as the ``%`` template ``box_json`` would, a batch at a time.

    ``box_json`` has six fields in this order: x, y, w, h as ``%s`` (integers), the class name
    as ``%s`` (its JSON text from ``name_json``) and the score as ``%r``.
    """

    def __init__(self, box_json: str, name_json: Sequence[str]) -> None:
        pieces = [piece.encode("ascii") for piece in re.split("%[sr]", box_json)]
        if len(pieces) != 7:
            raise ValueError(f"a box template has six fields, got {box_json!r}")
        names = [name.encode("ascii") for name in name_json]
        name_columns = max(map(len, names))
        texts = np.array(names, dtype=f"S{name_columns}")  # NUL-padded
        self._names = texts.view(np.uint8).reshape(len(names), name_columns)
        # Every row: ", " and the template, each field a NUL-filled slot of its width; the
        # score is its digit before the point, ".", and the digits after it.
        row = bytearray(b", " + pieces[0])
        self._slots = []
        widths = [_INT_COLUMNS] * 4 + [name_columns, 1, _DIGIT_COLUMNS]
        for width, piece in zip(widths, [*pieces[1:6], b".", pieces[6]]):
            self._slots.append(slice(len(row), len(row) + width))
            row += bytes(width) + piece
        self._row = np.frombuffer(bytes(row), dtype=np.uint8)
        # Rows kept from batch to batch: the template's bytes are written once, the slots
        # every time.
        self._table = np.empty((0, len(row)), dtype=np.uint8)

    def encode(
        self, ints: np.ndarray, classes: np.ndarray, scores: np.ndarray, counts: Sequence[int]
    ) -> list[bytes | None]:
        """The boxes of consecutive images, ``counts[i]`` rows each, joined by ", " per image.

        ``ints``: ``(n, 4)`` whole numbers >= 0 (x, y, w, h); ``classes``: indices into the
        names; ``scores`` in [0, 1]. ``b""`` for an image without boxes; ``None`` for an
        image with a box that only the template writes exactly (see the module docstring).
        """
        owners = np.repeat(np.arange(len(counts)), counts)
        whole, fraction, exact = score_texts(scores)
        top = int(ints.max(initial=0))
        if top >= INT_LIMIT:
            exact &= (ints < INT_LIMIT).all(axis=1)
        failed = np.zeros(len(counts), dtype=bool)
        if not exact.all():  # rare: leave those images out
            failed[owners[~exact]] = True
            rows = ~failed[owners]
            owners, ints, classes = owners[rows], ints[rows], classes[rows]
            whole, fraction = whole[rows], fraction[rows]
        table = self._rows(len(owners))
        int_texts = _int_texts(_USUAL_INTS if top < _USUAL_INTS else INT_LIMIT)
        texts = int_texts[ints].view(np.uint8).reshape(len(owners), 4, 8)
        for column, slot in enumerate(self._slots[:4]):
            table[:, slot] = texts[:, column, :_INT_COLUMNS]
        name_slot, whole_slot, fraction_slot = self._slots[4:]
        table[:, name_slot] = np.take(self._names, classes, axis=0)
        table[:, whole_slot.start] = whole
        table[:, fraction_slot] = fraction
        # An image's first row starts with "\n" instead of ", ": split there after the NULs go.
        first = np.flatnonzero(np.diff(owners, prepend=-1))
        table[first, :2] = (ord("\n"), 0)
        joined = iter(table.tobytes().translate(None, b"\0").split(b"\n")[1:])
        table[first, :2] = self._row[:2]
        return [
            None if bad else (next(joined) if count else b"")
            for bad, count in zip(failed.tolist(), counts)
        ]

    def _rows(self, count: int) -> np.ndarray:
        """The first ``count`` rows of the kept table, each holding the template's bytes."""
        if count > len(self._table):
            self._table = np.empty((max(count, 2 * len(self._table)), len(self._row)), np.uint8)
            self._table[:] = self._row
        return self._table[:count]
