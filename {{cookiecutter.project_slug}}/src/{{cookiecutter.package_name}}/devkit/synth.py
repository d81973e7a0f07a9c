"""Synthesize a YMIR-shaped work dir (``<work>/in``, ``<work>/out``) the way the platform does.

The platform's rules (YMIR 2.5's ``mir`` exporter and ``prepare_executant_env``, and YMIR 1.1's)
are reproduced on purpose, including the awkward ones, because an executor that only ever saw
tidy inputs breaks on the real thing:

- assets are named ``<sha1 of the bytes>.<detected type>`` under ``<h[-2:]>/`` in an asset *cache*
  that lives elsewhere and holds more images than the dataset; ``in/assets`` is a symlink to it;
- index files hold absolute paths (through the ``in/assets`` symlink, as the platform writes them);
- ark (7 columns, inclusive coordinates, ``", "`` separated; 5 columns for legacy), voc (single-line
  XML, ``truncated`` = ``unknown``) or coco / seg-coco (one shared json, 0-based category ids for
  the classes present only, RLE string counts or single polygons; a box without a mask, as
  detection data has, gets ``segmentation: {}`` and ``area: 0``);
- ``platform``: one YMIR version's exports exactly, including what it does with a format it does
  not know (``coco`` before 2.5, ``seg-coco`` on 2.0): no annotations and empty train and
  validation indexes; ``manifest_file`` in env.yaml from 2.1, ``object_type`` in config.yaml from
  2.4;
- negative images (empty ark files), a 1-channel PNG, an RGBA PNG, a BMP, a PNG stored as ``.jpg``;
- ``class_names`` in non-alphabetical order with one class that never occurs;
- ``env.yaml`` with exactly the 2.5 key set (variants ``1.1.0``, ``1.0.0``, legacy) and absolute
  paths into the work dir instead of ``/in`` and ``/out``;
- ``config.yaml`` = the executor's template + the injected keys, optionally mangled like the web UI
  does (``drop-empty``, ``drop-falsy``, ``strings``);
- model packages extracted like ``models.prepare_model`` (``in/models/ymir-info.yaml`` +
  ``in/models/<stage>/<file>``), flat for legacy, or the "migrated from 1.1.0" quirk;
- single-image inference: ``in/assets`` points at a folder of originally named files (spaces,
  non-ASCII characters).

Synthetic images are small (64-96 px) with big, high-contrast shapes so that CPU tests stay fast
and even the stub baseline learns something.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml
from PIL import Image, ImageDraw

from ..contract.object_types import ObjectType

logger = logging.getLogger(__name__)

TASKS = ("training", "mining", "infer", "mining+infer")
PROTOCOLS = ("1.1.0", "1.0.0", "legacy")
CONFIG_VARIANTS = ("as-is", "drop-empty", "drop-falsy", "strings")
ANNOTATION_FORMATS = ("ark", "voc", "coco", "seg-coco")
# YMIR versions whose exports synthesize(platform=...) reproduces (ymir-cmd on PyPI has 1.1.0
# and 2.0.0 to 2.3.0), and the annotation parts each one exports (``parse_anno_format``); YMIR
# 1.1 ignores export_format and always exports ark with 5 columns.
PLATFORMS = ("1.1", "2.0", "2.1", "2.2", "2.3", "2.4", "2.5")
EXPORTED_FORMATS = {
    "1.1": ("ark",),
    "2.0": ("ark", "voc"),
    "2.1": ("ark", "voc", "seg-coco"),
    "2.2": ("ark", "voc", "seg-coco"),
    "2.3": ("ark", "voc", "seg-coco"),
    "2.4": ("ark", "voc", "seg-coco"),
    "2.5": ("ark", "voc", "coco", "seg-coco"),
}
MODEL_LAYOUTS = ("stage", "flat", "migrated")

# Deliberately not alphabetical, and "triangle" never occurs in the data: executors must map class
# ids by position in this list (and COCO category ids by name), never by sorting or by what they
# see.
CLASS_NAMES = ["rect", "triangle", "ellipse"]
DRAWN_CLASSES = (0, 2)
_COLOURS = {0: (215, 35, 35), 2: (35, 70, 215)}

MARKER_FILE = ".ymir-devkit"
COCO_JSON_NAME = "coco-annotations.json"
# The 1.1.0 -> 2.0.0 model migration puts files at the package root, yet the config names this
# stage.
MIGRATED_STAGE = "default_best_stage"

# Names used for single-image inference: the platform keeps the uploaded file's original name.
_SINGLE_IMAGE_NAMES = ("street photo {} \u2013 Straße 测试", "IMG {} (copy) ñ", "scan {} 写真")

_TEMPLATE_FILES = {
    "training": "training-template.yaml",
    "mining": "mining-template.yaml",
    "infer": "infer-template.yaml",
}
_ALIASES = {"det-ark": "ark", "det-voc": "voc"}


@dataclass
class SynthObject:
    """One ground-truth object of a synthetic image (what the annotation files describe)."""

    class_id: int
    box: tuple[int, int, int, int]  # x, y, w, h (w, h >= 1)
    mask: np.ndarray  # bool HxW


@dataclass
class SynthResult:
    """Where everything was written, and what the synthetic data contains."""

    work_dir: Path
    in_dir: Path
    out_dir: Path
    env_file: Path
    config_file: Path
    assets_dir: Path  # <work>/in/assets (the symlink)
    assets_cache: Path  # the symlink's real target
    task: str
    object_type: int
    protocol: str  # "1.1.0" | "1.0.0" | "legacy"
    annotation_format: str | None  # training only: the format actually written
    config_variant: str
    class_names: list[str]
    env: dict[str, Any]
    config: dict[str, Any]
    train_index: Path | None = None
    val_index: Path | None = None
    candidate_index: Path | None = None
    train_images: list[Path] = field(default_factory=list)
    val_images: list[Path] = field(default_factory=list)
    candidates: list[Path] = field(default_factory=list)
    model_params: list[str] = field(default_factory=list)
    # index path (as written in the index files) -> objects; empty list = negative image
    ground_truth: dict[Path, list[SynthObject]] = field(default_factory=dict)
    # image kind per index path: "jpg", "png", "bmp", "gray-png", "rgba-png", "png-as-jpg", "user"
    kinds: dict[Path, str] = field(default_factory=dict)

    @property
    def legacy(self) -> bool:
        return self.protocol == "legacy"


# ------------------------------------------------------------------------------------------------
# public entry point


def synthesize(
    work_dir: str | os.PathLike,
    task: str,
    object_type: int,
    *,
    protocol: str | None = "1.1.0",
    annotation_format: str | None = None,
    config_variant: str | None = "as-is",
    images_dir: str | os.PathLike | None = None,
    num_train: int = 12,
    num_val: int = 6,
    num_candidates: int = 8,
    model_params: str | os.PathLike | None = None,
    model_stage: str | None = None,
    model_layout: str | None = None,
    pretrained: str | os.PathLike | None = None,
    img_man: str | os.PathLike | None = None,
    seed: int = 0,
    single_image: bool = False,
    assets_cache: str | os.PathLike | None = None,
    task_id: str | None = None,
    template: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    platform: str | None = None,
    gpu_count: int = 0,
) -> SynthResult:
    """Write ``<work>/in`` and an empty ``<work>/out`` for one platform task.

    ``task``: training | mining | infer | mining+infer. ``object_type``: 2 / 3 / 4 (the
    executor's, from its manifest). ``protocol``: "1.1.0" (platform 2.x), "1.0.0", or "legacy" /
    None (platform 1.1: no ``protocol_version``, no ``manifest_file``, no ``executor_log_file``,
    ark with 5 columns, flat models). ``annotation_format`` (training): ark | voc | coco |
    seg-coco (default: the template's ``export_format``). ``config_variant``: as-is | drop-empty
    | drop-falsy | strings (None: what the web UI does for the task, i.e. drop-empty for
    training and drop-falsy for mining / infer). ``params``: hyper-parameters as a user edits
    them in the web UI, applied over the template before the UI's own mangling. ``images_dir``:
    use these images instead of synthetic ones (mining / infer only: there are no annotations).
    ``model_params`` (mining / infer) and ``pretrained`` (training): a model package tar as the
    platform stores it, or a training work dir / ``out/models`` dir to package first;
    ``model_stage`` picks the stage (default: the package's best stage); ``model_layout``: stage
    | flat | migrated (default stage, flat for legacy). ``single_image``: single-image inference
    (candidates keep their original names, with spaces and non-ASCII characters).
    ``assets_cache``: the shared asset cache (default ``<work>/asset_cache``); chained tasks
    share one, like the platform's per-user cache. ``template``: use this instead of the
    executor's template for the task (e.g. data for a task the executor does not declare).
    ``platform`` (one of :data:`PLATFORMS`): that YMIR version's files instead of 2.5's; it
    decides the protocol (legacy for 1.1, else 1.1.0), and a training format it does not export
    leaves the train and validation indexes empty, as that version does.
    ``gpu_count``: GPUs the platform gives the task (``gpu_id`` ``'0,...,n-1'``, the indices
    inside the container); 0: the CPU.

    The work dir must be empty, missing, or a previous synthesize() output (which is replaced).
    """
    _check_task_options(
        task,
        object_type,
        single_image=single_image,
        images_dir=images_dir,
        model_params=model_params,
        pretrained=pretrained,
        counts=(num_train, num_val, num_candidates),
    )
    object_type = int(object_type)  # written into YAML as the platform does: a plain integer
    protocol, config_variant, model_layout = _platform_options(
        task, protocol, platform, config_variant, model_layout
    )

    img_man_dir = Path(img_man) if img_man is not None else default_img_man()
    if template is None:
        template = load_template_file(img_man_dir, task)

    work = Path(work_dir).absolute()
    cache = _make_work_dir(work, img_man_dir, single_image, assets_cache)
    result = SynthResult(
        work_dir=work,
        in_dir=work / "in",
        out_dir=work / "out",
        env_file=work / "in" / "env.yaml",
        config_file=work / "in" / "config.yaml",
        assets_dir=work / "in" / "assets",
        assets_cache=cache,
        task=task,
        object_type=object_type,
        protocol=protocol,
        annotation_format=None,
        config_variant=config_variant,
        class_names=list(CLASS_NAMES),
        env={},
        config={},
    )
    rng = np.random.RandomState(seed)
    tid = task_id or make_task_id(seed, f"{task}@{work}")
    model_key = _install_models(result, pretrained, model_params, model_stage, model_layout)

    if task == "training":
        fmt = _training_format(annotation_format, template, object_type, result.legacy)
        result.annotation_format = fmt
        exported = platform is None or fmt in EXPORTED_FORMATS[platform]
        _write_training(result, rng, fmt, num_train, num_val, exported)
    else:
        _write_candidates(result, rng, num_candidates, images_dir, single_image)
    _write_extra_cache_images(result, rng)

    _write_env_and_config(
        result, {**template, **(params or {})}, tid, model_key, platform, gpu_count
    )
    return result


def _check_task_options(
    task: str,
    object_type: int,
    *,
    single_image: bool,
    images_dir: str | os.PathLike | None,
    model_params: str | os.PathLike | None,
    pretrained: str | os.PathLike | None,
    counts: tuple[int, int, int],
) -> None:
    """ValueError for a task, object type or option the task cannot take."""
    if task not in TASKS:
        raise ValueError("task must be one of {}, got {!r}".format(", ".join(TASKS), task))
    if object_type not in {member.value for member in ObjectType}:
        raise ValueError(f"object_type must be {ObjectType.names()}, got {object_type!r}")
    if single_image and task != "infer":
        raise ValueError(f"single-image inference is an 'infer' task, not {task!r}")
    if images_dir is not None and task == "training":
        raise ValueError(
            "--images gives unannotated images: use it for mining / infer, not training"
        )
    if model_params is not None and task == "training":
        raise ValueError("training takes a pretrained model (pretrained=...), not model_params")
    if pretrained is not None and task != "training":
        raise ValueError("pretrained is for training; mining / infer take model_params")
    if min(counts) < 1:
        raise ValueError("num_train, num_val and num_candidates must be >= 1")


def _platform_options(
    task: str,
    protocol: str | None,
    platform: str | None,
    config_variant: str | None,
    model_layout: str | None,
) -> tuple[str, str, str]:
    """(protocol, config_variant, model_layout) with the platform's defaults filled in."""
    if platform is not None:
        if platform not in PLATFORMS:
            raise ValueError(
                "platform must be one of {}, got {!r}".format(", ".join(PLATFORMS), platform)
            )
        protocol = "legacy" if platform == "1.1" else "1.1.0"
    protocol = normalize_protocol(protocol)
    if config_variant is None:
        config_variant = "drop-empty" if task == "training" else "drop-falsy"
    if config_variant not in CONFIG_VARIANTS:
        raise ValueError(
            "config_variant must be one of {}, got {!r}".format(
                ", ".join(CONFIG_VARIANTS), config_variant
            )
        )
    if model_layout is None:
        model_layout = "flat" if protocol == "legacy" else "stage"
    if model_layout not in MODEL_LAYOUTS:
        raise ValueError("model_layout must be one of {}".format(", ".join(MODEL_LAYOUTS)))
    return protocol, config_variant, model_layout


def _make_work_dir(
    work: Path,
    img_man_dir: Path,
    single_image: bool,
    assets_cache: str | os.PathLike | None,
) -> Path:
    """``<work>/in`` (its assets linked to the cache, empty annotations and models), an empty
    ``<work>/out`` and a copy of the img-man; returns the asset cache."""
    _prepare_work_dir(work)
    in_dir, out_dir = work / "in", work / "out"
    in_dir.mkdir()
    out_dir.mkdir()
    (work / MARKER_FILE).write_text(
        "created by the devkit's synth; safe to delete\n", encoding="utf-8"
    )

    # The platform's img-man lives at /img-man in the container; a copy in the work dir keeps
    # manifest_file pointing into <work> and freezes the templates the config was made from.
    work_img_man = work / "img-man"
    shutil.copytree(str(img_man_dir), str(work_img_man))

    if single_image:
        cache = work / "assets"  # CMD_INFERENCE: in/assets -> <work>/assets
    else:
        cache = Path(assets_cache).absolute() if assets_cache is not None else work / "asset_cache"
    cache.mkdir(parents=True, exist_ok=True)
    os.symlink(str(cache), str(in_dir / "assets"))
    for name in ("annotations", "models"):
        (in_dir / name).mkdir()
    return cache


def _install_models(
    result: SynthResult,
    pretrained: str | os.PathLike | None,
    model_params: str | os.PathLike | None,
    model_stage: str | None,
    model_layout: str,
) -> str | None:
    """Install the task's model package into ``in/models``; the config key that names its files
    (None without a model). For mining / infer the class names come from the package."""
    task, work, in_dir = result.task, result.work_dir, result.in_dir
    model_key, model_source = None, None
    if task == "training" and pretrained is not None:
        model_key, model_source = "pretrained_model_params", pretrained
    elif task != "training" and model_params is not None:
        model_key, model_source = "model_params_path", model_params
    if model_source is not None:
        tar = model_package(Path(model_source), work)
        result.model_params = install_model(tar, in_dir / "models", model_stage, model_layout)
        if task != "training":
            names = _package_class_names(in_dir / "models" / "ymir-info.yaml")
            if names:
                result.class_names = names

    return model_key


# ------------------------------------------------------------------------------------------------
# env.yaml and config.yaml


def _write_env_and_config(
    result: SynthResult,
    values: dict[str, Any],
    task_id: str,
    model_key: str | None,
    platform: str | None,
    gpu_count: int,
) -> None:
    """``in/env.yaml`` and ``in/config.yaml`` from the template ``values`` (with the user's
    edits), as the platform writes them."""
    result.env = make_env(result.work_dir, result.task, result.protocol, task_id, platform)
    _dump_yaml_safe(result.env_file, result.env)
    result.config = make_config(
        values,
        result.config_variant,
        result.task,
        task_id,
        result.class_names,
        result.object_type,
        result.protocol,
        model_key,
        result.model_params,
        result.annotation_format,
        platform,
        gpu_count=gpu_count,
    )
    # mir writes config.yaml with yaml.dump(..., allow_unicode=True)
    result.config_file.write_text(yaml.dump(result.config, allow_unicode=True), encoding="utf-8")


def normalize_protocol(protocol: str | None) -> str:
    """'1.1.0' | '1.0.0' | 'legacy' (None, '' and 'legacy': no protocol_version in env.yaml)."""
    if protocol in (None, "", "legacy", "none"):
        return "legacy"
    if protocol not in PROTOCOLS:
        raise ValueError(
            "protocol must be one of {}, got {!r}".format(", ".join(PROTOCOLS), protocol)
        )
    return str(protocol)


def make_task_id(seed: int, task: str) -> str:
    """A 30-character subtask id shaped like the platform's (t + subtask digit + ... + 16 hex)."""
    digest = hashlib.sha1(f"{seed}:{task}".encode()).hexdigest()
    return "t" + "1" + "0" + "0" + "0001" + "00002a" + digest[:16]


def make_env(
    work: Path, task: str, protocol: str, task_id: str, platform: str | None = None
) -> dict[str, Any]:
    """env.yaml as the platform writes it, with <work>/in and <work>/out instead of /in and /out.

    ``platform`` 2.0 has no ``manifest_file`` yet (YMIR 2.1 added it).
    """
    in_dir, out_dir = work / "in", work / "out"
    training = task == "training"
    env: dict[str, Any] = {
        "task_id": task_id,
        "run_training": training,
        "run_mining": task in ("mining", "mining+infer"),
        "run_infer": task in ("infer", "mining+infer"),
        "input": {
            "root_dir": str(in_dir),
            "assets_dir": str(in_dir / "assets"),
            "annotations_dir": str(in_dir / "annotations"),
            "models_dir": str(in_dir / "models"),
            "training_index_file": str(in_dir / "train-index.tsv") if training else "",
            "val_index_file": str(in_dir / "val-index.tsv") if training else "",
            "candidate_index_file": "" if training else str(in_dir / "candidate-index.tsv"),
            "config_file": str(in_dir / "config.yaml"),
        },
        "output": {
            "root_dir": str(out_dir),
            "models_dir": str(out_dir / "models"),
            "tensorboard_dir": str(out_dir / "tensorboard"),
            "training_result_file": str(out_dir / "models" / "result.yaml"),
            "mining_result_file": str(out_dir / "result.tsv"),
            "infer_result_file": str(out_dir / "infer-result.json"),
            "monitor_file": str(out_dir / "monitor.txt"),
            "executor_log_file": str(out_dir / "ymir-executor-out.log"),
        },
    }
    if protocol == "legacy":
        # platform 1.1: none of the 2.x additions
        del env["output"]["executor_log_file"]
    else:
        env["protocol_version"] = protocol
        if platform != "2.0":
            env["manifest_file"] = str(work / "img-man" / "manifest.yaml")
    return env


def make_config(
    template: dict[str, Any],
    variant: str,
    task: str,
    task_id: str,
    class_names: Sequence[str],
    object_type: int,
    protocol: str,
    model_key: str | None,
    model_paths: Sequence[str],
    annotation_format: str | None,
    platform: str | None = None,
    gpu_count: int = 0,
) -> dict[str, Any]:
    """config.yaml = the template as the UI sends it (``variant``) + the injected keys.

    ``object_type`` is injected by YMIR 2.4 and later only (``platform`` None: 2.5).
    """
    values = dict(template)
    if task == "training" and annotation_format is not None:
        # the user picked another format in the UI: the template's export_format is edited to match
        current = str(values.get("export_format", "") or "")
        if current.split(":")[0] != annotation_format and not (
            protocol == "legacy" and annotation_format == "ark"
        ):
            values["export_format"] = annotation_format + ":raw"
    values = apply_config_variant(values, variant)
    # Injected after the UI step, so the UI's dropping never removes them (gpu_id '' stays).
    values["task_id"] = task_id
    values["class_names"] = list(class_names)
    values["gpu_id"] = ",".join(str(index) for index in range(gpu_count))
    values["gpu_count"] = gpu_count
    if protocol == "1.1.0" and (platform is None or platform >= "2.4"):
        values["object_type"] = object_type  # 2.4+ only
    if task == "training":
        # mir deletes the key when no pretrained model was picked, even if the template had it
        values.pop("pretrained_model_params", None)
        if model_key == "pretrained_model_params":
            values["pretrained_model_params"] = list(model_paths)
    else:
        values["model_params_path"] = list(model_paths)
        values["run_mining"] = task in ("mining", "mining+infer")
        values["run_infer"] = task in ("infer", "mining+infer")
    return values


def apply_config_variant(values: dict[str, Any], variant: str) -> dict[str, Any]:
    """What the web UI does to the template's values before submitting them."""
    if variant == "as-is":
        return dict(values)
    if variant == "drop-empty":  # training form: entries whose value is '' are dropped
        return {k: v for k, v in values.items() if not (isinstance(v, str) and v == "")}
    if variant == "drop-falsy":  # mining / infer forms: `key && value` drops '', 0, false, null
        return {k: v for k, v in values.items() if _js_truthy(v)}
    if variant == "strings":  # text inputs: edited numbers and booleans come back as strings
        return {k: (str(v) if isinstance(v, (bool, int, float)) else v) for k, v in values.items()}
    raise ValueError(f"unknown config variant {variant!r}")


def _js_truthy(value: Any) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, str):
        return value != ""
    if isinstance(value, (int, float)):
        return value == value and value != 0  # NaN is falsy in JavaScript too
    return True  # lists and dicts are truthy in JavaScript, even empty ones


# ------------------------------------------------------------------------------------------------
# img-man


def default_img_man() -> Path:
    """The executor's img-man folder: source checkout, then the packaged copy, then /img-man.

    Unlike the executor (which prefers /img-man, as in its image), the devkit prefers the templates
    being edited in the checkout.
    """
    here = Path(__file__).resolve()
    candidates = [here.parents[3] / "img-man", here.parents[1] / "img_man", Path("/img-man")]
    for candidate in candidates:
        if (candidate / "manifest.yaml").is_file() or any(
            (candidate / name).is_file() for name in _TEMPLATE_FILES.values()
        ):
            return candidate
    raise FileNotFoundError(
        "no img-man folder found (looked in {})".format(", ".join(str(c) for c in candidates))
    )


def load_template_file(img_man: Path, task: str) -> dict[str, Any]:
    """The template the web UI shows for ``task`` (mining+infer: the mining one, as 2.5 sends)."""
    which = "mining" if task == "mining+infer" else task
    path = Path(img_man) / _TEMPLATE_FILES[which]
    if not path.is_file():
        raise ValueError(f"the executor declares no {which} task: {path} is missing")
    with path.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict):
        raise ValueError(
            f"{path} does not parse to a dict, so the platform treats {which} as unsupported"
        )
    return data


# ------------------------------------------------------------------------------------------------
# images


def _draw_sample(
    rng: np.random.RandomState, n_objects: int
) -> tuple[Image.Image, list[SynthObject]]:
    """A small RGB image with ``n_objects`` big, non-overlapping, high-contrast shapes."""
    width, height = int(rng.randint(64, 97)), int(rng.randint(64, 97))
    base = int(rng.randint(175, 225))
    noise = rng.randint(-10, 11, size=(height, width, 3))
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    objects: list[SynthObject] = []
    # one region per object (left / right halves) keeps the masks disjoint, which keeps semantic
    # labels unambiguous
    regions = (
        [(0, 0, width, height)]
        if n_objects == 1
        else [(0, 0, width // 2, height), (width // 2, 0, width - width // 2, height)]
    )
    for rx, ry, rw, rh in regions[:n_objects]:
        class_id = int(DRAWN_CLASSES[rng.randint(len(DRAWN_CLASSES))])
        w = int(rng.randint(int(rw * 0.5), int(rw * 0.85) + 1))
        h = int(rng.randint(int(rh * 0.4), int(rh * 0.8) + 1))
        x0 = rx + int(rng.randint(1, max(2, rw - w)))
        y0 = ry + int(rng.randint(1, max(2, rh - h)))
        x1, y1 = min(x0 + w - 1, width - 1), min(y0 + h - 1, height - 1)
        mask_img = Image.new("L", (width, height), 0)
        mask_draw = ImageDraw.Draw(mask_img)
        shape = draw.rectangle if class_id == 0 else draw.ellipse
        mask_shape = mask_draw.rectangle if class_id == 0 else mask_draw.ellipse
        shape([x0, y0, x1, y1], fill=_COLOURS[class_id])
        mask_shape([x0, y0, x1, y1], fill=255)
        mask = np.asarray(mask_img) > 0
        ys, xs = np.nonzero(mask)
        box = (
            int(xs.min()),
            int(ys.min()),
            int(xs.max() - xs.min() + 1),
            int(ys.max() - ys.min() + 1),
        )
        objects.append(SynthObject(class_id=class_id, box=box, mask=mask))
    return image, objects


def _encode(image: Image.Image, kind: str) -> tuple[bytes, str]:
    """Image bytes for ``kind`` and the file extension the index will show."""
    buf = io.BytesIO()
    if kind == "gray-png":
        image.convert("L").save(buf, "PNG")
        return buf.getvalue(), "png"
    if kind == "rgba-png":
        rgba = image.convert("RGBA")
        alpha = np.full((image.height, image.width), 255, np.uint8)
        alpha[: image.height // 4, : image.width // 4] = (
            128  # a real alpha channel, not a constant one
        )
        rgba.putalpha(Image.fromarray(alpha, "L"))
        rgba.save(buf, "PNG")
        return buf.getvalue(), "png"
    if kind in ("png", "png-as-jpg"):
        image.save(buf, "PNG")
        return buf.getvalue(), ("jpg" if kind == "png-as-jpg" else "png")
    if kind == "bmp":
        image.save(buf, "BMP")
        return buf.getvalue(), "bmp"
    image.save(buf, "JPEG", quality=95)
    return buf.getvalue(), "jpg"


def detected_extension(data: bytes) -> str:
    """The platform's extension: the type PIL detects (jpg, png, bmp), else 'unknown'."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
    except Exception:  # the platform maps any failure to "unknown"
        return "unknown"
    return {"JPEG": "jpg", "PNG": "png", "BMP": "bmp"}.get(fmt or "", "unknown")


def _store_asset(cache: Path, assets_link: Path, data: bytes, ext: str) -> tuple[Path, str]:
    """Store ``data`` as <h[-2:]>/<h>.<ext> in the cache; return (index path via in/assets, h)."""
    digest = hashlib.sha1(data).hexdigest()
    rel = Path(digest[-2:]) / f"{digest}.{ext}"
    target = cache / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if (
        not target.exists()
    ):  # the cache is shared across tasks; content-addressed, so never rewritten
        target.write_bytes(data)
    return assets_link / rel, digest


# Kinds of the first images of each split; the rest are JPEGs, every 4th one negative.
_TRAIN_KINDS = ("gray-png", "rgba-png", "png-as-jpg", "bmp", "negative", "png")
_VAL_KINDS = ("negative", "png", "gray-png")
_CANDIDATE_KINDS = ("gray-png", "rgba-png", "png-as-jpg", "negative", "bmp", "png")


def _kind_at(kinds: Sequence[str], index: int) -> str:
    if index < len(kinds):
        return kinds[index]
    return "negative" if index % 4 == 3 else "jpg"


def _make_split(
    result: SynthResult,
    rng: np.random.RandomState,
    count: int,
    kinds: Sequence[str],
    single_names: bool = False,
) -> list[tuple[Path, str, Image.Image, list[SynthObject]]]:
    """``count`` synthetic images stored in the cache: (index path, hash, image, objects) each."""
    items = []
    for i in range(count):
        kind = _kind_at(kinds, i)
        negative = kind == "negative"
        image, objects = _draw_sample(rng, 0 if negative else 1 + int(rng.randint(2)))
        encode_kind = "jpg" if negative else kind
        data, ext = _encode(image, encode_kind)
        if single_names:
            name = _SINGLE_IMAGE_NAMES[i % len(_SINGLE_IMAGE_NAMES)].format(i) + "." + ext
            path = result.assets_dir / name
            (result.assets_cache / name).write_bytes(data)
            digest = hashlib.sha1(data).hexdigest()
        else:
            path, digest = _store_asset(result.assets_cache, result.assets_dir, data, ext)
        result.ground_truth[path] = objects
        result.kinds[path] = kind
        items.append((path, digest, image, objects))
    return items


def _write_extra_cache_images(result: SynthResult, rng: np.random.RandomState) -> None:
    """Images in the cache that belong to no index: executors must never glob in/assets."""
    if result.assets_cache == result.work_dir / "assets":
        return  # single-image inference: <work>/assets holds only the uploaded images
    for _ in range(2):
        image, _objects = _draw_sample(rng, 1)
        data, ext = _encode(image, "jpg")
        _store_asset(result.assets_cache, result.assets_dir, data, ext)


# ------------------------------------------------------------------------------------------------
# training data and annotations


def _training_format(
    requested: str | None, template: dict[str, Any], object_type: int, legacy: bool
) -> str:
    if legacy:
        # platform 1.1 ignored export_format: always ark with 5 columns (no masks, hence
        # segmentation executors must refuse a legacy env)
        return "ark"
    fmt = requested
    if not fmt:
        fmt = str(template.get("export_format") or "").split(":")[0] or None
    if not fmt:
        fmt = "ark" if object_type == ObjectType.DETECTION else "seg-coco"
    fmt = _ALIASES.get(fmt, fmt)
    # Detection data exported as COCO has boxes only, whichever COCO name was asked for.
    detection = object_type == ObjectType.DETECTION
    allowed = ("ark", "voc", "coco", "seg-coco") if detection else ("seg-coco", "coco")
    if fmt not in allowed:
        raise ValueError(
            "annotation format {!r} is not valid for object_type {} (use {})".format(
                fmt, object_type, ", ".join(allowed)
            )
        )
    return fmt


def _write_training(
    result: SynthResult,
    rng: np.random.RandomState,
    fmt: str,
    num_train: int,
    num_val: int,
    exported: bool = True,
) -> None:
    """The images, annotations and index files of a training task.

    ``exported`` False: what a platform writes for a format it does not know (its exporter's
    "no annotations"): the assets and idx-assets.tsv, but no annotation files and empty
    train / val / test indexes.
    """
    in_dir = result.in_dir
    train = _make_split(result, rng, num_train, _TRAIN_KINDS)
    val = _make_split(result, rng, num_val, _VAL_KINDS)
    result.train_images = [item[0] for item in train]
    result.val_images = [item[0] for item in val]
    ann_dir = in_dir / "annotations"
    anno_paths: dict[Path, Path] = {}
    if not exported:
        for name in ("train-index.tsv", "val-index.tsv", "test-index.tsv", "idx-gt.tsv"):
            (in_dir / name).write_text("", encoding="utf-8")
        result.train_index = in_dir / "train-index.tsv"
        result.val_index = in_dir / "val-index.tsv"
        (in_dir / "idx-assets.tsv").write_text(
            "".join(f"{i[0]}\n" for i in train + val), encoding="utf-8"
        )
        (in_dir / "predictions").mkdir()
        return
    if fmt in ("coco", "seg-coco"):
        coco_path = ann_dir / COCO_JSON_NAME
        _write_coco(coco_path, train + val, result.class_names, result.object_type)
        for path, _digest, _image, _objects in train + val:
            anno_paths[path] = coco_path
    else:
        for path, digest, image, objects in train + val:
            sub = ann_dir / digest[-2:]
            sub.mkdir(parents=True, exist_ok=True)
            if fmt == "voc":
                anno = sub / (digest + ".xml")
                anno.write_text(
                    _voc_xml(path, image, objects, result.class_names, result.kinds[path]),
                    encoding="utf-8",
                )
            else:
                anno = sub / (digest + ".txt")
                anno.write_text(_ark_text(objects, result.legacy), encoding="utf-8")
            anno_paths[path] = anno

    def index_text(items: Sequence[tuple[Path, str, Image.Image, list[SynthObject]]]) -> str:
        return "".join(f"{item[0]}\t{anno_paths[item[0]]}\n" for item in items)

    result.train_index = in_dir / "train-index.tsv"
    result.val_index = in_dir / "val-index.tsv"
    result.train_index.write_text(index_text(train), encoding="utf-8")
    result.val_index.write_text(index_text(val), encoding="utf-8")
    # the other files the exporter leaves in /in (executors may ignore them)
    (in_dir / "test-index.tsv").write_text("", encoding="utf-8")
    (in_dir / "idx-assets.tsv").write_text(
        "".join(f"{i[0]}\n" for i in train + val), encoding="utf-8"
    )
    (in_dir / "idx-gt.tsv").write_text(index_text(train + val), encoding="utf-8")
    (in_dir / "predictions").mkdir()


def _ark_text(objects: Sequence[SynthObject], legacy: bool) -> str:
    lines = []
    for obj in objects:
        x, y, w, h = obj.box
        cols = [str(obj.class_id), str(x), str(y), str(x + w - 1), str(y + h - 1)]  # inclusive max
        if not legacy:
            cols += ["-1.0", "0.0"]  # anno_quality, rotate_angle
        lines.append(", ".join(cols) + "\n")
    return "".join(lines)  # negative image: the file exists and is empty


def _voc_xml(
    path: Path,
    image: Image.Image,
    objects: Sequence[SynthObject],
    class_names: Sequence[str],
    kind: str,
) -> str:
    """Single-line VOC XML exactly as ``exporter._single_image_annotations_to_voc`` lays it out."""
    depth = {"gray-png": 1, "rgba-png": 4}.get(kind, 3)  # the stored file's channels
    parts = [
        f"<annotation><folder>folder</folder><filename>{_xml_escape(str(path))}</filename>",
        "<source><annotation>unknown</annotation><image>unknown</image></source>",
        f"<size><width>{image.width}</width><height>{image.height}</height>"
        f"<depth>{depth}</depth></size>",
        "<segmented>0</segmented>",
    ]
    for obj in objects:
        x, y, w, h = obj.box
        parts.append(
            f"<object><name>{_xml_escape(class_names[obj.class_id])}</name><pose>unknown</pose>"
            "<truncated>unknown</truncated><occluded>0</occluded>"
            f"<bndbox><xmin>{x}</xmin><ymin>{y}</ymin>"
            f"<xmax>{x + w - 1}</xmax><ymax>{y + h - 1}</ymax>"
            "<rotate_angle>0.0000</rotate_angle></bndbox><difficult>0</difficult>"
            "<box_quality>-1.0000</box_quality><confidence>-1.0000</confidence></object>"
        )
    parts.append("</annotation>")
    return "".join(parts)


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _write_coco(
    path: Path,
    items: Sequence[tuple[Path, str, Image.Image, list[SynthObject]]],
    class_names: Sequence[str],
    object_type: int,
) -> None:
    """One json for train and val, like ``_single_task_annotations_to_coco`` (coco and seg-coco
    alike: the data decides between masks and boxes)."""
    from pycocotools import mask as mask_utils

    with_masks = ObjectType(object_type).segmentation
    ordered = sorted(items, key=lambda item: item[1])  # images sorted by asset id
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    present: set[int] = set()
    for image_id, (asset, _digest, image, objects) in enumerate(ordered, start=1):
        images.append(
            {
                "id": image_id,
                "file_name": asset.name,
                "width": image.width,
                "height": image.height,
                "date_captured": "2023-01-01 00:00:00",
                "license": 1,
                "coco_url": "",
                "flickr_url": "",
            }
        )
        for obj in objects:
            present.add(obj.class_id)
            x, y, w, h = obj.box
            ann: dict[str, Any] = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": obj.class_id,
                "iscrowd": 0,
                "bbox": [x, y, w, h],
                "confidence": -1.0,
            }
            if with_masks and obj.class_id == 0:
                # rectangles as a single polygon in COCO pixel-edge coordinates (rasterises exactly)
                poly = [x, y, x + w, y, x + w, y + h, x, y + h]
                rle = mask_utils.merge(mask_utils.frPyObjects([poly], image.height, image.width))
                ann["segmentation"] = [[float(v) for v in poly]]
                ann["area"] = int(mask_utils.area(rle))
            elif with_masks:
                rle = mask_utils.encode(np.asfortranarray(obj.mask.astype(np.uint8)))
                ann["segmentation"] = {
                    "size": [image.height, image.width],
                    "counts": rle["counts"].decode("ascii"),
                }
                ann["area"] = int(mask_utils.area(rle))
            else:
                # a box annotation: the exporter writes its empty segmentation and mask area
                ann["segmentation"] = {}
                ann["area"] = 0
            annotations.append(ann)
    categories = [
        {"id": cid, "name": class_names[cid], "supercategory": "object"} for cid in sorted(present)
    ]  # only classes that occur, ids = class_names index
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": categories,
        "licenses": [{"id": 1, "name": "", "url": ""}],
    }
    path.write_text(json.dumps(coco), encoding="utf-8")


# ------------------------------------------------------------------------------------------------
# mining / infer candidates


def _write_candidates(
    result: SynthResult,
    rng: np.random.RandomState,
    num_candidates: int,
    images_dir: str | os.PathLike | None,
    single_image: bool,
) -> None:
    if images_dir is not None:
        paths = _user_images(result, Path(images_dir), single_image)
    else:
        paths = [
            item[0]
            for item in _make_split(
                result, rng, num_candidates, _CANDIDATE_KINDS, single_names=single_image
            )
        ]
    result.candidates = paths
    result.candidate_index = result.in_dir / "candidate-index.tsv"
    result.candidate_index.write_text("".join(f"{p}\n" for p in paths), encoding="utf-8")
    if not single_image and result.task in ("mining", "mining+infer"):
        # mining also leaves the host paths; executors must ignore this file
        (result.in_dir / "candidate-src-index.tsv").write_text(
            "".join(f"{os.path.realpath(str(p))}\n" for p in paths), encoding="utf-8"
        )


def _user_images(result: SynthResult, images_dir: Path, single_image: bool) -> list[Path]:
    if not images_dir.is_dir():
        raise ValueError(f"--images: {images_dir} is not a folder")
    paths: list[Path] = []
    seen = set()
    for src in sorted(p for p in images_dir.rglob("*") if p.is_file()):
        data = src.read_bytes()
        ext = detected_extension(data)
        if not data or ext == "unknown":
            # the platform's import refuses these (2.x imports only JPEG / PNG / BMP)
            logger.warning("skipping %s: not a JPEG, PNG or BMP image", src)
            continue
        if single_image:
            if src.name in seen:  # the platform rejects duplicate basenames
                logger.warning("skipping %s: duplicate file name", src)
                continue
            seen.add(src.name)
            (result.assets_cache / src.name).write_bytes(data)
            path = result.assets_dir / src.name
        else:
            path, digest = _store_asset(result.assets_cache, result.assets_dir, data, ext)
            if digest in seen:
                continue  # identical bytes are one asset
            seen.add(digest)
        result.kinds[path] = "user"
        paths.append(path)
    if not paths:
        raise ValueError(f"--images: no JPEG, PNG or BMP image in {images_dir}")
    return paths


# ------------------------------------------------------------------------------------------------
# model packages


def model_package(source: Path, work: Path) -> Path:
    """A model package tar: ``source`` itself, or one packed into ``work`` from a training dir."""
    source = source.absolute()
    if source.is_file():
        return source
    for result_yaml, config in (
        (source / "out" / "models" / "result.yaml", source / "in" / "config.yaml"),
        (source / "result.yaml", None),
    ):
        if result_yaml.is_file():
            tar = work / "model-package.tar"
            package_training_output(result_yaml, tar, config)
            return tar
    raise ValueError(
        f"model {source}: expected a model package tar, a training work dir or an out/models "
        "dir with result.yaml"
    )


def package_training_output(
    result_yaml: Path,
    dest_tar: Path,
    config_file: Path | None = None,
    stage_name: str | None = None,
    legacy: bool | None = None,
) -> str:
    """Pack a training output like the platform (contract.models.pack_model); return the stage.

    ``config_file`` (the training ``config.yaml``) becomes the package's ``executor_config``, where
    mining / infer later find ``class_names``. ``legacy`` (default: the result's own format) packs
    like YMIR 1.1, files at the tar root.
    """
    from ..contract.models import pack_model

    with Path(result_yaml).open(encoding="utf-8") as fh:
        result = yaml.safe_load(fh) or {}
    executor_config: dict[str, Any] = {}
    if config_file is not None and Path(config_file).is_file():
        with Path(config_file).open(encoding="utf-8") as fh:
            executor_config = yaml.safe_load(fh) or {}
    if legacy is None:
        legacy = isinstance(result, dict) and "model" in result
    return pack_model(Path(result_yaml), stage_name, Path(dest_tar), executor_config, legacy=legacy)


def _package_info(tar: Path) -> dict[str, Any]:
    with tarfile.open(str(tar)) as tf:
        try:
            member = tf.extractfile("ymir-info.yaml")
        except KeyError:
            return {}
        data = yaml.safe_load(member.read().decode("utf-8")) if member is not None else None
    return data if isinstance(data, dict) else {}


def _package_class_names(info_file: Path) -> list[str] | None:
    if not info_file.is_file():
        return None
    with info_file.open(encoding="utf-8") as fh:
        info = yaml.safe_load(fh) or {}
    names = (
        (info.get("executor_config") or {}).get("class_names") if isinstance(info, dict) else None
    )
    return [str(n) for n in names] if isinstance(names, list) and names else None


def install_model(tar: Path, models_dir: Path, stage: str | None, layout: str) -> list[str]:
    """Extract a package into ``models_dir`` as the platform does; return the config's path list.

    stage: ``models_dir/ymir-info.yaml`` + ``models_dir/<stage>/<file>`` (platform 2.x, via
    contract.models.unpack_model); flat: ``models_dir/<file>`` listed as such (platform 1.1);
    migrated: files flat but listed as ``models_dir/default_best_stage/<file>`` (2.x running a
    package migrated from 1.1: executors must fall back to searching by basename).
    """
    if layout in ("stage", "flat"):
        from ..contract.models import unpack_model

        # stage -> <stage>/<file> (a package with files at its root is extracted flat while the
        # paths still name the stage: the migration quirk comes with such packages on its own)
        paths = unpack_model(Path(tar), stage, Path(models_dir), legacy=layout == "flat")
        return [str(p) for p in paths]
    info = _package_info(tar)
    stage = stage or str(info.get("best_stage_name") or "") or None
    paths = []
    with tarfile.open(str(tar)) as tf:
        for member in tf.getmembers():
            parts = Path(member.name).parts
            if member.isfile() and member.name == "ymir-info.yaml":
                _extract_member(tf, member, models_dir / "ymir-info.yaml")
            elif member.isfile() and (len(parts) == 1 or (len(parts) == 2 and parts[0] == stage)):
                _extract_member(tf, member, models_dir / parts[-1])
                paths.append(str(models_dir / MIGRATED_STAGE / parts[-1]))
    if not paths:
        raise ValueError(f"model package {tar} has no files for stage {stage!r}")
    return paths


def _extract_member(tf: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    src = tf.extractfile(member)
    if src is None:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    with src, dest.open("wb") as out:
        shutil.copyfileobj(src, out)


# ------------------------------------------------------------------------------------------------
# helpers


def _dump_yaml_safe(path: Path, data: dict[str, Any]) -> None:
    # env_config.py writes with yaml.safe_dump: keys sorted, block style
    path.write_text(yaml.safe_dump(data, default_flow_style=False), encoding="utf-8")


def _prepare_work_dir(work: Path) -> None:
    """Refuse to touch a folder the devkit did not make; clear one it did (in/ may be read-only)."""
    if work.exists() and not work.is_dir():
        raise ValueError(f"{work} exists and is not a folder")
    if work.is_dir() and any(work.iterdir()):
        if not (work / MARKER_FILE).is_file():
            raise ValueError(
                f"{work} is not empty and was not made by the devkit: refusing to overwrite it"
            )
        make_writable(work)
        for child in work.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(str(child))
            else:
                child.unlink()
    work.mkdir(parents=True, exist_ok=True)


def make_writable(root: Path) -> None:
    """Give the owner write permission back everywhere under ``root`` (not following symlinks)."""
    for dirpath, dirnames, filenames in os.walk(str(root)):
        for name in [*dirnames, *filenames, ""]:
            path = os.path.join(dirpath, name) if name else dirpath
            if os.path.islink(path):
                continue
            try:
                mode = os.stat(path).st_mode
                if not mode & stat.S_IWUSR:
                    os.chmod(path, mode | stat.S_IWUSR)
            except OSError:
                pass
