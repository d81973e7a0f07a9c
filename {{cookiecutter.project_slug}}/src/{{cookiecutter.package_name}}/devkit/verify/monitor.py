"""``monitor.txt`` as the platform parses it (docs/protocol.md#monitor-file)."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

from ...contract.errors import ErrorCode
from .findings import Finding, finding

MONITOR_KEPT_LINES = 100
EXECUTOR_CODES = frozenset(int(code) for code in ErrorCode)


def verify_monitor(
    monitor_file: Path, expect_success: bool, task_id: str | None = None
) -> list[Finding]:
    """Parse ``monitor.txt`` exactly like ``PercentLogHandler.parse_percent_log``.

    See docs/protocol.md#monitor-file.

    ``expect_success``: the executor exited 0 (final percent 1.0, no state 4) or not
    (state 4 expected). ``task_id``: env.yaml's task id, compared when given.
    """
    path = Path(monitor_file)
    if not path.is_file():
        return [finding("MON001", f"{path} is missing")]
    # Text mode with universal newlines and readlines(), as the platform reads it.
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = handle.readlines()
    if not lines:
        return [finding("MON002", f"{path} is empty: the executor never reported")]
    fields = lines[0].strip().split("\t")
    if len(fields) < 4:
        return [
            finding(
                "MON003",
                "{}: first line {!r} needs at least 4 TAB-separated fields "
                "(task_id, timestamp, percent, state)".format(path, lines[0].rstrip("\n")),
            )
        ]
    tid, stamp, percent_text, state_text = fields[:4]
    findings: list[Finding] = []
    try:
        float(stamp)
    except ValueError:
        findings.append(finding("MON004", f"{path}: timestamp {stamp!r} is not a float"))
    percent = _read_percent(path, percent_text, findings)
    state = _read_state(path, state_text, findings)
    code: int | None = None
    if len(fields) > 4:
        try:
            code = int(fields[4])
        except ValueError:
            findings.append(
                finding("MON010", f"{path}: state_code {fields[4]!r} is not an integer")
            )
    findings.extend(_check_outcome(path, expect_success, percent, percent_text, state))
    if state == 2 and code not in (None, 0):
        findings.append(
            finding(
                "MON014", f"{path}: state 2 (running) with code {code}; running lines carry code 0"
            )
        )
    if state == 4 and code is not None and code not in EXECUTOR_CODES:
        findings.append(
            finding("MON015", f"{path}: error code {code} is not an executor code (300001..300301)")
        )
    if len(lines) > MONITOR_KEPT_LINES:
        findings.append(
            finding(
                "MON016",
                f"{path}: {len(lines)} lines; the platform keeps lines 2..{MONITOR_KEPT_LINES} "
                "only",
            )
        )
    if task_id is not None and tid != str(task_id):
        findings.append(
            finding("MON017", f"{path}: task id {tid!r} differs from env.yaml's {task_id!r}")
        )
    return findings


def _read_percent(path: Path, percent_text: str, findings: list[Finding]) -> float | None:
    """The percent field as a fraction in [0, 1]; None (and a finding) otherwise."""
    try:
        percent = float(percent_text)
    except ValueError:
        findings.append(finding("MON005", f"{path}: percent {percent_text!r} is not a float"))
        return None
    if not (math.isfinite(percent) and 0.0 <= percent <= 1.0):
        findings.append(
            finding(
                "MON006",
                f"{path}: percent {percent_text!r} is outside [0, 1] (a fraction, not "
                "a percentage)",
            )
        )
        return None
    return percent


def _read_state(path: Path, state_text: str, findings: list[Finding]) -> int | None:
    """The state field, 0..4; None (and a finding) otherwise. 0 and 3 are legal but wrong."""
    state: int | None = None
    with contextlib.suppress(ValueError):
        state = int(state_text)
    if state is None or not 0 <= state <= 4:
        findings.append(finding("MON007", f"{path}: state {state_text!r} is not one of 0..4"))
        return None
    if state == 3:
        findings.append(
            finding(
                "MON008",
                f"{path}: state 3 (done) is the platform's; the monitor "
                "marks the task finished before post-processing",
            )
        )
    elif state == 0:
        findings.append(
            finding(
                "MON009", f"{path}: state 0 (unknown); executors write 2 (running) or 4 (error)"
            )
        )
    return state


def _check_outcome(
    path: Path,
    expect_success: bool,
    percent: float | None,
    percent_text: str,
    state: int | None,
) -> list[Finding]:
    """The last line against how the run ended: 1.0 after a success, state 4 after a failure."""
    findings: list[Finding] = []
    if expect_success:
        if percent is not None and percent < 1.0:
            findings.append(
                finding(
                    "MON011",
                    f"{path}: the run succeeded but the last percent is "
                    f"{percent_text}; report progress 1.0 at the end",
                )
            )
        if state == 4:
            findings.append(
                finding("MON012", f"{path}: state 4 (error) although the executor exited 0")
            )
    elif state is not None and state != 4:
        findings.append(
            finding(
                "MON013",
                f"{path}: the run failed but the state is {state}; write state "
                "4 with an error code so the UI can explain the "
                "failure (else YMIR reports 160004)",
            )
        )
    return findings
