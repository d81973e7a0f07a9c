"""mmengine hooks that connect a training run to YMIR: progress, model stages, NaN checks.

:class:`YmirTrainingHook` (registered on rank 0 only) does what the platform needs from a
training run, through the job's channel (:mod:`.distributed`), whose handlers call
``ctx.progress`` and ``ctx.results.add_stage`` in the executor process:

- progress: the share of training iterations done, sent about every percent; a log line
  every ten percent (the UI shows the last five log lines: no progress bar spam);
- after every evaluation, stage ``last`` (the model just evaluated) and, when its main metric
  is the best so far, stage ``best``: each is a folder (:func:`stage_dirs`: the contract
  layer's ``ctx.results.stage_dir``, ``<models_dir>/<stage>/``; where that is one folder for
  both, as on YMIR 1.1, only ``best`` is written) with
  ``model.pth`` (weights only; ``meta`` holds ``class_names``, the executor version, the
  object type, the model name and the metrics) and ``config.py`` (the dumped training
  config), so each stage describes itself and inference rebuilds it from these two files.
  result.yaml is rewritten after each stage, so a run interrupted at any point after the
  first evaluation leaves a valid result. Disk use is bounded: two weight files, replaced
  atomically (a stage never points at a half-written file).

The weights saved are the ones just evaluated: the hook runs before ``EMAHook`` swaps the
exponential moving average out again (priority 40 < 49), so EMA models save their EMA weights.

:class:`NonFiniteLossHook` (every rank) stops the run with
:class:`~.failures.NonFiniteLossError` (-> 300201) as soon as the loss is NaN or infinite.

The metric names follow the YMIR conventions: detection ``mAP`` = COCO mAP@[.5:.95]
(``coco/bbox_mAP``) plus ``mAP_50``, ``mAP_75``, ``mAP_s``...; instance segmentation ``maskAP``
(``coco/segm_mAP``, the main metric), ``boxAP`` and ``mAP`` = box AP, with their ``_50`` ...
variants; semantic segmentation ``mIoU`` (main), ``mAcc``, ``aAcc`` (mmseg's metrics are
percentages, divided by 100). A metric the evaluator could not compute (COCO's -1 for an
empty size range) is left out.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ...contract.object_types import ObjectType
from . import distributed
from .checkpoint import save_checkpoint, trusted_load
from .distributed import Channel
from .failures import NonFiniteLossError
from .weights import CONFIG_FILE, WEIGHTS_FILE

if TYPE_CHECKING:
    from ...contract.context import TrainingContext

log = logging.getLogger(__name__)

BEST, LAST = "best", "last"
# COCO's size buckets and IoU variants, as YMIR names them after the prefix.
_COCO_SUFFIXES = ("", "_50", "_75", "_s", "_m", "_l")


def detection_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """YMIR detection metrics from mmdet's ``CocoMetric`` results (``coco/bbox_*``)."""
    result = _coco(metrics, "bbox", "mAP")
    result.setdefault("mAP", 0.0)  # nothing detected at all: AP 0, not "unknown"
    return result


def instance_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """YMIR instance-segmentation metrics: ``maskAP`` (main), ``boxAP``, ``mAP`` = box AP."""
    result = _coco(metrics, "segm", "maskAP")
    result.update(_coco(metrics, "bbox", "mAP"))
    result.setdefault("maskAP", 0.0)
    result.setdefault("mAP", 0.0)
    result["boxAP"] = result["mAP"]
    return result


def semantic_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """YMIR semantic-segmentation metrics from mmseg's ``IoUMetric`` (percentages)."""
    result = {}
    for key in ("mIoU", "mAcc", "aAcc"):
        value = _find(metrics, key)
        if value is not None:
            value /= 100.0
            if 0.0 <= value <= 1.0:
                result[key] = value
    result.setdefault("mIoU", 0.0)
    return result


METRIC_MAPPERS: dict[int, Callable[[Mapping[str, Any]], dict[str, float]]] = {
    ObjectType.DETECTION: detection_metrics,
    ObjectType.INSTANCE_SEGMENTATION: instance_metrics,
    ObjectType.SEMANTIC_SEGMENTATION: semantic_metrics,
}


def _coco(metrics: Mapping[str, Any], kind: str, name: str) -> dict[str, float]:
    result = {}
    for suffix in _COCO_SUFFIXES:
        value = _find(metrics, f"{kind}_mAP{suffix}")
        if value is not None and 0.0 <= value <= 1.0:
            result[f"{name}{suffix}"] = value
    return result


def _find(metrics: Mapping[str, Any], key: str) -> float | None:
    for name, value in metrics.items():
        if name == key or name.endswith("/" + key):
            try:
                number = float(value)
            except (TypeError, ValueError):
                return None
            return number if math.isfinite(number) else None
    return None


def stage_dirs(ctx: TrainingContext) -> dict[str, str]:
    """The folders of stages ``last`` and ``best`` (``ctx.results.stage_dir``), for the hook."""
    return {name: str(ctx.results.stage_dir(name)) for name in (LAST, BEST)}


def run_training(
    ctx: TrainingContext,
    job: Callable[[dict, Channel], None],
    payload: dict,
    *,
    work_dir: Path,
    processes: int,
) -> tuple[str, dict]:
    """Run ``job`` on every rank and receive what rank 0's :class:`YmirTrainingHook` sends.

    In the executor process: progress goes to ``ctx.progress``, stages to
    ``ctx.results.add_stage`` (result.yaml is rewritten each time), failures become executor
    errors (:mod:`.failures`). Returns the best stage's name and its metrics.

    Raises:
        RuntimeError: the run ended without an evaluation, so no stage was written.
    """

    def on_stage(event: dict) -> None:
        ctx.results.add_stage(
            event["name"],
            event["files"],
            event["metrics"],
            evaluate_config=event.get("evaluate_config"),
        )

    distributed.run_task_job(
        job, payload, ctx, {"stage": on_stage}, processes=processes, work_dir=work_dir
    )
    best = ctx.results.best_stage_name
    if best is None:
        raise RuntimeError("training ended without any evaluation, so no model was saved")
    return best, ctx.results.stages[best]


def train_rank(config_file: str, channel: Channel, **hook_options: Any) -> None:
    """One rank's training: the runner of the dumped config, the NaN check on every rank and
    :class:`YmirTrainingHook` (built with ``hook_options``) on rank 0, checkpoints the
    executor trusts loadable (``load_from``)."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    runner = Runner.from_cfg(Config.fromfile(config_file))
    runner.register_hook(NonFiniteLossHook())
    if distributed.is_main():
        runner.register_hook(YmirTrainingHook(channel, **hook_options))
    with trusted_load():
        runner.train()


class YmirTrainingHook(Hook):
    """Progress and model stages (best, last) for YMIR; register it on rank 0 only."""

    priority = 40  # before EMAHook (49) in after_val_epoch: the evaluated weights are saved

    def __init__(
        self,
        channel: Channel,
        stage_dirs: Mapping[str, str | os.PathLike],
        object_type: int,
        meta: Mapping[str, Any],
        config_text: str,
        evaluate_config: Mapping[str, float] | None = None,
        progress_range: Sequence[float] = (0.0, 1.0),
        metrics: Callable[[Mapping[str, Any]], dict[str, float]] | None = None,
    ) -> None:
        self.channel = channel
        self.last_dir, self.best_dir = (Path(stage_dirs[name]) for name in (LAST, BEST))
        self.object_type = ObjectType(object_type)
        self.main_metric = self.object_type.main_metric
        self.meta = dict(meta)
        self.config_text = config_text
        self.evaluate_config = dict(evaluate_config or {})
        self.start, self.end = (float(value) for value in progress_range)
        self.to_metrics = metrics or METRIC_MAPPERS[self.object_type]
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.sent_fraction = -1.0
        self.logged_decile = -1
        self.started = time.time()

    # -- progress ---------------------------------------------------------------------------

    def before_train(self, runner: Any) -> None:
        self.started = time.time()
        self._report(runner, 0.0)
        self._quiet_evaluator(runner)

    def after_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        total = max(1, int(runner.max_iters))
        self._report(runner, min(1.0, (runner.iter + 1) / float(total)))

    def _report(self, runner: Any, fraction: float) -> None:
        if fraction - self.sent_fraction >= 0.01 or (fraction >= 1.0 > self.sent_fraction):
            self.sent_fraction = fraction
            self.channel.progress(self.start + (self.end - self.start) * fraction)
        decile = int(fraction * 10)
        if decile > self.logged_decile:
            self.logged_decile = decile
            if decile > 0:
                elapsed = time.time() - self.started
                remaining = elapsed * (1.0 - fraction) / fraction
                log.info(
                    "training %d%% (%s), %s elapsed, about %s left",
                    int(fraction * 100),
                    _position(runner),
                    _duration(elapsed),
                    _duration(remaining),
                )

    def _quiet_evaluator(self, runner: Any) -> None:
        # pycocotools prints its tables with print(); mmengine logs the numbers anyway.
        loop = getattr(runner, "_val_loop", None)
        evaluator = getattr(loop, "evaluator", None)
        if evaluator is None or getattr(evaluator, "_ymir_quiet", False):
            return
        evaluate = evaluator.evaluate

        def quiet_evaluate(*args: Any, **kwargs: Any) -> Any:
            with contextlib.redirect_stdout(io.StringIO()):
                return evaluate(*args, **kwargs)

        evaluator.evaluate = quiet_evaluate
        evaluator._ymir_quiet = True

    # -- stages -----------------------------------------------------------------------------

    def after_val_epoch(self, runner: Any, metrics: Mapping[str, Any] | None = None) -> None:
        values = self.to_metrics(metrics or {})
        score = values[self.main_metric]
        # Epoch-based loops evaluate after an epoch; iteration-based ones (mmseg) count iterations.
        point = int(runner.iter) if _by_iterations(runner) else int(runner.epoch)
        improved = self.best_score is None or score >= self.best_score
        if improved:
            self.best_score, self.best_epoch = score, point
        meta = dict(self.meta, epoch=int(runner.epoch), iter=int(runner.iter), metrics=values)
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        state = model.state_dict()
        if self.last_dir == self.best_dir:
            # One folder for both (YMIR 1.1 extracts a single model, flat): only the best fits.
            if improved:
                self._write_stage(self.best_dir, state, meta)
                self._send(BEST, self.best_dir, values)
        else:
            last = self._write_stage(self.last_dir, state, meta)
            self._send(LAST, last, values)
            if improved:
                best = self._copy_stage(last, self.best_dir)
                self._send(BEST, best, values)
        summary = ", ".join(f"{key} {value:.4f}" for key, value in values.items())
        unit = "iteration" if _by_iterations(runner) else "epoch"
        log.info(
            "%s %d evaluated: %s; best %s %.4f (%s %d)",
            unit,
            point,
            summary,
            self.main_metric,
            self.best_score,
            unit,
            self.best_epoch,
        )

    def _write_stage(self, folder: Path, state: Mapping[str, Any], meta: Mapping) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        save_checkpoint(folder / WEIGHTS_FILE, state, meta)
        config = folder / CONFIG_FILE
        if not config.is_file():
            config.write_text(self.config_text, encoding="utf-8")
        return folder

    @staticmethod
    def _copy_stage(source: Path, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            target = folder / name
            if target.exists() and os.path.samefile(source / name, target):
                continue  # already this file (rename() between two links of it does nothing)
            temporary = folder / f".tmp-{name}"
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            try:
                # A hard link costs no space; the source is later replaced, never modified.
                os.link(source / name, temporary)
            except OSError:
                shutil.copyfile(source / name, temporary)
            os.replace(temporary, target)
        return folder

    def _send(self, stage: str, folder: Path, values: Mapping[str, float]) -> None:
        self.channel.send(
            "stage",
            name=stage,
            files=[str(folder / WEIGHTS_FILE), str(folder / CONFIG_FILE)],
            metrics=dict(values),
            evaluate_config=self.evaluate_config or None,
        )


class NonFiniteLossHook(Hook):
    """Stops training with :class:`NonFiniteLossError` when the loss is NaN or infinite.

    mmengine only logs such a loss and keeps training a broken model; YMIR should instead
    see code 300201 right away. Checked every iteration (the loss is already a Python number
    for the logger by then, so this costs no extra device synchronisation).
    """

    priority = "VERY_HIGH"

    def after_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        if not isinstance(outputs, Mapping) or "loss" not in outputs:
            return
        loss = outputs["loss"]
        try:
            value = float(loss.detach() if hasattr(loss, "detach") else loss)
        except (TypeError, ValueError):
            return
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"non-finite loss ({value}) at epoch {runner.epoch + 1}, iteration "
                f"{runner.iter + 1}"
            )


def _by_iterations(runner: Any) -> bool:
    loop = getattr(runner, "_train_loop", None)
    return type(loop).__name__ == "IterBasedTrainLoop"


def _position(runner: Any) -> str:
    if _by_iterations(runner):
        return f"iteration {runner.iter + 1}/{runner.max_iters}"
    return f"epoch {min(runner.epoch + 1, runner.max_epochs)}/{runner.max_epochs}"


def _duration(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
