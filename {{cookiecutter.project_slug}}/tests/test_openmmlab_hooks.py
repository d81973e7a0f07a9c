"""The training hooks: metric names, stages best / last, progress, the NaN check."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from {{ cookiecutter.package_name }}.contract.results import TrainingResult
from {{ cookiecutter.package_name }}.frameworks.openmmlab import checkpoint
from {{ cookiecutter.package_name }}.frameworks.openmmlab.distributed import Channel
from {{ cookiecutter.package_name }}.frameworks.openmmlab.failures import NonFiniteLossError
from {{ cookiecutter.package_name }}.frameworks.openmmlab.hooks import (
    NonFiniteLossHook,
    YmirTrainingHook,
    detection_metrics,
    instance_metrics,
    semantic_metrics,
    stage_dirs,
)

COCO = {
    "coco/bbox_mAP": 0.412,
    "coco/bbox_mAP_50": 0.61,
    "coco/bbox_mAP_75": 0.44,
    "coco/bbox_mAP_s": 0.2,
    "coco/bbox_mAP_m": 0.5,
    "coco/bbox_mAP_l": -1.0,  # no large object in the val set
}


def test_detection_map_is_coco_map_50_95() -> None:
    metrics = detection_metrics(COCO)
    assert metrics == {
        "mAP": 0.412,
        "mAP_50": 0.61,
        "mAP_75": 0.44,
        "mAP_s": 0.2,
        "mAP_m": 0.5,
    }


def test_nothing_detected_is_zero_not_missing() -> None:
    assert detection_metrics({}) == {"mAP": 0.0}
    assert instance_metrics({}) == {"maskAP": 0.0, "mAP": 0.0, "boxAP": 0.0}


def test_instance_segmentation_main_metric_is_mask_ap() -> None:
    metrics = instance_metrics(dict(COCO, **{"coco/segm_mAP": 0.3, "coco/segm_mAP_50": 0.55}))
    assert metrics["maskAP"] == 0.3 and metrics["maskAP_50"] == 0.55
    assert metrics["boxAP"] == metrics["mAP"] == 0.412
    assert "mAP_l" not in metrics


def test_semantic_metrics_are_fractions() -> None:
    assert semantic_metrics({"mIoU": 45.5, "mAcc": 60.0, "aAcc": 90.0}) == {
        "mIoU": 0.455,
        "mAcc": 0.6,
        "aAcc": 0.9,
    }


class FakeRunner:
    """What the hook reads from an mmengine runner."""

    def __init__(self) -> None:
        self.model = torch.nn.Linear(2, 2)
        self.epoch, self.iter, self.max_epochs, self.max_iters = 0, 0, 3, 30
        self._train_loop = object()


class Events(Channel):
    def __init__(self) -> None:
        self.events: list = []

    def send(self, kind: str, **data) -> None:
        self.events.append((kind, data))


def make_hook(tmp_path: Path, legacy: bool = False) -> tuple[YmirTrainingHook, Events]:
    channel = Events()
    output = SimpleNamespace(
        models_dir=tmp_path / "models", training_result_file=tmp_path / "models" / "result.yaml"
    )
    results = TrainingResult(output, 2, legacy=legacy)
    hook = YmirTrainingHook(
        channel,
        stage_dirs=stage_dirs(SimpleNamespace(results=results)),
        object_type=2,
        meta={"class_names": ["a", "b"], "executor_version": "0.1.0", "object_type": 2},
        config_text="model = dict(type='X')\n",
        evaluate_config={"conf_thr": 0.05, "iou_thr": 0.5},
        progress_range=(0.1, 0.9),
    )
    return hook, channel


def evaluate(hook: YmirTrainingHook, runner: FakeRunner, epoch: int, score: float) -> None:
    runner.epoch, runner.iter = epoch, epoch * 10
    hook.after_val_epoch(runner, {"coco/bbox_mAP": score, "coco/bbox_mAP_50": min(1.0, 2 * score)})


def test_stages_best_and_last(tmp_path: Path) -> None:
    hook, channel = make_hook(tmp_path)
    runner = FakeRunner()
    evaluate(hook, runner, 1, 0.3)
    evaluate(hook, runner, 2, 0.5)
    evaluate(hook, runner, 3, 0.4)
    stages = [
        (data["name"], data["metrics"]["mAP"]) for kind, data in channel.events if kind == "stage"
    ]
    assert stages == [("last", 0.3), ("best", 0.3), ("last", 0.5), ("best", 0.5), ("last", 0.4)]
    models = tmp_path / "models"
    assert sorted(path.name for path in (models / "best").iterdir()) == ["config.py", "model.pth"]
    best = checkpoint.load_checkpoint(models / "best" / "model.pth")
    last = checkpoint.load_checkpoint(models / "last" / "model.pth")
    assert best["meta"]["epoch"] == 2 and last["meta"]["epoch"] == 3
    assert best["meta"]["class_names"] == ["a", "b"] and best["meta"]["metrics"]["mAP"] == 0.5
    _kind, data = channel.events[-1]
    assert data["files"] == [str(models / "last" / "model.pth"), str(models / "last" / "config.py")]
    assert data["evaluate_config"] == {"conf_thr": 0.05, "iou_thr": 0.5}
    # Bounded disk use: two weight files, no temporary leftovers.
    assert len(list(models.rglob("*.pth"))) == 2 and not list(models.rglob(".tmp-*"))


def test_legacy_protocol_keeps_one_flat_stage(tmp_path: Path) -> None:
    hook, channel = make_hook(tmp_path, legacy=True)
    runner = FakeRunner()
    evaluate(hook, runner, 1, 0.3)
    evaluate(hook, runner, 2, 0.1)
    names = [data["name"] for kind, data in channel.events if kind == "stage"]
    assert names == ["best"]
    assert sorted(path.name for path in (tmp_path / "models").iterdir()) == [
        "config.py",
        "model.pth",
    ]


def test_progress_is_mapped_and_sparse(tmp_path: Path, caplog) -> None:
    hook, channel = make_hook(tmp_path)
    runner = FakeRunner()
    runner.max_iters = 1000
    with caplog.at_level("INFO"):
        for iteration in range(1000):
            runner.iter = iteration
            hook.after_train_iter(runner, iteration)
    fractions = [data["fraction"] for kind, data in channel.events if kind == "progress"]
    assert 90 <= len(fractions) <= 101  # about every percent, not every iteration
    assert fractions == sorted(fractions) and fractions[-1] == 0.9
    assert len([record for record in caplog.records if "training" in record.message]) == 10


def test_non_finite_loss_stops_training() -> None:
    hook = NonFiniteLossHook()
    runner = FakeRunner()
    hook.after_train_iter(runner, 0, outputs={"loss": torch.tensor(1.5)})
    with pytest.raises(NonFiniteLossError, match="non-finite loss"):
        hook.after_train_iter(runner, 1, outputs={"loss": torch.tensor(float("nan"))})
