"""MMDetection mining on the CPU: every algorithm, every model of this executor's target.

Models are packaged untrained (random weights, 64 px input), installed by the devkit and run
through the executor's entrypoint; result.tsv is checked by the devkit's verifier (one line per
candidate, finite scores sorted descending) and for what mining promises: unreadable
candidates last, ``aldd`` refused for models without a dense head, the same scores with two
gloo processes as with one, and mining + inference in one task sharing the forward passes.

An untrained model cannot tell a good ranking from a bad one, so each algorithm's score
function is also checked on its own, on inputs whose right order is known: a confident against
an ambiguous prediction, consistent against inconsistent augmented views, locally agreeing
against disagreeing class maps, and the random order's seeds.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

from conftest import assert_verified, synthesize_task, untrained_mmdetection_package
from {{ cookiecutter.package_name }}.__main__ import main
from {{ cookiecutter.package_name }}.contract.params import manifest_object_type
from {{ cookiecutter.package_name }}.devkit.chain import read_monitor_state
from {{ cookiecutter.package_name }}.devkit.synth import default_img_man
from {{ cookiecutter.package_name }}.frameworks.mmdetection import mining, models, predictor
from {{ cookiecutter.package_name }}.frameworks.openmmlab import distributed

# The tests that run a model through the entrypoint (the score functions' tests are quick).
slow = pytest.mark.slow

IMG_MAN = default_img_man()
OBJECT_TYPE = manifest_object_type(IMG_MAN)
SPECS = models.models_for(OBJECT_TYPE)
MODEL_NAMES = [spec.name for spec in SPECS]
DEFAULT_MODEL = models.default_model(OBJECT_TYPE).name
SETTINGS = {"confidence_threshold": 0.001, "batch_size_per_gpu": 2, "num_workers_per_gpu": 1}
NUM_CANDIDATES = 5


def prepare(work: Path, task: str, tar: Path, corrupt: int = 0, **overrides):
    """A synthetic /in for ``task`` with ``tar`` installed and the module's settings."""
    return synthesize_task(
        work, task, tar, {**SETTINGS, **overrides}, corrupt=corrupt, num_candidates=NUM_CANDIDATES
    )


def mined(syn) -> list:
    """result.tsv as ``[(path, score), ...]`` in file order."""
    text = Path(syn.env["output"]["mining_result_file"]).read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line]
    return [(path, float(value)) for path, value in rows]


def assert_mined(syn) -> list:
    """Verified, every candidate once, finite, the unreadable first candidate last."""
    assert_verified(syn)
    rows = mined(syn)
    assert sorted(path for path, _ in rows) == sorted(str(path) for path in syn.candidates)
    assert all(math.isfinite(value) for _, value in rows)
    assert rows[-1][0] == str(syn.candidates[0])
    assert rows[-1][1] < min(value for _, value in rows[:-1])
    return rows


@slow
@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_every_model_mines_entropy(tmp_path_factory, tmp_path: Path, model_name: str) -> None:
    tar = untrained_mmdetection_package(tmp_path_factory, model_name)
    syn = prepare(tmp_path / "work", "mining", tar, corrupt=1, mining_algorithm="entropy")
    assert main(syn.env_file) == 0
    rows = assert_mined(syn)
    assert len({value for _, value in rows[:-1]}) > 1, "entropy scored every image the same"


@slow
@pytest.mark.parametrize("spec", SPECS, ids=MODEL_NAMES)
def test_aldd_for_dense_heads_only(tmp_path_factory, tmp_path: Path, spec) -> None:
    tar = untrained_mmdetection_package(tmp_path_factory, spec.name)
    syn = prepare(tmp_path / "work", "mining", tar, corrupt=1, mining_algorithm="aldd")
    if spec.dense_head:
        assert main(syn.env_file) == 0
        assert_mined(syn)
    else:
        assert main(syn.env_file) == 1
        assert read_monitor_state(Path(syn.env["output"]["monitor_file"])) == (4, 300001)


@slow
@pytest.mark.parametrize("algorithm", ["random", "cald", "aldd"])
def test_default_model_mines(tmp_path_factory, tmp_path: Path, algorithm: str) -> None:
    tar = untrained_mmdetection_package(tmp_path_factory, DEFAULT_MODEL)
    syn = prepare(tmp_path / "work", "mining", tar, corrupt=1, mining_algorithm=algorithm)
    assert main(syn.env_file) == 0
    assert_mined(syn)


@slow
def test_random_is_reproducible(tmp_path_factory, tmp_path: Path) -> None:
    tar = untrained_mmdetection_package(tmp_path_factory, DEFAULT_MODEL)
    results = []
    for name in ("first", "second"):
        syn = prepare(tmp_path / name, "mining", tar, mining_algorithm="random", random_seed=7)
        assert main(syn.env_file) == 0
        results.append([(Path(path).name, value) for path, value in mined(syn)])
    assert results[0] == results[1]


@slow
def test_unknown_algorithm_fails_with_300001(tmp_path_factory, tmp_path: Path) -> None:
    tar = untrained_mmdetection_package(tmp_path_factory, DEFAULT_MODEL)
    syn = prepare(tmp_path / "work", "mining", tar, mining_algorithm="least_confidence")
    assert main(syn.env_file) == 1
    assert read_monitor_state(Path(syn.env["output"]["monitor_file"])) == (4, 300001)


@slow
@pytest.mark.parametrize("algorithm", ["entropy", "cald"])
def test_two_processes_equal_one(
    tmp_path_factory, tmp_path: Path, monkeypatch, algorithm: str
) -> None:
    tar = untrained_mmdetection_package(tmp_path_factory, DEFAULT_MODEL)
    one = prepare(tmp_path / "one", "mining", tar, corrupt=1, mining_algorithm=algorithm)
    assert main(one.env_file) == 0
    monkeypatch.setenv("YMIR_CPU_PROCESSES", "2")
    two = prepare(tmp_path / "two", "mining", tar, corrupt=1, mining_algorithm=algorithm)
    assert main(two.env_file) == 0
    assert_mined(two)
    # Equal up to float rounding (ranks run with other thread counts and batch neighbours).
    scores_one = {Path(path).name: value for path, value in mined(one)}
    scores_two = {Path(path).name: value for path, value in mined(two)}
    assert set(scores_two) == set(scores_one)
    for name, value in scores_one.items():
        assert scores_two[name] == pytest.approx(value, rel=1e-3, abs=1e-4), name


@slow
@pytest.mark.parametrize("algorithm", ["entropy", "aldd"])
def test_mining_and_infer_share_the_forward_passes(
    tmp_path_factory, tmp_path: Path, monkeypatch, algorithm: str
) -> None:
    tar = untrained_mmdetection_package(tmp_path_factory, DEFAULT_MODEL)
    jobs = []
    run_task_job = distributed.run_task_job

    def counting(job, *args, **kwargs):
        jobs.append(job.__name__)
        return run_task_job(job, *args, **kwargs)

    monkeypatch.setattr(distributed, "run_task_job", counting)
    both = prepare(tmp_path / "both", "mining+infer", tar, corrupt=1, mining_algorithm=algorithm)
    assert main(both.env_file) == 0
    assert_mined(both)
    assert jobs == ["mining_job"]  # inference ran no model of its own

    alone = prepare(tmp_path / "alone", "infer", tar, corrupt=1)
    config = yaml.safe_load(both.config_file.read_text(encoding="utf-8"))
    alone_config = yaml.safe_load(alone.config_file.read_text(encoding="utf-8"))
    for key in ("confidence_threshold", "iou_threshold"):
        if key in config:
            alone_config[key] = config[key]
    alone.config_file.write_text(yaml.safe_dump(alone_config, allow_unicode=True), encoding="utf-8")
    assert main(alone.env_file) == 0
    assert jobs == ["mining_job", "infer_job"]
    # The same process, batches and threads: the reused predictions are exactly the fresh ones.
    shared = Path(both.env["output"]["infer_result_file"]).read_text(encoding="utf-8")
    fresh = Path(alone.env["output"]["infer_result_file"]).read_text(encoding="utf-8")
    assert shared == fresh


def test_scores_of_the_helpers() -> None:
    assert mining.entropy_score(np.array([])) == 0.0
    assert mining.entropy_score(np.array([0.5, 0.5])) == pytest.approx(2.0)
    assert mining.entropy_score(np.array([1.0])) == pytest.approx(0.0, abs=1e-9)
    assert float(mining.bernoulli_js(np.array([0.3]), np.array([0.3]))[0]) == pytest.approx(0.0)
    boxes = np.array([[10.0, 20.0, 30.0, 60.0]])
    flipped = mining.transform_boxes(boxes, np.array([[-1.0, 0, 100], [0, 1.0, 0]]), 100, 80)
    assert flipped.tolist() == [[70.0, 20.0, 90.0, 60.0]]
    assert mining.box_iou(boxes, boxes)[0, 0] == pytest.approx(1.0)


def test_cald_sums_the_confidence_the_augmentations_lose() -> None:
    import numpy as np
    import torch

    size = (100, 80)
    box = np.array([[30.0, 20.0, 70.0, 60.0]])

    def view(boxes, scores) -> SimpleNamespace:
        instances = SimpleNamespace(
            bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            scores=torch.tensor(scores, dtype=torch.float32),
            labels=torch.zeros(len(scores), dtype=torch.long),
        )
        return SimpleNamespace(pred_instances=instances)

    def candidate(original, augmented) -> SimpleNamespace:
        views = [view(*augmented(name)) for name in mining.CALD_AUGMENTATIONS]
        return SimpleNamespace(size=size, samples=[view(*original), *views])

    def moved(name: str, shift: float = 0.0) -> tuple:
        matrix = mining.augmentation_matrix(name, *size)
        boxes = mining.transform_boxes(box, matrix, *size)
        boxes[:, [0, 2]] += shift
        return boxes.tolist(), [0.4]

    # A stray low-score box that every augmentation loses: background noise, ranks low.
    stray = candidate(([[10.0, 10.0, 20.0, 20.0]], [0.06]), lambda name: ([], []))
    # An object the augmented views find half a box away: the model is unsure where it is.
    unsure = candidate((box.tolist(), [0.4]), lambda name: moved(name, shift=15.0))
    steady = candidate((box.tolist(), [0.4]), moved)
    assert mining.cald_score(stray) == pytest.approx(0.06)
    assert mining.cald_score(unsure) > mining.cald_score(stray)
    assert mining.cald_score(steady) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", mining.CALD_AUGMENTATIONS)
def test_cald_augmentations_move_boxes_with_the_pixels(name: str) -> None:
    image = np.zeros((60, 100, 3), dtype=np.uint8)
    image[10:30, 20:50] = 255  # x 20..50, y 10..30 (box x1, y1, x2, y2 = 20, 10, 50, 30)
    augmented, matrix = mining.augment(image, name, index=3)
    assert augmented.shape == image.shape
    moved = mining.transform_boxes(np.array([[20.0, 10.0, 50.0, 30.0]]), matrix, 100, 60)[0]
    if name == "cutout":
        assert moved.tolist() == [20.0, 10.0, 50.0, 30.0]
        return
    ys, xs = np.nonzero(augmented[:, :, 0] > 127)
    found = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    # The box around the moved corners contains the moved pixels (rotation: a little more).
    assert all(abs(a - b) <= 3 for a, b in zip(found, moved)), (found, moved.tolist())


# ---------------------------------------------------------------------------------------------
# each algorithm's score on inputs whose right order is known


def test_entropy_ranks_ambiguous_detections_above_confident_ones() -> None:
    confident = mining.entropy_score(np.array([0.97, 0.95, 0.02]))
    ambiguous = mining.entropy_score(np.array([0.55, 0.45, 0.6]))
    one_ambiguous = mining.entropy_score(np.array([0.5]))
    assert ambiguous > one_ambiguous > confident > mining.entropy_score(np.array([]))


WIDTH, HEIGHT = 120, 80
# Two objects, class 0 and 1, well inside the image.
BOXES = np.array([[20.0, 15.0, 60.0, 50.0], [70.0, 30.0, 110.0, 70.0]])
LABELS = np.array([0, 1])


def sample(boxes, scores, labels) -> DetDataSample:
    data = DetDataSample()
    data.pred_instances = InstanceData(
        bboxes=torch.as_tensor(np.array(boxes, dtype=np.float32).reshape(-1, 4)),
        scores=torch.as_tensor(np.array(scores, dtype=np.float32)),
        labels=torch.as_tensor(np.array(labels, dtype=np.int64)),
    )
    return data


def cald_output(scores, view) -> predictor.BatchOutput:
    """The original view and one per augmentation, each made by ``view(moved boxes, name)``."""
    samples = [sample(BOXES, scores, LABELS)]
    for name in mining.CALD_AUGMENTATIONS:
        matrix = mining.augmentation_matrix(name, WIDTH, HEIGHT)
        moved = mining.transform_boxes(BOXES, matrix, WIDTH, HEIGHT)
        samples.append(sample(*view(moved, np.asarray(scores), name)))
    return predictor.BatchOutput(index=0, path="x.jpg", size=(WIDTH, HEIGHT), samples=samples)


def test_cald_ranks_inconsistent_views_above_consistent_ones() -> None:
    scores = [0.9, 0.8]

    def same(moved, scores, name):
        return moved, scores, LABELS

    def score_drops(moved, scores, name):  # found again, but much less sure
        return moved, scores * 0.3, LABELS

    def boxes_move(moved, scores, name):  # found, but somewhere else
        return moved + np.array([15.0, 10.0, 15.0, 10.0]), scores, LABELS

    def classes_swap(moved, scores, name):
        return moved, scores, LABELS[::-1]

    def lost(moved, scores, name):  # nothing found in any augmented view
        return np.zeros((0, 4)), [], []

    consistent = mining.cald_score(cald_output(scores, same))
    assert consistent == pytest.approx(0.0, abs=1e-6)
    for inconsistent in (score_drops, boxes_move, classes_swap):
        assert mining.cald_score(cald_output(scores, inconsistent)) > consistent + 0.1
    # Every detection lost to every view costs its whole confidence: the scores' sum, so a
    # lone unsure box that vanishes weighs less than sure objects that do.
    assert mining.cald_score(cald_output(scores, classes_swap)) == pytest.approx(sum(scores))
    assert mining.cald_score(cald_output(scores, lost)) == pytest.approx(sum(scores))
    assert mining.cald_score(cald_output([0.2, 0.1], lost)) == pytest.approx(0.3)
    # More disagreement, a higher score.
    slightly = mining.cald_score(cald_output(scores, lambda m, s, n: (m + 3.0, s, LABELS)))
    assert consistent < slightly < mining.cald_score(cald_output(scores, boxes_move))
    # No detection in the original view: nothing to be inconsistent about.
    empty = predictor.BatchOutput(
        index=0,
        path="x.jpg",
        size=(WIDTH, HEIGHT),
        samples=[sample(np.zeros((0, 4)), [], [])] * (1 + len(mining.CALD_AUGMENTATIONS)),
    )
    assert mining.cald_score(empty) == 0.0


# ALDD: one level of class maps at stride 8 for a 64 x 96 image (8 x 12 cells), two classes.
ALDD_META = {"img_shape": (64, 96), "pad_shape": (64, 96), "batch_input_shape": (64, 96)}


def aldd(probability: torch.Tensor, meta=ALDD_META) -> float:
    return mining.aldd_score([probability], meta)


def test_aldd_ranks_local_disagreement_above_agreement() -> None:
    calm = torch.full((2, 8, 12), 0.02)  # sure that nothing is there
    uniformly_unsure = torch.full((2, 8, 12), 0.5)  # unsure, but the same everywhere
    checkerboard = ((torch.arange(8)[:, None] + torch.arange(12)[None, :]) % 2).float()
    flickering = torch.stack([checkerboard, 1 - checkerboard]) * 0.96 + 0.02
    one_region = calm.clone()
    one_region[:, :4, :4] = flickering[:, :4, :4]
    sure_object = calm.clone()
    sure_object[0, 2:6, 3:9] = 0.98
    scores = {
        name: aldd(maps)
        for name, maps in {
            "flickering": flickering,
            "one region": one_region,
            "sure object": sure_object,
            "calm": calm,
            "uniformly unsure": uniformly_unsure,
        }.items()
    }
    # ALDD measures disagreement between neighbours (mutual information), not plain entropy:
    # everywhere > in one region, or along a sure object's border > none at all.
    for partly in ("one region", "sure object"):
        assert scores["flickering"] > scores[partly] > scores["calm"] + 0.1, scores
    assert scores["calm"] == pytest.approx(0.0, abs=1e-4), scores
    assert scores["uniformly unsure"] == pytest.approx(0.0, abs=1e-4), scores


def test_aldd_ignores_the_padding() -> None:
    # The image fills the left 48 of 96 padded columns; only the padding flickers.
    meta = {"img_shape": (64, 48), "pad_shape": (64, 96), "batch_input_shape": (64, 96)}
    calm = torch.full((2, 8, 12), 0.02)
    padded_noise = calm.clone()
    checkerboard = ((torch.arange(8)[:, None] + torch.arange(6)[None, :]) % 2).float()
    padded_noise[:, :, 6:] = checkerboard * 0.96 + 0.02
    assert aldd(padded_noise, meta) == pytest.approx(aldd(calm, meta), abs=1e-6)
    inside_noise = calm.clone()
    inside_noise[:, :, :6] = checkerboard * 0.96 + 0.02
    assert aldd(inside_noise, meta) > aldd(calm, meta) + 0.1


def test_random_scores_follow_the_seed_not_the_folder() -> None:
    names = [f"{index:03d}.jpg" for index in range(20)]

    def order(seed: str, folder: str = "/in/assets") -> list:
        return sorted(names, key=lambda name: mining.random_score(seed, f"{folder}/{name}"))

    assert order("task-a") == order("task-a", folder="/elsewhere")  # by file name (content)
    assert order("task-a") != order("task-b")
    scores = [mining.random_score("task-a", name) for name in names]
    assert all(0.0 <= score < 1.0 for score in scores) and len(set(scores)) == len(names)


@slow
def test_random_seed_comes_from_random_seed_else_the_task_id(
    tmp_path_factory, tmp_path: Path
) -> None:
    tar = untrained_mmdetection_package(tmp_path_factory, DEFAULT_MODEL)

    def order(name: str, task_id: str, **params) -> list:
        syn = synthesize_task(
            tmp_path / name,
            "mining",
            tar,
            {**SETTINGS, "mining_algorithm": "random", **params},
            num_candidates=12,
            task_id=task_id,
        )
        assert main(syn.env_file) == 0
        return [Path(path).name for path, _ in mined(syn)]

    by_task = order("a", "t0000000000000000000000000000aaa")
    assert order("a-again", "t0000000000000000000000000000aaa") == by_task
    assert order("b", "t0000000000000000000000000000bbb") != by_task
    seeded = order("seeded-a", "t0000000000000000000000000000aaa", random_seed=7)
    assert order("seeded-b", "t0000000000000000000000000000bbb", random_seed=7) == seeded
    assert order("seeded-8", "t0000000000000000000000000000aaa", random_seed=8) != seeded
