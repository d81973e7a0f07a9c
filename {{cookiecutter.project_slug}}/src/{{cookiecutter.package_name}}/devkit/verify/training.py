"""Training's ``result.yaml``, its model files and TensorBoard events, as the platform packs
them (docs/protocol.md#training-result)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from ...contract.tensorboard import EventFileError, event_files, read_scalars
from .findings import Finding, finding
from .inputs import MAIN_METRIC, legacy_protocol, output_path, read_yaml
from .values import is_int, is_number, is_unit

# Stage metrics the platform validates as floats in [0, 1] (ModelStageStorage, 2.5).
FLOAT_METRICS = ("mAP", "mAR", "mIoU", "mAcc", "maskAP", "boxAP")
COUNT_METRICS = ("tp", "fp", "fn")
MAX_STAGES = 11


def verify_training(
    out_dir: Path, env: dict[str, Any], config: dict[str, Any], object_type: int
) -> list[Finding]:
    """Check ``result.yaml`` and the model files like the platform's packing does.

    See docs/protocol.md#training-result.

    ``env`` is env.yaml's content (its protocol_version picks modern or legacy; its output
    paths are used, moved under ``out_dir`` when they name another root). ``config`` is the
    task's config.yaml (kept for checks that depend on it; unused by the current rules).
    """
    del config  # no rule depends on the hyper-parameters yet
    out_dir = Path(out_dir)
    env = env if isinstance(env, dict) else {}
    legacy, findings = legacy_protocol(env)
    result_file = output_path(env, "training_result_file", out_dir, "models/result.yaml")
    models_dir = output_path(env, "models_dir", out_dir, "models")
    tensorboard_dir = output_path(env, "tensorboard_dir", out_dir, "tensorboard")

    if not tensorboard_dir.is_dir() or not any(tensorboard_dir.iterdir()):
        findings.append(
            finding(
                "TRN050", f"{tensorboard_dir} is missing or empty; write TensorBoard events there"
            )
        )
    else:
        findings.extend(_check_tensorboard(tensorboard_dir))
    if not result_file.is_file():
        findings.append(finding("TRN001", f"{result_file} is missing"))
        return findings
    data, error = read_yaml(result_file)
    if error:
        findings.append(finding("TRN002", f"{result_file}: yaml.safe_load fails: {error}"))
        return findings
    if not isinstance(data, dict) or not data:
        findings.append(
            finding("TRN003", f"{result_file}: must be a non-empty mapping, got {data!r}")
        )
        return findings

    has_model, has_stages = "model" in data, "model_stages" in data
    if has_model and has_stages:
        findings.append(
            finding(
                "TRN004",
                f"{result_file}: has both 'model' and 'model_stages'; the "
                "platform then uses the legacy parser and ignores "
                "model_stages",
            )
        )
    if legacy:
        if not has_model:
            findings.append(
                finding(
                    "TRN006",
                    f"{result_file}: the legacy protocol (no protocol_version) "
                    "reads only 'model' and 'map'",
                )
            )
            return findings
        findings.extend(_check_legacy_result(result_file, data, models_dir, flat=True))
        return findings
    if has_model:
        if not has_stages:
            findings.append(
                finding(
                    "TRN005",
                    "{}: legacy 'model'/'map' format under protocol {}; write model_stages".format(
                        result_file, env.get("protocol_version")
                    ),
                )
            )
        # YMIR 2.x reads the legacy format too, looking files up like stage files.
        findings.extend(_check_legacy_result(result_file, data, models_dir, flat=False))
        return findings
    findings.extend(_check_modern_result(result_file, data, models_dir, object_type))
    return findings


def _check_tensorboard(tensorboard_dir: Path) -> list[Finding]:
    """The training curve YMIR's TensorBoard shows: an event file with at least one scalar."""
    try:
        scalars = read_scalars(tensorboard_dir)
    except (OSError, EventFileError) as error:
        return [finding("TRN051", f"{tensorboard_dir}: unreadable event file: {error}")]
    if scalars:
        return []
    files = len(event_files(tensorboard_dir))
    return [
        finding(
            "TRN051",
            f"{tensorboard_dir}: {files} event file(s) without a scalar; YMIR shows no training "
            "curve (write loss and metrics, e.g. with ctx.tensorboard.add_scalars)",
        )
    ]


def _check_file_name(where: str, name: Any) -> Finding | None:
    if not isinstance(name, str) or not name:
        return finding("TRN015", f"{where}: file entry {name!r} is not a file name")
    parts = name.replace("\\", "/").split("/")
    if os.path.isabs(name) or name.startswith("/") or ".." in parts:
        return finding("TRN016", f"{where}: file {name!r} must be relative to the models folder")
    return None


def _check_stage_files(where: str, files: Any, bases: Sequence[Path]) -> list[Finding]:
    if not isinstance(files, list) or not files:
        return [
            finding(
                "TRN015", f"{where}: files must be a non-empty list of file names, got {files!r}"
            )
        ]
    findings = []
    for name in files:
        problem = _check_file_name(where, name)
        if problem is not None:
            findings.append(problem)
            continue
        # The platform looks in models/<stage>/ first, then models/ (models._find_model_file).
        found = next((base / name for base in bases if os.path.lexists(str(base / name))), None)
        if found is None:
            findings.append(
                finding(
                    "TRN017",
                    "{}: file {!r} not found in {}".format(
                        where, name, " or ".join(str(base) for base in bases)
                    ),
                )
            )
        elif found.is_symlink():
            findings.append(finding("TRN018", f"{where}: {found} is a symlink; copy the real file"))
        elif not found.is_file():
            findings.append(finding("TRN017", f"{where}: {found} is not a regular file"))
    return findings


def _check_modern_result(
    result_file: Path, data: dict[str, Any], models_dir: Path, object_type: int
) -> list[Finding]:
    stages = data.get("model_stages")
    if not isinstance(stages, dict) or not stages:
        return [
            finding(
                "TRN010", f"{result_file}: model_stages must be a non-empty mapping, got {stages!r}"
            )
        ]
    findings: list[Finding] = []
    main = MAIN_METRIC.get(object_type, "mAP")
    if len(stages) > MAX_STAGES:
        findings.append(
            finding(
                "TRN030",
                f"{result_file}: {len(stages)} stages; every stage's files are packed into "
                f"the model (the SDK keeps {MAX_STAGES})",
            )
        )
    scores: dict[str, float] = {}
    for key, stage in stages.items():
        where = f"{result_file}: stage {str(key)!r}"
        findings.extend(_check_stage(where, key, stage, models_dir, main, object_type))
        if isinstance(stage, dict) and main in stage and is_unit(stage[main]):
            scores[key] = float(stage[main])
    findings.extend(
        _check_best_stage(result_file, data.get("best_stage_name"), stages, scores, main)
    )
    findings.extend(_check_result_fields(result_file, data, models_dir, object_type))
    return findings


def _check_stage(
    where: str, key: Any, stage: Any, models_dir: Path, main: str, object_type: int
) -> list[Finding]:
    """One entry of model_stages: its name, fields, files and metrics."""
    findings: list[Finding] = []
    name = str(key)
    if "@" in name:
        findings.append(
            finding("TRN013", f"{where}: '@' separates model hash and stage name in YMIR")
        )
    elif not name.replace("-", "_").isidentifier():
        findings.append(
            finding("TRN014", f"{where}: stage names must be identifiers ('-' allowed)")
        )
    if not isinstance(stage, dict):
        findings.append(finding("TRN011", f"{where}: must be a mapping, got {stage!r}"))
        return findings
    missing = [field for field in ("stage_name", "files", "timestamp") if field not in stage]
    if missing:
        findings.append(finding("TRN011", "{}: missing {}".format(where, ", ".join(missing))))
    if "stage_name" in stage and stage["stage_name"] != key:
        findings.append(
            finding(
                "TRN012",
                "{}: stage_name {!r} differs from the key".format(where, stage["stage_name"]),
            )
        )
    if "files" in stage:
        findings.extend(_check_stage_files(where, stage["files"], [models_dir / name, models_dir]))
    if "timestamp" in stage and not (is_int(stage["timestamp"]) and stage["timestamp"] > 0):
        findings.append(
            finding(
                "TRN019",
                "{}: timestamp {!r} must be a positive integer (seconds)".format(
                    where, stage["timestamp"]
                ),
            )
        )
    findings.extend(_check_stage_metrics(where, stage, main, object_type))
    return findings


def _check_stage_metrics(
    where: str, stage: dict[str, Any], main: str, object_type: int
) -> list[Finding]:
    findings: list[Finding] = []
    for metric in FLOAT_METRICS:
        if metric in stage and not is_unit(stage[metric]):
            findings.append(
                finding(
                    "TRN020",
                    f"{where}: {metric} = {stage[metric]!r} must be a float in [0, 1] (not "
                    "a percentage)",
                )
            )
    for metric in COUNT_METRICS:
        if metric in stage and not (is_int(stage[metric]) and stage[metric] >= 0):
            findings.append(
                finding("TRN021", f"{where}: {metric} = {stage[metric]!r} must be an integer >= 0")
            )
    if "mAP" not in stage:
        findings.append(
            finding(
                "TRN022",
                f"{where}: no mAP; YMIR 2.0 requires it in every stage "
                "(write 0.0 when it does not apply)",
            )
        )
    if main not in stage:
        findings.append(
            finding("TRN023", f"{where}: no {main}, the main metric of object_type {object_type}")
        )
    return findings


def _check_best_stage(
    result_file: Path, best: Any, stages: dict[Any, Any], scores: dict[str, float], main: str
) -> list[Finding]:
    """best_stage_name names a stage, and the one with the best main metric."""
    if best is None or not isinstance(best, (str, int)) or best not in stages:
        return [
            finding(
                "TRN024", f"{result_file}: best_stage_name {best!r} is not a key of model_stages"
            )
        ]
    if scores and best in scores and scores[best] < max(scores.values()):
        top = max(scores, key=lambda name: scores[name])
        return [
            finding(
                "TRN025",
                f"{result_file}: best_stage_name {best!r} has {main} = {scores[best]}, "
                f"stage {top!r} has {scores[top]}",
            )
        ]
    return []


def _check_result_fields(
    result_file: Path, data: dict[str, Any], models_dir: Path, object_type: int
) -> list[Finding]:
    """The top-level fields beside the stages: evaluate_config, attachments, object_type."""
    findings: list[Finding] = []
    if "evaluate_config" in data:
        config = data["evaluate_config"]
        if not isinstance(config, dict) or not all(
            isinstance(key, str) and is_number(value) for key, value in config.items()
        ):
            findings.append(
                finding(
                    "TRN026",
                    f"{result_file}: evaluate_config must map names to numbers, got {config!r}",
                )
            )
    if "attachments" in data:
        findings.extend(_check_attachments(result_file, data["attachments"], models_dir))
    if "object_type" not in data:
        findings.append(
            finding(
                "TRN028",
                f"{result_file}: no top-level object_type; YMIR 2.1-2.3 then "
                "take the model as detection",
            )
        )
    elif data["object_type"] != object_type:
        findings.append(
            finding(
                "TRN029",
                "{}: object_type {!r} but the executor's target is {}".format(
                    result_file, data["object_type"], object_type
                ),
            )
        )
    return findings


def _check_attachments(result_file: Path, attachments: Any, models_dir: Path) -> list[Finding]:
    if not isinstance(attachments, dict):
        return [
            finding(
                "TRN027",
                f"{result_file}: attachments must map sections to file lists, got {attachments!r}",
            )
        ]
    findings = []
    for section, files in attachments.items():
        if not isinstance(section, str) or not isinstance(files, list):
            findings.append(
                finding(
                    "TRN027", f"{result_file}: attachments {section!r} must be a list of file names"
                )
            )
            continue
        for name in files:
            path = models_dir / "attachments" / section / str(name)
            if not isinstance(name, str) or not path.is_file():
                findings.append(finding("TRN027", f"{result_file}: attachment {path} not found"))
    return findings


def _check_legacy_result(
    result_file: Path, data: dict[str, Any], models_dir: Path, flat: bool
) -> list[Finding]:
    """``model`` + ``map``; ``flat``: YMIR 1.1, which wants the files directly in models/."""
    findings: list[Finding] = []
    files = data.get("model")
    if not isinstance(files, list) or not files:
        findings.append(
            finding(
                "TRN040",
                f"{result_file}: model must be a non-empty list of file names, got {files!r}",
            )
        )
    else:
        for name in files:
            if not isinstance(name, str) or not name:
                findings.append(
                    finding("TRN040", f"{result_file}: model entry {name!r} is not a file name")
                )
                continue
            path = models_dir / name
            if not flat:
                problem = _check_file_name(str(result_file), name)
                if problem is not None:
                    findings.append(problem)
                    continue
            if flat and ("/" in name.replace("\\", "/") or os.path.isabs(name)):
                findings.append(
                    finding(
                        "TRN042",
                        f"{result_file}: legacy model file {name!r} must be a plain "
                        f"name directly in {models_dir}",
                    )
                )
            elif path.is_symlink():
                findings.append(
                    finding("TRN018", f"{result_file}: {path} is a symlink; copy the real file")
                )
            elif not path.is_file():
                findings.append(
                    finding("TRN042", f"{result_file}: legacy model file {path} not found")
                )
    if "map" not in data or not is_unit(data["map"]):
        findings.append(
            finding(
                "TRN041",
                "{}: map must be a float in [0, 1] (YMIR 1.1 fails without it), got {!r}".format(
                    result_file, data.get("map")
                ),
            )
        )
    return findings
