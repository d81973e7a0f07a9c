"""A task's whole work dir: ``in/`` read like the executor reads it, ``out/`` checked like the
platform reads it, with the checks the task and its outcome call for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...contract.booleans import parse_bool
from .failure import run_outcome, verify_failure
from .findings import Finding, finding
from .infer import verify_infer
from .inputs import (
    legacy_protocol,
    output_path,
    read_candidates,
    read_yaml,
    rebase,
    task_object_type,
)
from .mining import verify_mining
from .monitor import verify_monitor
from .training import verify_training


def verify_work_dir(
    work_dir: Path, expect_success: bool | None = None, object_type: int | None = None
) -> list[Finding]:
    """Verify a task's ``work_dir/in`` + ``work_dir/out`` like the platform would read them.

    Reads ``in/env.yaml`` and the config it names, then checks the monitor and the outputs of
    every task env.yaml asks for. Env paths are used as given (a local run writes real local
    paths); container paths of a platform task's leftovers are moved under ``work_dir``.
    ``expect_success``: None reads the outcome from monitor.txt (:func:`run_outcome`); a
    failed run (or False) is checked against the failure protocol (:func:`verify_failure`)
    instead of for results. ``object_type`` defaults to config.yaml's (YMIR 2.4+), else the
    manifest's, else 2.
    """
    work_dir = Path(work_dir)
    in_dir, out_dir = work_dir / "in", work_dir / "out"
    env_file = in_dir / "env.yaml"
    env, error = read_yaml(env_file) if env_file.is_file() else (None, "missing")
    if error or not isinstance(env, dict):
        return [finding("WRK001", "{}: {}".format(env_file, error or "not a mapping"))]
    findings: list[Finding] = []
    inputs = env.get("input")
    if not isinstance(inputs, dict):
        inputs = {}
    in_root = inputs.get("root_dir")

    config_file = rebase(inputs.get("config_file"), in_root, in_dir) or in_dir / "config.yaml"
    config, error = read_yaml(config_file) if config_file.is_file() else (None, "missing")
    if error or not isinstance(config, dict):
        findings.append(finding("WRK002", "{}: {}".format(config_file, error or "not a mapping")))
        config = {}

    tasks = _tasks(env, env_file, findings)
    if tasks is None:
        return findings
    training, mining, infer = tasks

    legacy, protocol_findings = legacy_protocol(env)
    findings.extend(protocol_findings)
    monitor_file = output_path(env, "monitor_file", out_dir, "monitor.txt")
    if expect_success is None:
        expect_success = not run_outcome(work_dir).failed
    findings.extend(
        verify_monitor(
            monitor_file, expect_success, task_id=str(env["task_id"]) if "task_id" in env else None
        )
    )
    if object_type is None:
        object_type = task_object_type(config, env, in_dir)

    index = None if training else rebase(inputs.get("candidate_index_file"), in_root, in_dir)
    raw_candidates = None if index is None else read_candidates(index)
    if not expect_success:
        candidates = (
            None
            if raw_candidates is None
            else (raw_candidates, [str(rebase(path, in_root, in_dir)) for path in raw_candidates])
        )
        findings.extend(verify_failure(out_dir, env, config, object_type, candidates))
        return findings

    if training:
        # verify_training reports its own protocol findings; keep them once.
        findings.extend(
            item
            for item in verify_training(out_dir, env, config, object_type)
            if item.check_id != "WRK004"
        )
        return findings

    if raw_candidates is None:
        findings.append(finding("WRK005", f"candidate index {index} is missing or unreadable"))
        return findings
    if mining:
        result = output_path(env, "mining_result_file", out_dir, "result.tsv")
        findings.extend(verify_mining(out_dir, raw_candidates, result_file=result))
    if infer:
        local = [str(rebase(path, in_root, in_dir)) for path in raw_candidates]
        findings.extend(_verify_infer_result(out_dir, env, config, local, object_type, legacy))
    return findings


def _tasks(
    env: dict[str, Any], env_file: Path, findings: list[Finding]
) -> tuple[bool, bool, bool] | None:
    """``(training, mining, infer)`` from env.yaml's run_* flags; None (and a finding) when
    they name no task the platform runs: training alone, or mining and / or infer."""
    # A missing flag is false, as the executor reads it; anything but a boolean is a finding.
    flags = {
        key: False if env.get(key) is None else parse_bool(env.get(key))
        for key in ("run_training", "run_mining", "run_infer")
    }
    training, mining, infer = (flags["run_training"], flags["run_mining"], flags["run_infer"])
    if (
        None in flags.values()
        or not (training or mining or infer)
        or (training and (mining or infer))
    ):
        findings.append(
            finding(
                "WRK003",
                "{}: run_training/run_mining/run_infer = {}, {}, {}; "
                "expected training alone, or mining and/or "
                "infer".format(
                    env_file, env.get("run_training"), env.get("run_mining"), env.get("run_infer")
                ),
            )
        )
        return None
    return bool(training), bool(mining), bool(infer)


def _verify_infer_result(
    out_dir: Path,
    env: dict[str, Any],
    config: dict[str, Any],
    local_candidates: list[str],
    object_type: int,
    legacy: bool,
) -> list[Finding]:
    """infer-result.json against the task's classes (which must be a list of names)."""
    findings: list[Finding] = []
    class_names = config.get("class_names")
    if (
        not isinstance(class_names, list)
        or not class_names
        or not all(isinstance(name, str) for name in class_names)
    ):
        findings.append(
            finding(
                "WRK006",
                f"config class_names {class_names!r} must be a non-empty list of names",
            )
        )
        class_names = []
    result = output_path(env, "infer_result_file", out_dir, "infer-result.json")
    findings.extend(
        verify_infer(
            out_dir, local_candidates, class_names, object_type, legacy, result_file=result
        )
    )
    return findings
