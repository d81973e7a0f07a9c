"""Type tests for values read from YAML and JSON, as the platform's parsers see them.

A ``bool`` is an ``int`` to Python but not to the platform (protobuf, its JSON parser and its
stage-metric checks reject ``true`` where a number belongs), so booleans are never numbers here.
"""

from __future__ import annotations

import math
from typing import Any


def is_number(value: Any) -> bool:
    """An int or a float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_int(value: Any) -> bool:
    """An int, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_unit(value: Any) -> bool:
    """A finite number in [0, 1]: a score, a fraction, a metric."""
    return is_number(value) and math.isfinite(value) and 0.0 <= value <= 1.0


def is_hashable(value: Any) -> bool:
    """Usable as a key (an id the platform looks up in a dict)."""
    try:
        hash(value)
    except TypeError:
        return False
    return True
