"""MMSegmentation training on the CPU, through the executor's entrypoint.

Every listed model trains a few iterations on tiny synthetic images, evaluates, writes its
stages and is then used for inference; the default model goes through the devkit's whole
chain (train -> package -> infer / mine / mine+infer, each run like the platform and
verified); a learning check shows that training really learns; fine-tuning, two gloo
processes and bad inputs (weights, object type, protocol, hyper-parameters) are covered.
"""

from __future__ import annotations

import copy
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import requires
from {{ cookiecutter.package_name }}.__main__ import main
from {{ cookiecutter.package_name }}.contract.dataset import Annotation, read_split
from {{ cookiecutter.package_name }}.contract.errors import ErrorCode
from {{ cookiecutter.package_name }}.devkit.chain import chain, read_monitor_state
from {{ cookiecutter.package_name }}.devkit.synth import default_img_man, synthesize
from {{ cookiecutter.package_name }}.devkit.verify import format_findings, has_errors, verify_work_dir
from {{ cookiecutter.package_name }}.evaluation import evaluate_semantic
from {{ cookiecutter.package_name }}.frameworks.mmsegmentation import models, package, predictor
from {{ cookiecutter.package_name }}.frameworks.openmmlab.checkpoint import load_checkpoint

pytestmark = requires("training")
OBJECT_TYPE = 3
MODEL_NAMES = sorted(models.MODELS)
# Tiny and short: the CPU trains each model in seconds.
QUICK = {
    "max_iters": 4,
    "val_interval": 2,
    "img_size": 64,
    "batch_size_per_gpu": 2,
    "num_workers_per_gpu": 0,
}
LEARNING_ITERS = 80


def set_config(syn, **values) -> None:
    """Edit the task's config.yaml as a user would in the web UI."""
    config = yaml.safe_load(syn.config_file.read_text(encoding="utf-8"))
    config.update(values)
    syn.config_file.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")


def train(work: Path, num_train: int = 8, num_val: int = 3, pretrained=None, **values):
    """A synthetic training task run in-process; returns the synth result and the exit code."""
    extra = {"pretrained": pretrained} if pretrained is not None else {}
    syn = synthesize(work, "training", OBJECT_TYPE, num_train=num_train, num_val=num_val, **extra)
    set_config(syn, **dict(QUICK, **values))
    return syn, main(syn.env_file)


def monitor_code(syn):
    return read_monitor_state(Path(syn.env["output"]["monitor_file"]))[1]


def assert_verified(syn) -> None:
    findings = verify_work_dir(syn.work_dir)
    assert not has_errors(findings), format_findings(findings)


def result_yaml(syn) -> dict:
    return yaml.safe_load(Path(syn.env["output"]["training_result_file"]).read_text())


@pytest.mark.slow
def test_val_interval_and_max_keep_checkpoints(tmp_path: Path) -> None:
    """Through config.yaml: checkpoints every val_interval iterations and after the last,
    max_keep_checkpoints of them kept (iterations 4, 6 and 7 of 7; 2 deleted)."""
    syn, status = train(tmp_path / "work", max_iters=7, val_interval=2, max_keep_checkpoints=3)
    assert status == 0
    assert_verified(syn)
    kept = sorted(path.name for path in Path(syn.work_dir, "out").rglob("iter_*.pth"))
    assert kept == ["iter_4.pth", "iter_6.pth", "iter_7.pth"]


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_trains_evaluates_and_infers(tmp_path: Path, name: str) -> None:
    syn, code = train(tmp_path / "train", model=name)
    assert code == 0
    assert_verified(syn)
    result = result_yaml(syn)
    assert set(result["model_stages"]) == {"best", "last"}
    for stage in result["model_stages"].values():
        assert stage["files"] == ["model.pth", "config.py"]
        assert {"mIoU", "mAcc", "aAcc", "mAP"} <= set(stage)
        assert all(0.0 <= stage[key] <= 1.0 for key in ("mIoU", "mAcc", "aAcc"))
    weights = Path(syn.env["output"]["models_dir"]) / result["best_stage_name"] / "model.pth"
    meta = load_checkpoint(weights)["meta"]
    assert meta["class_names"] == syn.class_names
    assert meta["object_type"] == OBJECT_TYPE and meta["model"] == name

    infer = synthesize(tmp_path / "infer", "infer", OBJECT_TYPE, model_params=syn.work_dir)
    set_config(infer, batch_size_per_gpu=2, num_workers_per_gpu=0)
    assert main(infer.env_file) == 0
    assert_verified(infer)


@pytest.mark.slow
def test_devkit_chain_default_model(tmp_path: Path) -> None:
    """train -> package -> infer / mining / mining+infer / single image, as the platform does."""
    img_man = tmp_path / "img-man"
    shutil.copytree(str(default_img_man()), str(img_man))
    templates = {
        "training-template.yaml": dict(QUICK, model=models.DEFAULT_MODEL, max_iters=6),
        "mining-template.yaml": {"batch_size_per_gpu": 2, "num_workers_per_gpu": 1},
        "infer-template.yaml": {"batch_size_per_gpu": 2, "num_workers_per_gpu": 1},
    }
    for name, values in templates.items():
        path = img_man / name
        template = yaml.safe_load(path.read_text(encoding="utf-8"))
        template.update(values)
        path.write_text(yaml.safe_dump(template), encoding="utf-8")
    report = chain(tmp_path / "chain", img_man=img_man, num_train=8, num_val=3, num_candidates=4)
    assert report.ok, report.format()


def label_maps(files, items, class_names) -> dict:
    """The stage's predictions (task class per pixel, -1 none) for ``items``."""
    loaded = predictor.load(files, class_names, "cpu")
    paths = [item.image for item in items]
    maps = {}
    for prediction in predictor.predict(loaded, paths, batch_size=4, num_workers=0):
        assert not isinstance(prediction, tuple), prediction
        maps[paths[prediction.index]] = predictor.label_map(loaded, prediction)
    return maps


def with_background(items, maps, background: int):
    """Items and predictions where unlabelled pixels are class ``background`` (scored too)."""
    items = copy.deepcopy(items)
    for item in items:
        shape = (item.height, item.width)
        covered = np.zeros(shape, dtype=bool)
        for annotation in item.annotations:
            covered |= annotation.mask
        item.annotations.append(Annotation(background, (0, 0, item.width, item.height), ~covered))
    maps = {path: np.where(labels < 0, background, labels) for path, labels in maps.items()}
    return items, maps


@pytest.mark.slow
def test_learning_check(tmp_path: Path) -> None:
    """On large high-contrast shapes the trained default model segments well; untrained not.

    The model learns the classes against an explicit background (the shapes must be found,
    not only told apart by colour). Measured independently of the training's own metric: the
    package's ``evaluate_semantic`` over every pixel of the validation images, background
    included as a class, through the inference path (batched, resized back).
    """
    syn, code = train(
        tmp_path / "train",
        num_train=16,
        num_val=6,
        model=models.DEFAULT_MODEL,
        max_iters=LEARNING_ITERS,
        val_interval=LEARNING_ITERS,
        batch_size_per_gpu=4,
        learning_rate=0.0006,
        background_class=True,
    )
    assert code == 0
    result = result_yaml(syn)
    stage_dir = Path(syn.env["output"]["models_dir"]) / result["best_stage_name"]
    trained_files = [stage_dir / "model.pth", stage_dir / "config.py"]
    untrained_files = package.untrained_stage(
        tmp_path / "untrained",
        models.DEFAULT_MODEL,
        syn.class_names,
        img_size=QUICK["img_size"],
        background_class=True,
    )
    val = read_split(syn.val_index, syn.class_names, "coco", OBJECT_TYPE)
    background = len(syn.class_names)
    scores = {}
    for name, files in (("trained", trained_files), ("untrained", untrained_files)):
        items, maps = with_background(val, label_maps(files, val, syn.class_names), background)
        scores[name] = evaluate_semantic(items, maps, background + 1)
    print(f"learning check, {LEARNING_ITERS} iterations: {scores}; training mIoU {result['mIoU']}")
    # Chance: predicting the majority class (background) everywhere scores about 0.2 here.
    assert scores["trained"]["mIoU"] >= 0.5, scores
    assert scores["untrained"]["mIoU"] <= 0.3, scores
    assert result["mIoU"] >= 0.5


@pytest.mark.slow
def test_fine_tuning_from_a_pretrained_stage(tmp_path: Path, caplog) -> None:
    first, code = train(tmp_path / "first", model="fast_scnn")
    assert code == 0
    caplog.set_level(logging.INFO)
    second, code = train(tmp_path / "second", pretrained=first.work_dir, model="fast_scnn")
    assert code == 0
    assert "starting from the pretrained model" in caplog.text
    assert_verified(second)
    # Another model's weights are refused with a clear message, not loaded half-way.
    third, code = train(tmp_path / "third", pretrained=first.work_dir, model="segformer_b0")
    assert code == 1 and monitor_code(third) == ErrorCode.MODEL


@pytest.mark.slow
def test_class_change_reinitialises_the_head(tmp_path: Path, caplog) -> None:
    tar = package.untrained_package(
        tmp_path / "other.tar", "fast_scnn", ["dog", "cat"], img_size=64, background_class=True
    )
    caplog.set_level(logging.INFO)
    _syn, code = train(tmp_path / "train", pretrained=tar, model="fast_scnn", max_iters=2)
    assert code == 0
    assert "re-initialising" in caplog.text and "conv_seg" in caplog.text


@pytest.mark.slow
def test_two_gloo_processes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("YMIR_CPU_PROCESSES", "2")
    syn, code = train(tmp_path / "train", model="fast_scnn")
    assert code == 0
    assert_verified(syn)
    assert set(result_yaml(syn)["model_stages"]) == {"best", "last"}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"model": "no_such_model"}, ErrorCode.CONFIG),
        ({"img_size": 16}, ErrorCode.CONFIG),
        ({"max_iters": 0}, ErrorCode.CONFIG),
        ({"background_class": "maybe"}, ErrorCode.CONFIG),
        ({"cfg_options": "optim_wrapper"}, ErrorCode.CONFIG),
    ],
)
def test_bad_hyper_parameters(tmp_path: Path, values: dict, expected: ErrorCode) -> None:
    syn, code = train(tmp_path / "train", **values)
    assert code == 1 and monitor_code(syn) == expected
    assert not Path(syn.env["output"]["training_result_file"]).exists()


def test_bad_pretrained_weights(tmp_path: Path) -> None:
    tar = package.untrained_package(tmp_path / "model.tar", "fast_scnn", ["a"], img_size=64)
    syn = synthesize(tmp_path / "train", "training", OBJECT_TYPE, pretrained=tar, num_train=4)
    set_config(syn, **dict(QUICK, model="fast_scnn"))
    weights = next(Path(syn.in_dir, "models").rglob("model.pth"))
    weights.write_bytes(b"definitely not a checkpoint")
    assert main(syn.env_file) == 1 and monitor_code(syn) == ErrorCode.MODEL


def test_pretrained_model_of_another_target(tmp_path: Path) -> None:
    tar = package.untrained_package(tmp_path / "model.tar", "fast_scnn", ["a"], img_size=64)
    syn = synthesize(tmp_path / "train", "training", OBJECT_TYPE, pretrained=tar, num_train=4)
    set_config(syn, **dict(QUICK, model="fast_scnn"))
    info = Path(syn.in_dir, "models", "ymir-info.yaml")
    document = yaml.safe_load(info.read_text(encoding="utf-8"))
    document["object_type"] = 2
    info.write_text(yaml.safe_dump(document), encoding="utf-8")
    assert main(syn.env_file) == 1 and monitor_code(syn) == ErrorCode.OBJECT_TYPE


def test_legacy_protocol_is_refused(tmp_path: Path) -> None:
    syn = synthesize(tmp_path / "train", "training", OBJECT_TYPE, protocol="legacy", num_train=4)
    assert main(syn.env_file) == 1 and monitor_code(syn) == ErrorCode.OBJECT_TYPE


def test_untrained_stage_matches_training_output(tmp_path: Path) -> None:
    files = package.untrained_stage(tmp_path / "stage", "segformer_b0", ["a", "b"], img_size=64)
    assert [path.name for path in files] == ["model.pth", "config.py"]
    checkpoint = load_checkpoint(files[0])
    assert checkpoint["meta"]["class_names"] == ["a", "b"]
    values = [value.float().numpy().ravel() for value in checkpoint["state_dict"].values()]
    assert np.isfinite(np.concatenate(values)).all()
