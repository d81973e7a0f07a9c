"""Config surgery: an mmseg config shipped in the package -> the config of this training run.

Everything happens in memory on the loaded config, then the result is dumped next to the
weights (``config.py`` of every stage), because inference and mining rebuild the model from it.
Order matters: the model list's config, then the task (classes, data, schedule, batch, learning
rate, image size, checkpoints, logging, weights), then the user's ``cfg_options`` on top, so an
expert can still override any of it.

* ``num_classes`` is set wherever it appears in the model (decode head and every auxiliary
  head, dict or list).
* The data pipelines are the executor's own, not the config's: those were tuned for ADE20K or
  Cityscapes folders and image sizes. Training: random rescale (0.5-2x) so that the short side
  is around ``img_size``, a random ``img_size`` square crop, flip and photometric distortion.
  Validation and inference: rescale so that the short side is ``img_size`` (the long side at
  most 4x). Images are read without EXIF rotation, as YMIR's masks are drawn in stored pixels.
* ``img_size`` also goes to the data preprocessor's padding size and any ``crop_size`` of the
  model (slide inference is switched to whole-image inference, which batches).
* The schedule is iteration based: ``max_iters``, validation every ``val_interval`` and at the
  end; the config's learning-rate schedulers are stretched or shrunk to ``max_iters`` (warm-up
  at most a tenth of the run), so no scheduler keeps the 80k/160k of the original recipe.
* ``learning_rate`` 0 = the config's rate x (total batch / the config's total batch).
* Backbone ``init_cfg``s and ``pretrained`` that point to the network (``open-mmlab://``,
  ``torchvision://``, URLs) are removed: weights come from ``load_from`` (a pretrained YMIR
  model, or the baked weights of the model list), never from a download at run time.
* SyncBN becomes BN unless several GPUs train together (SyncBN needs a process group and CUDA).
* Cross-entropy losses average over labelled pixels (``avg_non_ignore``), so ignored pixels
  do not scale the loss down.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

from mmengine.config import Config, ConfigDict

from ..openmmlab.options import apply_cfg_options
from ..openmmlab.weights import replace_sync_bn
from .data import IGNORE_INDEX, LabelSet, PreparedData
from .models import ModelSpec, config_file

log = logging.getLogger(__name__)

# Keys whose value names weights to fetch from the network.
_REMOTE_PREFIXES = (
    "http://",
    "https://",
    "open-mmlab://",
    "torchvision://",
    "mmcls://",
    "pretrain/",
)
# Images are read as stored: YMIR's masks are in stored pixels, not EXIF-rotated ones.
_LOAD_IMAGE = {"type": "LoadImageFromFile", "color_type": "color_ignore_orientation"}
# The long side may be up to this many times the short side before it limits the rescale.
_MAX_ASPECT = 4


def train_pipeline(img_size: int) -> list[dict]:
    """The training transforms: random scale, ``img_size`` square crop, flip, colour jitter."""
    return [
        dict(_LOAD_IMAGE),
        {"type": "LoadAnnotations"},
        {
            "type": "RandomResize",
            "scale": (_MAX_ASPECT * img_size, img_size),
            "ratio_range": (0.5, 2.0),
            "keep_ratio": True,
        },
        {"type": "RandomCrop", "crop_size": (img_size, img_size), "cat_max_ratio": 0.75},
        {"type": "RandomFlip", "prob": 0.5},
        {"type": "PhotoMetricDistortion"},
        {"type": "PackSegInputs"},
    ]


def test_pipeline(img_size: int) -> list[dict]:
    """Validation / inference transforms: the short side rescaled to ``img_size``."""
    return [
        dict(_LOAD_IMAGE),
        {"type": "Resize", "scale": (_MAX_ASPECT * img_size, img_size), "keep_ratio": True},
        # after Resize: metrics compare predictions (resized back) with the original label map
        {"type": "LoadAnnotations"},
        {"type": "PackSegInputs"},
    ]


def load_base(spec: ModelSpec) -> Config:
    """The model list's config as shipped in mmseg."""
    return Config.fromfile(str(config_file(spec)))


def build_config(
    spec: ModelSpec,
    data: PreparedData,
    *,
    work_dir: Path,
    max_iters: int,
    val_interval: int,
    batch_size: int,
    num_workers: int,
    learning_rate: float,
    img_size: int,
    max_keep_checkpoints: int,
    world_size: int,
    use_cuda: bool,
    load_from: Path | None,
    tensorboard_dir: Path | None,
    cfg_options: str | dict | None = None,
    seed: int = 0,
) -> Config:
    """The full training config (see the module doc for each step)."""
    if max_iters < 1 or val_interval < 1 or batch_size < 1 or img_size < 32:
        raise ValueError(
            "max_iters, val_interval and batch_size must be >= 1 and img_size >= 32, got "
            f"{max_iters}, {val_interval}, {batch_size}, {img_size}"
        )
    labels = data.labels
    cfg = model_config(spec, labels, img_size, sync_bn=world_size > 1 and use_cuda)
    _set_dataloaders(cfg, data, batch_size, num_workers, img_size)

    original_iters = int(cfg.get("train_cfg", {}).get("max_iters") or max_iters)
    cfg.train_cfg = {
        "type": "IterBasedTrainLoop",
        "max_iters": max_iters,
        "val_interval": min(val_interval, max_iters),
    }
    cfg.val_cfg = {"type": "ValLoop"}
    cfg.test_cfg = {"type": "TestLoop"}
    cfg.param_scheduler = _scaled_schedulers(cfg.get("param_scheduler"), original_iters, max_iters)

    rate = _learning_rate(cfg, spec, learning_rate, batch_size * world_size)
    cfg.optim_wrapper.optimizer.lr = rate
    cfg.pop("auto_scale_lr", None)  # the rate above is final

    _set_runtime(
        cfg,
        interval=min(val_interval, max_iters),
        max_keep_checkpoints=max_keep_checkpoints,
        tensorboard_dir=tensorboard_dir,
        world_size=world_size,
        use_cuda=use_cuda,
    )
    cfg.randomness = {"seed": seed}
    cfg.work_dir = str(work_dir)
    cfg.load_from = str(load_from) if load_from else None
    cfg.resume = False
    apply_cfg_options(cfg, cfg_options)
    return cfg


def _set_dataloaders(
    cfg: Config, data: PreparedData, batch_size: int, num_workers: int, img_size: int
) -> None:
    """Train, validation and test loaders and the IoU evaluator."""
    labels = data.labels
    metainfo = {"classes": list(labels.model_classes)}
    cfg.train_dataloader = {
        "batch_size": batch_size,
        "num_workers": num_workers,
        "persistent_workers": num_workers > 0,
        "sampler": {"type": "InfiniteSampler", "shuffle": True},
        "dataset": _dataset(data.train.list_file, metainfo, train_pipeline(img_size)),
    }
    cfg.val_dataloader = {
        "batch_size": 1,  # mmseg validates whole images of different sizes one by one
        "num_workers": min(num_workers, 2),
        "persistent_workers": False,
        "sampler": {"type": "DefaultSampler", "shuffle": False},
        "dataset": _dataset(data.val.list_file, metainfo, test_pipeline(img_size)),
    }
    cfg.test_dataloader = copy.deepcopy(cfg.val_dataloader)
    cfg.val_evaluator = {
        "type": "YmirIoUMetric",
        "skip_background": labels.background,
        "ignore_index": IGNORE_INDEX,
    }
    cfg.test_evaluator = copy.deepcopy(cfg.val_evaluator)


def _set_runtime(
    cfg: Config,
    *,
    interval: int,
    max_keep_checkpoints: int,
    tensorboard_dir: Path | None,
    world_size: int,
    use_cuda: bool,
) -> None:
    """Logging and checkpoint hooks, visualizer backends and the distributed environment;
    ``interval``: iterations between validations."""
    cfg.default_hooks.logger = {
        "type": "LoggerHook",
        "interval": max(1, min(50, interval)),
        "log_metric_by_epoch": False,
    }
    # Stages are written by the stage hook after each validation; the checkpoint hook only
    # keeps resumable state in the work dir, bounded by max_keep_checkpoints.
    cfg.default_hooks.checkpoint = {
        "type": "CheckpointHook",
        "by_epoch": False,
        "interval": interval,
        "max_keep_ckpts": max(1, max_keep_checkpoints),
        "save_last": True,
    }
    cfg.default_hooks.pop("visualization", None)
    backends = _vis_backends(tensorboard_dir)
    cfg.vis_backends = backends
    # No fixed name: mmengine then names the visualizer after the run, so several runs in one
    # process (tests) do not share one instance.
    cfg.visualizer = {"type": "SegLocalVisualizer", "vis_backends": backends}
    cfg.log_processor = {"by_epoch": False}
    cfg.env_cfg = {
        "cudnn_benchmark": bool(use_cuda),
        "mp_cfg": {"mp_start_method": "fork", "opencv_num_threads": 0},
        "dist_cfg": {"backend": "nccl" if use_cuda else "gloo"},
    }
    cfg.launcher = "pytorch" if world_size > 1 else "none"
    if world_size > 1:
        # Auxiliary heads may leave parameters without gradient on an iteration.
        cfg.find_unused_parameters = True
        if not use_cuda:
            # mmengine would pass device_ids=[LOCAL_RANK], which DDP refuses for CPU modules.
            cfg.model_wrapper_cfg = {
                "type": "MMDistributedDataParallel",
                "device_ids": None,
                "broadcast_buffers": False,
                "find_unused_parameters": True,
            }


def model_config(spec: ModelSpec, labels: LabelSet, img_size: int, sync_bn: bool = False) -> Config:
    """The config part every stage needs to predict: model, test pipeline, label meanings.

    :func:`build_config` adds the training part; an untrained package (tests, benchmarks) is
    this alone.
    """
    cfg = load_base(spec)
    set_model(cfg, labels.num_classes, img_size, sync_bn=sync_bn)
    cfg.test_dataloader = {
        "batch_size": 1,
        "num_workers": 0,
        "sampler": {"type": "DefaultSampler", "shuffle": False},
        "dataset": _dataset(
            Path("test.json"), {"classes": list(labels.model_classes)}, test_pipeline(img_size)
        ),
    }
    # The executor's own record of what the model's labels mean (read back by inference).
    cfg.ymir = {"labels": labels.to_dict(), "model": spec.name, "img_size": img_size}
    for key in ("tta_model", "tta_pipeline"):
        cfg.pop(key, None)
    return cfg


def set_model(cfg: Config, num_classes: int, img_size: int, sync_bn: bool) -> None:
    """Classes, image size, offline weights and norm layers of ``cfg.model`` (in place)."""
    model = cfg.model
    set_key(model, "num_classes", num_classes)
    # Average the loss over labelled pixels only: with unlabelled pixels ignored (the
    # default), mmseg's default would shrink the loss, and so the learning rate, by their share.
    for node in _dicts(model):
        if node.get("type") == "CrossEntropyLoss":
            node["avg_non_ignore"] = True
    _strip_remote_weights(model)
    if not sync_bn:
        replace_sync_bn(model)
    preprocessor = model.get("data_preprocessor")
    if preprocessor is not None:
        preprocessor["size"] = (img_size, img_size)
        preprocessor["seg_pad_val"] = IGNORE_INDEX
        preprocessor.pop("test_cfg", None)
    cfg.data_preprocessor = copy.deepcopy(preprocessor) if preprocessor is not None else None
    # Whole-image inference batches and keeps every pixel's context; slide windows are for
    # images far larger than the training crops, which img_size already handles.
    model["test_cfg"] = {"mode": "whole"}
    set_key(model, "crop_size", (img_size, img_size))


def inference_model_config(cfg: Config) -> ConfigDict:
    """The model part of a dumped training config, ready to build for one process."""
    model = copy.deepcopy(cfg.model)
    replace_sync_bn(model)
    _strip_remote_weights(model)
    model["test_cfg"] = {"mode": "whole"}
    return model


def _dataset(list_file: Path, metainfo: dict, pipeline: list[dict]) -> dict:
    return {
        "type": "YmirSegDataset",
        "ann_file": str(list_file),
        "data_prefix": {"img_path": "", "seg_map_path": ""},
        "metainfo": metainfo,
        "reduce_zero_label": False,
        "ignore_index": IGNORE_INDEX,
        "pipeline": pipeline,
    }


def set_key(node: Any, key: str, value: Any) -> None:
    """Set ``key`` in every dict of a nested dict/list structure that has it."""
    if isinstance(node, dict):
        if key in node:
            node[key] = value
        for child in node.values():
            set_key(child, key, value)
    elif isinstance(node, (list, tuple)):
        for child in node:
            set_key(child, key, value)


def _dicts(node: Any) -> list[dict]:
    """Every dict of a nested dict/list structure."""
    found: list[dict] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found.append(item)
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return found


def _is_remote(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(_REMOTE_PREFIXES)


def _strip_remote_weights(node: Any) -> None:
    """Drop ``pretrained`` / ``init_cfg`` entries that would download weights."""
    if isinstance(node, dict):
        if _is_remote(node.get("pretrained")):
            node["pretrained"] = None
        init = node.get("init_cfg")
        inits = init if isinstance(init, (list, tuple)) else [init]
        if any(isinstance(item, dict) and _is_remote(item.get("checkpoint")) for item in inits):
            kept = [
                item
                for item in inits
                if not (isinstance(item, dict) and _is_remote(item.get("checkpoint")))
            ]
            if kept:
                node["init_cfg"] = kept
            else:
                node.pop("init_cfg")
        for child in node.values():
            _strip_remote_weights(child)
    elif isinstance(node, (list, tuple)):
        for child in node:
            _strip_remote_weights(child)


def _scaled_schedulers(schedulers: Any, original_iters: int, max_iters: int) -> list[dict]:
    """The config's iteration schedulers mapped onto ``max_iters``.

    A boundary at or past the original end moves to ``max_iters``; an earlier one (a warm-up)
    keeps its length but takes at most a tenth of the new run.
    """
    if not schedulers:
        return []
    if isinstance(schedulers, dict):
        schedulers = [schedulers]
    warmup_cap = max(1, max_iters // 10)

    def moved(boundary: Any) -> Any:
        if boundary is None:
            return None
        boundary = int(boundary)
        if boundary <= 0:
            return 0
        if boundary >= original_iters:
            return max_iters
        return min(boundary, warmup_cap)

    scaled = []
    for scheduler in schedulers:
        scheduler = copy.deepcopy(dict(scheduler))
        # The loop is iteration based: an epoch-based scheduler would never step.
        scheduler["by_epoch"] = False
        scheduler["begin"] = moved(scheduler.get("begin", 0))
        scheduler["end"] = moved(scheduler.get("end", original_iters))
        if scheduler["end"] <= scheduler["begin"]:
            continue  # nothing left of it in a run this short
        scaled.append(scheduler)
    return scaled


def _learning_rate(cfg: Config, spec: ModelSpec, learning_rate: float, total_batch: int) -> float:
    if learning_rate and learning_rate > 0:
        return float(learning_rate)
    base = float(cfg.optim_wrapper.optimizer.lr)
    rate = base * total_batch / spec.reference_batch
    log.info(
        "learning rate %.3g = the config's %.3g x total batch %d / %d",
        rate,
        base,
        total_batch,
        spec.reference_batch,
    )
    return rate


def tensorboard_available() -> bool:
    """True when mmengine's TensorBoard backend can work (the tensorboard package is installed)."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except Exception:
        return False
    return True


def _vis_backends(tensorboard_dir: Path | None) -> list[dict]:
    if tensorboard_dir is None:
        return [{"type": "LocalVisBackend"}]
    if tensorboard_available():
        return [
            {"type": "LocalVisBackend"},
            {"type": "TensorboardVisBackend", "save_dir": str(tensorboard_dir)},
        ]
    # Without tensorboard the scalars still land where YMIR looks, as mmengine's json.
    log.info("tensorboard is not installed: training scalars go to %s as json", tensorboard_dir)
    return [{"type": "LocalVisBackend", "save_dir": str(tensorboard_dir)}]


def stage_config(cfg: Config) -> Config:
    """The config saved with a model stage: the trained model, no weights to load first."""
    stage = copy.deepcopy(cfg)
    stage.load_from = None
    stage.resume = False
    return stage
