"""What the verifier reads besides the outputs: YAML files, env.yaml's paths and protocol, the
candidate index, the object type and the candidate images' sizes.

Env paths are used as given (a local run writes real local paths); the container paths of a
platform task's leftovers (``/in/...``, ``/out/...``) are moved under the local work dir.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import yaml

from ...contract.env import parse_protocol_version
from ...contract.errors import ExecutorError
from ...contract.images import image_size
from ...contract.object_types import ObjectType
from .findings import Finding, finding
from .values import is_int

# object_type -> the metric result.yaml must carry (docs/protocol.md#training-result).
MAIN_METRIC = {int(member): member.main_metric for member in ObjectType}


def read_yaml(path: Path) -> tuple[Any, str | None]:
    """(data, None) or (None, reason); ``yaml.safe_load`` as the platform uses it."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return None, f"cannot read: {error}"
    try:
        return yaml.safe_load(text), None
    except yaml.YAMLError as error:
        return None, " ".join(str(error).split())


def legacy_protocol(env: dict[str, Any]) -> tuple[bool, list[Finding]]:
    """(legacy, findings) from env.yaml's protocol_version, as the executor decides it."""
    value = env.get("protocol_version") if isinstance(env, dict) else None
    if value is None or value == "":
        return True, []
    try:
        return parse_protocol_version(str(value)) < (1, 0, 0), []
    except ExecutorError:
        return False, [
            finding(
                "WRK004",
                f"env.yaml protocol_version {value!r} is not a version number; checked as modern",
            )
        ]


def rebase(value: Any, env_root: Any, local_root: Path | None) -> Path | None:
    """A path from env.yaml as a local path.

    A local run writes real local paths, which are used as given. A platform task's leftovers
    name container paths (/in/..., /out/...): those under the env's root_dir are moved under the
    local in/ or out/ folder.
    """
    if value is None or value == "":
        return None
    path = Path(str(value))
    if local_root is None or not env_root:
        return path
    root = Path(str(env_root))
    if path == root:
        return local_root
    try:
        relative = path.relative_to(root)
    except ValueError:
        return path
    return local_root / relative


def output_path(env: dict[str, Any], key: str, out_dir: Path, default: str) -> Path:
    """The local path of env.yaml's ``output.<key>``; ``out_dir / default`` when it has none."""
    output = env.get("output") if isinstance(env, dict) else None
    if isinstance(output, dict) and output.get(key):
        mapped = rebase(output.get(key), output.get("root_dir"), out_dir)
        if mapped is not None:
            return mapped
    return out_dir / default


def read_candidates(index_file: Path | None) -> list[str] | None:
    """The candidate index's paths as given (first column); None when it cannot be read."""
    if index_file is None or not index_file.is_file():
        return None
    try:
        text = index_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return [line.split("\t")[0] for line in text.splitlines() if line.strip()]


def task_object_type(config: dict[str, Any], env: dict[str, Any], in_dir: Path) -> int:
    """config.yaml's object_type (YMIR 2.4+), else the manifest's single one, else 2."""
    value = config.get("object_type")
    if is_int(value) and value in MAIN_METRIC:
        return value
    manifest = env.get("manifest_file")
    if manifest:
        data, error = read_yaml(Path(str(manifest)))
        if not error and isinstance(data, dict):
            value = data.get("object_type")
            if isinstance(value, list) and len(value) == 1:
                value = value[0]
            if is_int(value) and value in MAIN_METRIC:
                return value
    return 2


class ImageSizes:
    """Image sizes by candidate basename, read lazily; ``None`` when the image is unreadable."""

    def __init__(self, candidates: Sequence[str]) -> None:
        self._paths = {os.path.basename(str(path)): Path(str(path)) for path in candidates}
        self._sizes: dict[str, tuple[int, int] | None] = {}

    def get(self, name: str) -> tuple[int, int] | None:
        if name not in self._sizes:
            path = self._paths.get(name)
            size = None
            if path is not None and path.is_file():
                try:
                    size = image_size(path)
                except (ExecutorError, OSError):
                    size = None
            self._sizes[name] = size
        return self._sizes[name]
