"""The typed contexts handed to the author's task functions, one type per task.

Everything a task needs from the platform is here, already parsed and checked: paths, typed
hyper-parameters with template defaults, class names, the device, the datasets, the model
package, a progress callback and the result writer for the task. Task code never reads
``env.yaml`` or ``config.yaml`` and never writes ``/out`` files by hand.

- :class:`TrainingContext` for ``tasks/training.py``'s ``train(ctx)``: the training and
  validation sets, TensorBoard, and a :class:`~.results.TrainingResult` for the model stages;
- :class:`MiningContext` for ``tasks/mining.py``'s ``mine(ctx)``: the candidates and a
  :class:`~.results.MiningResult` for their scores;
- :class:`InferenceContext` for ``tasks/infer.py``'s ``infer(ctx)``: the candidates and a
  :class:`~.results.DetectionResult` or :class:`~.results.SegmentationResult`, after the target.

What they share is :class:`TaskContext`, the type framework code takes when it works for any
task. The protocol behind them is described in docs/protocol.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Union

from PIL import Image

from . import dataset, images, models, tensorboard
from .candidates import CandidateList
from .env import Env
from .errors import ErrorCode, ExecutorError
from .handover import PredictionHandover
from .object_types import ObjectType
from .params import Params
from .results import DetectionResult, MiningResult, SegmentationResult, TrainingResult

log = logging.getLogger(__name__)

TASKS = ("training", "mining", "infer")

# What inference writes: boxes (detection) or masks (semantic and instance segmentation).
# ``isinstance(ctx.results, DetectionResult)`` tells which one a task got.
InferenceResult = Union[DetectionResult, SegmentationResult]


@dataclass
class TaskContext:
    """What every task (training, mining or infer) gets to work with."""

    task: ClassVar[str]
    """``"training"``, ``"mining"`` or ``"infer"``."""

    env: Env
    """``env.yaml``, parsed: the task id, the input paths (``env.input``) and the output paths
    (``env.output``: ``models_dir``, ``tensorboard_dir``, ``root_dir``, ...)."""

    params: Params
    """The hyper-parameters: ``config.yaml``'s values typed like the defaults of the task's
    ``img-man/<task>-template.yaml`` (``ctx.params.epochs``, ``ctx.params["batch_size"]``)."""

    config: dict[str, Any]
    """``config.yaml`` as the platform wrote it, for the keys a template does not declare."""

    object_type: ObjectType
    """The target of this executor (``img-man/manifest.yaml``): detection, semantic or instance
    segmentation; compares equal to the platform's integer (2, 3, 4)."""

    class_names: list[str]
    """The task's classes, lower-case and unique; a class id is an index into this list."""

    gpu_ids: list[int]
    """In-container GPU indices; empty when the platform gave no GPU (run on the CPU)."""

    progress: Callable[[float], None]
    """Report progress, a fraction 0..1 of this task (mapped onto its share of
    ``monitor.txt`` when several tasks run in one container)."""

    model: models.ModelPackage
    """The model package the user chose (``model.files`` are absolute paths of the chosen
    stage's files); empty when none was chosen (a training from scratch)."""

    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    @property
    def legacy(self) -> bool:
        """True on YMIR 1.1 (no ``protocol_version``): older result formats are written."""
        return self.env.legacy

    @property
    def device(self) -> str:
        """``"cpu"`` when the platform gave no GPU (``gpu_id`` empty or ``gpu_count`` 0)."""
        return "cuda:0" if self.gpu_ids else "cpu"

    @property
    def work_dir(self) -> Path:
        """Scratch space under ``/out`` (``/in`` is read-only on the platform)."""
        path = self.env.output.root_dir / "work"
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass
class TrainingContext(TaskContext):
    """What ``train(ctx)`` gets: the datasets, TensorBoard, and the writer of ``result.yaml``.

    - hyper-parameters come from ``ctx.params`` (defaults: ``img-man/training-template.yaml``);
    - a pretrained package the user chose is in ``ctx.model.files`` (empty: start from scratch
      or from weights of your own);
    - progress goes to ``ctx.progress(fraction)``; training curves go to
      ``ctx.tensorboard.add_scalars({tag: value}, step)``: the loss as it trains, the metrics
      of every stage;
    - each model stage's files are saved in ``ctx.results.stage_dir(stage)`` (the folder the
      platform packs that stage from) and registered with
      ``ctx.results.add_stage(stage, files, metrics)``: file names relative to that folder,
      metrics computed on the validation set, floats in [0, 1], including the target's main
      metric (``ctx.object_type.main_metric``: ``mAP`` for detection, ``maskAP`` for instance
      segmentation, ``mIoU`` for semantic segmentation). The stage with the best main metric
      is the model the platform keeps.
    """

    task: ClassVar[str] = "training"

    results: TrainingResult
    """The writer of ``result.yaml``: ``add_stage`` rewrites it, validated, after every stage."""

    @property
    def tensorboard(self) -> tensorboard.ScalarWriter:
        """TensorBoard scalars in ``env.output.tensorboard_dir``: YMIR shows them as the
        training's curves (``ctx.tensorboard.add_scalars({"train/loss": 0.4}, step)``)."""
        if "tensorboard" not in self._cache:
            self._cache["tensorboard"] = tensorboard.ScalarWriter(self.env.output.tensorboard_dir)
        writer: tensorboard.ScalarWriter = self._cache["tensorboard"]
        return writer

    def train_items(self) -> list[dataset.DatasetItem]:
        """The training set; images that cannot be read are skipped with a warning."""
        return self._split("train", self.env.input.training_index_file)

    def val_items(self) -> list[dataset.DatasetItem]:
        """The validation set; images that cannot be read are skipped with a warning."""
        return self._split("val", self.env.input.val_index_file)

    def _split(self, name: str, index_file: Path | None) -> list[dataset.DatasetItem]:
        if name not in self._cache:
            export_format = str(self.config.get("export_format") or "")
            annotation_format = dataset.parse_export_format(export_format, self.object_type)
            index = _required(index_file, f"{name} index file")
            items = dataset.read_split(
                index,
                self.class_names,
                annotation_format,
                self.object_type,
                legacy=self.legacy,
            )
            if not items and not self.legacy and not dataset.read_index(index):
                # An empty index is what a platform leaves for a format it does not export.
                platform = dataset.platform_range(
                    self.env.manifest_file is not None, "object_type" in self.config
                )
                error = dataset.empty_export_error(name, export_format, self.object_type, platform)
                if error is not None:
                    raise error
            self._cache[name] = dataset.require_items(items, name)
        split: list[dataset.DatasetItem] = self._cache[name]
        return split


@dataclass
class CandidateContext(TaskContext):
    """What mining and inference share: the candidate images, read from the candidate index."""

    candidate_list: CandidateList
    """The candidate index's images; read them with :meth:`candidates` or :meth:`images`."""

    handover: PredictionHandover | None
    """Mining's predictions for the inference that follows in the same task (both contexts get
    the same one); None unless the task runs both (see contract/handover.py)."""

    def candidates(self) -> CandidateList:
        """The images to mine or infer (``Path`` objects), in the order of the candidate index.

        A read-only sequence that stores the paths compactly (a task may have a million
        candidates); ``list(...)`` it only when a list of ``Path`` objects is really needed.
        """
        return self.candidate_list

    def images(self) -> Iterator[tuple[Path, Image.Image | None]]:
        """Every candidate with its RGB pixels, in index order, reporting progress as they go.

        Pixels are not EXIF-rotated: that is the frame the platform's coordinates use. An
        unreadable image is logged and comes as ``None``: it gets no prediction (inference) or
        ranks last (mining), and the run goes on.
        """
        candidates = self.candidates()
        unreadable = 0
        for done, path in enumerate(candidates):
            self.progress(done / len(candidates))
            try:
                image: Image.Image | None = images.open_image(path)
            except ExecutorError as error:
                if error.code != ErrorCode.IMAGE:
                    raise
                log.warning("skipping an unreadable image: %s", error.message)
                unreadable += 1
                image = None
            yield path, image
        self.progress(1.0)
        if unreadable:
            log.warning("%d of %d images could not be read", unreadable, len(candidates))


@dataclass
class MiningContext(CandidateContext):
    """What ``mine(ctx)`` gets: the candidates, and the writer of the mining result.

    - the model package's files are ``ctx.model.files``;
    - hyper-parameters come from ``ctx.params`` (defaults: ``img-man/mining-template.yaml``);
    - every candidate gets ``ctx.results.add(image, score)``, a finite float, higher = more
      worth labelling; once the function returns, the writer writes one line per candidate,
      sorted as the platform expects (a failure leaves no partial file);
    - ``ctx.images()`` yields each candidate with its pixels and reports progress as it goes;
      an unreadable one comes as None, is logged, gets no score and so ranks last.
    """

    task: ClassVar[str] = "mining"

    results: MiningResult
    """One score per candidate; written, sorted, after ``mine(ctx)`` returned."""


@dataclass
class InferenceContext(CandidateContext):
    """What ``infer(ctx)`` gets: the candidates, and the writer of ``infer-result.json``.

    - the model package's files are ``ctx.model.files`` (absolute paths of the chosen stage's
      files);
    - hyper-parameters come from ``ctx.params`` (defaults: ``img-man/infer-template.yaml``);
    - predictions go to ``ctx.results.add``; detection (a :class:`DetectionResult`):
      ``add(image, [(x, y, w, h, class_id, score), ...])``; segmentation (a
      :class:`SegmentationResult`): ``add(image, width, height, [(bool_mask_HxW, class_id,
      score), ...])``. The writer checks every value (integer boxes, known classes, scores in
      [0, 1]) and lists every candidate in ``infer-result.json``, also those that got no
      prediction; the file is written once the function returns, so a failure never leaves
      half a result;
    - ``ctx.images()`` yields each candidate with its pixels and reports progress as it goes;
      an unreadable one comes as None, is logged and gets no prediction.
    """

    task: ClassVar[str] = "infer"

    results: InferenceResult
    """Boxes for detection, masks for segmentation; written after ``infer(ctx)`` returned."""


def _required(path: Path | None, what: str) -> Path:
    if path is None:
        raise ExecutorError(ErrorCode.CONFIG, f"env.yaml gives no {what} for this task")
    return path


def class_names_from(config: dict) -> list[str]:
    """``class_names`` as the platform injects it: a non-empty list of unique names."""
    names = config.get("class_names")
    if isinstance(names, str):
        # Hand-written configs sometimes give "a,b"; the platform always writes a list.
        names = [part for part in names.split(",") if part.strip()]
    if not isinstance(names, list) or not names:
        raise ExecutorError(
            ErrorCode.CONFIG, "config.yaml has no class_names list; the platform always sets it"
        )
    cleaned = [str(name).strip().lower() for name in names]
    duplicates = sorted({name for name in cleaned if cleaned.count(name) > 1})
    if duplicates or not all(cleaned):
        raise ExecutorError(
            ErrorCode.CONFIG, f"class_names must be unique non-empty names, got {names}"
        )
    return cleaned


def gpu_ids_from(config: dict) -> list[int]:
    """In-container GPU indices; an empty ``gpu_id`` or ``gpu_count: 0`` means CPU."""
    gpu_id = str(config.get("gpu_id") or "").strip()
    try:
        count = int(config.get("gpu_count") or 0)
    except (TypeError, ValueError) as error:
        raise ExecutorError(
            ErrorCode.CONFIG, f"gpu_count must be an integer, got {config.get('gpu_count')!r}"
        ) from error
    if not gpu_id or count == 0:
        return []
    try:
        return [int(part) for part in gpu_id.split(",") if part.strip()]
    except ValueError as error:
        raise ExecutorError(
            ErrorCode.CONFIG, f"gpu_id must list GPU indices like '0,1', got {gpu_id!r}"
        ) from error


def model_paths(config: dict, key: str) -> list[str]:
    """``pretrained_model_params`` / ``model_params_path``: absent means no model was chosen."""
    paths = config.get(key) or []
    if isinstance(paths, str):
        paths = [part for part in paths.split(",") if part.strip()]
    if not isinstance(paths, list):
        raise ExecutorError(ErrorCode.CONFIG, f"{key} must be a list of paths, got {paths!r}")
    return [str(path) for path in paths]


def build(
    task: str,
    env: Env,
    params: Params,
    config: dict[str, Any],
    object_type: ObjectType,
    class_names: list[str],
    gpu_ids: list[int],
    progress: Callable[[float], None],
    model: models.ModelPackage,
    handover: PredictionHandover | None = None,
) -> TrainingContext | MiningContext | InferenceContext:
    """The context of ``task``, with the validated writer of the task's output file;
    ``handover`` goes to mining and inference (training has no use for it)."""
    shared: dict[str, Any] = dict(
        env=env,
        params=params,
        config=config,
        object_type=object_type,
        class_names=class_names,
        gpu_ids=gpu_ids,
        progress=progress,
        model=model,
    )
    if task == "training":
        return TrainingContext(
            **shared, results=TrainingResult(env.output, object_type, env.legacy)
        )
    candidates = dataset.read_candidates(
        _required(env.input.candidate_index_file, "candidate_index_file")
    )
    if task == "mining":
        return MiningContext(
            **shared,
            candidate_list=candidates,
            handover=handover,
            results=MiningResult(env.output, candidates),
        )
    results: InferenceResult
    if object_type == ObjectType.DETECTION:
        results = DetectionResult(env.output, candidates, list(class_names), env.legacy)
    else:
        results = SegmentationResult(env.output, candidates, list(class_names), object_type)
    return InferenceContext(**shared, candidate_list=candidates, handover=handover, results=results)
