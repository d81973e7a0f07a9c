"""MMSegmentation building blocks on the CPU: model list, config surgery, label maps, metric.

Fast unit tests (no training run): every listed model's config is adapted to a task and the
model it describes builds and computes a loss on 64 px images; the label maps follow the
documented background rules; the validation metric reports fractions over the task's classes.
Nothing is downloaded: the download CLI is tested against a fake server.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from {{ cookiecutter.package_name }}.contract.dataset import Annotation, DatasetItem
from {{ cookiecutter.package_name }}.contract.errors import ErrorCode, ExecutorError
from {{ cookiecutter.package_name }}.frameworks.mmsegmentation import config as configs
from {{ cookiecutter.package_name }}.frameworks.mmsegmentation import data, metric, models

MODEL_NAMES = sorted(models.MODELS)
CLASS_NAMES = ["rect", "triangle", "ellipse"]
IMG_SIZE = 64


def make_item(folder: Path, name: str, masks: list, size=(48, 40)) -> DatasetItem:
    """An image of ``size`` (w, h) with ``masks`` = [(class_id, (x0, y0, x1, y1)), ...]."""
    width, height = size
    path = folder / f"{name}.png"
    Image.fromarray(np.full((height, width, 3), 128, dtype=np.uint8)).save(str(path))
    annotations = []
    for class_id, (x0, y0, x1, y1) in masks:
        mask = np.zeros((height, width), dtype=bool)
        mask[y0:y1, x0:x1] = True
        annotations.append(Annotation(class_id, (x0, y0, x1 - x0, y1 - y0), mask))
    return DatasetItem(path, annotations, width, height)


def prepared_data(tmp_path: Path, background: bool = False) -> data.PreparedData:
    images = tmp_path / "images"
    images.mkdir(parents=True, exist_ok=True)
    train = [
        make_item(images, "a", [(0, (2, 2, 20, 20)), (2, (24, 10, 44, 30))]),
        make_item(images, "b", [(2, (5, 5, 30, 35))]),
        make_item(images, "negative", []),
    ]
    val = [make_item(images, "c", [(0, (10, 10, 30, 30))]), make_item(images, "d", [])]
    labels = data.label_set(CLASS_NAMES, background)
    return data.prepare(train, val, tmp_path / "work", labels)


def training_config(tmp_path: Path, name: str, background: bool = False, **overrides):
    options = dict(
        work_dir=tmp_path / "runner",
        max_iters=100,
        val_interval=20,
        batch_size=2,
        num_workers=0,
        learning_rate=0.0,
        img_size=IMG_SIZE,
        max_keep_checkpoints=1,
        world_size=1,
        use_cuda=False,
        load_from=None,
        tensorboard_dir=tmp_path / "tensorboard",
    )
    options.update(overrides)
    return configs.build_config(
        models.get_model(name), prepared_data(tmp_path, background), **options
    )


def walk(node, found=None):
    """Every dict inside a nested config."""
    found = [] if found is None else found
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            walk(value, found)
    elif isinstance(node, (list, tuple)):
        for value in node:
            walk(value, found)
    return found


# --- model list --------------------------------------------------------------------------


def test_model_list() -> None:
    assert models.DEFAULT_MODEL in models.MODELS
    assert {"segformer_b0", "fast_scnn", "deeplabv3plus_r18", "pspnet_r18"} <= set(models.MODELS)
    for spec in models.MODELS.values():
        assert models.config_file(spec).is_file()
        assert spec.weights_url.startswith("https://download.openmmlab.com/")
        assert spec.weights_file.endswith(".pth")
        assert spec.reference_batch >= 1
    assert models.get_model(" SegFormer-B0 ").name == "segformer_b0"
    with pytest.raises(ExecutorError) as error:
        models.get_model("unet_giant")
    assert error.value.code == ErrorCode.CONFIG
    assert "segformer_b0" in error.value.message


def test_list_cli(capsys) -> None:
    assert models.main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in MODEL_NAMES)


# --- config surgery ----------------------------------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_config_builds_and_trains_a_step(tmp_path: Path, name: str) -> None:
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules

    cfg = training_config(tmp_path, name, background=True)
    nodes = walk(cfg.model)
    counts = [node["num_classes"] for node in nodes if "num_classes" in node]
    assert counts and set(counts) == {len(CLASS_NAMES) + 1}
    assert not any(node.get("type") == "SyncBN" for node in nodes)
    for node in nodes:
        for key in ("pretrained", "checkpoint"):
            value = node.get(key)
            assert not (isinstance(value, str) and "://" in value), (key, value)
    assert cfg.model.data_preprocessor["size"] == (IMG_SIZE, IMG_SIZE)
    assert cfg.model.test_cfg == {"mode": "whole"}
    train_steps = {step["type"]: step for step in cfg.train_dataloader.dataset.pipeline}
    assert train_steps["RandomCrop"]["crop_size"] == (IMG_SIZE, IMG_SIZE)
    assert train_steps["RandomResize"]["scale"][1] == IMG_SIZE
    test_steps = {step["type"]: step for step in cfg.val_dataloader.dataset.pipeline}
    assert test_steps["Resize"]["scale"][1] == IMG_SIZE
    assert train_steps["LoadImageFromFile"]["color_type"] == "color_ignore_orientation"
    assert cfg.train_cfg == {"type": "IterBasedTrainLoop", "max_iters": 100, "val_interval": 20}
    assert all(scheduler["end"] <= 100 for scheduler in cfg.param_scheduler)
    assert cfg.ymir["labels"] == {"class_names": CLASS_NAMES, "background": True}

    register_all_modules(init_default_scope=True)
    model = MODELS.build(configs.inference_model_config(cfg))
    model.init_weights()
    model.train()
    inputs = [torch.randint(0, 255, (3, IMG_SIZE, IMG_SIZE), dtype=torch.uint8) for _ in range(2)]
    samples = []
    for _ in inputs:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 4, (1, IMG_SIZE, IMG_SIZE)))
        sample.set_metainfo(dict(img_shape=(IMG_SIZE, IMG_SIZE), ori_shape=(IMG_SIZE, IMG_SIZE)))
        samples.append(sample)
    batch = model.data_preprocessor(dict(inputs=inputs, data_samples=samples), True)
    losses = model(**batch, mode="loss")
    total = sum(value for key, value in losses.items() if "loss" in key)
    assert math.isfinite(float(total))
    total.backward()
    model.eval()
    with torch.no_grad():
        logits = model.encode_decode(batch["inputs"], [dict(img_shape=(IMG_SIZE, IMG_SIZE))] * 2)
    assert tuple(logits.shape) == (2, len(CLASS_NAMES) + 1, IMG_SIZE, IMG_SIZE)


def test_learning_rate_and_schedule(tmp_path: Path) -> None:
    spec = models.get_model("segformer_b0")
    base = configs.load_base(spec).optim_wrapper.optimizer.lr
    cfg = training_config(tmp_path, spec.name, batch_size=4, max_iters=1000)
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(base * 4 / spec.reference_batch)
    warmup, poly = cfg.param_scheduler
    assert (warmup["begin"], warmup["end"]) == (0, 100)  # a tenth of the run at most
    assert (poly["begin"], poly["end"]) == (100, 1000)
    explicit = training_config(tmp_path / "b", spec.name, learning_rate=0.01)
    assert explicit.optim_wrapper.optimizer.lr == 0.01
    short = training_config(tmp_path / "c", spec.name, max_iters=5, val_interval=200)
    assert short.train_cfg["val_interval"] == 5
    assert short.default_hooks.checkpoint["max_keep_ckpts"] == 1


def test_cfg_options_come_last(tmp_path: Path) -> None:
    cfg = training_config(
        tmp_path, "fast_scnn", cfg_options="optim_wrapper.optimizer.lr=0.5 randomness.seed=7"
    )
    assert cfg.optim_wrapper.optimizer.lr == 0.5
    assert cfg.randomness["seed"] == 7
    with pytest.raises(ExecutorError) as error:
        training_config(tmp_path / "bad", "fast_scnn", cfg_options="lr")
    assert error.value.code == ErrorCode.CONFIG


def test_sync_bn_kept_for_several_gpus(tmp_path: Path) -> None:
    cfg = training_config(tmp_path, "pspnet_r18", world_size=2, use_cuda=True)
    assert any(node.get("type") == "SyncBN" for node in walk(cfg.model))
    assert cfg.launcher == "pytorch"
    cpu = training_config(tmp_path / "cpu", "pspnet_r18", world_size=2)
    assert not any(node.get("type") == "SyncBN" for node in walk(cpu.model))
    assert cpu.model_wrapper_cfg["device_ids"] is None
    assert cpu.env_cfg["dist_cfg"]["backend"] == "gloo"


# --- label maps --------------------------------------------------------------------------


def read_list(split: data.SplitFiles) -> list:
    return json.loads(split.list_file.read_text(encoding="utf-8"))


def test_label_maps_ignore_unlabelled_pixels(tmp_path: Path) -> None:
    prepared = prepared_data(tmp_path)
    assert prepared.labels.model_classes == tuple(CLASS_NAMES)
    # the negative training image has no labelled pixel: left out of training, kept for val
    assert (prepared.train.images, prepared.train.skipped) == (2, 1)
    assert (prepared.val.images, prepared.val.skipped) == (2, 0)
    image, label_file = read_list(prepared.train)[0]
    assert Path(image).name == "a.png"
    assert str(label_file).startswith(str(tmp_path / "work"))
    labels = np.asarray(Image.open(label_file))
    assert labels.shape == (40, 48)
    assert labels[5, 5] == 0 and labels[15, 30] == 2 and labels[38, 46] == data.IGNORE_INDEX


def test_label_maps_with_a_background_class(tmp_path: Path) -> None:
    prepared = prepared_data(tmp_path, background=True)
    assert prepared.labels.model_classes == (data.BACKGROUND_NAME, *CLASS_NAMES)
    assert prepared.train.images == 3  # background pixels are labels: negatives teach too
    labels = np.asarray(Image.open(read_list(prepared.train)[0][1]))
    assert labels[5, 5] == 1 and labels[15, 30] == 3 and labels[38, 46] == 0
    back = prepared.labels.class_ids(np.array([0, 1, 3]))
    assert back.tolist() == [-1, 0, 2]


def test_one_class_always_learns_background() -> None:
    labels = data.label_set(["cat"], background_class=False)
    assert labels.background and labels.model_classes == (data.BACKGROUND_NAME, "cat")


def test_unusable_items_are_skipped(tmp_path: Path) -> None:
    item = make_item(tmp_path, "odd", [(0, (1, 1, 5, 5))])
    item.width = 99  # the stored image is not the size the masks were drawn at
    assert data.label_map(item, data.label_set(CLASS_NAMES, False)) is None
    with pytest.raises(ExecutorError) as error:
        data.prepare([item], [item], tmp_path / "work", data.label_set(CLASS_NAMES, False))
    assert error.value.code == ErrorCode.DATASET


def test_dataset_reads_the_list(tmp_path: Path) -> None:
    from mmseg.registry import DATASETS

    prepared = prepared_data(tmp_path)
    dataset = DATASETS.build(
        dict(
            type="YmirSegDataset",
            ann_file=str(prepared.train.list_file),
            metainfo=dict(classes=CLASS_NAMES),
            pipeline=[],
        )
    )
    assert len(dataset) == 2
    assert dataset[0]["img_path"].endswith("a.png")
    assert dataset.metainfo["classes"] == CLASS_NAMES


# --- metric -------------------------------------------------------------------------------


def test_metric_reports_fractions_over_the_task_classes() -> None:
    def areas(*values):
        return torch.tensor(values, dtype=torch.float64)

    # classes: background, a, b, c; c never occurs (left out of the means)
    result = (areas(90, 8, 3, 0), areas(100, 12, 5, 0), areas(95, 10, 4, 0), areas(95, 10, 4, 0))
    plain = metric.YmirIoUMetric()
    plain.dataset_meta = dict(classes=["background", "a", "b", "c"])
    values = plain.compute_metrics([result])
    assert values["mIoU"] == pytest.approx((0.9 + 8 / 12 + 3 / 5) / 3)
    without = metric.YmirIoUMetric(skip_background=True)
    without.dataset_meta = dict(classes=["background", "a", "b", "c"])
    values = without.compute_metrics([result])
    assert values["mIoU"] == pytest.approx((8 / 12 + 3 / 5) / 2)
    assert values["mAcc"] == pytest.approx((8 / 10 + 3 / 4) / 2)
    assert values["aAcc"] == pytest.approx(11 / 14)
    assert all(0.0 <= value <= 1.0 for value in values.values())
