"""Config surgery: an mmdet config shipped in the package -> the config of this training task.

Everything happens in memory on the mmengine ``Config`` (the reference executors' pattern), in
this order, and the result is dumped next to the weights of every model stage (``config.py``),
so inference and mining rebuild exactly the trained model:

1. classes: every ``num_classes`` of the model (``rpn_head`` excepted, it is class-agnostic)
   and the datasets' ``metainfo``;
2. datasets: train / val / test become ``CocoDataset``s over the COCO files written by
   :mod:`.data` (absolute image paths, negatives kept), the evaluator reads the val file;
3. epochs and everything derived from them: the schedulers (epoch-based boundaries, cosine
   periods and milestones scaled; converted ones turned into iterations; iteration warm-ups
   capped to a tenth of the run), RTMDet's pipeline switch, YOLOX's no-mosaic last epochs
   and sync; the configs' extra validations of their last stage dropped (``val_interval``
   alone decides);
4. batch size and workers per GPU; the learning rate (``learning_rate`` 0: the config's rate
   scaled by our total batch / the config's reference batch, the linear scaling rule);
5. ``img_size``: every resize, crop, pad, mosaic and mix-up scale of every pipeline (incl.
   RTMDet's stage-2 pipeline and YOLOX's batch resize range) follows the square size;
6. validation interval, the checkpoint hook (interval, ``max_keep_checkpoints``), logging
   interval (a few lines per epoch, no progress-bar spam), TensorBoard when installed;
7. devices: SyncBN becomes BN on the CPU, gloo or NCCL, DDP settings for several processes;
8. weights: ``load_from`` (pretrained stage or baked COCO weights, prepared by
   :mod:`.training`); ``init_cfg`` entries that would download (``torchvision://``,
   ``open-mmlab://``, URLs) are removed, so nothing is fetched at run time, and a backbone
   that loses its pretrained init is trained whole (no frozen stages, BN statistics learnt);
9. ``cfg_options`` (mmengine ``key=value``) on top of everything.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Sequence

from mmengine.config import Config, ConfigDict

from ...contract.errors import ErrorCode, ExecutorError
from ...contract.object_types import ObjectType
from ...contract.params import Params
from ..openmmlab import options
from ..openmmlab.weights import replace_sync_bn
from .models import ModelSpec

log = logging.getLogger(__name__)

# Every scale is a multiple of this (the models' largest stride).
SIZE_DIVISOR = 32
# Transforms whose main scale becomes (img_size, img_size).
_SQUARE_SCALE_KEYS = {
    "Resize": "scale",
    "FixShapeResize": "scale",
    "Mosaic": "img_scale",
    "CachedMosaic": "img_scale",
    "MixUp": "img_scale",
    "CachedMixUp": "img_scale",
}
# Pipelines kept as they are: test-time augmentation has its own scale list on purpose.
_SKIPPED_KEYS = {"tta_pipeline", "tta_model", "img_scales"}
_DOWNLOAD_PREFIXES: tuple[str, ...] = (
    "torchvision://",
    "open-mmlab://",
    "openmmlab://",
    "mmcls://",
    "http://",
)
_DOWNLOAD_PREFIXES += ("https://", "modelzoo://", "caffe2://", "mmpretrain://", "mmdet://")
# An iteration-based warm-up longer than this share of the whole run is shortened to it.
WARMUP_SHARE = 0.1
# Shorter linear warm-ups are dropped (see _schedulers).
MIN_LINEAR_WARMUP = 10


@dataclass(frozen=True)
class TrainingSettings:
    """The training hyper-parameters, typed and checked (``tasks/hyperparams.py`` declares
    them, ``img-man/training-template.yaml`` holds their defaults)."""

    model: str
    epochs: int
    batch_size_per_gpu: int
    num_workers_per_gpu: int
    learning_rate: float
    img_size: int
    val_interval: int
    max_keep_checkpoints: int
    cfg_options: str


def training_settings(params: Params) -> TrainingSettings:
    """The settings from ``ctx.params``, ``img_size`` rounded up to a multiple of the stride.

    Raises:
        ExecutorError: CONFIG for a value its declaration refuses (the message names the key).
    """
    values = {field.name: params[field.name] for field in fields(TrainingSettings)}
    size = values["img_size"]
    if size % SIZE_DIVISOR:
        rounded = math.ceil(size / SIZE_DIVISOR) * SIZE_DIVISOR
        log.warning("img_size %d is not a multiple of %d; using %d", size, SIZE_DIVISOR, rounded)
        values["img_size"] = rounded
    return TrainingSettings(**values)


# ---------------------------------------------------------------------------------------------
# loading


def load_config(path: str | os.PathLike) -> Config:
    """An mmengine config from a file (a model stage's ``config.py`` or a shipped config).

    Raises:
        ExecutorError: MODEL when the file is missing or does not parse.
    """
    path = Path(path)
    if not path.is_file():
        raise ExecutorError(ErrorCode.MODEL, f"model config {path} does not exist")
    try:
        return Config.fromfile(str(path))
    except Exception as error:  # mmengine raises SyntaxError, KeyError, ImportError, ...
        raise ExecutorError(
            ErrorCode.MODEL, f"cannot read model config {path.name}: {' '.join(str(error).split())}"
        ) from error


def base_config(spec: ModelSpec) -> Config:
    """The config ``spec`` names, as shipped in mmdet."""
    from .models import config_file

    return Config.fromfile(str(config_file(spec)))


# ---------------------------------------------------------------------------------------------
# helpers shared with inference and mining


def walk(node: Any, visit: Callable[[dict, str], None], path: str = "") -> None:
    """Call ``visit(d, path)`` for every dict in a config tree (lists included), depth first."""
    if isinstance(node, dict):
        visit(node, path)
        for key, value in list(node.items()):
            if key in _SKIPPED_KEYS:
                continue
            walk(value, visit, f"{path}.{key}" if path else str(key))
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            walk(value, visit, f"{path}.{index}")


def set_num_classes(model_cfg: dict, num_classes: int) -> list[str]:
    """Every ``num_classes`` of the model (except the class-agnostic RPN) -> ``num_classes``."""
    changed: list[str] = []

    def visit(node: dict, path: str) -> None:
        if "num_classes" in node and "rpn_head" not in path.split("."):
            node["num_classes"] = num_classes
            changed.append(path or "model")

    walk(model_cfg, visit)
    return changed


def strip_downloads(cfg: Config) -> list[str]:
    """Remove ``init_cfg`` / ``pretrained`` entries that would download; returns their paths."""
    stripped: list[str] = []

    def downloads(entry: Any) -> bool:
        if not isinstance(entry, dict):
            return False
        checkpoint = str(entry.get("checkpoint") or "")
        return entry.get("type") == "Pretrained" and (
            checkpoint.startswith(_DOWNLOAD_PREFIXES) or not os.path.isfile(checkpoint)
        )

    def visit(node: dict, path: str) -> None:
        init = node.get("init_cfg")
        if isinstance(init, dict) and downloads(init):
            node["init_cfg"] = None
            stripped.append(f"{path}.init_cfg")
        elif isinstance(init, (list, tuple)) and any(downloads(item) for item in init):
            node["init_cfg"] = [item for item in init if not downloads(item)] or None
            stripped.append(f"{path}.init_cfg")
        pretrained = node.get("pretrained")
        if isinstance(pretrained, str) and (
            pretrained.startswith(_DOWNLOAD_PREFIXES) or not os.path.isfile(pretrained)
        ):
            node["pretrained"] = None
            stripped.append(f"{path}.pretrained")

    walk(cfg.get("model"), visit, "model")
    # Config variables that only fed those init_cfgs (e.g. RTMDet's ``checkpoint = 'https://...'``).
    for key in list(cfg.keys()):
        value = cfg.get(key)
        if isinstance(value, str) and value.startswith(_DOWNLOAD_PREFIXES):
            cfg.pop(key)
            stripped.append(key)
    return stripped


def thresholds(cfg: Config) -> dict[str, float]:
    """``{"conf_thr", "iou_thr"}``: the score and NMS IoU thresholds of the model's test_cfg.

    They are the thresholds the validation metrics were computed with (two-stage models keep
    them in ``test_cfg.rcnn``), written to result.yaml as ``evaluate_config``.
    """
    test_cfg = _final_test_cfg(cfg)
    result: dict[str, float] = {}
    if test_cfg is not None and test_cfg.get("score_thr") is not None:
        result["conf_thr"] = float(test_cfg["score_thr"])
    nms = test_cfg.get("nms") if test_cfg is not None else None
    if isinstance(nms, dict) and nms.get("iou_threshold") is not None:
        result["iou_thr"] = float(nms["iou_threshold"])
    return result


def set_thresholds(
    cfg: Config, conf_thr: float | None = None, iou_thr: float | None = None
) -> None:
    """Set the model's test-time score threshold and NMS IoU threshold (None: keep)."""
    test_cfg = _final_test_cfg(cfg)
    if test_cfg is None:
        raise ExecutorError(ErrorCode.MODEL, "the model config has no test_cfg")
    if conf_thr is not None:
        test_cfg["score_thr"] = float(conf_thr)
    if iou_thr is not None:
        nms = test_cfg.get("nms")
        if isinstance(nms, dict):
            nms["iou_threshold"] = float(iou_thr)
        else:
            test_cfg["nms"] = dict(type="nms", iou_threshold=float(iou_thr))


def _final_test_cfg(cfg: Config) -> dict | None:
    test_cfg = cfg.get("model", {}).get("test_cfg")
    if isinstance(test_cfg, dict) and isinstance(test_cfg.get("rcnn"), dict):
        return test_cfg["rcnn"]
    return test_cfg if isinstance(test_cfg, dict) else None


def test_pipeline(cfg: Config) -> list:
    """The test-time pipeline of a (stage) config, ``LoadAnnotations`` removed (no labels)."""
    loader = cfg.get("test_dataloader") or cfg.get("val_dataloader")
    pipeline = copy.deepcopy(_inner_dataset(loader["dataset"]).get("pipeline") or [])
    return [step for step in pipeline if step.get("type") != "LoadAnnotations"]


def apply_img_size(cfg: Config, img_size: int, reference_size: int) -> int:
    """Every train / test scale of ``cfg`` for the square ``img_size``; returns the count.

    Main scales (resize, mosaic, mix-up, crop, pad) become ``(img_size, img_size)``; scale
    *ranges* (``RandomResize``, ``RandomChoiceResize``, YOLOX's batch resize) are multiplied by
    ``img_size / reference_size``, the size the config was designed for.
    """
    factor = img_size / float(reference_size)
    square = (img_size, img_size)
    changed = [0]

    def scaled(value: Any) -> Any:
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple)):
            return [scaled(item) for item in value]
        if isinstance(value, (list, tuple)):
            return tuple(max(SIZE_DIVISOR, round(v * factor)) for v in value)
        if isinstance(value, (int, float)):
            return max(SIZE_DIVISOR, round(value * factor))
        return value

    def visit(node: dict, path: str) -> None:
        kind: Any = node.get("type")  # a registry name, or the class itself
        key = _SQUARE_SCALE_KEYS.get(kind)
        if key and node.get(key) is not None:
            node[key] = square
            changed[0] += 1
        if kind == "Pad" and node.get("size") is not None:
            node["size"] = square
            changed[0] += 1
        if kind == "RandomCrop" and node.get("crop_type", "absolute") == "absolute":
            node["crop_size"] = square
            changed[0] += 1
        if kind == "RandomAffine" and any(node.get("border") or ()):
            node["border"] = (-(img_size // 2), -(img_size // 2))
            changed[0] += 1
        if kind == "RandomResize" and node.get("scale") is not None:
            node["scale"] = scaled(node["scale"])
            changed[0] += 1
        if kind == "RandomChoiceResize" and node.get("scales") is not None:
            node["scales"] = scaled(node["scales"])
            changed[0] += 1
        if kind == "BatchSyncRandomResize" and node.get("random_size_range") is not None:
            divisor = int(node.get("size_divisor") or SIZE_DIVISOR)
            low, high = node["random_size_range"]
            low = max(divisor, round(low * factor / divisor) * divisor)
            high = max(low, round(high * factor / divisor) * divisor)
            node["random_size_range"] = (low, high)
            changed[0] += 1

    walk(cfg._cfg_dict if isinstance(cfg, Config) else cfg, visit)
    # The config variable the pipelines were written with (YOLOX's img_scale), for readers.
    if isinstance(cfg.get("img_scale"), (list, tuple)):
        cfg["img_scale"] = square
    return changed[0]


# ---------------------------------------------------------------------------------------------
# the training config


@dataclass(frozen=True)
class TrainingInputs:
    """What the surgery needs besides the hyper-parameters."""

    class_names: Sequence[str]
    object_type: int
    train_json: Path
    val_json: Path
    num_train_images: int
    world_size: int  # processes (GPUs, or gloo processes on the CPU)
    use_cuda: bool
    work_dir: Path  # the runner's work dir (logs, resumable checkpoints), under /out
    tensorboard_dir: Path
    load_from: Path | None  # prepared weights, or None to train from the config's init

    @classmethod
    def offline(
        cls, class_names: Sequence[str], object_type: int, folder: Path, num_train_images: int = 1
    ) -> TrainingInputs:
        """Inputs of a config built without a task (untrained packages, tests): one CPU
        process, every path under ``folder``, no weights to load."""
        folder = Path(folder)
        return cls(
            class_names=list(class_names),
            object_type=object_type,
            train_json=folder / "train.json",
            val_json=folder / "val.json",
            num_train_images=num_train_images,
            world_size=1,
            use_cuda=False,
            work_dir=folder / "runner",
            tensorboard_dir=folder / "tensorboard",
            load_from=None,
        )


def iters_per_epoch(num_images: int, batch_size: int, world_size: int) -> int:
    """Iterations of one epoch per rank (DefaultSampler pads the set to a multiple of ranks)."""
    per_rank = math.ceil(num_images / float(world_size))
    return max(1, math.ceil(per_rank / float(batch_size)))


def training_config(spec: ModelSpec, settings: TrainingSettings, inputs: TrainingInputs) -> Config:
    """The config of this training task (see the module docstring for every step).

    Raises:
        ExecutorError: CONFIG for a config this surgery cannot handle or bad ``cfg_options``.
    """
    cfg = base_config(spec)
    names = tuple(str(name) for name in inputs.class_names)
    set_num_classes(cfg.model, len(names))
    _set_datasets(cfg, inputs, names)
    _set_loaders(cfg, settings, inputs)
    lr_factor = _set_learning_rate(cfg, spec, settings, inputs.world_size)
    length = iters_per_epoch(
        inputs.num_train_images, settings.batch_size_per_gpu, inputs.world_size
    )
    _set_epochs(cfg, settings, length, lr_factor)
    apply_img_size(cfg, settings.img_size, spec.reference_size)
    _set_masks(cfg, inputs.object_type)
    _set_hooks(cfg, settings, length)
    _set_visualizer(cfg, inputs.tensorboard_dir)
    _set_devices(cfg, inputs)
    stripped = strip_downloads(cfg)
    _set_weights(cfg, inputs.load_from, stripped)
    cfg.work_dir = str(inputs.work_dir)
    # Unique per run: mmengine keys its logger and visualizer singletons by this name.
    cfg.experiment_name = (
        f"{spec.name}-{os.getpid()}-{time.strftime('%Y%m%d_%H%M%S')}-{time.time_ns() % 10**6}"
    )
    cfg.ymir = dict(
        model=spec.name,
        object_type=int(inputs.object_type),
        img_size=int(settings.img_size),
        class_names=list(names),
    )
    options.apply_cfg_options(cfg, settings.cfg_options)
    return cfg


def _inner_dataset(dataset: dict) -> dict:
    """The dataset under wrappers (MultiImageMixDataset, RepeatDataset, ...)."""
    while isinstance(dataset.get("dataset"), dict):
        dataset = dataset["dataset"]
    if isinstance(dataset.get("datasets"), list):
        raise ExecutorError(
            ErrorCode.CONFIG,
            f"cannot point a {dataset.get('type')} of several datasets at YMIR data",
        )
    return dataset


def _set_datasets(cfg: Config, inputs: TrainingInputs, names: tuple) -> None:
    metainfo = dict(classes=names)
    train = _inner_dataset(cfg.train_dataloader.dataset)
    train.update(
        type="CocoDataset",
        data_root="",
        ann_file=str(inputs.train_json),
        data_prefix=dict(img=""),
        metainfo=metainfo,
        # Negative images teach the model what is not an object; tiny images are fine.
        filter_cfg=dict(filter_empty_gt=False, min_size=0),
        backend_args=None,
    )
    for loader_key in ("val_dataloader", "test_dataloader"):
        loader = cfg.get(loader_key)
        if not loader:
            continue
        dataset = _inner_dataset(loader.dataset)
        dataset.update(
            type="CocoDataset",
            data_root="",
            ann_file=str(inputs.val_json),
            data_prefix=dict(img=""),
            metainfo=metainfo,
            test_mode=True,
            backend_args=None,
        )
    for evaluator_key in ("val_evaluator", "test_evaluator"):
        evaluators = cfg.get(evaluator_key)
        for evaluator in evaluators if isinstance(evaluators, list) else [evaluators]:
            if isinstance(evaluator, dict):
                evaluator.update(
                    ann_file=str(inputs.val_json), backend_args=None, format_only=False
                )
                evaluator.pop("outfile_prefix", None)


def _set_loaders(cfg: Config, settings: TrainingSettings, inputs: TrainingInputs) -> None:
    workers = settings.num_workers_per_gpu
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        loader = cfg.get(key)
        if not loader:
            continue
        loader.batch_size = settings.batch_size_per_gpu
        loader.num_workers = workers
        # torch refuses persistent workers without workers; pinning only helps a GPU.
        loader.persistent_workers = workers > 0
        loader.pin_memory = bool(inputs.use_cuda)


def _set_learning_rate(
    cfg: Config, spec: ModelSpec, settings: TrainingSettings, world_size: int
) -> float:
    optimizer = cfg.optim_wrapper.get("optimizer")
    if not isinstance(optimizer, dict) or "lr" not in optimizer:
        raise ExecutorError(ErrorCode.CONFIG, f"model {spec.name}: the config has no optimizer lr")
    base_lr = float(optimizer["lr"])
    total_batch = settings.batch_size_per_gpu * world_size
    if settings.learning_rate > 0:
        lr = settings.learning_rate
        log.info("learning rate %g (set)", lr)
    else:
        lr = base_lr * total_batch / spec.reference_batch
        log.info(
            "learning rate %g = the config's %g x total batch %d / reference batch %d",
            lr,
            base_lr,
            total_batch,
            spec.reference_batch,
        )
    optimizer["lr"] = lr
    # We scale here, explicitly; mmengine's own scaling would do it a second time.
    cfg.auto_scale_lr = dict(enable=False, base_batch_size=spec.reference_batch)
    return lr / base_lr if base_lr else 1.0


def _set_epochs(cfg: Config, settings: TrainingSettings, length: int, lr_factor: float) -> None:
    epochs = settings.epochs
    original = int(cfg.train_cfg.get("max_epochs") or epochs)
    ratio = epochs / float(original)
    val_interval = min(settings.val_interval, epochs)
    cfg.train_cfg.update(type="EpochBasedTrainLoop", max_epochs=epochs, val_interval=val_interval)
    # RTMDet's configs validate every epoch of their last stage; the user's
    # val_interval is what the template documents, and a validation is a pass over the
    # whole validation set: it alone decides.
    cfg.train_cfg.pop("dynamic_intervals", None)
    cfg.param_scheduler = _schedulers(cfg.get("param_scheduler"), epochs, ratio, length, lr_factor)
    for hook in cfg.get("custom_hooks") or []:
        kind = hook.get("type")
        if kind == "PipelineSwitchHook":
            # "the last N epochs run the stage-2 pipeline" keeps its share of the run.
            last = max(1, round((original - hook["switch_epoch"]) * ratio))
            hook["switch_epoch"] = max(0, epochs - last)
        elif kind == "YOLOXModeSwitchHook":
            last = max(1, round(hook.get("num_last_epochs", 15) * ratio))
            hook["num_last_epochs"] = min(last, max(1, epochs - 1))
    # Config variables that only fed the above; stale values would mislead a reader.
    for name in ("max_epochs", "stage2_num_epochs", "num_last_epochs", "interval"):
        if name in cfg and isinstance(cfg[name], int):
            cfg.pop(name)


def _schedulers(schedulers: Any, epochs: int, ratio: float, length: int, lr_factor: float) -> list:
    total = epochs * length
    warmup_cap = max(1, math.ceil(WARMUP_SHARE * total))
    result = []
    for original in schedulers if isinstance(schedulers, (list, tuple)) else [schedulers]:
        if not original:
            continue
        scheduler = copy.deepcopy(dict(original))
        if "eta_min" in scheduler:
            scheduler["eta_min"] = float(scheduler["eta_min"]) * lr_factor
        by_epoch = scheduler.get("by_epoch", True)
        if not by_epoch:
            # An iteration warm-up sized for COCO would outlast a small run.
            begin = int(scheduler.get("begin", 0))
            end = scheduler.get("end")
            if isinstance(end, (int, float)) and end > warmup_cap:
                scheduler["end"] = end = max(begin + 1, warmup_cap)
            if begin >= total:
                continue
            if (
                str(scheduler.get("type", "")).endswith("LinearLR")
                and isinstance(end, (int, float))
                and end - begin < MIN_LINEAR_WARMUP
            ):
                # mmengine's LinearLR reaches (n - 1) / n of the rate on its last step and
                # the rate then stays there: a warm-up of a few steps would freeze the rate
                # near its start factor. Such a short warm-up is better left out.
                log.info("warm-up of %d iterations left out (too short to matter)", end - begin)
                continue
            result.append(scheduler)
            continue
        convert = scheduler.pop("convert_to_iter_based", False)
        unit = length if convert else 1
        # Epoch boundaries beyond the run (mmengine's "infinite" end) stay open.
        begin = round(float(scheduler.get("begin", 0)) * ratio * unit)
        end_value: Any = scheduler.get("end")
        open_end = end_value is None or float(end_value) >= 1e8
        end = None if open_end else round(float(end_value) * ratio * unit)
        if begin >= epochs * unit:
            continue
        scheduler["begin"] = begin
        if end is not None:
            scheduler["end"] = max(begin + 1, min(end, epochs * unit))
        if "T_max" in scheduler:
            scheduler["T_max"] = max(1, round(float(scheduler["T_max"]) * ratio * unit))
        if "milestones" in scheduler:
            points = {round(float(m) * ratio * unit) for m in scheduler["milestones"]}
            scheduler["milestones"] = sorted(p for p in points if 0 < p < epochs * unit)
        if convert:
            scheduler["by_epoch"] = False
        result.append(scheduler)
    return result


def _set_masks(cfg: Config, object_type: int) -> None:
    """Masks come as RLE in our COCO files; ``poly2mask=False`` would drop them as invalid."""

    def visit(node: dict, _path: str) -> None:
        if node.get("type") == "LoadAnnotations" and node.get("with_mask"):
            node["poly2mask"] = True

    if object_type == ObjectType.INSTANCE_SEGMENTATION:
        walk(cfg._cfg_dict, visit)


def _set_hooks(cfg: Config, settings: TrainingSettings, length: int) -> None:
    hooks = cfg.default_hooks
    val_interval = min(settings.val_interval, settings.epochs)
    # Full checkpoints (with optimizer state) in the work dir, for inspection or a manual
    # resume; the model stages of result.yaml are written by our hook. Bounded on disk.
    hooks.checkpoint = dict(
        type="CheckpointHook",
        interval=val_interval,
        by_epoch=True,
        max_keep_ckpts=max(1, settings.max_keep_checkpoints),
        save_last=True,
        save_best=None,
    )
    # About five loss lines per epoch, at least one every 50 iterations on long epochs.
    interval = max(1, min(50, math.ceil(length / 5.0)))
    hooks.logger = dict(type="LoggerHook", interval=interval)
    cfg.log_processor = dict(type="LogProcessor", window_size=interval, by_epoch=True)
    cfg.log_level = "INFO"


def tensorboard_available() -> bool:
    """True when mmengine's TensorBoard backend can work (the tensorboard package is installed)."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except Exception:
        return False
    return True


def _set_visualizer(cfg: Config, tensorboard_dir: Path) -> None:
    visualizer = cfg.get("visualizer") or dict(type="DetLocalVisualizer")
    if tensorboard_available():
        backends = [
            dict(type="LocalVisBackend"),
            dict(type="TensorboardVisBackend", save_dir=str(tensorboard_dir)),
        ]
    else:
        # Without tensorboard the scalars still land where YMIR looks, as mmengine's json.
        log.info("tensorboard is not installed: training scalars go to %s as json", tensorboard_dir)
        backends = [dict(type="LocalVisBackend", save_dir=str(tensorboard_dir))]
    visualizer["vis_backends"] = backends
    cfg.vis_backends = backends
    # The runner names it after the (unique) experiment, see training_config.
    visualizer.pop("name", None)
    cfg.visualizer = visualizer


def _set_devices(cfg: Config, inputs: TrainingInputs) -> None:
    if not inputs.use_cuda:
        replace_sync_bn(cfg.model)  # torch's SyncBatchNorm runs on GPUs only
        if _accepts(cfg.model.get("type"), "use_syncbn"):
            # RTMDet converts its own BNs to SyncBN whenever several processes run.
            cfg.model["use_syncbn"] = False
    env_cfg = cfg.get("env_cfg") or {}
    env_cfg.setdefault("mp_cfg", dict(mp_start_method="fork", opencv_num_threads=0))
    env_cfg["dist_cfg"] = dict(backend="nccl" if inputs.use_cuda else "gloo")
    env_cfg["cudnn_benchmark"] = False
    cfg.env_cfg = env_cfg
    cfg.launcher = "pytorch" if inputs.world_size > 1 else "none"
    if inputs.world_size > 1:
        # Some heads leave parameters unused on an iteration (e.g. no positive sample).
        cfg.find_unused_parameters = True
        if not inputs.use_cuda:
            # mmengine would pass device_ids=[LOCAL_RANK], which DDP refuses for CPU modules.
            cfg.model_wrapper_cfg = dict(
                type="MMDistributedDataParallel",
                device_ids=None,
                broadcast_buffers=False,
                find_unused_parameters=True,
            )
    cfg.randomness = dict(seed=int((cfg.get("randomness") or {}).get("seed") or 0))


def _accepts(model_type: Any, argument: str) -> bool:
    """Whether the registered mmdet model class ``model_type`` takes ``argument``."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    model_class = MODELS.get(model_type) if isinstance(model_type, str) else None
    if model_class is None:
        return False
    return argument in inspect.signature(model_class.__init__).parameters


def _set_weights(cfg: Config, load_from: Path | None, stripped: list[str]) -> None:
    cfg.load_from = str(load_from) if load_from else None
    cfg.resume = False
    if stripped:
        log.info("removed downloading init_cfg: %s", ", ".join(stripped))
    if load_from is not None:
        return
    # No pretrained weights at all: a frozen stem or frozen BN statistics would stay random.
    for path in stripped:
        owner = path.rsplit(".", 1)[0].split(".")[1:]  # "model.backbone.init_cfg" -> backbone
        node: Any = cfg.model
        for part in owner:
            node = node[int(part)] if isinstance(node, list) else node.get(part)
            if node is None:
                break
        if not isinstance(node, dict):
            continue
        if node.get("frozen_stages", -1) != -1:
            node["frozen_stages"] = -1
            log.info("model.%s: training from scratch, so no stage is frozen", ".".join(owner))
        if node.get("norm_eval"):
            node["norm_eval"] = False


def stage_config(cfg: Config) -> Config:
    """The config saved with a model stage: the trained model, no weights to load first."""
    stage = copy.deepcopy(cfg)
    stage.load_from = None
    stage.resume = False
    return stage


def as_dict(node: Any) -> Any:
    """Plain dicts / lists from ConfigDicts (for logging and tests)."""
    if isinstance(node, (ConfigDict, dict)):
        return {key: as_dict(value) for key, value in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(as_dict(value) for value in node)
    return node
