"""The batch JSON encoder writes what Python's ``repr()`` and ``%`` write, byte for byte."""

from __future__ import annotations

import numpy as np
import pytest

from {{ cookiecutter.package_name }}.contract.box_json import INT_LIMIT, BoxRowEncoder, score_texts
from {{ cookiecutter.package_name }}.contract.results import _BOX_JSON, _LEGACY_BOX_JSON

rng = np.random.RandomState(3)
POWERS_OF_TWO = np.ldexp(1.0, -np.arange(1, 16))
POWERS_OF_TEN = 10.0 ** -np.arange(0, 5)
SCORES = {
    # Scores as models hand them over: float32 values made Python floats.
    "float32": rng.uniform(0, 1, 200_000).astype(np.float32).astype(np.float64),
    "float64": rng.uniform(0, 1, 200_000),
    "log-uniform": 10 ** rng.uniform(-4, 0, 200_000),
    # Few digits: the shortest text is far shorter than 17 digits.
    "short": np.array(
        [
            round(value, digits)
            for value, digits in zip(
                rng.uniform(1e-4, 1, 50_000).tolist(), rng.randint(1, 16, 50_000).tolist()
            )
        ]
    ),
    # Neighbours of powers of two (whose lower gap is half as wide) and of powers of ten.
    "boundaries": np.concatenate(
        [
            values
            for exact in (POWERS_OF_TWO, POWERS_OF_TEN)
            for values in (exact, np.nextafter(exact, 0), np.nextafter(exact, 1))
        ]
        + [[0.0, 1.0, 1e-4, 0.9999999999999999]]
    ),
}


def texts(scores: np.ndarray) -> tuple[list[bytes], np.ndarray]:
    whole, fraction, exact = score_texts(scores)
    written = [
        bytes([digit]) + b"." + row.tobytes().replace(b"\0", b"")
        for digit, row in zip(whole.tolist(), fraction)
    ]
    return written, exact


@pytest.mark.parametrize("name", sorted(SCORES))
def test_score_texts_are_repr(name: str) -> None:
    scores = SCORES[name]
    written, exact = texts(scores)
    inside = ((scores >= 1e-4) & (scores < 1)) | (scores == 0) | (scores == 1)
    # Every score in range is written here, none left to repr(), and each as repr() writes it.
    assert exact.tolist() == inside.tolist()
    mismatches = [
        (text, repr(score))
        for text, score, ok in zip(written, scores.tolist(), exact.tolist())
        if ok and text != repr(score).encode()
    ]
    assert mismatches == []


def test_scores_repr_writes_otherwise_are_left_to_it() -> None:
    scores = np.array([5e-5, 9.99e-5, 2.0**-20, -0.0, 5e-324, 0.3])
    _, exact = texts(scores)
    assert exact.tolist() == [False, False, False, False, False, True]


@pytest.mark.parametrize("template", [_BOX_JSON, _LEGACY_BOX_JSON], ids=["boxes", "legacy"])
def test_rows_are_the_templates(template: str) -> None:
    # Class names as the writer hands them over: JSON texts of different lengths.
    name_json = ['"dog"', '"a \\"quoted\\" name"', '"\\u00e9t\\u00e9"', '"x"']
    counts = [3, 0, 1, 30, 2, 5, 1]
    total = sum(counts)
    ints = rng.randint(0, 5000, size=(total, 4))
    classes = rng.randint(len(name_json), size=total)
    scores = rng.uniform(0, 1, total)
    scores[::7] = rng.uniform(0, 1, len(scores[::7])).astype(np.float32)
    # Image 3 has a score repr() writes with an exponent, image 5 a coordinate beyond the table.
    scores[4 + 7] = 3e-5
    ints[sum(counts[:5]) + 1, 2] = INT_LIMIT
    encoder = BoxRowEncoder(template, name_json)
    written = encoder.encode(ints, classes, scores, counts)
    assert written == [
        None if image in (3, 5) else text
        for image, text in enumerate(
            template_texts(template, name_json, ints, classes, scores, counts)
        )
    ]
    # The encoder keeps its table between batches: a second batch, grouped differently (rows
    # that started an image above now follow others), comes out as the template writes it.
    rows = slice(sum(counts[:5]))  # images 0 to 4, without the coordinate beyond the table
    regrouped = [2, 2, 30, 2]
    written = encoder.encode(ints[rows], classes[rows], scores[rows], regrouped)
    expected = template_texts(
        template, name_json, ints[rows], classes[rows], scores[rows], regrouped
    )
    assert written == [None if image == 2 else text for image, text in enumerate(expected)]


def template_texts(template, name_json, ints, classes, scores, counts) -> list[bytes]:
    """Each image's boxes as the ``%`` template writes them, joined by ", "."""
    start, texts = 0, []
    for count in counts:
        texts.append(
            ", ".join(
                template % (*ints[row].tolist(), name_json[classes[row]], float(scores[row]))
                for row in range(start, start + count)
            ).encode()
        )
        start += count
    return texts
