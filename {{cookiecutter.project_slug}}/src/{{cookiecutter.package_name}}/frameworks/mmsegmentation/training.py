"""MMSegmentation training for YMIR: label maps -> config -> mmengine runner(s) -> model stages.

:func:`run` is what ``tasks/training.py`` calls. In the executor process it

1. reads and checks the hyper-parameters (:func:`settings`) and the devices (GPU requested but
   absent -> 300102, CUDA build unfit for the GPU or driver -> 300101);
2. writes the training and validation label maps under ``ctx.work_dir`` (:mod:`.data`;
   ``background_class`` decides what unlabelled pixels mean);
3. prepares the starting weights: the pretrained stage the user picked
   (``pretrained_model_params``), else the weights baked into the image for the model
   (``/weights``, ``$YMIR_WEIGHTS_DIR``), else none (training from scratch, with a warning).
   Layers whose shape or meaning depends on the classes (the heads' classifiers) are left
   out when the classes differ, so they are re-initialised, and the log says so;
4. builds the training config (:mod:`.config`) and dumps it;
5. runs :func:`train_job` in one process, or one per GPU / gloo process through torchrun
   (:mod:`..openmmlab.distributed`); rank 0's :class:`~..openmmlab.hooks.YmirTrainingHook`
   reports progress and, after every validation, writes the stages ``last`` and ``best``
   (``model.pth`` + ``config.py``) with ``mIoU``, ``mAcc`` and ``aAcc``, registered in
   result.yaml through ``ctx.results.add_stage`` (the writer adds the ``mAP`` YMIR 2.0 wants);
6. maps failures to executor codes (:mod:`..openmmlab.failures`): out of memory 300103, NaN
   loss 300201, unusable weights 300004, a pretrained model of another target 300005.
"""

from __future__ import annotations

import functools
import logging
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ... import __version__
from ...contract.errors import ErrorCode, ExecutorError
from ...contract.object_types import ObjectType
from ...contract.params import Params
from ..openmmlab import checkpoint as checkpoints
from ..openmmlab import distributed, preflight, weights
from ..openmmlab.hooks import run_training, stage_dirs, train_rank
from . import config as configs
from . import data, models

if TYPE_CHECKING:
    from ...contract.context import TrainingContext

log = logging.getLogger(__name__)

# Shares of the task's progress: label maps and weights first, then the training run.
PREPARED, TRAINED = 0.03, 0.99
# The metrics a stage records (result.yaml); the writer adds mAP for YMIR 2.0.
STAGE_METRICS = ("mIoU", "mAcc", "aAcc")


@dataclass(frozen=True)
class Settings:
    """The training hyper-parameters, typed and checked (``tasks/hyperparams.py`` declares
    them, ``img-man/training-template.yaml`` holds their defaults)."""

    model: str
    max_iters: int
    val_interval: int
    batch_size_per_gpu: int
    num_workers_per_gpu: int
    learning_rate: float
    img_size: int
    background_class: bool
    max_keep_checkpoints: int
    cfg_options: str


def settings(params: Params) -> Settings:
    """Typed training settings from ``ctx.params``.

    Raises:
        ExecutorError: CONFIG for a value its declaration refuses (the message names the key).
    """
    return Settings(**{field.name: params[field.name] for field in fields(Settings)})


def run(ctx: TrainingContext) -> None:
    """Train the configured model on the task's data and write stages ``best`` / ``last``."""
    options = settings(ctx.params)
    spec = models.get_model(options.model)
    preflight.check_devices(ctx.gpu_ids)
    world_size = distributed.process_count(ctx.gpu_ids)
    train_items, val_items = ctx.train_items(), ctx.val_items()
    labels = data.label_set(ctx.class_names, options.background_class)
    log.info(
        "model %s, %d classes%s, %d training / %d validation images, %d iterations, "
        "%d process(es) on %s",
        spec.name,
        len(ctx.class_names),
        " + background" if labels.background else " (unlabelled pixels ignored)",
        len(train_items),
        len(val_items),
        options.max_iters,
        world_size,
        "GPU " + ",".join(str(index) for index in ctx.gpu_ids) if ctx.gpu_ids else "the CPU",
    )

    work_dir = Path(ctx.work_dir) / "mmseg"
    prepared = data.prepare(train_items, val_items, work_dir, labels)
    source, origin = weights.weights_source(ctx, spec, "the weights")
    cfg = configs.build_config(
        spec,
        prepared,
        work_dir=work_dir / "runner",
        max_iters=options.max_iters,
        val_interval=options.val_interval,
        batch_size=options.batch_size_per_gpu,
        num_workers=options.num_workers_per_gpu,
        learning_rate=options.learning_rate,
        img_size=options.img_size,
        max_keep_checkpoints=options.max_keep_checkpoints,
        world_size=world_size,
        use_cuda=bool(ctx.gpu_ids),
        load_from=source,
        tensorboard_dir=Path(ctx.env.output.tensorboard_dir),
        cfg_options=options.cfg_options,
    )
    if source is not None and cfg.load_from == str(source):
        cfg.load_from = str(prepare_weights(ctx, spec, cfg, labels, source, origin))
    elif cfg.load_from:
        log.info("load_from %s (set by cfg_options)", cfg.load_from)
    ctx.progress(PREPARED)

    config_file = work_dir / "train_config.py"
    cfg.dump(str(config_file))
    payload = {
        "config": str(config_file),
        "stage_config": configs.stage_config(cfg).pretty_text,
        "stage_dirs": stage_dirs(ctx),
        "progress_range": [PREPARED, TRAINED],
        "meta": {
            "class_names": list(ctx.class_names),
            "dataset_meta": {"classes": list(labels.model_classes)},
            "background_class": labels.background,
            "executor_version": __version__,
            "object_type": ObjectType.SEMANTIC_SEGMENTATION,
            "model": spec.name,
            "img_size": options.img_size,
        },
    }

    best, stage = run_training(ctx, train_job, payload, work_dir=work_dir, processes=world_size)
    log.info(
        "training finished: best stage %r with mIoU %.4f, mAcc %.4f",
        best,
        stage["mIoU"],
        stage.get("mAcc", 0.0),
    )


def stage_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The stage's metrics from the validation (``YmirIoUMetric`` gives fractions already)."""
    values = {}
    for key in STAGE_METRICS:
        for name, value in metrics.items():
            if name == key or name.endswith("/" + key):
                values[key] = min(1.0, max(0.0, float(value)))
    values.setdefault("mIoU", 0.0)
    return values


def train_job(payload: dict, channel: distributed.Channel) -> None:
    """One rank of the training run (in the executor process, or a torchrun worker)."""
    # The registrations the config names: this module imports them, also in a fresh worker.
    from . import metric  # noqa: F401

    # Deprecation notices of torch / mmseg APIs say nothing to a YMIR user.
    for message in (r".*torch\.cuda\.amp\.", r".*build_loss.*deprecated", r".*avg_non_ignore"):
        warnings.filterwarnings("ignore", message=message)
    train_rank(
        payload["config"],
        channel,
        stage_dirs=payload["stage_dirs"],
        object_type=ObjectType.SEMANTIC_SEGMENTATION,
        meta=payload["meta"],
        config_text=payload["stage_config"],
        progress_range=payload["progress_range"],
        metrics=stage_metrics,
    )


# ---------------------------------------------------------------------------------------------
# starting weights


def prepare_weights(
    ctx: TrainingContext,
    spec: models.ModelSpec,
    cfg: Any,
    labels: data.LabelSet,
    source: Path,
    origin: str,
) -> Path:
    """A file ``load_from`` can read: the fitting tensors of ``source``.

    Raises:
        ExecutorError: MODEL for weights that cannot be loaded or do not fit ``spec``;
            OBJECT_TYPE for weights of a model of another target.
    """
    checkpoint = checkpoints.load_checkpoint(source)
    weights.check_origin(ctx, spec, checkpoint["meta"], origin, "semantic segmentation")
    old_classes = _model_classes(checkpoint)
    same_classes = old_classes is not None and [name.lower() for name in old_classes] == [
        name.lower() for name in labels.model_classes
    ]
    fitted = weights.fit_weights(
        checkpoint["state_dict"],
        cfg.model,
        build=functools.partial(weights.build_cpu_model, "mmseg"),
        same_classes=same_classes,
        same_class_count=old_classes is not None and len(old_classes) == labels.num_classes,
        set_num_classes=lambda model_cfg, count: configs.set_key(model_cfg, "num_classes", count),
        num_classes=labels.num_classes,
    )
    if not fitted.kept:
        raise ExecutorError(
            ErrorCode.MODEL, f"the weights in {source.name} do not fit model {spec.name}"
        )
    if fitted.dropped:
        weights.report_reinitialised(origin, old_classes, list(labels.model_classes), fitted)
    else:
        log.info("starting from %s (%s, same classes)", origin, source.name)
    target = Path(ctx.work_dir) / "mmseg" / "start_weights.pth"
    meta = {"source": str(source), "dataset_meta": {"classes": list(labels.model_classes)}}
    checkpoints.save_checkpoint(target, fitted.kept, meta)
    return target


def _model_classes(checkpoint: Mapping) -> list[str] | None:
    """The classes the checkpoint's model learnt (with its background class, if any)."""
    meta = checkpoint.get("meta") or {}
    dataset_meta = meta.get("dataset_meta")
    if isinstance(dataset_meta, Mapping) and dataset_meta.get("classes"):
        return [str(name) for name in dataset_meta["classes"]]
    return checkpoints.class_names(checkpoint)
