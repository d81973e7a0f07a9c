"""MMSegmentation inference and mining on the CPU, through the executor's entrypoint.

A model package with random weights (64 px, no training, no download) is installed by the
devkit the way the platform extracts it. Checked: the COCO result (one compressed-RLE
annotation per image and class present, never the background, unreadable images listed
empty), the confidence threshold, each mining algorithm's ranking, mining + inference sharing
one forward pass, two gloo processes giving the same result as one, the uncertainty maths,
and the error codes of bad model packages.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import CORRUPT_JPEG, assert_verified, synthesize_task
from {{ cookiecutter.package_name }}.__main__ import main
from {{ cookiecutter.package_name }}.contract.errors import ErrorCode
from {{ cookiecutter.package_name }}.contract.masks import decode_rle
from {{ cookiecutter.package_name }}.devkit.chain import read_monitor_state
from {{ cookiecutter.package_name }}.devkit.synth import CLASS_NAMES
from {{ cookiecutter.package_name }}.frameworks.mmsegmentation import mining, models, package, predictor
from {{ cookiecutter.package_name }}.frameworks.openmmlab import distributed
from {{ cookiecutter.package_name }}.tasks.hyperparams import HYPERPARAMETERS

OBJECT_TYPE = 3
SETTINGS = {"batch_size_per_gpu": 3, "num_workers_per_gpu": 1}
# Every algorithm the mining template offers.
MINING_ALGORITHMS = next(
    declaration.names for declaration in HYPERPARAMETERS if declaration.name == "mining_algorithm"
)
NUM_CANDIDATES = 5


@pytest.fixture(scope="module")
def model_tar(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mmseg-package")
    return package.untrained_package(
        folder / "model.tar", models.DEFAULT_MODEL, CLASS_NAMES, img_size=64, seed=1
    )


@pytest.fixture(scope="module")
def background_tar(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mmseg-package-bg")
    return package.untrained_package(
        folder / "model.tar", "fast_scnn", CLASS_NAMES, img_size=64, background_class=True
    )


def prepare(work: Path, task: str, tar: Path, corrupt: int = 0, **overrides):
    """A synthetic /in for ``task`` with ``tar`` installed and the module's settings."""
    return synthesize_task(
        work, task, tar, {**SETTINGS, **overrides}, corrupt=corrupt, num_candidates=NUM_CANDIDATES
    )


def annotations(syn) -> dict:
    """``{candidate basename: [annotation, ...]}`` from infer-result.json."""
    document = json.loads(Path(syn.env["output"]["infer_result_file"]).read_text("utf-8"))
    names = {image["id"]: image["file_name"] for image in document["images"]}
    found: dict = {name: [] for name in names.values()}
    for annotation in document["annotations"]:
        found[names[annotation["image_id"]]].append(annotation)
    return found


def mining_lines(syn) -> list:
    text = Path(syn.env["output"]["mining_result_file"]).read_text(encoding="utf-8")
    return [line.split("\t") for line in text.splitlines()]


def monitor_code(syn):
    return read_monitor_state(Path(syn.env["output"]["monitor_file"]))[1]


def test_infer_writes_one_rle_per_class(tmp_path: Path, model_tar: Path, caplog) -> None:
    syn = prepare(tmp_path / "work", "infer", model_tar, corrupt=1)
    assert main(syn.env_file) == 0
    assert_verified(syn)
    found = annotations(syn)
    assert set(found) == {path.name for path in syn.candidates}
    assert found[syn.candidates[0].name] == []  # unreadable: listed, no prediction
    assert "cannot read image" in caplog.text or "no prediction" in caplog.text
    predicted = [items for name, items in found.items() if name != syn.candidates[0].name]
    assert all(items for items in predicted)  # without background, every pixel has a class
    for items in predicted:
        classes = [item["category_id"] for item in items]
        assert len(classes) == len(set(classes))  # one annotation per class
        assert set(classes) <= set(range(len(CLASS_NAMES)))
        for item in items:
            assert isinstance(item["segmentation"]["counts"], str)
            assert item["iscrowd"] == 1 and "confidence" not in item
            assert item["area"] == int(decode_rle(item["segmentation"]).sum()) > 0
            assert item["bbox"][2] > 0 and item["bbox"][3] > 0
        # the class masks of an image tile it: every pixel is in exactly one
        masks = [decode_rle(item["segmentation"]) for item in items]
        assert (sum(mask.astype(int) for mask in masks) == 1).all()


def test_background_is_never_written(tmp_path: Path, background_tar: Path) -> None:
    syn = prepare(tmp_path / "work", "infer", background_tar)
    assert main(syn.env_file) == 0
    assert_verified(syn)
    for items in annotations(syn).values():
        assert {item["category_id"] for item in items} <= set(range(len(CLASS_NAMES)))


def test_confidence_threshold(tmp_path: Path, model_tar: Path) -> None:
    low = prepare(tmp_path / "low", "infer", model_tar)
    high = prepare(tmp_path / "high", "infer", model_tar, confidence_threshold=0.9)
    assert main(low.env_file) == 0 and main(high.env_file) == 0

    def pixels(syn):
        return sum(item["area"] for items in annotations(syn).values() for item in items)

    # a random model is nowhere 90% sure of a class among three
    assert pixels(high) < pixels(low)


@pytest.mark.parametrize("algorithm", MINING_ALGORITHMS)
def test_mining_ranks_every_candidate(tmp_path: Path, model_tar: Path, algorithm: str) -> None:
    syn = prepare(tmp_path / "work", "mining", model_tar, corrupt=1, mining_algorithm=algorithm)
    assert main(syn.env_file) == 0
    assert_verified(syn)
    lines = mining_lines(syn)
    assert sorted(path for path, _ in lines) == sorted(str(path) for path in syn.candidates)
    scores = [float(score) for _, score in lines]
    assert scores == sorted(scores, reverse=True)
    if algorithm != "random":
        assert lines[-1][0] == str(syn.candidates[0])  # unreadable: ranked last
        assert all(0.0 <= score <= 1.0 for score in scores[:-1])
    again = prepare(tmp_path / "again", "mining", model_tar, corrupt=1, mining_algorithm=algorithm)
    assert main(again.env_file) == 0
    assert [score for _, score in mining_lines(again)] == [score for _, score in lines]


def test_random_order_follows_random_seed(tmp_path: Path, model_tar: Path) -> None:
    def order(name: str, **params) -> list:
        syn = prepare(tmp_path / name, "mining", model_tar, mining_algorithm="random", **params)
        assert main(syn.env_file) == 0
        return [Path(path).name for path, _ in mining_lines(syn)]

    default = order("default")
    assert order("seed-1", random_seed=1) == default  # the documented default seed
    assert order("seed-2", random_seed=2) != default
    assert order("seed-2-again", random_seed=2) == order("seed-2", random_seed=2)


def test_unknown_mining_algorithm(tmp_path: Path, model_tar: Path) -> None:
    syn = prepare(tmp_path / "work", "mining", model_tar, mining_algorithm="aldd")
    assert main(syn.env_file) == 1 and monitor_code(syn) == ErrorCode.CONFIG


def test_mining_and_infer_share_the_forward_pass(
    tmp_path: Path, model_tar: Path, monkeypatch
) -> None:
    calls = []
    original = predictor.predict

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(predictor, "predict", counting)
    both = prepare(tmp_path / "both", "mining+infer", model_tar, mining_algorithm="entropy")
    assert main(both.env_file) == 0
    assert_verified(both)
    assert len(calls) == 1
    alone = prepare(tmp_path / "alone", "infer", model_tar)
    assert main(alone.env_file) == 0
    assert annotations(alone) == annotations(both)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["infer", "mining"])
def test_two_gloo_processes_match_one(
    tmp_path: Path, model_tar: Path, monkeypatch, task: str
) -> None:
    one = prepare(tmp_path / "one", task, model_tar, corrupt=1, mining_algorithm="margin")
    assert main(one.env_file) == 0
    monkeypatch.setenv("YMIR_CPU_PROCESSES", "2")
    two = prepare(tmp_path / "two", task, model_tar, corrupt=1, mining_algorithm="margin")
    assert main(two.env_file) == 0
    assert_verified(two)
    if task == "infer":
        assert annotations(two) == annotations(one)
    else:
        first = {Path(path).name: float(score) for path, score in mining_lines(one)}
        second = {Path(path).name: float(score) for path, score in mining_lines(two)}
        assert second.keys() == first.keys()
        assert all(second[path] == pytest.approx(first[path], abs=1e-5) for path in first)


def test_missing_weights(tmp_path: Path, model_tar: Path) -> None:
    syn = prepare(tmp_path / "work", "infer", model_tar)
    next(Path(syn.in_dir, "models").rglob("model.pth")).unlink()
    assert main(syn.env_file) == 1 and monitor_code(syn) == ErrorCode.MODEL


def test_corrupt_weights(tmp_path: Path, model_tar: Path) -> None:
    syn = prepare(tmp_path / "work", "infer", model_tar)
    weights = next(Path(syn.in_dir, "models").rglob("model.pth"))
    weights.write_bytes(weights.read_bytes()[:1000])
    assert main(syn.env_file) == 1 and monitor_code(syn) == ErrorCode.MODEL


def test_weights_of_another_model(tmp_path: Path, model_tar: Path, background_tar: Path) -> None:
    syn = prepare(tmp_path / "work", "infer", model_tar)
    other = prepare(tmp_path / "other", "infer", background_tar)
    weights = next(Path(syn.in_dir, "models").rglob("model.pth"))
    weights.write_bytes(next(Path(other.in_dir, "models").rglob("model.pth")).read_bytes())
    assert main(syn.env_file) == 1 and monitor_code(syn) == ErrorCode.MODEL


def test_model_of_another_target(tmp_path: Path, model_tar: Path) -> None:
    syn = prepare(tmp_path / "work", "infer", model_tar)
    info = Path(syn.in_dir, "models", "ymir-info.yaml")
    document = yaml.safe_load(info.read_text(encoding="utf-8"))
    document["object_type"] = 2
    info.write_text(yaml.safe_dump(document), encoding="utf-8")
    assert main(syn.env_file) == 1 and monitor_code(syn) == ErrorCode.OBJECT_TYPE


def test_uncertainty_maths() -> None:
    sure = torch.tensor([[[10.0]], [[-10.0]], [[-10.0]]])
    torn = torch.tensor([[[3.0]], [[3.0]], [[-10.0]]])
    uniform = torch.zeros((3, 1, 1))
    for algorithm in ("margin", "entropy"):
        assert float(mining.pixel_uncertainty(sure, algorithm)) < 0.01
        assert float(mining.pixel_uncertainty(uniform, algorithm)) == pytest.approx(1.0)
    assert float(mining.pixel_uncertainty(torn, "margin")) == pytest.approx(1.0, abs=1e-4)
    # the score follows the most uncertain regions, not the image average
    calm = torch.zeros((64, 64))
    spot = calm.clone()
    spot[:16, :16] = 1.0
    spread = torch.full((64, 64), 0.0625)  # the same mean as spot
    assert mining.region_score(spot) > mining.region_score(spread) > mining.region_score(calm)
    assert mining.region_score(torch.ones((3, 5))) == pytest.approx(1.0)


def test_batches_group_equal_sizes(tmp_path: Path, monkeypatch) -> None:
    """Equal-size images share batches; a batch gives each image what it gets alone, also when
    a loader worker decodes it (as on a GPU machine; on the CPU workers are capped to spare
    cores, often none)."""
    monkeypatch.setattr(distributed, "loader_workers", lambda requested, cuda: requested)
    rng = np.random.RandomState(0)
    paths = []
    for index, size in enumerate([(80, 64), (80, 64), (50, 70), (80, 64), (80, 64)]):
        path = tmp_path / f"{index}.png"
        Image.fromarray(rng.randint(0, 255, (size[1], size[0], 3)).astype(np.uint8)).save(path)
        paths.append(path)
    (tmp_path / "broken.jpg").write_bytes(CORRUPT_JPEG)
    paths.append(tmp_path / "broken.jpg")
    assert predictor.same_size_batches(paths, 3) == [[0, 1, 3], [4], [2], [5]]

    files = package.untrained_stage(tmp_path / "stage", "segformer_b0", CLASS_NAMES, img_size=64)
    loaded = predictor.load(files, CLASS_NAMES, "cpu")
    alone = {item.index: item for item in predictor.predict(loaded, paths[:5], 1, 0)}
    batched = list(predictor.predict(loaded, paths, 3, 1))
    failed = [item for item in batched if isinstance(item, tuple)]
    assert [index for index, _ in failed] == [5]
    batched = [item for item in batched if not isinstance(item, tuple)]
    assert sorted(item.index for item in batched) == [0, 1, 2, 3, 4]
    for item in batched:
        assert item.original_size == alone[item.index].original_size
        assert torch.allclose(item.logits, alone[item.index].logits, atol=1e-4)
