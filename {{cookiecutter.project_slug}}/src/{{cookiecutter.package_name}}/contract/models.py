"""Model packages: reading ``/in/models`` and packing / unpacking them like the platform.

After training, YMIR packs every stage listed in ``/out/models/result.yaml`` into a tar
(``<stage>/<file>`` plus ``ymir-info.yaml``). When a model is used (pretrained for training,
or for mining / inference) it extracts ``ymir-info.yaml`` and only the chosen stage's files to
``/in/models/<stage>/`` and lists them, as absolute paths, in ``model_params_path`` /
``pretrained_model_params`` (docs/protocol.md#models-in).

Two quirks are handled here so that task code never meets them:

* packages migrated from YMIR 1.1 keep their files at the tar root; they land in
  ``/in/models/<file>`` while the config still says ``/in/models/default_best_stage/<file>``,
  so every listed path falls back to a search by basename;
* the legacy protocol (YMIR 1.1) writes ``result.yaml`` as ``{model: [files], map: x}`` with the
  files flat in ``/out/models`` and extracts models flat.

:func:`pack_model` and :func:`unpack_model` let the devkit chain train -> package -> infer the way
the platform does.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import yaml

from .errors import ErrorCode, ExecutorError

INFO_FILE = "ymir-info.yaml"
PACKAGE_VERSION = "2.0.0"
# The single stage a legacy result.yaml becomes on YMIR 2.x (``models.py``).
LEGACY_STAGE = "default_best_stage"


@dataclass
class ModelPackage:
    """The model the platform handed over (all empty when none was chosen).

    ``info`` is ``/in/models/ymir-info.yaml`` (``{}`` without one), ``files`` the listed model
    files resolved to existing paths, ``class_names`` the classes the model was trained on.
    """

    info: dict = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    class_names: list[str] | None = None
    stage_name: str | None = None

    def find_file(self, name: str) -> Path:
        """The package file whose basename is ``name``.

        Raises:
            ExecutorError: MODEL when the package has no such file.
        """
        for path in self.files:
            if path.name == name:
                return path
        listed = ", ".join(path.name for path in self.files) or "no files"
        raise ExecutorError(ErrorCode.MODEL, f"the model has no file {name!r} ({listed})")


def resolve_model_files(paths: Sequence[str | os.PathLike], models_dir: Path) -> list[Path]:
    """Existing files for the listed model paths.

    Each path is used as listed (relative ones under ``models_dir``); when it does not exist,
    ``models_dir`` is searched recursively for its basename (legacy flat layout).

    Raises:
        ExecutorError: MODEL when a file cannot be found.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    models_dir = Path(models_dir)
    resolved = []
    for listed in paths:
        text = os.fspath(listed).strip()
        if not text:
            continue
        path = Path(text)
        if not path.is_absolute():
            path = models_dir / path
        if path.is_file():
            resolved.append(path)
            continue
        found = _search_by_name(models_dir, path)
        if found is None:
            raise ExecutorError(
                ErrorCode.MODEL,
                f"model file {text} not found, nor any file named {path.name!r} under {models_dir}",
            )
        resolved.append(found)
    return resolved


def load_model_package(models_dir: Path, paths: Sequence[str | os.PathLike]) -> ModelPackage:
    """The model package in ``models_dir`` for the config's list of model paths.

    No paths means no model was chosen: the package is empty (``models_dir`` may not exist).

    Raises:
        ExecutorError: MODEL for an unreadable ``ymir-info.yaml`` or a missing model file.
    """
    models_dir = Path(models_dir)
    info = read_info(models_dir / INFO_FILE) if (models_dir / INFO_FILE).is_file() else {}
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    listed = [os.fspath(path) for path in paths if os.fspath(path).strip()]
    files = resolve_model_files(listed, models_dir)
    return ModelPackage(
        info=info,
        files=files,
        class_names=_class_names(info),
        stage_name=_stage_name(info, listed, models_dir) if listed else None,
    )


def read_info(path: Path) -> dict:
    """A ``ymir-info.yaml`` as a dict.

    Raises:
        ExecutorError: MODEL when it cannot be read or is not a mapping.
    """
    try:
        return _parse_info(Path(path).read_bytes(), str(path))
    except OSError as error:
        raise ExecutorError(ErrorCode.MODEL, f"cannot read {path}: {error}") from error


def pack_model(
    result_yaml: Path,
    stage_name: str | None,
    dest_tar: Path,
    executor_config: dict,
    *,
    legacy: bool = False,
) -> str:
    """Package a training output the way the platform does; returns the chosen stage name.

    Every stage of ``result_yaml`` is packed as ``<stage>/<file>``, each file looked up first at
    ``<models>/<stage>/<file>``, then ``<models>/<file>``, plus ``ymir-info.yaml``. A legacy
    ``result.yaml`` (top-level ``model`` key, which wins over ``model_stages`` as on the platform)
    becomes the single stage ``default_best_stage``. ``legacy=True`` writes a package as YMIR 1.1
    made them: files at the tar root (it needs a legacy result). ``stage_name`` must be one of
    the packed stages (``None``: the best one).

    Raises:
        ExecutorError: MODEL for an unreadable result, an unknown stage or a missing file.
    """
    result_yaml = Path(result_yaml)
    result = _load_result(result_yaml)
    is_legacy_result = "model" in result
    stages, best = _result_stages(result, result_yaml)
    if legacy and not is_legacy_result:
        raise ExecutorError(
            ErrorCode.MODEL,
            f"{result_yaml}: a legacy package needs a legacy result (model + map), "
            "got model_stages",
        )
    chosen = stage_name or best
    if chosen not in stages:
        raise ExecutorError(
            ErrorCode.MODEL,
            f"{result_yaml}: no stage {chosen!r}; stages: {', '.join(stages)}",
        )
    models_dir = result_yaml.parent
    members: list[tuple[str, Path]] = []
    for name, stage in stages.items():
        for file_name in stage["files"]:
            source = _find_output_file(models_dir, name, file_name, result_yaml)
            arcname = _safe_name(file_name) if legacy else f"{name}/{_safe_name(file_name)}"
            members.append((arcname, source))
    for section, names in _attachments(result, result_yaml).items():
        for file_name in names:
            source = models_dir / "attachments" / section / file_name
            if not source.is_file():
                raise ExecutorError(
                    ErrorCode.MODEL, f"{result_yaml}: attachment {source} does not exist"
                )
            members.append((f"attachments/{section}/{_safe_name(file_name)}", source))
    info = {
        "package_version": PACKAGE_VERSION,
        "executor_config": dict(executor_config or {}),
        "task_context": {},
        "stages": stages,
        "best_stage_name": best,
        "attachments": _attachments(result, result_yaml),
        "evaluate_config": dict(result.get("evaluate_config") or {}),
        "object_type": int(
            result.get("object_type") or (executor_config or {}).get("object_type") or 2
        ),
    }
    try:
        info_bytes = yaml.safe_dump(info, sort_keys=False, allow_unicode=True).encode("utf-8")
    except yaml.YAMLError as error:
        raise ExecutorError(ErrorCode.MODEL, f"cannot write {INFO_FILE}: {error}") from error
    _write_tar(Path(dest_tar), members, info_bytes)
    return chosen


def unpack_model(
    tar: Path, stage_name: str | None, models_dir: Path, *, legacy: bool = False
) -> list[str]:
    """Extract a package like the platform does; returns the paths for ``model_params_path``.

    ``ymir-info.yaml`` goes to ``models_dir``, only ``stage_name``'s files (``None``: the best
    stage) to ``models_dir/<stage>/``. A package with files at the tar root (migrated from 1.1)
    is extracted flat while the returned paths still name the stage folder, as on the platform.
    ``legacy=True`` extracts flat and returns the flat paths (YMIR 1.1).

    Raises:
        ExecutorError: MODEL for an unreadable package or an unknown stage.
    """
    models_dir = Path(os.path.abspath(models_dir))
    try:
        with tarfile.open(tar, "r:*") as archive:
            members = {member.name: member for member in archive.getmembers() if member.isfile()}
            if INFO_FILE not in members:
                raise ExecutorError(ErrorCode.MODEL, f"{tar}: the package has no {INFO_FILE}")
            info_bytes = _read_member(archive, members[INFO_FILE])
            info = _parse_info(info_bytes, f"{tar}:{INFO_FILE}")
            stages = info.get("stages")
            chosen = stage_name or info.get("best_stage_name")
            if not isinstance(stages, dict) or chosen not in stages:
                known = ", ".join(stages) if isinstance(stages, dict) else "none"
                raise ExecutorError(
                    ErrorCode.MODEL, f"{tar}: no stage {chosen!r} in the package (stages: {known})"
                )
            files = stages[chosen].get("files") if isinstance(stages[chosen], dict) else None
            if not isinstance(files, list) or not files:
                raise ExecutorError(ErrorCode.MODEL, f"{tar}: stage {chosen!r} lists no files")
            models_dir.mkdir(parents=True, exist_ok=True)
            (models_dir / INFO_FILE).write_bytes(info_bytes)
            returned = []
            for file_name in files:
                name = _safe_name(str(file_name))
                in_stage, at_root = f"{chosen}/{name}", name
                member = members.get(in_stage) or members.get(at_root)
                if member is None:
                    raise ExecutorError(ErrorCode.MODEL, f"{tar}: stage file {in_stage} is missing")
                flat = legacy or member.name == at_root
                target = models_dir / name if flat else models_dir / str(chosen) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(_read_member(archive, member))
                returned.append(
                    str(models_dir / name if legacy else models_dir / str(chosen) / name)
                )
    except (tarfile.TarError, OSError) as error:
        raise ExecutorError(ErrorCode.MODEL, f"cannot unpack model {tar}: {error}") from error
    return returned


# --- helpers -------------------------------------------------------------------------------


def _parse_info(data: bytes, where: str) -> dict:
    try:
        info = yaml.safe_load(data)
    except yaml.YAMLError as error:
        raise ExecutorError(ErrorCode.MODEL, f"{where} is not valid YAML: {error}") from error
    if not isinstance(info, dict):
        raise ExecutorError(
            ErrorCode.MODEL, f"{where} must be a mapping, got {type(info).__name__}"
        )
    return info


def _class_names(info: dict) -> list[str] | None:
    config = info.get("executor_config")
    names = config.get("class_names") if isinstance(config, dict) else None
    if not isinstance(names, list):
        return None
    return [str(name) for name in names]


def _stage_name(info: dict, listed: list[str], models_dir: Path) -> str | None:
    # The stage folder named in the config is what the platform extracted, even for flat files.
    stages = info.get("stages")
    if not isinstance(stages, dict):
        stages = {}
    for text in listed:
        try:
            parts = Path(text).relative_to(models_dir).parts
        except ValueError:
            parts = Path(text).parts if not Path(text).is_absolute() else ()
        if len(parts) >= 2 and (not stages or parts[0] in stages):
            return parts[0]
        # Listed under another root (e.g. /in/models while models_dir is a local copy).
        if Path(text).parent.name in stages:
            return Path(text).parent.name
    best = info.get("best_stage_name")
    return str(best) if best else None


def _search_by_name(models_dir: Path, wanted: Path) -> Path | None:
    if not models_dir.is_dir():
        return None
    candidates = []
    for root, dirs, names in os.walk(models_dir):
        dirs.sort()
        if wanted.name in names:
            candidates.append(Path(root) / wanted.name)
    if not candidates:
        return None

    def closeness(candidate: Path) -> tuple[int, int, str]:
        # Prefer the copy whose folders match the listed path most, then the shallowest.
        shared = 0
        for left, right in zip(reversed(candidate.parts), reversed(wanted.parts)):
            if left != right:
                break
            shared += 1
        return (-shared, len(candidate.parts), str(candidate))

    return min(candidates, key=closeness)


def _load_result(result_yaml: Path) -> dict:
    try:
        result = yaml.safe_load(result_yaml.read_bytes())
    except (OSError, yaml.YAMLError) as error:
        raise ExecutorError(ErrorCode.MODEL, f"cannot read {result_yaml}: {error}") from error
    if not isinstance(result, dict):
        raise ExecutorError(ErrorCode.MODEL, f"{result_yaml} must be a mapping")
    return result


def _result_stages(result: dict, result_yaml: Path) -> tuple[dict[str, dict], str]:
    """``({name: stage}, best stage)`` read the way the platform reads result.yaml."""
    if "model" in result:
        # The platform's legacy parser wins whenever "model" is present (precedence trap).
        files = result["model"]
        if "map" not in result:
            raise ExecutorError(ErrorCode.MODEL, f"{result_yaml}: legacy result without 'map'")
        stage = {
            "stage_name": LEGACY_STAGE,
            "files": _file_list(files, result_yaml, LEGACY_STAGE),
            "timestamp": int(time.time()),
            "mAP": _metric(result["map"], result_yaml),
        }
        return {LEGACY_STAGE: stage}, LEGACY_STAGE
    model_stages = result.get("model_stages")
    if not isinstance(model_stages, dict) or not model_stages:
        raise ExecutorError(ErrorCode.MODEL, f"{result_yaml}: no model_stages (nothing to package)")
    stages = {}
    for name, stage in model_stages.items():
        if not isinstance(stage, dict):
            raise ExecutorError(ErrorCode.MODEL, f"{result_yaml}: stage {name!r} is not a mapping")
        entry = dict(stage)
        entry["stage_name"] = str(name)
        entry["files"] = _file_list(stage.get("files"), result_yaml, str(name))
        stages[str(name)] = entry
    best = result.get("best_stage_name")
    if best not in stages:
        raise ExecutorError(
            ErrorCode.MODEL, f"{result_yaml}: best_stage_name {best!r} is not a stage"
        )
    return stages, str(best)


def _file_list(files: Any, result_yaml: Path, stage: str) -> list[str]:
    if not isinstance(files, list) or not files:
        raise ExecutorError(ErrorCode.MODEL, f"{result_yaml}: stage {stage!r} lists no files")
    return [str(name) for name in files]


def _metric(value: Any, result_yaml: Path) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as error:
        raise ExecutorError(
            ErrorCode.MODEL, f"{result_yaml}: map must be a number, got {value!r}"
        ) from error


def _attachments(result: dict, result_yaml: Path) -> dict[str, list[str]]:
    attachments = result.get("attachments") or {}
    if not isinstance(attachments, dict):
        raise ExecutorError(ErrorCode.MODEL, f"{result_yaml}: attachments must be a mapping")
    return {
        str(section): [str(name) for name in names or []] for section, names in attachments.items()
    }


def _find_output_file(models_dir: Path, stage: str, file_name: str, result_yaml: Path) -> Path:
    # The platform's lookup order (``models._find_model_file``).
    name = _safe_name(file_name)
    for candidate in (models_dir / stage / name, models_dir / name):
        if candidate.is_file():
            return candidate
    raise ExecutorError(
        ErrorCode.MODEL,
        f"{result_yaml}: file {file_name!r} of stage {stage!r} is neither in "
        f"{models_dir / stage} nor in {models_dir}",
    )


def _safe_name(name: str) -> str:
    """A relative path inside a package; refuses names that would escape the folder."""
    path = PurePosixPath(name.replace("\\", "/"))
    if not name or path.is_absolute() or ".." in path.parts:
        raise ExecutorError(ErrorCode.MODEL, f"model file name {name!r} must be a relative path")
    return str(path)


def _read_member(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    stream = archive.extractfile(member)
    if stream is None:
        raise ExecutorError(ErrorCode.MODEL, f"package member {member.name} is not a file")
    with stream:
        return stream.read()


def _write_tar(dest: Path, members: list[tuple[str, Path]], info_bytes: bytes) -> None:
    # Written next to the destination and renamed, so a crash never leaves a half package.
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".tar.gz", dir=str(dest.parent))
    os.close(handle)
    try:
        with tarfile.open(temp_name, "w:gz") as archive:
            for arcname, source in members:
                # Store contents, never links: the platform copies file bytes into the package.
                with open(source, "rb") as stream:
                    entry = tarfile.TarInfo(arcname)
                    entry.size = os.fstat(stream.fileno()).st_size
                    entry.mtime = int(os.fstat(stream.fileno()).st_mtime)
                    entry.mode = 0o644
                    archive.addfile(entry, stream)
            entry = tarfile.TarInfo(INFO_FILE)
            entry.size = len(info_bytes)
            entry.mtime = int(time.time())
            entry.mode = 0o644
            archive.addfile(entry, io.BytesIO(info_bytes))
        os.replace(temp_name, dest)
    except BaseException:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
        raise
