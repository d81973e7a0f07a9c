"""Starting weights, shared by the OpenMMLab implementations.

- The offered models (:class:`ModelSpec`): a config that ships inside the installed framework
  package (``<package>/.mim/configs``, so no repository checkout is needed at run time) and the
  published weights of exactly that config.
- Baked weights: the image build puts them (:mod:`.bake_weights`) into ``/weights``
  (``$YMIR_WEIGHTS_DIR``); nothing is downloaded at run time, a missing file means training
  from scratch.
- Fitting a checkpoint to the model being trained: the tensors whose name and shape match are
  kept, the class-dependent ones are re-initialised when the classes differ, and the user is
  told which.

The image's plain build stage imports this module (through :mod:`.bake_weights`): nothing here
imports torch or a framework at import time.
"""

from __future__ import annotations

import copy
import importlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ...contract.errors import ErrorCode, ExecutorError

if TYPE_CHECKING:
    from ...contract.context import TrainingContext

log = logging.getLogger(__name__)

# Where the image keeps baked weights; tests and local runs point it elsewhere.
WEIGHTS_DIR_VARIABLE = "YMIR_WEIGHTS_DIR"
DEFAULT_WEIGHTS_DIR = "/weights"
# The files of a model stage this executor writes: the weights and the config that builds them.
WEIGHTS_FILE = "model.pth"
CONFIG_FILE = "config.py"


@dataclass(frozen=True)
class ModelSpec:
    """One offered model: its config in the framework package and its published weights."""

    name: str
    config: str  # relative to <package>/.mim/configs
    weights_url: str  # the published weights of exactly this config
    # GPUs x images per GPU the config's learning rate was tuned for (the "8xb32" in its
    # name): learning_rate 0 scales the config's rate by our total batch / this.
    reference_batch: int
    description: str

    @property
    def weights_file(self) -> str:
        """The file name of the baked weights in the weights folder."""
        return self.weights_url.rsplit("/", 1)[-1]


def shipped_config(package: str, spec: ModelSpec) -> Path:
    """The config file of ``spec`` inside the installed framework ``package`` (mmdet, mmseg)."""
    module = importlib.import_module(package)  # late: the download CLI runs without it
    root = Path(str(module.__file__)).parent
    for configs in (root / ".mim" / "configs", root.parent / "configs"):
        if configs.is_dir():
            path = configs / spec.config
            if not path.is_file():
                raise ExecutorError(
                    ErrorCode.CONFIG,
                    f"model {spec.name!r}: config {spec.config} is missing from the installed "
                    f"{package} (a different version?)",
                )
            return path
    raise ExecutorError(ErrorCode.CONFIG, f"{package} at {root} ships no configs (.mim/configs)")


def weights_dir() -> Path:
    """Where baked weights live: ``$YMIR_WEIGHTS_DIR``, default ``/weights``."""
    return Path(os.environ.get(WEIGHTS_DIR_VARIABLE) or DEFAULT_WEIGHTS_DIR)


def baked_weights(spec: ModelSpec) -> Path | None:
    """The baked weights of ``spec``, or None when the image was built without them."""
    path = weights_dir() / spec.weights_file
    return path if path.is_file() else None


# ---------------------------------------------------------------------------------------------
# the weights a training run starts from


def weights_source(
    ctx: TrainingContext, spec: ModelSpec, baked_origin: str
) -> tuple[Path | None, str]:
    """The weights file to start from and a phrase saying where it comes from.

    The pretrained model's weights when the task has one, else the baked weights of ``spec``
    (``baked_origin`` says what they are, e.g. "the COCO weights"), else ``(None, "")``:
    training from scratch, with a warning.

    Raises:
        ExecutorError: MODEL for a pretrained model without a weights file.
    """
    files = list(getattr(ctx.model, "files", None) or [])
    if files:
        weights = [path for path in files if Path(path).name == WEIGHTS_FILE]
        weights = weights or [path for path in files if Path(path).suffix in (".pth", ".pt")]
        if not weights:
            raise ExecutorError(
                ErrorCode.MODEL,
                "the pretrained model has no weights file (.pth): {}".format(
                    ", ".join(Path(path).name for path in files)
                ),
            )
        return Path(weights[0]), "the pretrained model"
    baked = baked_weights(spec)
    if baked is None:
        log.warning(
            "no pretrained model and no baked weights %s in %s: training %s from scratch "
            "(slow to converge; build the image with its weights, or pick a pretrained model)",
            spec.weights_file,
            weights_dir(),
            spec.name,
        )
        return None, ""
    return baked, f"{baked_origin} baked into the image ({baked})"


def check_origin(
    ctx: TrainingContext, spec: ModelSpec, meta: Mapping, origin: str, target_name: str
) -> None:
    """Refuse weights of another target or of another model than the one the task trains.

    Raises:
        ExecutorError: OBJECT_TYPE for a package or checkpoint of another object type; MODEL
            for a checkpoint of another offered model.
    """
    info_type = (getattr(ctx.model, "info", None) or {}).get("object_type")
    for where, value in (("model package", info_type), ("weights", meta.get("object_type"))):
        if value not in (None, "") and str(value) != str(ctx.object_type):
            raise ExecutorError(
                ErrorCode.OBJECT_TYPE,
                f"{origin} is for object_type {value} ({where}), this executor does "
                f"{target_name} (object_type {ctx.object_type}); pick a model trained for "
                "this target",
            )
    trained_as = meta.get("model")
    if trained_as and trained_as != spec.name:
        raise ExecutorError(
            ErrorCode.MODEL,
            f"{origin} is a {trained_as} model but the task trains {spec.name}; set the "
            f"hyper-parameter model to {trained_as}, or pick no pretrained model",
        )


@dataclass
class FittedWeights:
    """The tensors of a checkpoint that the model being trained takes over."""

    kept: dict
    dropped: list[str]  # the model's tensors that start from their initialisation


def fit_weights(
    state_dict: Mapping,
    model_cfg: Any,
    build: Callable[[Any], Any],
    same_classes: bool,
    same_class_count: bool,
    set_num_classes: Callable[[Any, int], Any],
    num_classes: int,
) -> FittedWeights:
    """Keep the tensors of ``state_dict`` that fit the model ``model_cfg`` builds.

    ``build`` turns a model config into a module (:func:`build_cpu_model`). When the classes
    differ but their number is the same, shapes match while meanings do not: the class-dependent
    tensors are found by building the model with one class more (``set_num_classes``) and are
    dropped too.
    """
    shapes = _shapes(build(model_cfg))
    kept = {}
    for key, value in state_dict.items():
        name = key[7:] if key.startswith("module.") else key  # saved from a DDP wrapper
        if name in shapes and tuple(getattr(value, "shape", ())) == shapes[name]:
            kept[name] = value
    if not same_classes and same_class_count:
        other = copy.deepcopy(model_cfg)
        set_num_classes(other, num_classes + 1)
        changing = {key for key, shape in _shapes(build(other)).items() if shapes.get(key) != shape}
        kept = {key: value for key, value in kept.items() if key not in changing}
    return FittedWeights(kept, sorted(key for key in shapes if key not in kept))


def build_cpu_model(scope: str, model_cfg: Any) -> Any:
    """The model ``model_cfg`` builds with the registries of ``scope`` (mmdet, mmseg), on the
    CPU with random weights: to read its tensor shapes.

    Nested parts (the data preprocessor) are looked up in the default scope's registries, so
    the build runs inside ``scope`` whatever the caller's scope is. SyncBN becomes BN, which
    builds without a process group and has the same tensors.
    """
    from mmengine.registry import DefaultScope

    registry = importlib.import_module(f"{scope}.registry").MODELS
    importlib.import_module(f"{scope}.utils").register_all_modules(init_default_scope=False)
    model_cfg = copy.deepcopy(model_cfg)
    replace_sync_bn(model_cfg)
    with DefaultScope.overwrite_default_scope(scope):
        return registry.build(model_cfg)


def replace_sync_bn(node: Any) -> None:
    """SyncBN (every flavour) -> BN in a config tree: the same parameters and buffers, so
    checkpoints load either way, and BN builds and runs without a process group or a GPU."""
    if isinstance(node, dict):
        if node.get("type") in ("SyncBN", "MMSyncBN", "NaiveSyncBN"):
            node["type"] = "BN"
        for child in node.values():
            replace_sync_bn(child)
    elif isinstance(node, (list, tuple)):
        for child in node:
            replace_sync_bn(child)


def _shapes(model: Any) -> dict[str, tuple]:
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def report_reinitialised(
    origin: str, old_classes: list[str] | None, new_classes: list[str], fitted: FittedWeights
) -> None:
    """Tell the user which layers start from scratch because the classes changed."""
    layers = sorted({key.rsplit(".", 1)[0] for key in fitted.dropped})
    shown = ", ".join(layers[:6]) + (f", ... ({len(layers)} in all)" if len(layers) > 6 else "")
    log.warning(
        "%s was trained on %s, the model learns %s: re-initialising the %d tensors of the "
        "class-dependent layers (%s); %d tensors start from it",
        origin,
        "classes " + str(old_classes) if old_classes else "other classes",
        new_classes,
        len(fitted.dropped),
        shown,
        len(fitted.kept),
    )
