"""Model packages of one untrained stage, in exactly the shape a training run writes them.

For tests and benchmarks (inference and mining without a training run, and the "untrained"
side of the learning checks). Each framework builds and initialises its model; what is the
same for both lives here: the stage files (``model.pth`` with the meta a training run writes,
``config.py``) and the package (``result.yaml`` + :func:`contract.models.pack_model`, so the
devkit installs it as the platform would). Nothing here runs in a task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ... import __version__
from .checkpoint import save_checkpoint
from .weights import CONFIG_FILE, WEIGHTS_FILE


def write_untrained_stage(
    folder: Path, state_dict: Mapping, config_text: str, meta: Mapping[str, Any]
) -> list[Path]:
    """Write ``model.pth`` (weights + ``meta``, marked untrained) and ``config.py``.

    ``meta`` holds what the framework's inference reads (classes, object type, model name,
    image size); the executor version is added here. Returns the two files, weights first.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {**meta, "executor_version": __version__, "untrained": True}
    weights = save_checkpoint(folder / WEIGHTS_FILE, state_dict, meta)
    config_file = folder / CONFIG_FILE
    config_file.write_text(config_text, encoding="utf-8")
    return [weights, config_file]


def pack_one_stage(
    dest_tar: Path,
    write_stage: Callable[[Path], Sequence[Path]],
    *,
    object_type: int,
    class_names: Sequence[str],
    metrics: Mapping[str, float],
    stage_name: str = "best",
) -> Path:
    """Pack the stage ``write_stage(folder)`` writes into a platform model package ``dest_tar``.

    ``metrics`` (e.g. ``{"mAP": 0.0}``) go to the stage and to the top of ``result.yaml``,
    like a training run's. The stage's folder lies beside the tar (``<stem>-models``).
    """
    import yaml

    from ...contract.models import pack_model

    dest_tar = Path(dest_tar)
    models_dir = dest_tar.parent / f"{dest_tar.stem}-models"
    files = write_stage(models_dir / stage_name)
    stage = {
        "stage_name": stage_name,
        "files": [Path(path).name for path in files],
        "timestamp": 1,
        **metrics,
    }
    result = {
        "best_stage_name": stage_name,
        "model_stages": {stage_name: stage},
        **metrics,
        "object_type": int(object_type),
    }
    (models_dir / "result.yaml").write_text(yaml.safe_dump(result), encoding="utf-8")
    executor_config = {"class_names": list(class_names), "object_type": int(object_type)}
    pack_model(models_dir / "result.yaml", stage_name, dest_tar, executor_config)
    return dest_tar
