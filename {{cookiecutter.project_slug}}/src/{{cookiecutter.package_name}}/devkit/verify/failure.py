"""How a run ended, and a failed run against the failure protocol (docs/protocol.md#failures).

The outcome is read from ``monitor.txt`` as the platform reads it: state 4 (or a monitor the
executor never wrote) is a failed run. A failed run must carry an executor code, end its log
with a one-line reason and leave no half-written result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...contract.errors import ErrorCode
from .findings import WARNING, Finding, finding
from .infer import verify_infer
from .inputs import legacy_protocol, output_path, read_yaml
from .mining import verify_mining
from .monitor import EXECUTOR_CODES
from .training import verify_training

# The end of an uncaught Python traceback: "ValueError: ..." after indented frame lines.
_EXCEPTION_LINE_RE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b")


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended, as the platform reads it from ``monitor.txt`` (and the log's tail)."""

    failed: bool
    state: int | None
    code: int | None
    reason: str  # the log's last non-blank line: what the YMIR UI shows last

    def describe(self) -> str:
        if not self.failed:
            return f"the run succeeded (monitor state {self.state})"
        if self.state != 4:
            state = "the executor never wrote monitor.txt" if self.state == 1 else "no state 4"
            return f"the run failed ({state})"
        code = "no code" if self.code is None else f"code {self.code}"
        if self.code in EXECUTOR_CODES:
            code += f" {ErrorCode(self.code).name}"
        return f"the run failed (monitor state 4, {code}): {self.reason or 'no reason logged'}"


def _monitor_state(monitor_file: Path) -> tuple[int | None, int | None]:
    """(state, code) of monitor.txt's first line; None where absent or not an integer."""
    try:
        with open(monitor_file, encoding="utf-8", errors="replace") as handle:
            fields = handle.readline().strip().split("\t")
    except OSError:
        return None, None
    numbers: list[int | None] = []
    for index in (3, 4):
        try:
            numbers.append(int(fields[index]))
        except (IndexError, ValueError):
            numbers.append(None)
    return numbers[0], numbers[1]


def _log_tail(log_file: Path, count: int = 2) -> list[str] | None:
    """The last ``count`` non-blank lines of the executor log; None when it is missing."""
    try:
        text = log_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return [line.rstrip() for line in text.splitlines() if line.strip()][-count:]


def _log_file(env: dict[str, Any], out_dir: Path) -> Path:
    return output_path(env, "executor_log_file", out_dir, "ymir-executor-out.log")


def run_outcome(work_dir: Path) -> RunOutcome:
    """The outcome of the run in ``work_dir``: failed when ``monitor.txt`` says error (4), or
    still pending (1: the executor never reported, so it did not get far)."""
    work_dir = Path(work_dir)
    env, error = read_yaml(work_dir / "in" / "env.yaml")
    env = env if not error and isinstance(env, dict) else {}
    out_dir = work_dir / "out"
    state, code = _monitor_state(output_path(env, "monitor_file", out_dir, "monitor.txt"))
    tail = _log_tail(_log_file(env, out_dir)) or []
    return RunOutcome(
        failed=state in (1, 4), state=state, code=code, reason=tail[-1].strip() if tail else ""
    )


def verify_failure(
    out_dir: Path,
    env: dict[str, Any],
    config: dict[str, Any],
    object_type: int,
    candidates: tuple[list[str], list[str]] | None,
) -> list[Finding]:
    """A failed run against the failure protocol, beyond the monitor line itself: an executor
    code (else YMIR can only say 160004), a one-line reason as the log's last line (the UI shows
    the last lines), and no half-written result (whatever result file exists must be complete:
    YMIR leaves a failed task's out/ as it is, and a retry or a user reads it). ``candidates``:
    the candidate index's paths as given and as local paths (mining / infer tasks)."""
    out_dir = Path(out_dir)
    findings: list[Finding] = []
    monitor_file = output_path(env, "monitor_file", out_dir, "monitor.txt")
    state, code = _monitor_state(monitor_file)
    if state == 4 and code is None:
        findings.append(
            finding(
                "FAL001",
                f"{monitor_file}: state 4 without an error code; YMIR reports 160004 (container "
                "error): fine for an unexpected failure, a known one should carry its 300xxx code",
            )
        )
    log_file = _log_file(env, out_dir)
    tail = _log_tail(log_file)
    if not tail:
        what = "is missing" if tail is None else "is empty"
        findings.append(
            finding("FAL002", f"{log_file} {what}: the UI shows no reason for the failure")
        )
    else:
        last, before = tail[-1], tail[0] if len(tail) > 1 else ""
        ends_in_traceback = (
            last[:1].isspace()
            or last.startswith("Traceback")
            or (before[:1].isspace() and _EXCEPTION_LINE_RE.match(last) is not None)
        )
        if ends_in_traceback:
            findings.append(
                finding(
                    "FAL002",
                    f"{log_file}: ends in a traceback ({last.strip()[:120]!r}); print a one-line "
                    "reason after it, the last lines are what the YMIR UI shows",
                )
            )
    findings.extend(_half_written(out_dir, env, config, object_type, candidates))
    return findings


def _half_written(
    out_dir: Path,
    env: dict[str, Any],
    config: dict[str, Any],
    object_type: int,
    candidates: tuple[list[str], list[str]] | None,
) -> list[Finding]:
    problems: list[Finding] = []
    if out_dir.is_dir():
        for path in sorted(out_dir.rglob(".*.tmp")):
            problems.append(finding("FAL003", f"{path}: a temporary file of an unfinished write"))
    legacy, _ = legacy_protocol(env)
    results: list[tuple[Path, Any]] = [
        (
            output_path(env, "training_result_file", out_dir, "models/result.yaml"),
            lambda: verify_training(out_dir, env, config, object_type),
        ),
    ]
    if candidates is not None:
        as_given, local = candidates
        mining_file = output_path(env, "mining_result_file", out_dir, "result.tsv")
        infer_file = output_path(env, "infer_result_file", out_dir, "infer-result.json")
        class_names = config.get("class_names")
        if not isinstance(class_names, list):
            class_names = []
        results += [
            (
                mining_file,
                lambda: verify_mining(out_dir, as_given, result_file=mining_file),
            ),
            (
                infer_file,
                lambda: verify_infer(
                    out_dir, local, class_names, object_type, legacy, result_file=infer_file
                ),
            ),
        ]
    for result_file, check in results:
        if not result_file.is_file():
            continue
        for broken in check():
            if broken.severity != WARNING and not broken.check_id.startswith("WRK"):
                problems.append(
                    finding(
                        "FAL003",
                        f"{result_file} is incomplete after the failure ({broken.check_id}: "
                        f"{broken.message})",
                    )
                )
    return problems
