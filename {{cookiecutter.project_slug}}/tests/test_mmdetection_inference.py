"""MMDetection inference on the CPU: every model of this executor's target, end to end.

Each model is packaged untrained (random weights, tiny 64 px input; no training, no download)
the way a training task packages its stages, installed by the devkit like the platform does,
and run through the executor's entrypoint. Outputs are checked by the devkit's verifier and for
what inference promises: thresholds applied, unreadable candidates with an empty result, the
same result with two gloo processes as with one, fp16 with float32 NMS, the CPU's channels-last
layout computing what the default layout computes, and the error codes of bad model packages.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import (
    CORRUPT_JPEG,
    assert_verified,
    requires,
    synthesize_task,
    untrained_mmdetection_package,
)
from {{ cookiecutter.package_name }}.__main__ import main
from {{ cookiecutter.package_name }}.contract.models import load_model_package, unpack_model
from {{ cookiecutter.package_name }}.contract.params import manifest_object_type
from {{ cookiecutter.package_name }}.devkit.chain import chain, read_monitor_state
from {{ cookiecutter.package_name }}.devkit.synth import CLASS_NAMES, default_img_man, synthesize
from {{ cookiecutter.package_name }}.frameworks.mmdetection import models, predictor
from {{ cookiecutter.package_name }}.frameworks.mmdetection.detector import (
    enable_fp16,
    load_detector,
    use_channels_last,
)
from {{ cookiecutter.package_name }}.frameworks.openmmlab import distributed

pytestmark = pytest.mark.slow

IMG_MAN = default_img_man()
OBJECT_TYPE = manifest_object_type(IMG_MAN)
MODEL_NAMES = [spec.name for spec in models.models_for(OBJECT_TYPE)]
DEFAULT_MODEL = models.default_model(OBJECT_TYPE).name
OTHER_TARGET = 4 if OBJECT_TYPE == 2 else 2
# Low threshold: untrained heads are unsure of everything, and the tests need predictions.
SETTINGS = {"confidence_threshold": 0.001, "batch_size_per_gpu": 2, "num_workers_per_gpu": 1}
NUM_CANDIDATES = 5


def prepare(work: Path, task: str, tar: Path, corrupt: int = 0, **overrides):
    """A synthetic /in for ``task`` with ``tar`` installed and the module's settings."""
    return synthesize_task(
        work, task, tar, {**SETTINGS, **overrides}, corrupt=corrupt, num_candidates=NUM_CANDIDATES
    )


def predictions(syn) -> dict:
    """``{candidate basename: [prediction dict, ...]}`` from infer-result.json."""
    document = json.loads(Path(syn.env["output"]["infer_result_file"]).read_text(encoding="utf-8"))
    if OBJECT_TYPE == 2:
        return {name: entry["boxes"] for name, entry in document["detection"].items()}
    names = {image["id"]: image["file_name"] for image in document["images"]}
    found: dict = {name: [] for name in names.values()}
    for annotation in document["annotations"]:
        found[names[annotation["image_id"]]].append(annotation)
    return found


def score(prediction: dict) -> float:
    return prediction["score"] if "score" in prediction else prediction["confidence"]


def monitor_code(syn):
    return read_monitor_state(Path(syn.env["output"]["monitor_file"]))


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_every_model_infers(tmp_path_factory, tmp_path: Path, model_name: str) -> None:
    syn = prepare(
        tmp_path / "work",
        "infer",
        untrained_mmdetection_package(tmp_path_factory, model_name),
        corrupt=1,
    )
    assert main(syn.env_file) == 0
    assert_verified(syn)
    found = predictions(syn)
    assert set(found) == {path.name for path in syn.candidates}
    unreadable = syn.candidates[0].name
    assert found[unreadable] == []
    kept = [item for name, items in found.items() if name != unreadable for item in items]
    assert kept, f"{model_name} predicted nothing"
    assert all(score(item) >= SETTINGS["confidence_threshold"] for item in kept)
    if OBJECT_TYPE == 4:
        assert all(isinstance(item["segmentation"]["counts"], str) for item in kept)


def test_confidence_threshold_filters(tmp_path_factory, tmp_path: Path) -> None:
    tar = untrained_mmdetection_package(tmp_path_factory, DEFAULT_MODEL)
    low = prepare(tmp_path / "low", "infer", tar)
    high = prepare(tmp_path / "high", "infer", tar, confidence_threshold=0.03)
    assert main(low.env_file) == 0 and main(high.env_file) == 0
    low_items = [item for items in predictions(low).values() for item in items]
    high_items = [item for items in predictions(high).values() for item in items]
    assert len(high_items) < len(low_items)
    assert all(score(item) >= 0.03 for item in high_items)


def test_iou_threshold_changes_what_is_kept(tmp_path_factory, tmp_path: Path) -> None:
    """Through config.yaml as the platform writes it: a lower NMS IoU keeps fewer of the many
    overlapping boxes an untrained head predicts. (Their IoU in the result is not the NMS's:
    boxes are scaled back to the image, clipped to it and rounded.)"""
    tar = untrained_mmdetection_package(tmp_path_factory, DEFAULT_MODEL)
    loose = prepare(tmp_path / "loose", "infer", tar, iou_threshold=0.95)
    strict = prepare(tmp_path / "strict", "infer", tar, iou_threshold=0.2)
    assert main(loose.env_file) == 0 and main(strict.env_file) == 0
    counts = [sum(map(len, predictions(syn).values())) for syn in (loose, strict)]
    assert counts[0] > counts[1] > 0, counts


@pytest.mark.parametrize("value", [1.5, -0.2, "half"])
def test_iou_threshold_out_of_range_is_300001(tmp_path_factory, tmp_path: Path, value) -> None:
    tar = untrained_mmdetection_package(tmp_path_factory, DEFAULT_MODEL)
    syn = prepare(tmp_path / "work", "infer", tar, iou_threshold=value)
    assert main(syn.env_file) == 1
    assert monitor_code(syn) == (4, 300001)
    assert not Path(syn.env["output"]["infer_result_file"]).exists()


def test_fp16_on_the_cpu_is_ignored_and_says_so(tmp_path_factory, tmp_path: Path, caplog) -> None:
    """fp16 is for GPUs: on the CPU the task runs in full precision, says so in its log, and
    predicts exactly what it predicts without fp16."""
    tar = untrained_mmdetection_package(tmp_path_factory, DEFAULT_MODEL)
    full = prepare(tmp_path / "full", "infer", tar)
    half = prepare(tmp_path / "half", "infer", tar, fp16=True)
    assert main(full.env_file) == 0
    with caplog.at_level(logging.INFO):
        assert main(half.env_file) == 0
    assert "fp16 is for GPUs" in caplog.text
    assert predictions(half) == predictions(full)


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_thresholds_reach_the_heads(tmp_path_factory, tmp_path: Path, model_name: str) -> None:
    package = installed_package(tmp_path_factory, tmp_path, model_name)
    detector = load_detector(package, OBJECT_TYPE, CLASS_NAMES, score_thr=0.25, iou_thr=0.45)
    model = detector.model
    test_cfg = model.roi_head.test_cfg if hasattr(model, "roi_head") else model.bbox_head.test_cfg
    assert test_cfg["score_thr"] == 0.25
    assert test_cfg["nms"]["iou_threshold"] == 0.45


def test_two_processes_equal_one(tmp_path_factory, tmp_path: Path, monkeypatch, caplog) -> None:
    tar = untrained_mmdetection_package(tmp_path_factory, DEFAULT_MODEL)
    one = prepare(tmp_path / "one", "infer", tar, corrupt=1)
    assert main(one.env_file) == 0
    monkeypatch.setenv("YMIR_CPU_PROCESSES", "2")
    two = prepare(tmp_path / "two", "infer", tar, corrupt=1)
    with caplog.at_level(logging.INFO):
        assert main(two.env_file) == 0
    # Two ranks really ran (an image predicted twice or never would have failed the task).
    assert "starting 2 processes" in caplog.text
    assert_verified(two)
    assert_same_predictions(predictions(two), predictions(one))


def assert_same_predictions(left: dict, right: dict) -> None:
    """Equal up to float rounding: ranks run with other thread counts and batch neighbours,
    so sums may be added in another order (last digits of a float32 score, or one pixel)."""
    assert set(left) == set(right)
    for name in left:
        assert len(left[name]) == len(right[name]), name
        key = lambda item: (item.get("class_name", item.get("category_id")), -score(item))  # noqa: E731
        for a, b in zip(sorted(left[name], key=key), sorted(right[name], key=key)):
            assert score(a) == pytest.approx(score(b), abs=1e-4), name
            box_a = list(a["box"].values())[:4] if "box" in a else a["bbox"]
            box_b = list(b["box"].values())[:4] if "box" in b else b["bbox"]
            assert all(abs(u - v) <= 1 for u, v in zip(box_a, box_b)), (name, box_a, box_b)
            if "area" in a:
                assert abs(a["area"] - b["area"]) <= 2 + 0.02 * a["area"], name


def installed_package(factory, tmp_path: Path, model_name: str):
    tar = untrained_mmdetection_package(factory, model_name)
    paths = unpack_model(tar, None, tmp_path / "models")
    return load_model_package(tmp_path / "models", paths)


@requires("infer")
@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_fp16_keeps_nms_in_float32(
    tmp_path_factory, tmp_path: Path, monkeypatch, model_name: str
) -> None:
    import importlib

    import torch

    # mmcv.ops re-exports the function under the module's name: fetch the module itself.
    nms_module = importlib.import_module("mmcv.ops.nms")

    seen = []
    original = nms_module.nms

    def recording_nms(boxes, scores, *args, **kwargs):
        seen.append((boxes.dtype, scores.dtype))
        return original(boxes, scores, *args, **kwargs)

    monkeypatch.setattr(nms_module, "nms", recording_nms)
    package = installed_package(tmp_path_factory, tmp_path, model_name)
    detector = load_detector(package, OBJECT_TYPE, CLASS_NAMES, score_thr=0.001, fp16=True)
    # The fp16 hyper-parameter is for GPUs: the CPU keeps full precision...
    assert not getattr(detector.model.backbone, "_ymir_fp16", False)
    # ... but the mechanism a GPU uses runs on the CPU too, and is tested here.
    enable_fp16(detector.model, "cpu")
    if hasattr(detector.model, "roi_head"):
        # Half-precision kernels are slow on the CPU: keep the two-stage heads' RoIs few.
        detector.model.rpn_head.test_cfg["max_per_img"] = 20
        detector.model.roi_head.test_cfg["max_per_img"] = 5
    half = []
    first_conv = next(
        m for m in detector.model.backbone.modules() if isinstance(m, torch.nn.Conv2d)
    )
    first_conv.register_forward_hook(lambda module, inputs, output: half.append(output.dtype))
    syn = synthesize(tmp_path / "work", "infer", OBJECT_TYPE, num_candidates=2)
    outputs = list(
        predictor.predict_batches(
            detector, list(enumerate(syn.candidates)), batch_size=2, workers=0
        )
    )
    assert half and all(dtype == torch.float16 for dtype in half)
    assert seen and all(pair == (torch.float32, torch.float32) for pair in seen)
    assert any(predictor.to_prediction(detector, output).boxes for output in outputs)


@requires("infer")
@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_channels_last_computes_what_nchw_computes(
    tmp_path_factory, tmp_path: Path, model_name: str
) -> None:
    """The CPU's channels-last model (what inference runs) against PyTorch's default layout:
    the same features and the same raw head outputs. Two-stage heads get the same proposals,
    so their mmcv RoIAlign reads the channels-last features (it would misread them unwrapped).
    """
    import torch

    package = installed_package(tmp_path_factory, tmp_path, model_name)
    nhwc, nchw = (
        load_detector(package, OBJECT_TYPE, CLASS_NAMES, "cpu", channels_last=flag)
        for flag in (True, False)
    )
    syn = synthesize(tmp_path / "work", "infer", OBJECT_TYPE, num_candidates=2)
    dataset = predictor.CandidateDataset(
        list(enumerate(syn.candidates)), predictor.test_pipeline(nchw.cfg)
    )
    views = [dataset[position]["views"][0] for position in range(len(dataset))]
    with torch.no_grad():
        data = nchw.model.data_preprocessor(
            {"inputs": [view[0] for view in views], "data_samples": [view[1] for view in views]},
            False,
        )
        inputs, samples = data["inputs"], data["data_samples"]
        features, nhwc_features = nchw.model.extract_feat(inputs), nhwc.model.extract_feat(inputs)
        assert nhwc_features[0].is_contiguous(memory_format=torch.channels_last)
        pairs = [(nhwc_features, features)]
        if hasattr(nchw.model, "roi_head"):
            proposals = nchw.model.rpn_head.predict(features, samples, rescale=False)
            pairs.append((nhwc.model.rpn_head(nhwc_features), nchw.model.rpn_head(features)))
            pairs.append(
                (
                    nhwc.model.roi_head.forward(nhwc_features, proposals, samples),
                    nchw.model.roi_head.forward(features, proposals, samples),
                )
            )
        else:
            pairs.append((nhwc.model.bbox_head(nhwc_features), nchw.model.bbox_head(features)))
    for nhwc_output, nchw_output in pairs:
        actual, expected = tensors(nhwc_output), tensors(nchw_output)
        assert actual and len(actual) == len(expected)
        for one, other in zip(actual, expected):
            scale = float(other.abs().max()) or 1.0
            torch.testing.assert_close(one, other, rtol=1e-4, atol=1e-4 * scale)


@requires("infer")
def test_channels_last_keeps_mmcv_ops_on_nchw() -> None:
    """Deformable convolutions (a ResNet's ``dcn`` option adds them) keep their weights and
    their offset convolution's NCHW, and get NCHW inputs: mmcv's kernels read raw memory."""
    import torch
    from mmcv.ops import DeformConv2dPack, ModulatedDeformConv2dPack

    torch.manual_seed(0)
    for deform in (DeformConv2dPack, ModulatedDeformConv2dPack):
        model = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1),
            deform(8, 8, 3, padding=1),
            torch.nn.Conv2d(8, 4, 1),
        ).eval()
        with torch.no_grad():
            model[1].conv_offset.weight.normal_(0, 0.5)  # zero offsets would hide a misread
            inputs = torch.randn(2, 3, 16, 16)
            expected = model(inputs)
            use_channels_last(model)
            assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(model(inputs), expected, rtol=1e-4, atol=1e-5)


def tensors(value) -> list:
    """The tensors of a nested model output, in order."""
    import torch

    if torch.is_tensor(value):
        return [value]
    if isinstance(value, (list, tuple)):
        return [tensor for item in value for tensor in tensors(item)]
    return []


@requires("infer")
def test_loader_workers_predict_what_the_executor_process_predicts(
    tmp_path_factory, tmp_path: Path, monkeypatch
) -> None:
    """Batches prepared in a loader worker (as on a GPU machine; on the CPU workers are capped
    to spare cores, often none) give the same predictions, an unreadable image included."""
    monkeypatch.setattr(distributed, "loader_workers", lambda requested, cuda: requested)
    package = installed_package(tmp_path_factory, tmp_path, DEFAULT_MODEL)
    detector = load_detector(package, OBJECT_TYPE, CLASS_NAMES, score_thr=0.001)
    syn = synthesize(tmp_path / "work", "infer", OBJECT_TYPE, num_candidates=3)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(CORRUPT_JPEG)
    items = list(enumerate([*syn.candidates, broken]))

    def predict(workers: int) -> list:
        outputs = predictor.predict_batches(detector, items, batch_size=2, workers=workers)
        return [predictor.to_prediction(detector, output).to_json() for output in outputs]

    in_process, in_worker = predict(0), predict(1)
    assert in_worker[-1]["error"] and not in_worker[0]["error"]
    assert any(row["boxes"] for row in in_worker)
    assert len(in_worker) == len(in_process) == len(items)
    for mine, theirs in zip(in_worker, in_process):
        assert (mine["error"], mine["size"]) == (theirs["error"], theirs["size"])
        assert len(mine["boxes"]) == len(theirs["boxes"])
        for box, other in zip(mine["boxes"], theirs["boxes"]):
            assert box == pytest.approx(other, abs=1e-3)


def replace_model_file(syn, name: str, data: bytes | None) -> None:
    """Change a file of the installed model package (None: remove it from the config too)."""
    config = yaml.safe_load(syn.config_file.read_text(encoding="utf-8"))
    listed = [path for path in config["model_params_path"] if Path(path).name == name]
    assert listed, config["model_params_path"]
    if data is None:
        config["model_params_path"] = [p for p in config["model_params_path"] if p not in listed]
        syn.config_file.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    else:
        Path(listed[0]).write_bytes(data)


@pytest.mark.parametrize("case", ["missing", "not listed", "corrupt", "truncated", "other model"])
def test_bad_weights_fail_with_300004(tmp_path_factory, tmp_path: Path, case: str) -> None:
    tar = untrained_mmdetection_package(tmp_path_factory, DEFAULT_MODEL)
    syn = prepare(tmp_path / "work", "infer", tar)
    weights = next(Path(p) for p in syn.model_params if Path(p).name == "model.pth")
    if case == "missing":
        weights.unlink()  # listed by the platform, but not there
    elif case == "not listed":
        replace_model_file(syn, "model.pth", None)
    elif case == "corrupt":
        replace_model_file(syn, "model.pth", b"PK\x03\x04 definitely not a checkpoint")
    elif case == "truncated":
        data = weights.read_bytes()
        replace_model_file(syn, "model.pth", data[: len(data) // 2])
    else:  # weights of another architecture next to this config
        other = next(name for name in MODEL_NAMES if name != DEFAULT_MODEL)
        other_tar = untrained_mmdetection_package(tmp_path_factory, other)
        unpacked = unpack_model(other_tar, None, tmp_path / "other")
        shutil.copyfile(next(p for p in unpacked if p.endswith("model.pth")), weights)
    assert main(syn.env_file) == 1
    assert monitor_code(syn) == (4, 300004)


def test_model_of_the_other_target_fails_with_300005(tmp_path_factory, tmp_path: Path) -> None:
    other = models.default_model(OTHER_TARGET).name
    tar = untrained_mmdetection_package(tmp_path_factory, other, OTHER_TARGET)
    syn = prepare(tmp_path / "work", "infer", tar)
    assert main(syn.env_file) == 1
    assert monitor_code(syn) == (4, 300005)


@requires("training", "mining", "infer")
def test_devkit_chain(tmp_path: Path) -> None:
    """train -> package -> infer / mine / mine+infer / single image / migrated package, verified.

    Every step is a separate executor process started by the devkit as the platform would.
    The executor's own templates, shrunk to a CPU-sized training (2 epochs at 64 px) and
    small batches; nothing else changed.
    """
    img_man = tmp_path / "img-man"
    shutil.copytree(IMG_MAN, img_man)
    small = {"epochs": 2, "batch_size_per_gpu": 4, "num_workers_per_gpu": 0, "img_size": 64}
    for name in ("training", "mining", "infer"):
        path = img_man / f"{name}-template.yaml"
        text = path.read_text(encoding="utf-8")
        for key, value in small.items():
            if name != "training" and key not in ("batch_size_per_gpu",):
                continue
            text = re.sub(rf"^{key}:.*$", f"{key}: {value}", text, flags=re.MULTILINE)
        path.write_text(text, encoding="utf-8")
    report = chain(tmp_path / "chain", protocol="1.1.0", img_man=img_man)
    assert report.ok, report.format()
