"""The result writers: platform formats, validation (ValueError, nothing written) and atomicity."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from {{ cookiecutter.package_name }}.contract.env import OutputPaths
from {{ cookiecutter.package_name }}.contract.masks import decode_rle, encode_rle
from {{ cookiecutter.package_name }}.contract.object_types import ObjectType
from {{ cookiecutter.package_name }}.contract.results import (
    DetectionResult,
    MiningResult,
    SegmentationResult,
    TrainingResult,
)
from {{ cookiecutter.package_name }}.contract.tensorboard import ScalarWriter
from {{ cookiecutter.package_name }}.devkit.verify import (
    verify_infer,
    verify_mining,
    verify_training,
)

CLASS_NAMES = ["dog", "cat", "person"]
MODERN = dict(protocol_version="1.1.0")


@pytest.fixture
def out(tmp_path) -> OutputPaths:
    root = tmp_path / "out"
    return OutputPaths(
        root_dir=root,
        models_dir=root / "models",
        tensorboard_dir=root / "tensorboard",
        training_result_file=root / "models" / "result.yaml",
        mining_result_file=root / "result.tsv",
        infer_result_file=root / "infer-result.json",
        monitor_file=root / "monitor.txt",
        executor_log_file=None,
    )


def model_file(out: OutputPaths, stage, name="model.json") -> Path:
    folder = out.models_dir / stage if stage else out.models_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("weights")
    return path


def result(out: OutputPaths) -> dict:
    return yaml.safe_load(out.training_result_file.read_text())


def images(root: Path, sizes=((40, 30), (20, 10), (16, 16))) -> list:
    paths = []
    for index, size in enumerate(sizes):
        path = root / "in" / "assets" / f"{index + 1:040x}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size).save(path)
        paths.append(path)
    return paths


# -- TrainingResult -----------------------------------------------------------------------


def test_object_types():
    assert {member: member.main_metric for member in ObjectType} == {
        2: "mAP",
        3: "mIoU",
        4: "maskAP",
    }
    assert [member.title for member in ObjectType] == [
        "detection",
        "semantic segmentation",
        "instance segmentation",
    ]
    assert [member.result_format for member in ObjectType] == ["boxes", "coco-rle", "coco-rle"]
    # The platform's integer wherever it is written, on every Python version.
    assert str(ObjectType.INSTANCE_SEGMENTATION) == f"{ObjectType.INSTANCE_SEGMENTATION}" == "4"
    assert json.dumps({"object_type": ObjectType.DETECTION}) == '{"object_type": 2}'
    assert ObjectType.names() == (
        "2 (detection), 3 (semantic segmentation) or 4 (instance segmentation)"
    )


def test_modern_result_yaml(out):
    model_file(out, "epoch_1")
    model_file(out, "epoch_2")
    writer = TrainingResult(out, 2, legacy=False)
    writer.add_stage(
        "epoch_1", ["model.json"], dict(mAP=np.float32(0.25), tp=np.int64(3)), timestamp=100
    )
    assert out.training_result_file.is_file()  # rewritten after every stage
    writer.add_stage(
        "epoch_2",
        ["model.json"],
        dict(mAP=0.5, mAR=0.75),
        timestamp=200,
        evaluate_config=dict(conf_thr=np.float64(0.005), iou_thr=0.5),
    )
    data = result(out)
    assert "model" not in data
    assert data["best_stage_name"] == "epoch_2" == writer.best_stage_name
    assert data["mAP"] == 0.5 and data["object_type"] == 2
    assert data["evaluate_config"] == dict(conf_thr=0.005, iou_thr=0.5)
    first = data["model_stages"]["epoch_1"]
    assert first == dict(stage_name="epoch_1", files=["model.json"], timestamp=100, mAP=0.25, tp=3)
    assert type(first["mAP"]) is float and type(first["tp"]) is int
    # yaml.safe_dump would fail on numpy scalars; safe_load proves only Python types went in.
    assert "!!" not in out.training_result_file.read_text()
    ScalarWriter(out.tensorboard_dir).add_scalar("loss", 0.5, 1)
    assert verify_training(out.root_dir, MODERN, dict(), 2) == []


@pytest.mark.parametrize("object_type", [3, 4])
def test_segmentation_stages_always_carry_map(out, object_type):
    model_file(out, "last")
    writer = TrainingResult(out, object_type, legacy=False)
    metrics = dict(mIoU=0.4, mAcc=0.6) if object_type == 3 else dict(maskAP=0.3, boxAP=0.35)
    writer.add_stage("last", ["model.json"], metrics, timestamp=5)
    stage = result(out)["model_stages"]["last"]
    # YMIR 2.0 requires mAP in every stage: box AP for instance seg, 0.0 for semantic seg.
    assert stage["mAP"] == (0.0 if object_type == 3 else 0.35)
    main = ObjectType(object_type).main_metric
    assert result(out)[main] == metrics[main]
    assert result(out)["object_type"] == object_type


def test_best_stage_ties_go_to_the_newer_stage(out):
    model_file(out, None)
    writer = TrainingResult(out, 2, legacy=False)
    writer.add_stage("a", ["model.json"], dict(mAP=0.5), timestamp=10)
    writer.add_stage("b", ["model.json"], dict(mAP=0.5), timestamp=20)
    writer.add_stage("c", ["model.json"], dict(mAP=0.4), timestamp=30)
    assert writer.best_stage_name == "b" == result(out)["best_stage_name"]


def test_keeps_the_newest_stages_and_the_best(out):
    model_file(out, None)
    writer = TrainingResult(out, 2, legacy=False, max_stages=3)
    writer.add_stage("best", ["model.json"], dict(mAP=0.9), timestamp=1)
    for number in range(2, 7):
        writer.add_stage(f"epoch_{number}", ["model.json"], dict(mAP=0.1), timestamp=number)
    assert sorted(result(out)["model_stages"]) == ["best", "epoch_5", "epoch_6"]


def test_stage_names(out):
    model_file(out, "stage_3")
    writer = TrainingResult(out, 2, legacy=False)
    writer.add_stage(3, ["model.json"], dict(mAP=0.1), timestamp=1)
    writer.add_stage("epoch-4", ["stage_3/model.json"], dict(mAP=0.1), timestamp=2)
    assert sorted(result(out)["model_stages"]) == ["epoch-4", "stage_3"]
    for bad in ("best@1", "1st", "a b", "", "x.y"):
        with pytest.raises(ValueError):
            writer.add_stage(bad, ["stage_3/model.json"], dict(mAP=0.1))


def test_files_are_made_relative_and_checked(out, tmp_path):
    absolute = model_file(out, "last", "weights.pt")
    model_file(out, None, "config.py")
    writer = TrainingResult(out, 2, legacy=False)
    writer.add_stage("last", [absolute, out.models_dir / "config.py"], dict(mAP=0.2), timestamp=1)
    assert result(out)["model_stages"]["last"]["files"] == ["weights.pt", "config.py"]
    outside = tmp_path / "elsewhere.pt"
    outside.write_text("x")
    link = out.models_dir / "last" / "link.pt"
    os.symlink(str(outside), str(link))
    before = out.training_result_file.read_text()
    for files in (
        [outside],
        ["missing.pt"],
        ["../elsewhere.pt"],
        ["link.pt"],
        [],
        "weights.pt",
        [out.models_dir / "last"],
    ):
        with pytest.raises(ValueError):
            writer.add_stage("next", files, dict(mAP=0.3), timestamp=2)
    assert out.training_result_file.read_text() == before  # nothing written on refusal


@pytest.mark.parametrize(
    "metrics",
    [
        dict(mAP=55.0),  # a percentage
        dict(mAP=-0.1),
        dict(mAP=math.nan),
        dict(mAP=True),
        dict(mAP="0.5"),
        dict(mAP=np.array([0.1, 0.2])),
        dict(mAR=0.5),  # no main metric
        dict(mAP=0.5, tp=-1),
        dict(mAP=0.5, fp=1.5),
        dict(mAP=0.5, files=0.1),
    ],
)
def test_bad_metrics_are_refused_and_nothing_is_written(out, metrics):
    model_file(out, "last")
    with pytest.raises(ValueError):
        TrainingResult(out, 2, legacy=False).add_stage("last", ["model.json"], metrics)
    assert not out.training_result_file.exists()


def test_target_metric_is_required(out):
    model_file(out, "last")
    with pytest.raises(ValueError):
        TrainingResult(out, 3, legacy=False).add_stage("last", ["model.json"], dict(mAP=0.5))


@pytest.mark.parametrize("timestamp", [0, -5, 1.5, "now"])
def test_bad_timestamps(out, timestamp):
    model_file(out, "last")
    with pytest.raises(ValueError):
        TrainingResult(out, 2, False).add_stage("last", ["model.json"], dict(mAP=0.1), timestamp)


def test_bad_evaluate_config(out):
    model_file(out, "last")
    with pytest.raises(ValueError):
        TrainingResult(out, 2, False).add_stage(
            "last", ["model.json"], dict(mAP=0.1), evaluate_config=dict(conf_thr="low")
        )


def test_legacy_result_yaml(out):
    model_file(out, None, "model.json")
    model_file(out, None, "config.py")
    writer = TrainingResult(out, 2, legacy=True)
    writer.add_stage("e1", ["model.json"], dict(mAP=0.3), timestamp=1)
    writer.add_stage("e2", ["model.json", "config.py"], dict(mAP=0.6), timestamp=2)
    assert result(out) == dict(model=["model.json", "config.py"], map=0.6)
    ScalarWriter(out.tensorboard_dir).add_scalar("loss", 0.5, 1)
    assert verify_training(out.root_dir, dict(), dict(), 2) == []


def test_legacy_needs_flat_files_and_detection(out):
    model_file(out, "e1")
    with pytest.raises(ValueError):
        TrainingResult(out, 2, legacy=True).add_stage("e1", ["model.json"], dict(mAP=0.3))
    with pytest.raises(ValueError):
        TrainingResult(out, 2, legacy=True).add_stage("e1", ["e1/model.json"], dict(mAP=0.3))
    with pytest.raises(ValueError):
        TrainingResult(out, 3, legacy=True)


@pytest.mark.parametrize("legacy", [False, True])
def test_stage_dir_is_where_add_stage_looks(out, legacy):
    writer = TrainingResult(out, 2, legacy=legacy)
    folder = writer.stage_dir("best")
    assert folder == (out.models_dir if legacy else out.models_dir / "best")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.json").write_text("{}", encoding="utf-8")
    writer.add_stage("best", ["model.json"], dict(mAP=0.5), timestamp=1)
    assert writer.best_stage_name == "best"
    assert writer.stage_dir(3) == (out.models_dir if legacy else out.models_dir / "stage_3")


def test_bad_constructor_arguments(out):
    for args in ((5, False), (2, False, 0)):
        with pytest.raises(ValueError):
            TrainingResult(out, *args)


# -- DetectionResult ----------------------------------------------------------------------


def test_detection_result(out, tmp_path):
    candidates = images(tmp_path)
    writer = DetectionResult(out, candidates, CLASS_NAMES, legacy=False)
    writer.add(
        candidates[0],
        [
            (1.4, 2.6, 10.2, 5.5, "dog", np.float32(0.5)),
            (-5, -5, 10, 10, 1, 0.25),  # clipped at the top-left
            (35, 25, 30, 30, " Person", 1.0),  # clipped to the 40x30 image
            (50, 50, 5, 5, 0, 0.5),  # outside: dropped
            (3, 3, 0, 4, 0, 0.5),  # empty: dropped
        ],
    )
    writer.add(str(candidates[1]), [(0.2, 0.2, 0.3, 0.3, "cat", 0.1)])  # a sliver stays 1 px
    writer.write()
    data = json.loads(out.infer_result_file.read_text())
    boxes = data["detection"][candidates[0].name]["boxes"]
    assert [entry["box"] for entry in boxes] == [
        dict(x=1, y=3, w=11, h=5, rotate_angle=0.0),  # corners rounded: 1.4..11.6
        dict(x=0, y=0, w=5, h=5, rotate_angle=0.0),
        dict(x=35, y=25, w=5, h=5, rotate_angle=0.0),
    ]
    assert [entry["class_name"] for entry in boxes] == ["dog", "cat", "person"]
    assert [entry["score"] for entry in boxes] == [0.5, 0.25, 1.0]
    assert all(type(entry["box"][key]) is int for entry in boxes for key in "xywh")
    assert data["detection"][candidates[1].name]["boxes"][0]["box"]["w"] == 1
    # Both keys: YMIR 2.3 reads `boxes or annotations` and logs an error for a missing list.
    assert data["detection"][candidates[2].name] == dict(boxes=[], annotations=[])
    assert verify_infer(out.root_dir, [str(p) for p in candidates], CLASS_NAMES, 2, False) == []


def test_detection_legacy_key(out, tmp_path):
    candidates = images(tmp_path)
    writer = DetectionResult(out, candidates, CLASS_NAMES, legacy=True)
    writer.add(candidates[0], [(1, 1, 4, 4, 0, 0.5)])
    writer.write()
    data = json.loads(out.infer_result_file.read_text())
    assert set(data["detection"][candidates[0].name]) == set(["annotations"])
    # YMIR 1.1's Rect has no rotate_angle (its mir refuses the result: the platform tier)
    assert data["detection"][candidates[0].name]["annotations"][0]["box"] == dict(
        x=1, y=1, w=4, h=4
    )
    assert verify_infer(out.root_dir, [str(p) for p in candidates], CLASS_NAMES, 2, True) == []


def test_detection_size_argument_and_unreadable_images(out, tmp_path):
    missing = tmp_path / "in" / "gone.jpg"
    writer = DetectionResult(out, [missing], CLASS_NAMES, legacy=False)
    writer.add(missing, [(90, 90, 50, 50, 0, 0.5)])  # size unknown: only clipped at 0
    writer.add(missing, [(90, 90, 50, 50, 0, 0.5)], size=(100, 100))
    writer.write()
    boxes = json.loads(out.infer_result_file.read_text())["detection"]["gone.jpg"]["boxes"]
    assert [entry["box"]["w"] for entry in boxes] == [50, 10]


@pytest.mark.parametrize(
    "box",
    [
        (1, 1, 4, 4, "zebra", 0.5),
        (1, 1, 4, 4, 3, 0.5),
        (1, 1, 4, 4, -1, 0.5),
        (1, 1, 4, 4, 0, 1.5),
        (1, 1, 4, 4, 0, math.nan),
        (1, 1, 4, 4, 0, None),
        (math.nan, 1, 4, 4, 0, 0.5),
        (1, 1, 4, 4, 0),
        (1, 1, 4, 4, 1.5, 0.5),
        (1, 1, 4, 4, 0, -5e-324),
        (1, 1, math.inf, 4, 0, 0.5),
        (1, 1, 4, 4, 0, True),
    ],
)
# Few boxes are checked one by one, many on arrays (DetectionResult.add): both refuse.
@pytest.mark.parametrize("form", ["few", "many", "array"])
def test_detection_refuses_bad_boxes(out, tmp_path, box, form):
    candidates = images(tmp_path)
    writer = DetectionResult(out, candidates, CLASS_NAMES, legacy=False)
    boxes = [(1, 1, 2, 2, 0, 0.5)] * (1 if form == "few" else 12) + [box]
    numeric = len(box) == 6 and all(type(value) in (int, float) for value in box)
    with pytest.raises(ValueError):
        writer.add(candidates[0], np.array(boxes) if form == "array" and numeric else boxes)
    writer.write()
    # The refused call added nothing, not even its valid first box.
    entry = json.loads(out.infer_result_file.read_text())["detection"][candidates[0].name]
    assert entry == dict(boxes=[], annotations=[])


def test_detection_refuses_unknown_images_and_duplicate_names(out, tmp_path):
    candidates = images(tmp_path)
    writer = DetectionResult(out, candidates, CLASS_NAMES, legacy=False)
    with pytest.raises(ValueError):
        writer.add(tmp_path / "other.png", [])
    with pytest.raises(ValueError):
        DetectionResult(out, [candidates[0], tmp_path / candidates[0].name], CLASS_NAMES, False)
    with pytest.raises(ValueError):
        DetectionResult(out, candidates, [], False)
    with pytest.raises(ValueError):
        DetectionResult(out, candidates, ["a", "A "], False)


# -- SegmentationResult -------------------------------------------------------------------


def masks_for(height, width):
    left = np.zeros((height, width), dtype=bool)
    left[2:6, 1:5] = True
    right = np.zeros((height, width), dtype=bool)
    right[3:8, 10:15] = True
    return left, right


def test_semantic_segmentation_merges_classes(out, tmp_path):
    candidates = images(tmp_path)
    writer = SegmentationResult(out, candidates, CLASS_NAMES, 3)
    left, right = masks_for(30, 40)
    writer.add(
        candidates[0],
        40,
        30,
        [(left, "dog", None), (right, 0, 0.3), (np.zeros((30, 40)), "cat", None)],
    )
    writer.add(candidates[0], 40, 30, [(encode_rle(right), "person", None)])
    writer.write()
    data = json.loads(out.infer_result_file.read_text())
    assert [image["file_name"] for image in data["images"]] == [p.name for p in candidates]
    assert data["images"][0] == dict(id=1, file_name=candidates[0].name, width=40, height=30)
    assert data["images"][1]["width"] == 20  # read from the file for images without masks
    assert data["categories"][1] == dict(id=1, name="cat", supercategory="none")
    annotations = data["annotations"]
    assert [entry["category_id"] for entry in annotations] == [0, 2]  # empty cat mask dropped
    dog = annotations[0]
    assert dog["area"] == 16 + 25 and dog["bbox"] == [1, 2, 14, 6] and dog["iscrowd"] == 1
    assert "confidence" not in dog
    assert isinstance(dog["segmentation"]["counts"], str)
    assert decode_rle(dog["segmentation"]).sum() == 41
    assert verify_infer(out.root_dir, [str(p) for p in candidates], CLASS_NAMES, 3, False) == []


def test_instance_segmentation(out, tmp_path):
    candidates = images(tmp_path)
    writer = SegmentationResult(out, candidates, CLASS_NAMES, 4)
    left, right = masks_for(30, 40)
    writer.add(candidates[0], 40, 30, [(left, "dog", 0.9), (right, "dog", np.float32(0.5))])
    writer.write()
    annotations = json.loads(out.infer_result_file.read_text())["annotations"]
    assert [entry["confidence"] for entry in annotations] == [0.9, 0.5]
    assert [entry["id"] for entry in annotations] == [1, 2]
    assert all(entry["iscrowd"] == 0 for entry in annotations)
    assert verify_infer(out.root_dir, [str(p) for p in candidates], CLASS_NAMES, 4, False) == []


def test_segmentation_refuses_bad_input(out, tmp_path):
    candidates = images(tmp_path)
    left, _right = masks_for(30, 40)
    instance = SegmentationResult(out, candidates, CLASS_NAMES, 4)
    semantic = SegmentationResult(out, candidates, CLASS_NAMES, 3)
    for writer, item in (
        (instance, (left, "dog", None)),  # instance masks need a score
        (instance, (left, "dog", 2.0)),
        (semantic, (left, "zebra", None)),
        (semantic, (left.T, "dog", None)),  # wrong shape
        (semantic, (encode_rle(left.T), "dog", None)),
        (semantic, (left, "dog")),
    ):
        with pytest.raises(ValueError):
            writer.add(candidates[0], 40, 30, [item])
    with pytest.raises(ValueError):
        semantic.add(tmp_path / "other.png", 40, 30, [])
    with pytest.raises(ValueError):
        semantic.add(candidates[0], 0, 30, [])
    semantic.add(candidates[0], 40, 30, [])
    with pytest.raises(ValueError):
        semantic.add(candidates[0], 41, 30, [])
    with pytest.raises(ValueError):
        SegmentationResult(out, candidates, CLASS_NAMES, 2)


def test_segmentation_keeps_unreadable_candidates(out, tmp_path):
    missing = tmp_path / "gone.png"
    writer = SegmentationResult(out, [missing], CLASS_NAMES, 3)
    writer.write()
    data = json.loads(out.infer_result_file.read_text())
    assert data["images"] == [dict(id=1, file_name="gone.png", width=0, height=0)]


# -- MiningResult -------------------------------------------------------------------------


def test_mining_result(out, tmp_path):
    candidates = [str(p) for p in images(tmp_path)] + ["/in/assets/single image é.jpg"]
    writer = MiningResult(out, candidates)
    writer.add(candidates[0], np.float32(0.25))
    writer.add(Path(candidates[1]), 0.75)
    writer.add(candidates[3], 0.25)
    writer.add(candidates[0], 0.5)  # replaces
    writer.write()
    lines = out.mining_result_file.read_text(encoding="utf-8").splitlines()
    assert [line.split("\t")[0] for line in lines] == [
        candidates[1],
        candidates[0],
        candidates[3],
        candidates[2],
    ]
    assert [float(line.split("\t")[1]) for line in lines] == [0.75, 0.5, 0.25, -0.75]
    # Only the single-image name, which is no asset hash, is worth a warning.
    assert [f.check_id for f in verify_mining(out.root_dir, candidates)] == ["MIN008"]


def test_mining_ties_keep_candidate_order_and_nothing_scored(out, tmp_path):
    candidates = [str(p) for p in images(tmp_path)]
    writer = MiningResult(out, candidates)
    writer.write()
    lines = out.mining_result_file.read_text().splitlines()
    assert lines == [path + "\t-1.0" for path in candidates]
    assert verify_mining(out.root_dir, candidates) == []


def test_mining_basename_fallback(out, tmp_path):
    candidates = [str(p) for p in images(tmp_path)]
    writer = MiningResult(out, candidates)
    writer.add("/resolved/elsewhere/" + os.path.basename(candidates[2]), 9)
    writer.write()
    assert out.mining_result_file.read_text().startswith(candidates[2] + "\t9.0\n")


def test_mining_refuses_bad_input(out, tmp_path):
    candidates = [str(p) for p in images(tmp_path)]
    writer = MiningResult(out, candidates)
    for image, score in (
        (candidates[0], math.nan),
        (candidates[0], math.inf),
        (candidates[0], "high"),
        (candidates[0], True),
        ("/x/y.png", 0.5),
    ):
        with pytest.raises(ValueError):
            writer.add(image, score)
    with pytest.raises(ValueError):
        MiningResult(out, ["/in/a\tb.png"])
    with pytest.raises(ValueError):
        MiningResult(out, [candidates[0], candidates[0]])


def test_writers_leave_no_temporary_files(out, tmp_path):
    candidates = images(tmp_path)
    DetectionResult(out, candidates, CLASS_NAMES, False).write()
    MiningResult(out, candidates).write()
    assert sorted(path.name for path in out.root_dir.iterdir()) == [
        "infer-result.json",
        "result.tsv",
    ]
