"""The typed context handed to the author's task functions.

Everything a task needs from the platform is here, already parsed and checked: paths, typed
hyper-parameters with template defaults, class names, the device, the datasets, the model
package, a progress callback and the result writer for the task. Task code never reads
``env.yaml`` or ``config.yaml`` and never writes ``/out`` files by hand.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

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


@dataclass
class TaskContext:
    """What one task (training, mining or infer) gets to work with."""

    task: str
    env: Env
    params: Params
    config: dict
    object_type: int
    class_names: list[str]
    gpu_ids: list[int]
    progress: Callable[[float], None]
    results: Any
    model: models.ModelPackage
    # Mining's predictions for the inference that follows in the same task; None unless the
    # task runs both (see contract/handover.py).
    handover: PredictionHandover | None = None
    _cache: dict = field(default_factory=dict, repr=False)

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

    @property
    def tensorboard(self) -> tensorboard.ScalarWriter:
        """TensorBoard scalars in ``env.output.tensorboard_dir``: YMIR shows them as the
        training's curves (``ctx.tensorboard.add_scalars({"train/loss": 0.4}, step)``)."""
        if "tensorboard" not in self._cache:
            self._cache["tensorboard"] = tensorboard.ScalarWriter(self.env.output.tensorboard_dir)
        return self._cache["tensorboard"]

    def train_items(self) -> list[dataset.DatasetItem]:
        """The training set; images that cannot be read are skipped with a warning."""
        return self._split("train", self.env.input.training_index_file)

    def val_items(self) -> list[dataset.DatasetItem]:
        """The validation set; images that cannot be read are skipped with a warning."""
        return self._split("val", self.env.input.val_index_file)

    def candidates(self) -> CandidateList:
        """The images to mine or infer (``Path`` objects), in the order of the candidate index.

        A read-only sequence that stores the paths compactly (a task may have a million
        candidates); ``list(...)`` it only when a list of ``Path`` objects is really needed.
        """
        if "candidates" not in self._cache:
            self._cache["candidates"] = dataset.read_candidates(
                _required(self.env.input.candidate_index_file, "candidate_index_file")
            )
        return self._cache["candidates"]

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
        return self._cache[name]


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


def result_writer(
    task: str,
    env: Env,
    object_type: int,
    class_names: Sequence[str],
    candidates: Callable[[], CandidateList],
) -> Any:
    """The validated writer for the task's output file."""
    if task == "training":
        return TrainingResult(env.output, object_type, env.legacy)
    if task == "mining":
        return MiningResult(env.output, candidates())
    if object_type == ObjectType.DETECTION:
        return DetectionResult(env.output, candidates(), list(class_names), env.legacy)
    return SegmentationResult(env.output, candidates(), list(class_names), object_type)
