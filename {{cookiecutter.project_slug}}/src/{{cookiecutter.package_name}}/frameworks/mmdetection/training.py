"""MMDetection training for YMIR: data -> config -> mmengine runner(s) -> model stages.

:func:`run` is what ``tasks/training.py`` calls. In the executor process it

1. reads and checks the hyper-parameters (:mod:`.config`) and the devices (GPU requested but
   absent -> 300102, CUDA build unfit for the GPU or driver -> 300101);
2. writes the training and validation sets as COCO json under ``ctx.work_dir`` (:mod:`.data`);
3. prepares the starting weights: the pretrained stage the user picked
   (``pretrained_model_params``) or the COCO weights baked into the image (``/weights``,
   ``$YMIR_WEIGHTS_DIR``), or none (training from scratch, with a warning). When the classes
   of those weights differ from the task's, the class-dependent layers are left out, so the
   head is re-initialised, and the log says so;
4. builds the training config (:mod:`.config`) and dumps it;
5. runs :func:`train_job` in one process, or one per GPU / gloo process through torchrun
   (:mod:`..openmmlab.distributed`); rank 0's :class:`~..openmmlab.hooks.YmirTrainingHook`
   reports progress and writes the stages ``best`` and ``last``, registered in result.yaml
   through ``ctx.results.add_stage`` after every evaluation;
6. maps failures to executor codes (:mod:`..openmmlab.failures`): out of memory 300103, NaN
   loss 300201, unusable weights 300004, a pretrained model of another target 300005.
"""

from __future__ import annotations

import functools
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ... import __version__
from ...contract.errors import ErrorCode, ExecutorError
from ...contract.object_types import ObjectType
from ..openmmlab import checkpoint as checkpoints
from ..openmmlab import distributed, preflight, weights
from ..openmmlab.hooks import run_training, stage_dirs, train_rank
from . import config as configs
from . import data, models

if TYPE_CHECKING:
    from ...contract.context import TrainingContext

log = logging.getLogger(__name__)

# Shares of the task's progress: data conversion and weights first, then the training run.
PREPARED, TRAINED = 0.02, 0.99


def run(ctx: TrainingContext) -> None:
    """Train the configured model on the task's data and write stages ``best`` / ``last``."""
    settings = configs.training_settings(ctx.params)
    spec = models.get_model(settings.model, ctx.object_type)
    preflight.check_devices(ctx.gpu_ids)
    world_size = distributed.process_count(ctx.gpu_ids)
    train_items, val_items = ctx.train_items(), ctx.val_items()
    log.info(
        "model %s, %d classes, %d training / %d validation images, %d epochs, %d process(es) on %s",
        spec.name,
        len(ctx.class_names),
        len(train_items),
        len(val_items),
        settings.epochs,
        world_size,
        "GPU " + ",".join(str(index) for index in ctx.gpu_ids) if ctx.gpu_ids else "the CPU",
    )

    work_dir = Path(ctx.work_dir) / "mmdet"
    train_json, val_json = data.write_splits(
        train_items, val_items, ctx.class_names, work_dir / "data", ctx.object_type
    )
    source, origin = weights.weights_source(ctx, spec, "the COCO weights")
    inputs = configs.TrainingInputs(
        class_names=list(ctx.class_names),
        object_type=ctx.object_type,
        train_json=train_json,
        val_json=val_json,
        num_train_images=len(train_items),
        world_size=world_size,
        use_cuda=bool(ctx.gpu_ids),
        work_dir=work_dir / "runner",
        tensorboard_dir=Path(ctx.env.output.tensorboard_dir),
        load_from=source,
    )
    cfg = configs.training_config(spec, settings, inputs)
    if source is not None and cfg.load_from == str(source):
        load_from = prepare_weights(ctx, spec, cfg, source, origin)
        cfg.load_from = str(load_from)
    elif cfg.load_from:
        log.info("load_from %s (set by cfg_options)", cfg.load_from)
    ctx.progress(PREPARED)

    config_file = work_dir / "train_config.py"
    cfg.dump(str(config_file))
    stage_text = configs.stage_config(cfg).pretty_text
    payload = {
        "config": str(config_file),
        "stage_config": stage_text,
        "stage_dirs": stage_dirs(ctx),
        "object_type": int(ctx.object_type),
        "evaluate_config": configs.thresholds(cfg),
        "progress_range": [PREPARED, TRAINED],
        "meta": {
            "class_names": list(ctx.class_names),
            "dataset_meta": {"classes": list(ctx.class_names)},
            "executor_version": __version__,
            "object_type": int(ctx.object_type),
            "model": spec.name,
            "img_size": settings.img_size,
        },
    }

    best, stage = run_training(ctx, train_job, payload, work_dir=work_dir, processes=world_size)
    main = ObjectType(ctx.object_type).main_metric
    extras = [f"{key} {stage[key]:.4f}" for key in ("mAP_50", "boxAP") if key in stage]
    log.info(
        "training finished: best stage %r, %s %.4f%s",
        best,
        main,
        stage[main],
        f" ({', '.join(extras)})" if extras else "",
    )


def train_job(payload: dict, channel: distributed.Channel) -> None:
    """One rank of the training run (in the executor process, or a torchrun worker)."""
    # Deprecation notices of torch APIs inside mmdet / mmcv say nothing to a YMIR user.
    for message in (r".*torch\.cuda\.amp\.", r".*torch\.meshgrid.*indexing"):
        warnings.filterwarnings("ignore", message=message)
    train_rank(
        payload["config"],
        channel,
        stage_dirs=payload["stage_dirs"],
        object_type=payload["object_type"],
        meta=payload["meta"],
        config_text=payload["stage_config"],
        evaluate_config=payload["evaluate_config"],
        progress_range=payload["progress_range"],
    )


# ---------------------------------------------------------------------------------------------
# starting weights


def prepare_weights(
    ctx: TrainingContext, spec: models.ModelSpec, cfg: Any, source: Path, origin: str
) -> Path:
    """A file ``load_from`` can read: ``source`` itself, or a copy without the head.

    Raises:
        ExecutorError: MODEL for weights that cannot be loaded or do not fit ``spec``;
            OBJECT_TYPE for weights of a model of another target.
    """
    checkpoint = checkpoints.load_checkpoint(source)
    target_name = ObjectType(ctx.object_type).title
    weights.check_origin(ctx, spec, checkpoint["meta"], origin, target_name)
    old_names = checkpoints.class_names(checkpoint)
    same_classes = old_names is not None and [name.lower() for name in old_names] == list(
        ctx.class_names
    )
    fitted = weights.fit_weights(
        checkpoint["state_dict"],
        cfg.model,
        build=functools.partial(weights.build_cpu_model, "mmdet"),
        same_classes=same_classes,
        same_class_count=old_names is not None and len(old_names) == len(ctx.class_names),
        set_num_classes=configs.set_num_classes,
        num_classes=len(ctx.class_names),
    )
    if not fitted.kept:
        raise ExecutorError(
            ErrorCode.MODEL, f"the weights in {source.name} do not fit model {spec.name}"
        )
    if same_classes:
        log.info("starting from %s (%s, same classes)", origin, source.name)
        return source
    weights.report_reinitialised(origin, old_names, list(ctx.class_names), fitted)
    target = Path(ctx.work_dir) / "mmdet" / "pretrained_without_head.pth"
    meta = dict(checkpoint["meta"], class_names=list(ctx.class_names), source=str(source))
    checkpoints.save_checkpoint(target, fitted.kept, meta)
    return target
