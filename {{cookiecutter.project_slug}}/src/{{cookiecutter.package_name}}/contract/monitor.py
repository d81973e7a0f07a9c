"""Progress and failure reporting through ``monitor.txt`` (docs/protocol.md#monitor-file).

The platform's monitor service polls this file every 20 seconds and parses its first line with
``PercentLogHandler.parse_percent_log``: TAB-separated ``task_id, timestamp, percent, state``
and an optional integer ``state_code``. Anything it cannot parse marks the task as failed in the
UI (150404), even if the executor keeps running, so every line written here is validated first.

Rules this module enforces:

* the file is rewritten as a whole, atomically (the monitor never sees a torn line);
* an executor writes only RUNNING (2) with code 0, or ERROR (4) with its error code just before
  exiting non-zero; DONE (3) belongs to the platform and is never written;
* the percent never goes back (it feeds the UI's remaining-time estimate);
* the monitor detects updates by a changed timestamp string, so each write gets a later one.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

from .atomic import write_text_atomic

PENDING = 1
RUNNING = 2
ERROR = 4
# DONE (3) is deliberately not defined: the platform writes it after post-processing succeeded.
_EXECUTOR_STATES = frozenset({PENDING, RUNNING, ERROR})

# parse_percent_log keeps lines 2..100 of the file as the error details.
MAX_MESSAGE_LINES = 99


def _check_fraction(value: float, what: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if math.isnan(number):
        raise ValueError(f"{what} must be a number, got NaN")
    return number


def format_monitor_line(
    task_id: str,
    percent: float,
    state: int,
    code: int | None = None,
    timestamp: float | None = None,
) -> str:
    """The first line of ``monitor.txt``: ``tid\\tts\\t%.2f\\tstate[\\tcode]\\n``.

    Raises ``ValueError`` for anything the platform's parser would choke on (a tab or newline in
    the task id, a percent outside [0, 1], state 3 or an unknown state, a non-integer code).
    """
    task_id = str(task_id)
    if any(char in task_id for char in "\t\r\n"):
        raise ValueError(f"task id must not contain tabs or newlines: {task_id!r}")
    number = _check_fraction(percent, "percent")
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"percent must be in [0, 1], got {percent!r}")
    if isinstance(state, bool) or not isinstance(state, int) or state not in _EXECUTOR_STATES:
        raise ValueError(
            "state must be 1 (pending), 2 (running) or 4 (error); 3 (done) is written by the "
            f"platform only; got {state!r}"
        )
    if timestamp is None:
        timestamp = time.time()
    stamp = _check_fraction(timestamp, "timestamp")
    if math.isinf(stamp) or stamp < 0:
        raise ValueError(f"timestamp must be a finite non-negative number, got {timestamp!r}")
    # "%.6f" is what the platform itself writes; the monitor compares the string to detect updates.
    fields = [task_id, f"{stamp:.6f}", f"{number:.2f}", str(int(state))]
    if code is not None:
        if isinstance(code, bool):
            raise ValueError(f"code must be an integer, got {code!r}")
        try:
            code_int = int(code)
        except (TypeError, ValueError):
            raise ValueError(f"code must be an integer, got {code!r}") from None
        if code_int != code:
            raise ValueError(f"code must be an integer, got {code!r}")
        fields.append(str(code_int))
    return "\t".join(fields) + "\n"


class Monitor:
    """Writes ``monitor.txt`` for one task id; see the module docstring for the rules."""

    def __init__(self, monitor_file: Path | str, task_id: str) -> None:
        # Nothing is written here: the top level builds a Monitor even to report errors that
        # happen before the first progress value, and the platform's PENDING line stays until
        # the executor really starts.
        self.monitor_file = Path(monitor_file)
        self.task_id = str(task_id)
        self._fraction = 0.0
        self._written: str | None = None
        self._last_stamp = 0.0
        self._failed = False

    @property
    def fraction(self) -> float:
        """The highest progress reported so far, in [0, 1]."""
        return self._fraction

    def _stamp(self) -> float:
        # Two writes within one microsecond would print the same "%.6f" timestamp and the
        # monitor would miss the second one, so each write gets a strictly later stamp, on the
        # printed microsecond grid so that the printed strings differ too.
        stamp = round(max(time.time(), self._last_stamp + 1e-6), 6)
        self._last_stamp = stamp
        return stamp

    def progress(self, fraction: float) -> None:
        """Report progress: clamped to [0, 1], never lower than before, state RUNNING code 0.

        Only a change of the printed two-decimal value is written (0 and 1 always are), so
        calling this once per batch is cheap. Ignored after :meth:`error`: a later progress line
        would hide the failure from the platform.
        """
        number = _check_fraction(fraction, "progress")
        number = min(1.0, max(0.0, number))
        if self._failed:
            return
        number = max(number, self._fraction)
        self._fraction = number
        shown = f"{number:.2f}"
        if shown == self._written and number not in (0.0, 1.0):
            return
        line = format_monitor_line(self.task_id, number, RUNNING, 0, self._stamp())
        write_text_atomic(self.monitor_file, line)
        self._written = shown

    def error(self, code: int | None, message: str) -> None:
        """Report a failure: state ERROR with ``code`` (no code field when ``None``).

        The percent stays at the last reported value. ``message`` goes on the following lines,
        which the platform keeps (lines 2 to 100) as the error details.
        """
        lines = [line.rstrip("\r") for line in str(message or "").splitlines()]
        # Keep the end of long messages: a traceback's last lines name the actual error.
        lines = [line for line in lines if line.strip()][-MAX_MESSAGE_LINES:]
        text = format_monitor_line(self.task_id, self._fraction, ERROR, code, self._stamp())
        if lines:
            text += "\n".join(lines) + "\n"
        write_text_atomic(self.monitor_file, text)
        self._failed = True
        self._written = None

    def subrange(self, start: float, end: float) -> Callable[[float], None]:
        """A progress function mapping [0, 1] onto [start, end] of this monitor.

        Used when mining and infer run in one container (mining 0-0.5, infer 0.5-1).
        """
        low = _check_fraction(start, "start")
        high = _check_fraction(end, "end")
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"need 0 <= start <= end <= 1, got {start!r}, {end!r}")

        def report(fraction: float) -> None:
            number = min(1.0, max(0.0, _check_fraction(fraction, "progress")))
            self.progress(low + (high - low) * number)

        return report
