"""Hyper-parameters: the img-man templates as defaults, ``config.yaml`` as the user's values.

The templates in ``img-man/`` are the single source of defaults (docs/protocol.md#templates).
YMIR writes ``/in/config.yaml`` as template + user edits + injected reserved keys
(docs/protocol.md#config-yaml), and its web UI makes that file unreliable in three ways
(docs/protocol.md#web-ui-quirks), which :class:`Params` absorbs:

* edited values come back as strings (``"False"``, ``"0.5"``, ``"10"``, ``"0.1,0.2"``), so every
  value is read as its declaration in ``tasks/hyperparams.py`` says (:mod:`.hyperparams`: the
  kind, then the range or choices), or as the type of its template default when a user added
  the key;
* mining and inference drop every falsy value (``''``, ``0``, ``false``, ``null``), so a missing
  key means "the template default";
* users may add keys the template does not have; those pass through unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from .env import Env
from .errors import ErrorCode, ExecutorError
from .hyperparams import HyperParameter, for_default
from .object_types import ObjectType

TEMPLATE_FILES = {
    "training": "training-template.yaml",
    "mining": "mining-template.yaml",
    "infer": "infer-template.yaml",
}

# Keys the platform injects or consumes itself (docs/protocol.md#reserved-keys): never
# hyper-parameters of the model, so as_dict() leaves them out (e.g. when logging or saving the
# effective settings).
RESERVED_KEYS = frozenset(
    {
        "task_id",
        "class_names",
        "gpu_id",
        "gpu_count",
        "object_type",
        "pretrained_model_params",
        "model_params_path",
        "run_training",
        "run_mining",
        "run_infer",
        "export_format",
        "shm_size",
        "git_url",
        "git_branch",
        "code_config",
        "openpai_enable",
        "text_prompt",
    }
)

MANIFEST_FILE = "manifest.yaml"

# Where the Dockerfile copies the templates. A module constant read at call time, so that
# tests can point it elsewhere.
IMAGE_IMG_MAN = Path("/img-man")

# The manifest's object_type when the file or key is absent: what YMIR assumes
# (docs/protocol.md#manifest).
DEFAULT_OBJECT_TYPE = ObjectType.DETECTION


def find_img_man(env: Env) -> Path:
    """The folder holding manifest.yaml and the task templates.

    Searched in order: the folder of env.yaml's ``manifest_file`` (YMIR >= 2.1, and the devkit),
    ``/img-man`` (inside the image), the copy packaged with the code (``<package>/img_man``,
    installed by the wheel) and the source checkout's ``<repo>/img-man``.
    """
    candidates: list[Path] = []
    if env.manifest_file is not None:
        candidates.append(env.manifest_file.parent)
    candidates.append(IMAGE_IMG_MAN)
    here = Path(__file__).resolve()
    candidates.append(here.parents[1] / "img_man")
    # src/<package>/contract/params.py -> parents[3] is the repository root. (An install
    # shallower than that, e.g. /pkg/contract/params.py, has no checkout to look in.)
    if len(here.parents) > 3:
        candidates.append(here.parents[3] / "img-man")
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise ExecutorError(
        ErrorCode.CONFIG,
        "no img-man folder found (looked in {}); build the image with the templates in "
        "/img-man, or set manifest_file in env.yaml".format(", ".join(str(c) for c in candidates)),
    )


def load_manifest(img_man: Path) -> dict:
    """``manifest.yaml`` as a dict; ``{}`` when the file is absent (it is optional in YMIR)."""
    path = Path(img_man) / MANIFEST_FILE
    if not path.is_file():
        return {}
    data = _read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ExecutorError(
            ErrorCode.CONFIG,
            f"{path}: must be a YAML mapping such as 'object_type: 2', got {_kind(data)}",
        )
    return data


def manifest_object_type(img_man: Path) -> ObjectType:
    """The target this executor was built for (``object_type`` of ``manifest.yaml``)."""
    path = Path(img_man) / MANIFEST_FILE
    value = load_manifest(img_man).get("object_type")
    if value is None:
        return DEFAULT_OBJECT_TYPE
    # A one-element list is the 2.4+ spelling of a single target; several targets in one image
    # are not supported by this template.
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ExecutorError(
            ErrorCode.CONFIG,
            f"{path}: object_type must be one integer, {ObjectType.names()}, got {value!r}",
        )
    if value not in {member.value for member in ObjectType}:
        raise ExecutorError(
            ErrorCode.OBJECT_TYPE,
            f"{path}: object_type {value} is not supported; use {ObjectType.names()}",
        )
    return ObjectType(value)


def load_template(img_man: Path, task: str) -> dict | None:
    """The task's template as a dict, or ``None`` if the image does not support the task.

    As at registration in YMIR, a missing, empty or non-mapping file means "not supported".
    A file that is not valid YAML is an error: it is a bug in the image, better found here.
    """
    if task not in TEMPLATE_FILES:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TEMPLATE_FILES)}")
    path = Path(img_man) / TEMPLATE_FILES[task]
    if not path.is_file():
        return None
    data = _read_yaml(path)
    if not isinstance(data, dict):
        return None
    return data


def task_defaults(img_man: Path, tasks: Iterable[str]) -> dict:
    """The merged defaults of the tasks' templates; a later task wins on shared keys.

    Mining + inference uses ``["infer", "mining"]`` (:func:`.hyperparams.by_precedence`): the
    UI shows (and submits) the mining template, so its values take precedence.
    """
    merged: dict[Any, Any] = {}
    for task in tasks:
        merged.update(load_template(img_man, task) or {})
    return merged


def load_config(env: Env) -> dict:
    """``config.yaml`` (env.yaml's ``input.config_file``) as a dict."""
    path = env.input.config_file
    if not path.exists():
        raise ExecutorError(
            ErrorCode.CONFIG,
            f"{path}: file not found; YMIR writes it for every task, for a local run create it "
            f"(hyper-parameters plus class_names, gpu_id, gpu_count)",
        )
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ExecutorError(
            ErrorCode.CONFIG,
            f"{path}: must be a YAML mapping of hyper-parameters, got {_kind(data)}",
        )
    return data


class _UnknownParameter(ExecutorError, AttributeError, KeyError):
    """Raised for a name that is neither in config.yaml nor in the template.

    Still an ExecutorError (the top level reports it with code 300001), but also the
    AttributeError / KeyError Python expects, so ``hasattr`` and ``getattr(p, name, default)``
    behave normally.
    """

    def __str__(self) -> str:
        # KeyError would otherwise quote the message.
        return ExecutorError.__str__(self)


class Params:
    """Typed hyper-parameters: ``params.epochs`` or ``params["epochs"]``.

    A value is read as its declaration says (``declarations``: key -> :class:`HyperParameter`,
    those of ``tasks/hyperparams.py`` that apply to the run), its range or choices checked; a key
    without a declaration (one a user added) is read as the type of its template default:

    * bool: bool, 0 / 1, or the words YMIR itself reads (:mod:`.booleans`: "true", "no", "on",
      "1", ..., any case);
    * int: int, an integral float, "12" or "12.0" (not 12.5);
    * float: int, float or a numeric string such as "0.5";
    * str: ``str(value)``;
    * list: a list, or a string as the UI returns it ("0.1,0.2" or "[0.1, 0.2]");
    * no default (a key the user added, or a ``null`` default): the value as given.

    A key missing from config.yaml, or given as ``null`` or ``''`` (the UI drops falsy values),
    takes the template default. Names that clash with methods (``get``, ``as_dict``) are read
    with ``params["get"]``.
    """

    def __init__(
        self,
        values: dict,
        defaults: dict,
        declarations: Mapping[str, HyperParameter] | None = None,
    ) -> None:
        self._values = dict(values)
        self._defaults = dict(defaults)
        self._declarations = dict(declarations or {})

    def __getattr__(self, name: str) -> Any:
        # Private and dunder lookups (copy, pickle, hasattr probes) must not become
        # hyper-parameter lookups, or an unpickled object would recurse into _values.
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __getitem__(self, name: str) -> Any:
        if self._is_set(name):
            value = self._values[name]
            reader = self._reader(name)
            return value if reader is None else reader.read(value)
        if name in self._defaults:
            default = self._defaults[name]
            declared = name in self._declarations and default is not None
            return self._declarations[name].read(default) if declared else default
        if name in self._values:
            # Present only as null / '' and without a template default: "as given".
            return self._values[name]
        raise _UnknownParameter(
            ErrorCode.CONFIG,
            f"unknown hyper-parameter {name!r}: it is neither in config.yaml nor in the task's "
            f"template; add it with a default to the img-man template",
        )

    def __contains__(self, name: object) -> bool:
        return name in self._values or name in self._defaults

    def __repr__(self) -> str:
        return f"Params({self._safe_items()!r})"

    def get(self, name: str, default: Any = None) -> Any:
        """The effective value of ``name``, or ``default`` if it is not known at all."""
        if name not in self:
            return default
        return self[name]

    def as_dict(self) -> dict:
        """Every effective hyper-parameter (reserved platform keys excluded), coerced.

        Raises the same CONFIG errors as attribute access, so calling it once at start-up
        checks every value before any work is done.
        """
        return {key: self[key] for key in self._keys() if key not in RESERVED_KEYS}

    def _reader(self, name: str) -> HyperParameter | None:
        if name in self._declarations:
            return self._declarations[name]
        return for_default(name, self._defaults.get(name))

    def _is_set(self, name: str) -> bool:
        if name not in self._values:
            return False
        value = self._values[name]
        return not (value is None or (isinstance(value, str) and not value.strip()))

    def _keys(self) -> list[Any]:
        keys = list(self._defaults)
        keys.extend(key for key in self._values if key not in self._defaults)
        return keys

    def _safe_items(self) -> dict:
        items = {}
        for key in self._keys():
            try:
                items[key] = self[key]
            except ExecutorError:
                items[key] = self._values.get(key)
        return items


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ExecutorError(ErrorCode.CONFIG, f"{path}: cannot read the file: {error}") from error
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        detail = " ".join(str(error).split())
        raise ExecutorError(ErrorCode.CONFIG, f"{path}: not valid YAML: {detail}") from error


def _kind(value: Any) -> str:
    if value is None:
        return "an empty document"
    return f"a {type(value).__name__} ({value!r:.60})"
