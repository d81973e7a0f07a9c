"""The devkit's platform simulator: synthesized /in follows the platform, run() acts like mir.

The end-to-end runs of the real executor (train -> package -> infer / mine) are in test_chain.py;
here run() is driven with a tiny stand-in executor module so that its environment, working dir,
monitor and log handling can be observed directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import sys
import tarfile
import textwrap
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import yaml
from PIL import Image

from {{ cookiecutter.package_name }}.contract.dataset import read_split
from {{ cookiecutter.package_name }}.devkit import synth
from {{ cookiecutter.package_name }}.devkit.__main__ import main as devkit_main
from {{ cookiecutter.package_name }}.devkit.chain import chain, executor_object_type, supported_tasks
from {{ cookiecutter.package_name }}.devkit.run import (
    container_name,
    docker_run_command,
    register,
    run,
    to_container_paths,
    to_host_paths,
)
from {{ cookiecutter.package_name }}.devkit.synth import default_img_man
from {{ cookiecutter.package_name }}.devkit.verify import verify_work_dir

IMG_MAN = default_img_man()
OBJECT_TYPE = executor_object_type(IMG_MAN)
TASKS = supported_tasks(IMG_MAN)
SEGMENTATION = OBJECT_TYPE in (3, 4)
TRAINING_FORMATS = ["seg-coco", "coco"] if SEGMENTATION else ["ark", "voc", "coco", "seg-coco"]

ENV_KEYS_MODERN = {
    "task_id",
    "run_training",
    "run_mining",
    "run_infer",
    "protocol_version",
    "manifest_file",
    "input",
    "output",
}
ENV_KEYS_LEGACY = ENV_KEYS_MODERN - {"protocol_version", "manifest_file"}
INPUT_KEYS = {
    "root_dir",
    "assets_dir",
    "annotations_dir",
    "models_dir",
    "training_index_file",
    "val_index_file",
    "candidate_index_file",
    "config_file",
}
OUTPUT_KEYS = {
    "root_dir",
    "models_dir",
    "tensorboard_dir",
    "training_result_file",
    "mining_result_file",
    "infer_result_file",
    "monitor_file",
    "executor_log_file",
}


_COMPLETE_IMG_MAN: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def complete_img_man(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The executor's img-man plus minimal templates for the tasks it was generated without.

    synth refuses a task the executor does not declare (the platform would never start it), but
    these tests look at the /in of every task whatever the executor offers.
    """
    folder = tmp_path_factory.mktemp("img-man")
    for path in IMG_MAN.iterdir():
        if path.is_file():
            shutil.copy(str(path), str(folder / path.name))
    export_format = "seg-coco:raw" if SEGMENTATION else "ark:raw"
    minimal = dict(
        training=f"export_format: '{export_format}'\n",
        mining="shm_size: '16G'\n",
        infer="shm_size: '16G'\n",
    )
    for task, text in minimal.items():
        if not (folder / f"{task}-template.yaml").exists():
            (folder / f"{task}-template.yaml").write_text(text, encoding="utf-8")
    _COMPLETE_IMG_MAN[:] = [folder]
    return folder


def synthesize(*args: Any, **kwargs: Any) -> synth.SynthResult:
    """synth.synthesize with the completed img-man unless the test names one."""
    kwargs.setdefault("img_man", _COMPLETE_IMG_MAN[0])
    return synth.synthesize(*args, **kwargs)


def index_lines(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line]


def detected(path: Path) -> str:
    with Image.open(path) as img:
        return img.format


@pytest.fixture
def training(tmp_path: Path) -> synth.SynthResult:
    return synthesize(tmp_path / "work", "training", OBJECT_TYPE)


@pytest.fixture
def custom_img_man(tmp_path: Path) -> Path:
    """An img-man whose templates hold every kind of value the web UI mangles."""
    folder = tmp_path / "img-man"
    folder.mkdir()
    (folder / "manifest.yaml").write_text(f"object_type: {OBJECT_TYPE}\n", encoding="utf-8")
    fmt = "seg-coco:raw" if SEGMENTATION else "ark:raw"
    template = textwrap.dedent(
        f"""\
        export_format: '{fmt}'
        shm_size: '16G'
        epochs: 3
        learning_rate: 0.01
        zero_int: 0
        zero_float: 0.0
        flag_on: true
        flag_off: false
        empty: ''
        nothing: null
        """
    )
    for name in ("training", "mining", "infer"):
        (folder / f"{name}-template.yaml").write_text(template, encoding="utf-8")
    return folder


# --- assets and index files ------------------------------------------------------------------


def test_assets_are_sha1_named_in_a_symlinked_cache(training: synth.SynthResult) -> None:
    in_dir = training.in_dir
    assert (in_dir / "assets").is_symlink()
    cache = Path(os.path.realpath(in_dir / "assets"))
    assert cache == training.assets_cache
    assert not str(cache).startswith(str(in_dir) + os.sep)

    listed = set()
    for index in (training.train_index, training.val_index):
        for image, annotation in index_lines(index):
            path = Path(image)
            assert path.is_absolute() and Path(annotation).is_absolute()
            assert path.parent.parent == in_dir / "assets"
            data = path.read_bytes()
            digest = hashlib.sha1(data).hexdigest()
            assert path.stem == digest
            assert path.parent.name == digest[-2:]
            listed.add(path.name)
    cached = {p.name for p in cache.rglob("*") if p.is_file()}
    # the shared cache holds more than the dataset: never glob in/assets
    assert listed < cached
    assert len(listed) == 12 + 6


def test_extensions_come_from_the_content_except_the_deliberate_mismatch(
    training: synth.SynthResult,
) -> None:
    formats = {"jpg": "JPEG", "png": "PNG", "bmp": "BMP"}
    kinds = training.kinds
    mismatched = [p for p, k in kinds.items() if k == "png-as-jpg"]
    assert len(mismatched) == 1
    assert mismatched[0].suffix == ".jpg" and detected(mismatched[0]) == "PNG"
    for path, kind in kinds.items():
        if kind != "png-as-jpg":
            assert formats[path.suffix[1:]] == detected(path), path


def test_special_images_are_present(training: synth.SynthResult) -> None:
    modes = {}
    for path, kind in training.kinds.items():
        with Image.open(path) as img:
            modes[kind] = img.mode
    assert modes["gray-png"] == "L"
    assert modes["rgba-png"] == "RGBA"
    assert "bmp" in modes
    negatives = [p for p, objects in training.ground_truth.items() if not objects]
    assert len(negatives) >= 2
    # both splits have positives and negatives
    for images in (training.train_images, training.val_images):
        assert any(training.ground_truth[p] for p in images)
        assert any(not training.ground_truth[p] for p in images)


def test_images_are_small_and_objects_big(training: synth.SynthResult) -> None:
    for path, objects in training.ground_truth.items():
        width, height = Image.open(path).size
        assert 64 <= width <= 96 and 64 <= height <= 96
        for obj in objects:
            assert obj.box[2] * obj.box[3] >= 0.08 * width * height
            assert obj.mask.shape == (height, width)


def test_class_names_are_not_sorted_and_one_class_never_occurs(
    training: synth.SynthResult,
) -> None:
    names = training.config["class_names"]
    assert names != sorted(names)
    used = {obj.class_id for objects in training.ground_truth.values() for obj in objects}
    absent = set(range(len(names))) - used
    assert len(absent) == 1
    assert 0 < min(absent) < len(names) - 1  # in the middle: class ids are not contiguous


# --- annotation formats ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", TRAINING_FORMATS)
def test_contract_reader_reads_back_the_ground_truth(tmp_path: Path, fmt: str) -> None:
    result = synthesize(tmp_path / "w", "training", OBJECT_TYPE, annotation_format=fmt)
    assert result.config["export_format"].split(":")[0] == fmt
    for index, images in (
        (result.train_index, result.train_images),
        (result.val_index, result.val_images),
    ):
        items = read_split(index, result.class_names, result.config["export_format"], OBJECT_TYPE)
        assert [item.image for item in items] == images
        for item in items:
            truth = result.ground_truth[item.image]
            got = sorted((a.class_id, tuple(a.box)) for a in item.annotations)
            assert got == sorted((o.class_id, o.box) for o in truth)
            if SEGMENTATION:
                for annotation in item.annotations:
                    match = next(o for o in truth if o.box == tuple(annotation.box))
                    assert np.array_equal(annotation.mask, match.mask)


def test_ark_has_seven_columns_inclusive_coordinates_and_empty_negatives(tmp_path: Path) -> None:
    if SEGMENTATION:
        pytest.skip("ark is a detection format")
    result = synthesize(tmp_path / "w", "training", OBJECT_TYPE, annotation_format="ark")
    seen_negative = False
    for image, annotation in index_lines(result.train_index) + index_lines(result.val_index):
        text = Path(annotation).read_text(encoding="utf-8")
        assert Path(annotation).name == Path(image).stem + ".txt"
        truth = result.ground_truth[Path(image)]
        if not truth:
            assert text == ""
            seen_negative = True
            continue
        rows = [line.split(", ") for line in text.splitlines()]
        assert all(len(row) == 7 for row in rows)
        for row, obj in zip(rows, truth):
            x, y, w, h = obj.box
            assert [int(v) for v in row[:5]] == [obj.class_id, x, y, x + w - 1, y + h - 1]
            assert row[5:] == ["-1.0", "0.0"]
    assert seen_negative


def test_legacy_training_is_ark_with_five_columns(tmp_path: Path) -> None:
    result = synthesize(tmp_path / "w", "training", OBJECT_TYPE, protocol="legacy")
    assert result.annotation_format == "ark"
    rows = []
    for _image, annotation in index_lines(result.train_index):
        rows += [line.split(", ") for line in Path(annotation).read_text().splitlines()]
    assert rows and all(len(row) == 5 for row in rows)


def test_voc_is_single_line_with_unknown_truncated(tmp_path: Path) -> None:
    if SEGMENTATION:
        pytest.skip("voc is a detection format")
    result = synthesize(tmp_path / "w", "training", OBJECT_TYPE, annotation_format="voc")
    image, annotation = index_lines(result.train_index)[0]
    text = Path(annotation).read_text(encoding="utf-8")
    assert "\n" not in text and not text.startswith("<?xml")
    assert f"<filename>{image}</filename>" in text
    assert "<truncated>unknown</truncated>" in text
    assert "<depth>1</depth>" in text  # the first training image is the 1-channel PNG


@pytest.mark.parametrize("fmt", ["coco", "seg-coco"])
def test_coco_is_one_shared_json_with_zero_based_present_categories(
    tmp_path: Path, fmt: str
) -> None:
    result = synthesize(tmp_path / "w", "training", OBJECT_TYPE, annotation_format=fmt)
    annotation_files = {
        a for _i, a in index_lines(result.train_index) + index_lines(result.val_index)
    }
    assert annotation_files == {str(result.in_dir / "annotations" / "coco-annotations.json")}
    coco = json.loads(Path(annotation_files.pop()).read_text(encoding="utf-8"))
    names = result.class_names
    assert sorted(c["id"] for c in coco["categories"]) == [0, 2]
    for category in coco["categories"]:
        assert names[category["id"]] == category["name"]
    file_names = [image["file_name"] for image in coco["images"]]
    assert all("/" not in name for name in file_names)
    assert file_names == sorted(file_names)  # sorted by asset id
    assert len(file_names) == 18
    kinds = set()
    for ann in coco["annotations"]:
        assert len(ann["bbox"]) == 4
        segmentation = ann["segmentation"]
        if not SEGMENTATION:
            # detection data is boxes: the exporter writes an empty segmentation and mask area
            assert segmentation == {} and ann["area"] == 0
            continue
        assert ann["area"] > 0
        if isinstance(segmentation, dict):
            assert isinstance(segmentation["counts"], str)
            kinds.add("rle")
        else:
            assert len(segmentation) == 1  # a single polygon
            kinds.add("polygon")
    if SEGMENTATION:
        assert kinds == {"rle", "polygon"}


def test_annotation_format_must_suit_the_target(tmp_path: Path) -> None:
    if not SEGMENTATION:
        pytest.skip("detection reads every annotation format the platform exports")
    with pytest.raises(ValueError, match="not valid"):
        synthesize(tmp_path / "w", "training", OBJECT_TYPE, annotation_format="ark")


# The env.yaml and config.yaml keys that tell the platform versions apart, and the formats each
# version's exporter knows (ymir-cmd's annotations.parse_anno_format, 2.0.0 to 2.3.0).
PLATFORM_FILES = {
    "1.1": (False, False, False),  # protocol_version, manifest_file, config object_type
    "2.0": (True, False, False),
    "2.1": (True, True, False),
    "2.3": (True, True, False),
    "2.4": (True, True, True),
    "2.5": (True, True, True),
}


@pytest.mark.parametrize("platform", sorted(PLATFORM_FILES))
def test_each_platform_versions_files(tmp_path: Path, platform: str) -> None:
    result = synthesize(tmp_path / "w", "training", OBJECT_TYPE, platform=platform)
    protocol, manifest, object_type = PLATFORM_FILES[platform]
    assert ("protocol_version" in result.env) == protocol
    assert result.legacy == (not protocol)
    assert ("manifest_file" in result.env) == manifest
    assert ("object_type" in result.config) == object_type


@pytest.mark.parametrize("platform", ["2.0", "2.1", "2.4", "2.5"])
@pytest.mark.parametrize("fmt", TRAINING_FORMATS)
def test_a_format_the_platform_does_not_export_leaves_empty_indexes(
    tmp_path: Path, platform: str, fmt: str
) -> None:
    result = synthesize(
        tmp_path / "w", "training", OBJECT_TYPE, platform=platform, annotation_format=fmt
    )
    exported = fmt in synth.EXPORTED_FORMATS[platform]
    expected = {
        "2.0": ("ark", "voc"),
        "2.1": ("ark", "voc", "seg-coco"),
        "2.4": ("ark", "voc", "seg-coco"),
        "2.5": ("ark", "voc", "coco", "seg-coco"),
    }[platform]
    assert exported == (fmt in expected)
    assert result.config["export_format"] == f"{fmt}:raw"
    lines = index_lines(result.train_index) + index_lines(result.val_index)
    assert len(lines) == (len(result.train_images) + len(result.val_images) if exported else 0)
    assert bool(list((result.in_dir / "annotations").iterdir())) == exported
    # the assets are exported all the same
    assert len(index_lines(result.in_dir / "idx-assets.tsv")) == 18


# --- env.yaml -----------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["1.1.0", "1.0.0", "legacy"])
@pytest.mark.parametrize("task", ["training", "mining", "infer", "mining+infer"])
def test_env_has_exactly_the_platform_keys(tmp_path: Path, protocol: str, task: str) -> None:
    work = tmp_path / "w"
    result = synthesize(work, task, OBJECT_TYPE, protocol=protocol, num_train=5, num_val=3)
    env = yaml.safe_load(result.env_file.read_text(encoding="utf-8"))
    legacy = protocol == "legacy"
    assert set(env) == (ENV_KEYS_LEGACY if legacy else ENV_KEYS_MODERN)
    assert set(env["input"]) == INPUT_KEYS
    assert set(env["output"]) == (OUTPUT_KEYS - {"executor_log_file"} if legacy else OUTPUT_KEYS)
    if not legacy:
        assert env["protocol_version"] == protocol
        assert Path(env["manifest_file"]).is_file()
    flags = (env["run_training"], env["run_mining"], env["run_infer"])
    expected = {
        "training": (True, False, False),
        "mining": (False, True, False),
        "infer": (False, False, True),
        "mining+infer": (False, True, True),
    }
    assert flags == expected[task]
    paths = [v for section in ("input", "output") for v in env[section].values() if v != ""]
    for value in paths + ([env["manifest_file"]] if not legacy else []):
        assert Path(value).is_absolute()
        assert str(value).startswith(str(work) + os.sep)
    if task == "training":
        assert env["input"]["candidate_index_file"] == ""
        assert Path(env["input"]["training_index_file"]).is_file()
    else:
        assert env["input"]["training_index_file"] == env["input"]["val_index_file"] == ""
        assert Path(env["input"]["candidate_index_file"]).is_file()
    assert len(env["task_id"]) == 30


# --- config.yaml --------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["training", "mining+infer"])
@pytest.mark.parametrize("variant", ["as-is", "drop-empty", "drop-falsy", "strings"])
def test_config_variants(tmp_path: Path, custom_img_man: Path, task: str, variant: str) -> None:
    result = synthesize(
        tmp_path / "w", task, OBJECT_TYPE, config_variant=variant, img_man=custom_img_man
    )
    config = yaml.safe_load(result.config_file.read_text(encoding="utf-8"))
    keys = {"zero_int", "zero_float", "flag_off", "empty", "nothing"}
    present = keys & set(config)
    if variant in ("as-is", "strings"):
        assert present == keys
    elif variant == "drop-empty":
        assert present == keys - {"empty"}
    else:
        assert present == set()
    if variant == "strings":
        assert config["epochs"] == "3" and config["learning_rate"] == "0.01"
        assert config["flag_on"] == "True" and config["flag_off"] == "False"
    else:
        assert config["epochs"] == 3 and config["flag_on"] is True
    # injected after the UI: never dropped, never stringified
    assert config["gpu_id"] == "" and config["gpu_count"] == 0
    assert config["task_id"] == yaml.safe_load(result.env_file.read_text())["task_id"]
    assert config["class_names"] == result.class_names
    assert config["object_type"] == OBJECT_TYPE
    if task == "training":
        assert "model_params_path" not in config and "pretrained_model_params" not in config
    else:
        assert config["run_mining"] is True and config["run_infer"] is True
        assert config["model_params_path"] == []


def test_platform_like_default_variant_per_task(tmp_path: Path, custom_img_man: Path) -> None:
    train = synthesize(
        tmp_path / "t", "training", OBJECT_TYPE, config_variant=None, img_man=custom_img_man
    )
    infer = synthesize(
        tmp_path / "i", "infer", OBJECT_TYPE, config_variant=None, img_man=custom_img_man
    )
    assert train.config_variant == "drop-empty" and infer.config_variant == "drop-falsy"


@pytest.mark.parametrize("protocol", ["1.0.0", "legacy"])
def test_object_type_is_injected_by_2_4_and_later_only(tmp_path: Path, protocol: str) -> None:
    result = synthesize(tmp_path / "w", "infer", OBJECT_TYPE, protocol=protocol)
    assert "object_type" not in result.config


@pytest.mark.parametrize("task", sorted(TASKS))
def test_config_is_the_executors_template_plus_injected_keys(tmp_path: Path, task: str) -> None:
    result = synthesize(tmp_path / "w", task, OBJECT_TYPE, img_man=IMG_MAN)
    name = f"{task}-template.yaml"
    template = yaml.safe_load((IMG_MAN / name).read_text(encoding="utf-8"))
    for key, value in template.items():
        assert result.config[key] == value
    # the template is frozen next to in/ and named by manifest_file
    assert (result.work_dir / "img-man" / name).is_file()


def test_tasks_the_executor_does_not_declare_are_refused(
    tmp_path: Path, custom_img_man: Path
) -> None:
    (custom_img_man / "mining-template.yaml").unlink()
    with pytest.raises(ValueError, match="declares no mining task"):
        synthesize(tmp_path / "w", "mining+infer", OBJECT_TYPE, img_man=custom_img_man)
    for task in ("training", "mining", "infer"):
        name = f"{task}-template.yaml"
        assert (task in TASKS) == (IMG_MAN / name).is_file()


# --- mining / infer inputs -------------------------------------------------------------------


def test_candidates_include_the_awkward_images(tmp_path: Path) -> None:
    result = synthesize(tmp_path / "w", "mining", OBJECT_TYPE, num_candidates=8)
    lines = result.candidate_index.read_text(encoding="utf-8").splitlines()
    assert [Path(line) for line in lines] == result.candidates
    assert all(Path(line).is_absolute() and Path(line).is_file() for line in lines)
    kinds = {result.kinds[p] for p in result.candidates}
    assert {"gray-png", "rgba-png", "png-as-jpg", "negative", "bmp"} <= kinds
    assert not any(result.in_dir.joinpath("annotations").iterdir())
    assert (result.in_dir / "candidate-src-index.tsv").is_file()


def test_single_image_inference_keeps_original_names(tmp_path: Path) -> None:
    result = synthesize(tmp_path / "w", "infer", OBJECT_TYPE, single_image=True, num_candidates=3)
    assert os.path.realpath(result.in_dir / "assets") == str(result.work_dir / "assets")
    names = [p.name for p in result.candidates]
    assert all(" " in name for name in names)
    assert all(any(ord(ch) > 127 for ch in name) for name in names)
    for line in result.candidate_index.read_text(encoding="utf-8").splitlines():
        assert Path(line).parent == result.in_dir / "assets"
        assert Path(line).is_file()
    with pytest.raises(ValueError, match="single-image"):
        synthesize(tmp_path / "w2", "mining", OBJECT_TYPE, single_image=True)


def test_user_images_are_hashed_and_non_images_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    Image.new("RGB", (20, 10), (255, 0, 0)).save(folder / "a photo.png")
    Image.new("L", (12, 12), 9).save(folder / "sub" / "b.jpeg", "JPEG")
    (folder / "notes.txt").write_text("not an image", encoding="utf-8")
    result = synthesize(tmp_path / "w", "infer", OBJECT_TYPE, images_dir=folder)
    assert len(result.candidates) == 2
    assert sorted(p.suffix for p in result.candidates) == [".jpg", ".png"]
    for path in result.candidates:
        assert path.stem == hashlib.sha1(path.read_bytes()).hexdigest()
    single = synthesize(tmp_path / "s", "infer", OBJECT_TYPE, images_dir=folder, single_image=True)
    assert sorted(p.name for p in single.candidates) == ["a photo.png", "b.jpeg"]
    with pytest.raises(ValueError, match="training"):
        synthesize(tmp_path / "t", "training", OBJECT_TYPE, images_dir=folder)


def test_refuses_to_overwrite_a_folder_it_did_not_make(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("...", encoding="utf-8")
    with pytest.raises(ValueError, match="refusing"):
        synthesize(precious, "infer", OBJECT_TYPE)
    assert (precious / "thesis.tex").exists()
    work = tmp_path / "w"
    synthesize(work, "infer", OBJECT_TYPE)
    synthesize(work, "training", OBJECT_TYPE)  # its own output is replaced
    assert not (work / "in" / "candidate-index.tsv").exists()


def test_same_seed_same_data(tmp_path: Path) -> None:
    first = synthesize(tmp_path / "a", "training", OBJECT_TYPE, seed=3)
    second = synthesize(tmp_path / "b", "training", OBJECT_TYPE, seed=3)
    assert [p.name for p in first.train_images] == [p.name for p in second.train_images]


# --- run() with a stand-in executor -------------------------------------------------------------

FAKE_EXECUTOR = """
import json, os, sys, time
from pathlib import Path
from typing import Any

import yaml

env_file = os.environ["YMIR_ENV_FILE"]
env = yaml.safe_load(open(env_file))
out = Path(env["output"]["root_dir"])
mode = os.environ.get("FAKE_MODE") or (out / "mode").read_text().strip()
report = dict(environ=dict(os.environ), cwd=os.getcwd(),
              monitor=open(env["output"]["monitor_file"]).read())
try:
    Path(env["input"]["root_dir"], "written-by-executor").write_text("x")
    report["in_write"] = "succeeded"
except OSError as error:
    report["in_write"] = "failed: %s" % error
if mode != "write-in":
    try:
        os.remove(os.path.join(env["input"]["root_dir"], "written-by-executor"))
    except OSError:
        pass
(out / "report.json").write_text(json.dumps(report))
print("fake executor ran")
if mode == "sleep":
    time.sleep(60)
sys.exit(3 if mode == "fail" else 0)
"""


@pytest.fixture
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    root = tmp_path / "fakeroot"
    package = root / "fake_ymir_executor"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "__main__.py").write_text(FAKE_EXECUTOR, encoding="utf-8")
    monkeypatch.syspath_prepend(str(root))
    # run() finds the package through the import system: an earlier test's module would point
    # it at that test's folder, which pytest deletes once the test passes.
    sys.modules.pop("fake_ymir_executor", None)
    yield "fake_ymir_executor"
    sys.modules.pop("fake_ymir_executor", None)


def fake_run(work: Path, package: str, mode: str, timeout: float = 60.0):
    (work / "out" / "mode").write_text(mode, encoding="utf-8")
    return run(work, timeout=timeout, package=package)


def test_run_uses_a_clean_environment_and_another_cwd(tmp_path: Path, fake_package: str) -> None:
    result = synthesize(tmp_path / "w", "training", OBJECT_TYPE, num_train=3, num_val=2)
    outcome = fake_run(result.work_dir, fake_package, "ok")
    assert outcome.returncode == 0 and outcome.ok
    report = json.loads((result.out_dir / "report.json").read_text(encoding="utf-8"))
    environ = report["environ"]
    assert set(environ) - {"LC_CTYPE"} == {"PATH", "LANG", "HOME", "YMIR_ENV_FILE", "PYTHONPATH"}
    assert environ["LANG"] == "C.UTF-8"
    assert environ["YMIR_ENV_FILE"] == str(result.env_file)
    assert not Path(environ["HOME"]).exists() and not outcome.home_written
    assert not report["cwd"].startswith(str(result.work_dir))
    assert report["cwd"] != os.getcwd()
    # the PENDING line was there before the executor started
    first = report["monitor"].split("\t")
    assert first[0] == result.env["task_id"] and first[2:] == ["0.00", "1", "0\n"]
    assert outcome.monitor_records[0] == report["monitor"]


def test_run_restores_in_permissions_and_reports_writes_under_in(
    tmp_path: Path, fake_package: str
) -> None:
    result = synthesize(tmp_path / "w", "infer", OBJECT_TYPE, num_candidates=2)
    config_mode = stat.S_IMODE(result.config_file.stat().st_mode)
    outcome = fake_run(result.work_dir, fake_package, "write-in")
    report = json.loads((result.out_dir / "report.json").read_text(encoding="utf-8"))
    if os.geteuid() != 0:
        # chmod a-w works for ordinary users: the write fails like on the read-only mount
        assert report["in_write"].startswith("failed")
        assert outcome.in_changes == []
    else:
        # root ignores permission bits: the write succeeds but is reported
        assert report["in_write"] == "succeeded"
        assert outcome.in_changes == ["created in/written-by-executor"]
    assert stat.S_IMODE(result.config_file.stat().st_mode) == config_mode
    assert os.access(str(result.in_dir), os.W_OK)


def test_run_appends_to_the_log_and_truncates_it_for_training(
    tmp_path: Path, fake_package: str
) -> None:
    infer = synthesize(tmp_path / "i", "infer", OBJECT_TYPE, num_candidates=2)
    log = infer.out_dir / "ymir-executor-out.log"
    log.write_text("from before\n", encoding="utf-8")
    fake_run(infer.work_dir, fake_package, "ok")
    fake_run(infer.work_dir, fake_package, "fail")
    assert log.read_text(encoding="utf-8").splitlines() == [
        "from before",
        "fake executor ran",
        "fake executor ran",
    ]
    assert (infer.out_dir / "tensorboard").is_dir()
    assert not (infer.out_dir / "tensorboard" / "executor.log").exists()

    train = synthesize(tmp_path / "t", "training", OBJECT_TYPE, num_train=3, num_val=2)
    log = train.out_dir / "ymir-executor-out.log"
    log.write_text("stale\n", encoding="utf-8")
    outcome = fake_run(train.work_dir, fake_package, "fail")
    assert outcome.returncode == 3 and not outcome.ok
    assert log.read_text(encoding="utf-8") == "fake executor ran\n"
    link = train.out_dir / "tensorboard" / "executor.log"
    assert link.is_symlink() and Path(os.readlink(str(link))) == log
    # as on the platform, out/tensorboard lives elsewhere
    assert (train.out_dir / "tensorboard").is_symlink()


def test_run_kills_the_executor_at_the_timeout(tmp_path: Path, fake_package: str) -> None:
    result = synthesize(tmp_path / "w", "infer", OBJECT_TYPE, num_candidates=2)
    outcome = fake_run(result.work_dir, fake_package, "sleep", timeout=2)
    assert outcome.timed_out and not outcome.ok
    assert outcome.returncode < 0
    assert outcome.duration < 30


# --- container mode, with a stand-in docker client ------------------------------------------
# The real image runs in the template's container tests; here a fake `docker` records what it is
# asked to do, so the command line, the files and the kill logic are checked without an engine.

FAKE_DOCKER = """
import json, os, signal, sys, time
from pathlib import Path

state = Path(os.environ["FAKE_DOCKER_STATE"])
args = sys.argv[1:]
with (state / "calls.jsonl").open("a") as fh:
    fh.write(json.dumps(args) + "\\n")
if args[0] == "kill":
    pid_file = state / (args[1] + ".pid")
    if not pid_file.exists():
        sys.exit("Error: No such container: " + args[1])
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    pid_file.unlink()
    sys.exit(0)
assert args[0] == "run", args
if "--entrypoint" in args:  # the hand-back chmod after a run as a non-root developer
    sys.exit(0)
if "cat" in args:  # registration: docker run --rm IMAGE cat /img-man/<file>
    source = Path(os.environ["FAKE_IMG_MAN"]) / Path(args[-1]).name
    if not source.exists():
        sys.exit("cat: " + args[-1] + ": No such file or directory")
    sys.stdout.write(source.read_text())
    sys.exit(0)
mounts = dict(reversed(args[i + 1].split(":")[:2]) for i, a in enumerate(args) if a == "-v")
name = args[args.index("--name") + 1]
(state / (name + ".pid")).write_text(str(os.getpid()))
out = Path(mounts["/out"])
snapshot = dict(
    env=(Path(mounts["/in"]) / "env.yaml").read_text(),
    monitor=(out / "monitor.txt").read_text(),
    out_mode=oct(out.stat().st_mode & 0o777),
)
(state / "snapshot.json").write_text(json.dumps(snapshot))
mode = os.environ.get("FAKE_DOCKER_MODE", "ok")
print("executor stdout")
print("executor stderr", file=sys.stderr)
sys.stdout.flush()
if mode == "progress":
    for percent in ("0.10", "0.50", "0.90"):
        line = "\\t".join(["tid", "1", percent, "2"]) + "\\n"
        (out / "monitor.txt").write_text(line)
        time.sleep(0.5)
if mode in ("progress", "sleep"):
    time.sleep(60)
(state / (name + ".pid")).unlink()
sys.exit(0)
"""


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `docker` that records its calls in <state>/calls.jsonl; returns the state folder."""
    state = tmp_path / "fake-docker"
    state.mkdir()
    script = state / "docker"
    script.write_text("#!" + sys.executable + "\n" + FAKE_DOCKER, encoding="utf-8")
    script.chmod(0o755)
    monkeypatch.setenv("FAKE_DOCKER_STATE", str(state))
    monkeypatch.setenv("FAKE_IMG_MAN", str(_COMPLETE_IMG_MAN[0]))
    return state


def docker_calls(state: Path, hand_back: bool = False) -> list[list[str]]:
    """The fake's calls; without ``hand_back``, not the chmod runs after a non-root run."""
    calls = [json.loads(line) for line in (state / "calls.jsonl").read_text().splitlines()]
    return [call for call in calls if hand_back or "--entrypoint" not in call]


def in_texts(work: Path) -> dict[str, str]:
    return {
        path.name: path.read_text(encoding="utf-8")
        for path in sorted((work / "in").iterdir())
        if path.is_file() and not path.is_symlink()
    }


@pytest.fixture
def tiny_model_tar(tmp_path: Path) -> Path:
    """A platform model package with one stage and one file (only its paths matter here)."""
    info = dict(
        package_version="2.0.0",
        best_stage_name="last",
        stages=dict(last=dict(files=["model.bin"], mAP=0.5, timestamp=1)),
        executor_config=dict(class_names=list(synth.CLASS_NAMES)),
        object_type=OBJECT_TYPE,
    )
    folder = tmp_path / "tiny-model"
    (folder / "last").mkdir(parents=True)
    (folder / "last" / "model.bin").write_bytes(b"weights")
    (folder / "ymir-info.yaml").write_text(yaml.safe_dump(info), encoding="utf-8")
    tar = tmp_path / "tiny-model.tar"
    with tarfile.open(str(tar), "w") as archive:
        archive.add(str(folder / "ymir-info.yaml"), arcname="ymir-info.yaml")
        archive.add(str(folder / "last" / "model.bin"), arcname="last/model.bin")
    return tar


@pytest.mark.parametrize("task", ["training", "mining+infer"])
def test_container_paths_are_the_platforms_and_the_rewrite_is_reversible(
    tmp_path: Path, tiny_model_tar: Path, task: str
) -> None:
    if task == "training":
        extra = dict(pretrained=tiny_model_tar)
    else:
        extra = dict(model_params=tiny_model_tar)
    result = synthesize(tmp_path / "w", task, OBJECT_TYPE, num_train=3, num_val=2, **extra)
    work = result.work_dir
    original = in_texts(work)
    changed = {path.name for path in to_container_paths(work)}
    assert {"env.yaml", "config.yaml"} <= changed
    rewritten = in_texts(work)
    for name, text in rewritten.items():
        if name != "candidate-src-index.tsv":  # mining's host-path index, left as it is
            assert str(work) + "/in" not in text and str(work) + "/out" not in text, name
    env = yaml.safe_load(rewritten["env.yaml"])
    assert env["input"]["root_dir"] == "/in" and env["output"]["root_dir"] == "/out"
    assert env["manifest_file"] == "/img-man/manifest.yaml"
    for section, root in (("input", "/in"), ("output", "/out")):
        for key, value in env[section].items():
            assert value == "" or value == root or value.startswith(root + "/"), (key, value)
    config = yaml.safe_load(rewritten["config.yaml"])
    model_key = "pretrained_model_params" if task == "training" else "model_params_path"
    assert config[model_key] and all(p.startswith("/in/models/") for p in config[model_key])
    index_names = ["train-index.tsv", "val-index.tsv"] if task == "training" else []
    for name in index_names or ["candidate-index.tsv"]:
        for fields in index_lines(work / "in" / name):
            assert all(value.startswith("/in/") for value in fields), fields
    # the verifier reads a platform-written in/ like synth's (it maps /in and /out back)
    assert not [f for f in verify_work_dir(work) if f.check_id.startswith("WRK00")]
    to_host_paths(work)
    assert in_texts(work) == original
    assert to_host_paths(work) == []  # nothing left to rewrite


def test_docker_run_command_is_the_platforms(tmp_path: Path) -> None:
    result = synthesize(tmp_path / "w", "training", OBJECT_TYPE, num_train=3, num_val=2)
    work = result.work_dir
    cache = os.path.realpath(str(result.assets_cache))
    command = docker_run_command(work, "me/exec:cpu", name="t0x", docker="/usr/bin/docker")
    assert command == [
        "/usr/bin/docker",
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        f"{work}/in:/in:ro",
        "-v",
        f"{work}/out:/out",
        "-v",
        f"{cache}:{cache}:ro",
        "--user",
        "12345:12345",
        "--shm-size",
        "256m",
        "--name",
        "t0x",
        "me/exec:cpu",
    ]
    # out/tensorboard as a symlink (training on the platform) is mounted at its real path, rw
    tensorboard = tmp_path / "tb"
    tensorboard.mkdir()
    shutil.rmtree(str(work / "out" / "tensorboard"), ignore_errors=True)
    os.symlink(str(tensorboard), str(work / "out" / "tensorboard"))
    command = docker_run_command(work, "img", name="n", user=None, shm_size="16G")
    real = os.path.realpath(str(tensorboard))
    assert command[command.index(f"{real}:{real}") - 1] == "-v"
    assert "--user" not in command and command[-5:] == ["--shm-size", "16G", "--name", "n", "img"]
    assert command.index("img") == len(command) - 1  # no command: the image's CMD runs
    # the master task id: the subtask id with character 1 set to 0
    subtask = synth.make_task_id(0, "x")
    assert len(subtask) == 30 and container_name(subtask) == "t0" + subtask[2:]
    assert container_name("my task/1") == "my-task-1"


def test_container_run_like_the_platform(tmp_path: Path, fake_docker: Path) -> None:
    result = synthesize(tmp_path / "w", "training", OBJECT_TYPE, num_train=3, num_val=2)
    work = result.work_dir
    log = result.out_dir / "ymir-executor-out.log"
    log.write_text("stale\n", encoding="utf-8")
    outcome = run(work, image="me/exec:cpu", docker=str(fake_docker / "docker"), timeout=60)
    assert outcome.ok and outcome.returncode == 0 and outcome.image == "me/exec:cpu"
    (call,) = docker_calls(fake_docker)
    assert call == outcome.command[1:]
    assert (
        call[-1] == "me/exec:cpu"
        and "--network" in call
        and call[call.index("--network") + 1] == "none"
    )
    assert call[call.index("--name") + 1] == "t0" + result.env["task_id"][2:]
    # what the container saw: container paths, the PENDING line, a world-writable /out
    snapshot = json.loads((fake_docker / "snapshot.json").read_text(encoding="utf-8"))
    assert yaml.safe_load(snapshot["env"])["input"]["root_dir"] == "/in"
    assert snapshot["monitor"].split("\t")[2:] == ["0.00", "1", "0\n"]
    assert snapshot["out_mode"] == "0o777"
    # training: the log is truncated, then stdout and stderr are appended
    assert sorted(log.read_text(encoding="utf-8").splitlines()) == [
        "executor stderr",
        "executor stdout",
    ]
    assert (result.out_dir / "tensorboard" / "executor.log").is_symlink()
    assert outcome.in_changes == []
    # a local run afterwards gets host paths back
    assert to_host_paths(work) != [] and to_host_paths(work) == []


def test_container_files_are_handed_back_to_a_non_root_developer(
    tmp_path: Path, fake_docker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = synthesize(tmp_path / "w", "infer", OBJECT_TYPE, num_candidates=2)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    run(result.work_dir, image="img", docker=str(fake_docker / "docker"), user="7:7", timeout=60)
    _executor, chmod = docker_calls(fake_docker, hand_back=True)
    assert chmod[: chmod.index("img")] == [
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        "7:7",
        "-v",
        f"{result.out_dir}:{result.out_dir}",
        "--entrypoint",
        "chmod",
    ]
    assert chmod[chmod.index("img") + 1 :] == ["-R", "a+rwX", str(result.out_dir)]
    # as root (the platform's case) nothing is handed back; without --user neither
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    run(result.work_dir, image="img", docker=str(fake_docker / "docker"), timeout=60)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    run(result.work_dir, image="img", docker=str(fake_docker / "docker"), user=None, timeout=60)
    assert len(docker_calls(fake_docker, hand_back=True)) == 4


def test_container_timeout_and_cancel_are_docker_kill(
    tmp_path: Path, fake_docker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = synthesize(tmp_path / "w", "infer", OBJECT_TYPE, num_candidates=2)
    docker = str(fake_docker / "docker")
    monkeypatch.setenv("FAKE_DOCKER_MODE", "sleep")
    outcome = run(result.work_dir, image="img", docker=docker, timeout=2)
    assert outcome.timed_out and not outcome.ok and outcome.duration < 30
    name = outcome.command[outcome.command.index("--name") + 1]
    assert ["kill", name] in docker_calls(fake_docker)

    monkeypatch.setenv("FAKE_DOCKER_MODE", "progress")
    outcome = run(result.work_dir, image="img", docker=docker, timeout=30, cancel_at=0.5)
    assert outcome.cancelled and not outcome.timed_out and not outcome.ok
    assert outcome.monitor_records[-1].split("\t")[2] == "0.50"
    assert docker_calls(fake_docker)[-1] == ["kill", name]


def test_cli_run_and_chain_with_an_image(
    tmp_path: Path, fake_docker: Path, capsys: pytest.CaptureFixture
) -> None:
    docker = str(fake_docker / "docker")
    work = tmp_path / "w"
    synthesize(work, "infer", OBJECT_TYPE, num_candidates=2)
    options = ["--image", "img:1", "--docker", docker, "--user", "1:2", "--shm-size", "1g"]
    assert devkit_main(["run", "--work", str(work), *options]) == 0
    call = docker_calls(fake_docker)[-1]
    assert call[call.index("--user") + 1] == "1:2" and call[call.index("--shm-size") + 1] == "1g"
    assert "ran: " + docker in capsys.readouterr().out

    # chain: registration reads the image's img-man first; the fake container writes no
    # result, so the first task fails verification
    report = chain(tmp_path / "chain", image="img:1", docker=docker, timeout=60)
    registration = report.steps[0]
    assert registration.name == "registration" and registration.ok, registration.note
    registered = registration.work_dir
    for name in ("manifest.yaml", "training-template.yaml", "mining-template.yaml"):
        assert (registered / name).read_text(encoding="utf-8") == (
            _COMPLETE_IMG_MAN[0] / name
        ).read_text(encoding="utf-8")
    assert len(report.steps) == 2 and not report.ok
    runs = [c for c in docker_calls(fake_docker) if c[0] == "run" and "cat" not in c]
    assert runs[-1][-1] == "img:1"
    assert devkit_main(["chain", "--work", str(tmp_path / "chain"), "--quiet", *options]) == 1


def test_registration_problems(
    tmp_path: Path, fake_docker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    img_man = tmp_path / "bad-img-man"
    img_man.mkdir()
    (img_man / "manifest.yaml").write_text("banner\nobject_type: 2\n", encoding="utf-8")
    (img_man / "infer-template.yaml").write_text("- not a mapping\n", encoding="utf-8")
    monkeypatch.setenv("FAKE_IMG_MAN", str(img_man))
    registration = register("img", tmp_path / "dest", docker=str(fake_docker / "docker"))
    assert not registration.ok and registration.tasks == []
    assert any("manifest" in problem for problem in registration.problems)
    assert any("does not match any configuration" in p for p in registration.problems)


# --- command line ------------------------------------------------------------------------------


def test_cli_synth_and_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    work = tmp_path / "cli"
    code = devkit_main(
        [
            "synth",
            "--work",
            str(work),
            "--task",
            "infer",
            "--single-image",
            "--protocol",
            "legacy",
            "--config-variant",
            "strings",
            "--img-man",
            str(_COMPLETE_IMG_MAN[0]),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "no --model given" in out
    env = yaml.safe_load((work / "in" / "env.yaml").read_text(encoding="utf-8"))
    assert "protocol_version" not in env and env["run_infer"] is True
    assert (
        devkit_main(["synth", "--work", str(work), "--task", "training", "--images", str(tmp_path)])
        == 2
    )
    missing_docker = str(tmp_path / "no-such-docker")
    assert (
        devkit_main(["run", "--work", str(work), "--image", "x", "--docker", missing_docker]) == 2
    )
    with pytest.raises(SystemExit):
        devkit_main(["synth", "--work", str(work), "--task", "bogus"])


def test_cli_runs_as_a_module(tmp_path: Path) -> None:
    import subprocess

    package = synth.__name__.split(".")[0]
    proc = subprocess.run(
        [sys.executable, "-m", f"{package}.devkit", "--help"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(Path(synth.__file__).parents[2])),
    )
    assert proc.returncode == 0
    for command in ("synth", "run", "verify", "chain"):
        assert command in proc.stdout


def test_gpus_reach_the_config_and_the_run_like_the_platform(
    tmp_path: Path, fake_package: str, fake_docker: Path
) -> None:
    """YMIR passes host GPUs with docker run --gpus and numbers them from 0 in gpu_id."""
    result = synthesize(tmp_path / "w", "infer", OBJECT_TYPE, num_candidates=2, gpu_count=2)
    config = yaml.safe_load(result.config_file.read_text(encoding="utf-8"))
    assert config["gpu_id"] == "0,1" and config["gpu_count"] == 2
    command = docker_run_command(result.work_dir, "img", name="n", gpus="2,3")
    assert command[command.index("--gpus") + 1] == '"device=2,3"'
    assert command.index("--gpus") < command.index("img")
    # locally the same GPUs through CUDA_VISIBLE_DEVICES (in-process index 0 is host GPU 2)
    (result.out_dir / "mode").write_text("ok", encoding="utf-8")
    assert run(result.work_dir, timeout=60, package=fake_package, gpus="2,3").ok
    report = json.loads((result.out_dir / "report.json").read_text(encoding="utf-8"))
    assert report["environ"]["CUDA_VISIBLE_DEVICES"] == "2,3"

    docker = str(fake_docker / "docker")
    work = tmp_path / "chain"
    arguments = ["chain", "--work", str(work), "--image", "img:1", "--docker", docker, "--quiet"]
    devkit_main([*arguments, "--gpus", "1"])
    runs = [c for c in docker_calls(fake_docker) if c[0] == "run" and "cat" not in c]
    assert runs and all(call[call.index("--gpus") + 1] == '"device=1"' for call in runs)
    config = yaml.safe_load((work / "training" / "in" / "config.yaml").read_text())
    assert config["gpu_id"] == "0" and config["gpu_count"] == 1
    with pytest.raises(SystemExit):
        devkit_main([*arguments, "--gpus", "all"])
