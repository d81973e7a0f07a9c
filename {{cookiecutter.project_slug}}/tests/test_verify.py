"""Every verifier check fires on a crafted bad output, and good outputs pass.

Each check id in ``verify.CHECKS`` has one case below that writes an output breaking exactly
that rule and asserts the id is reported; a meta-test proves no check is left without a case.
Good outputs come from the contract writers, so these tests also prove the writers and the
verifier agree.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from {{ cookiecutter.package_name }}.contract.env import OutputPaths
from {{ cookiecutter.package_name }}.contract.masks import encode_rle
from {{ cookiecutter.package_name }}.contract.monitor import Monitor
from {{ cookiecutter.package_name }}.contract.results import (
    DetectionResult,
    MiningResult,
    SegmentationResult,
    TrainingResult,
)
from {{ cookiecutter.package_name }}.contract.tensorboard import ScalarWriter
from {{ cookiecutter.package_name }}.devkit import verify
from {{ cookiecutter.package_name }}.devkit.verify import (
    CHECKS,
    Finding,
    format_findings,
    has_errors,
    run_outcome,
    verify_infer,
    verify_mining,
    verify_monitor,
    verify_static,
    verify_training,
    verify_work_dir,
)
from {{ cookiecutter.package_name }}.devkit.verify.segmentation import rle_runs, runs_to_mask

CLASS_NAMES = ["dog", "cat", "person"]
MODERN_ENV = dict(protocol_version="1.1.0")
LEGACY_ENV: dict = dict()
IMAGE_SIZES = [(64, 48), (40, 30), (32, 32)]


# -- building blocks --------------------------------------------------------------------


def outputs(out_dir: Path) -> OutputPaths:
    return OutputPaths(
        root_dir=out_dir,
        models_dir=out_dir / "models",
        tensorboard_dir=out_dir / "tensorboard",
        training_result_file=out_dir / "models" / "result.yaml",
        mining_result_file=out_dir / "result.tsv",
        infer_result_file=out_dir / "infer-result.json",
        monitor_file=out_dir / "monitor.txt",
        executor_log_file=out_dir / "ymir-executor-out.log",
    )


def make_assets(root: Path, sizes=IMAGE_SIZES) -> list:
    """Real images stored like YMIR does: <sha1>.<ext> under <sha1[-2:]>/."""
    paths = []
    for index, (width, height) in enumerate(sizes):
        image = Image.new("RGB", (width, height), (index * 40, 100, 200 - index * 30))
        scratch = root / f"scratch-{index}.png"
        scratch.parent.mkdir(parents=True, exist_ok=True)
        image.save(scratch)
        digest = hashlib.sha1(scratch.read_bytes()).hexdigest()
        target = root / "assets" / digest[-2:] / (digest + ".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch.replace(target)
        paths.append(target)
    return paths


def write_yaml(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


class Replace:
    """Returned by a mutator to replace the whole document (other return values are ignored)."""

    def __init__(self, value) -> None:
        self.value = value


def ids(findings) -> set:
    return {finding.check_id for finding in findings}


def errors(findings) -> list:
    return [finding for finding in findings if finding.severity != verify.WARNING]


# -- good outputs -------------------------------------------------------------------------


def good_img_man(root: Path, object_type: int = 2) -> Path:
    img_man = root / "img-man"
    img_man.mkdir(parents=True, exist_ok=True)
    (img_man / "manifest.yaml").write_text(f"object_type: {object_type}\n")
    export = "ark:raw" if object_type == 2 else "seg-coco:raw"
    (img_man / "training-template.yaml").write_text(
        f"# the annotation format\nexport_format: '{export}'\nshm_size: '16G'\nepochs: 10\n"
    )
    (img_man / "mining-template.yaml").write_text("mining_algorithm: entropy\nshm_size: 16G\n")
    (img_man / "infer-template.yaml").write_text("confidence_threshold: 0.05\n")
    return img_man


def good_training(out_dir: Path, object_type: int = 2, legacy: bool = False) -> Path:
    """A result.yaml with two stages written by TrainingResult, plus TensorBoard events."""
    out = outputs(out_dir)
    metric = {2: "mAP", 3: "mIoU", 4: "maskAP"}[object_type]
    writer = TrainingResult(out, object_type, legacy)
    if legacy:
        (out.models_dir).mkdir(parents=True, exist_ok=True)
        (out.models_dir / "model.json").write_text("x")
        writer.add_stage("last", ["model.json"], {"mAP": 0.4}, timestamp=1000)
    else:
        for name, value, stamp in (("epoch_1", 0.3, 1000), ("epoch_2", 0.6, 2000)):
            (out.models_dir / name).mkdir(parents=True, exist_ok=True)
            (out.models_dir / name / "model.json").write_text(name)
            writer.add_stage(
                name,
                ["model.json"],
                {metric: value},
                timestamp=stamp,
                evaluate_config={"conf_thr": 0.005, "iou_thr": 0.5},
            )
    ScalarWriter(out.tensorboard_dir).add_scalars({"train/loss": 0.5, f"val/{metric}": 0.6}, 1)
    return out.training_result_file


def load_result(out_dir: Path) -> dict:
    return yaml.safe_load((out_dir / "models" / "result.yaml").read_text())


def save_result(out_dir: Path, data) -> None:
    write_yaml(out_dir / "models" / "result.yaml", data)


def good_detection(root: Path, legacy: bool = False):
    """(out_dir, candidates) with a valid detection infer-result.json."""
    candidates = make_assets(root / "in")
    out = outputs(root / "out")
    writer = DetectionResult(out, candidates, CLASS_NAMES, legacy)
    writer.add(candidates[0], [(2, 3, 20, 10, "dog", 0.9), (0, 0, 64, 48, 2, 0.1)])
    writer.add(candidates[1], [(5.4, 6.6, 10.2, 8.9, "Cat ", np.float32(0.5))])
    writer.write()
    return root / "out", [str(path) for path in candidates]


def good_segmentation(root: Path, object_type: int = 3):
    candidates = make_assets(root / "in")
    out = outputs(root / "out")
    writer = SegmentationResult(out, candidates, CLASS_NAMES, object_type)
    for path, (width, height) in zip(candidates[:2], IMAGE_SIZES[:2]):
        mask = np.zeros((height, width), dtype=bool)
        mask[2:10, 3:12] = True
        other = np.zeros((height, width), dtype=bool)
        other[15:20, 1:30] = True
        writer.add(path, width, height, [(mask, "dog", 0.8), (other, 1, 0.4)])
    writer.write()
    return root / "out", [str(path) for path in candidates]


def good_mining(root: Path):
    candidates = make_assets(root / "in")
    out = outputs(root / "out")
    writer = MiningResult(out, candidates)
    for index, path in enumerate(candidates):
        writer.add(path, 0.1 * index)
    writer.write()
    return root / "out", [str(path) for path in candidates]


def load_infer(out_dir: Path) -> dict:
    return json.loads((out_dir / "infer-result.json").read_text())


def save_infer(out_dir: Path, data) -> None:
    write_json(out_dir / "infer-result.json", data)


def good_monitor(path: Path, task_id: str = "t1") -> Path:
    monitor = Monitor(path, task_id)
    monitor.progress(0.0)
    monitor.progress(0.5)
    monitor.progress(1.0)
    return path


# -- good outputs pass --------------------------------------------------------------------


@pytest.mark.parametrize("object_type", [2, 3, 4])
def test_good_img_man_passes(tmp_path, object_type):
    assert verify_static(good_img_man(tmp_path, object_type)) == []


@pytest.mark.parametrize("object_type,legacy", [(2, False), (3, False), (4, False), (2, True)])
def test_good_training_passes(tmp_path, object_type, legacy):
    good_training(tmp_path / "out", object_type, legacy)
    env = LEGACY_ENV if legacy else MODERN_ENV
    assert verify_training(tmp_path / "out", env, {}, object_type) == []


@pytest.mark.parametrize("legacy", [False, True])
def test_good_detection_passes(tmp_path, legacy):
    out_dir, candidates = good_detection(tmp_path, legacy)
    assert verify_infer(out_dir, candidates, CLASS_NAMES, 2, legacy) == []


@pytest.mark.parametrize("object_type", [3, 4])
def test_good_segmentation_passes(tmp_path, object_type):
    out_dir, candidates = good_segmentation(tmp_path, object_type)
    assert verify_infer(out_dir, candidates, CLASS_NAMES, object_type, False) == []


def test_good_mining_passes(tmp_path):
    out_dir, candidates = good_mining(tmp_path)
    assert verify_mining(out_dir, candidates) == []


def test_good_monitor_passes(tmp_path):
    path = good_monitor(tmp_path / "monitor.txt")
    assert verify_monitor(path, expect_success=True, task_id="t1") == []


def test_failed_monitor_passes_when_failure_expected(tmp_path):
    monitor = Monitor(tmp_path / "monitor.txt", "t1")
    monitor.progress(0.3)
    monitor.error(300002, "no valid training image\nsecond line")
    assert verify_monitor(tmp_path / "monitor.txt", expect_success=False) == []
    assert "MON012" in ids(verify_monitor(tmp_path / "monitor.txt", expect_success=True))


def test_unexpected_failure_without_code_passes(tmp_path):
    Monitor(tmp_path / "monitor.txt", "t1").error(None, "Traceback ...")
    assert verify_monitor(tmp_path / "monitor.txt", expect_success=False) == []


# -- one crafted bad output per check -----------------------------------------------------

CASES: dict = dict()


def case(check_id):
    def register(function):
        assert check_id not in CASES, check_id
        CASES[check_id] = function
        return function

    return register


# img-man


def static(root: Path, manifest, templates: dict, folder: str = "") -> list:
    img_man = root / "img-man"
    img_man.mkdir(parents=True, exist_ok=True)
    if manifest is not None:
        (img_man / "manifest.yaml").write_text(manifest)
    for name, text in templates.items():
        path = img_man / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return verify_static(img_man)


GOOD_TRAINING = "export_format: 'ark:raw'\nshm_size: '16G'\n"


@case("MAN001")
def _man001(tmp):
    return static(tmp, None, dict([("training-template.yaml", GOOD_TRAINING)]))


@case("MAN002")
def _man002(tmp):
    return static(tmp, "object_type: [2\n", dict([("training-template.yaml", GOOD_TRAINING)]))


@case("MAN003")
def _man003(tmp):
    return static(tmp, "object_type: det\n", dict([("training-template.yaml", GOOD_TRAINING)]))


@case("MAN004")
def _man004(tmp):
    return static(tmp, "object_type: 7\n", dict([("training-template.yaml", GOOD_TRAINING)]))


@case("MAN005")
def _man005(tmp):
    return static(
        tmp, "object_type: [2]\n", dict([("training-template.yaml", GOOD_TRAINING)]), folder="det"
    )


@case("MAN006")
def _man006(tmp):
    return static(
        tmp,
        "object_type: [2, 3]\n",
        dict([("training-template.yaml", GOOD_TRAINING)]),
        folder="det",
    )


@case("TPL001")
def _tpl001(tmp):
    return static(tmp, "object_type: 2\n", dict())


@case("TPL002")
def _tpl002(tmp):
    return static(
        tmp,
        "object_type: 2\n",
        dict(
            [
                ("training-template.yaml", "epochs: [1\n"),
                ("infer-template.yaml", "confidence_threshold: 0.1\n"),
            ]
        ),
    )


@case("TPL003")
def _tpl003(tmp):
    return static(
        tmp,
        "object_type: 2\n",
        dict(
            [
                ("training-template.yaml", GOOD_TRAINING),
                ("mining-template.yaml", "# nothing\n"),
            ]
        ),
    )


@case("TPL004")
def _tpl004(tmp):
    return static(
        tmp,
        "object_type: 2\n",
        dict([("training-template.yaml", GOOD_TRAINING + "img_size: [640, 640]\n")]),
    )


@case("TPL005")
def _tpl005(tmp):
    return static(
        tmp, "object_type: 2\n", dict([("training-template.yaml", GOOD_TRAINING + "1: one\n")])
    )


@case("TPL006")
def _tpl006(tmp):
    return static(
        tmp, "object_type: 2\n", dict([("training-template.yaml", "export_format: ark\n")])
    )


@case("TPL007")
def _tpl007(tmp):
    return static(
        tmp,
        "object_type: 3\n",
        dict([("training-template.yaml", "export_format: 'ark:raw'\n")]),
    )


@case("TPL014")
def _tpl014(tmp):
    return static(
        tmp, "object_type: 2\n", dict([("training-template.yaml", "export_format: 'coco:raw'\n")])
    )


def test_detection_accepts_both_coco_exports(tmp_path):
    """seg-coco is the only COCO export of YMIR 2.1-2.4: a detection executor may ask for it."""
    for number, value in enumerate(("seg-coco:raw", "det-voc:raw")):
        templates = dict([("training-template.yaml", f"export_format: '{value}'\n")])
        assert static(tmp_path / str(number), "object_type: 2\n", templates) == []


@case("TPL008")
def _tpl008(tmp):
    return static(tmp, "object_type: 2\n", dict([("training-template.yaml", "epochs: 3\n")]))


@case("TPL009")
def _tpl009(tmp):
    return static(
        tmp, "object_type: 2\n", dict([("infer-template.yaml", "shm_size: 16 gigabytes\n")])
    )


@case("TPL010")
def _tpl010(tmp):
    return static(
        tmp, "object_type: 2\n", dict([("infer-template.yaml", "gpu_id: '0'\nclass_names: []\n")])
    )


@case("TPL011")
def _tpl011(tmp):
    return static(tmp, "object_type: 2\n", dict([("infer-template.yaml", "k" * 51 + ": 1\n")]))


@case("TPL012")
def _tpl012(tmp):
    return static(
        tmp,
        "object_type: 2\n",
        dict([("infer-template.yaml", "cfg_options: '" + "x" * 101 + "'\n")]),
    )


@case("TPL013")
def _tpl013(tmp):
    return static(
        tmp, "object_type: 2\n", dict([("infer-template.yaml", "seed: 123456789012345678901\n")])
    )


# monitor.txt


def monitor(tmp: Path, text, expect_success=True, task_id=None) -> list:
    path = tmp / "monitor.txt"
    if text is not None:
        path.write_text(text)
    return verify_monitor(path, expect_success, task_id=task_id)


@case("MON001")
def _mon001(tmp):
    return monitor(tmp, None)


@case("MON002")
def _mon002(tmp):
    return monitor(tmp, "")


@case("MON003")
def _mon003(tmp):
    return monitor(tmp, "t1 1663839980.1 1.00 2 0\n")


@case("MON004")
def _mon004(tmp):
    return monitor(tmp, "t1\tyesterday\t1.00\t2\t0\n")


@case("MON005")
def _mon005(tmp):
    return monitor(tmp, "t1\t1663839980.1\thalf\t2\t0\n")


@case("MON006")
def _mon006(tmp):
    return monitor(tmp, "t1\t1663839980.1\t55\t2\t0\n")


@case("MON007")
def _mon007(tmp):
    return monitor(tmp, "t1\t1663839980.1\t1.00\trunning\t0\n")


@case("MON008")
def _mon008(tmp):
    return monitor(tmp, "t1\t1663839980.1\t1.00\t3\t0\n")


@case("MON009")
def _mon009(tmp):
    return monitor(tmp, "t1\t1663839980.1\t1.00\t0\t0\n")


@case("MON010")
def _mon010(tmp):
    return monitor(tmp, "t1\t1663839980.1\t1.00\t2\tok\n")


@case("MON011")
def _mon011(tmp):
    return monitor(tmp, "t1\t1663839980.1\t0.50\t2\t0\n")


@case("MON012")
def _mon012(tmp):
    return monitor(tmp, "t1\t1663839980.1\t1.00\t4\t300001\n")


@case("MON013")
def _mon013(tmp):
    return monitor(tmp, "t1\t1663839980.1\t0.40\t2\t0\n", expect_success=False)


@case("MON014")
def _mon014(tmp):
    return monitor(tmp, "t1\t1663839980.1\t1.00\t2\t7\n")


@case("MON015")
def _mon015(tmp):
    return monitor(tmp, "t1\t1663839980.1\t0.40\t4\t12345\n", expect_success=False)


@case("MON016")
def _mon016(tmp):
    text = "t1\t1663839980.1\t0.40\t4\t300004\n" + "".join(
        f"frame {number}\n" for number in range(120)
    )
    return monitor(tmp, text, expect_success=False)


@case("MON017")
def _mon017(tmp):
    return monitor(tmp, "t1\t1663839980.1\t1.00\t2\t0\n", task_id="t2")


# training


def training(tmp: Path, mutate=None, object_type=2, legacy=False, env=None) -> list:
    out_dir = tmp / "out"
    good_training(out_dir, object_type, legacy)
    if mutate is not None:
        data = load_result(out_dir)
        result = mutate(data, out_dir)
        save_result(out_dir, result.value if isinstance(result, Replace) else data)
    if env is None:
        env = LEGACY_ENV if legacy else MODERN_ENV
    return verify_training(out_dir, env, dict(), object_type)


def stage(data, name="epoch_2") -> dict:
    return data["model_stages"][name]


@case("TRN001")
def _trn001(tmp):
    good_training(tmp / "out")
    (tmp / "out" / "models" / "result.yaml").unlink()
    return verify_training(tmp / "out", MODERN_ENV, dict(), 2)


@case("TRN002")
def _trn002(tmp):
    good_training(tmp / "out")
    (tmp / "out" / "models" / "result.yaml").write_text("mAP: !!python/object/apply:float [1]\n")
    return verify_training(tmp / "out", MODERN_ENV, dict(), 2)


@case("TRN003")
def _trn003(tmp):
    return training(tmp, lambda data, out: Replace(["epoch_1"]))


@case("TRN004")
def _trn004(tmp):
    return training(tmp, lambda data, out: data.update(model=["epoch_2/model.json"], map=0.6))


@case("TRN005")
def _trn005(tmp):
    def legacy_format(data, out):
        (out / "models" / "model.json").write_text("x")
        return Replace(dict(model=["model.json"], map=0.5))

    return training(tmp, legacy_format)


@case("TRN006")
def _trn006(tmp):
    return training(tmp, env=LEGACY_ENV)


@case("TRN010")
def _trn010(tmp):
    return training(tmp, lambda data, out: data.update(model_stages=dict()))


@case("TRN011")
def _trn011(tmp):
    return training(tmp, lambda data, out: stage(data).pop("timestamp"))


@case("TRN012")
def _trn012(tmp):
    return training(tmp, lambda data, out: stage(data).update(stage_name="epoch2"))


def rename_stage(data, out, new):
    entry = data["model_stages"].pop("epoch_2")
    entry["stage_name"] = new
    data["model_stages"][new] = entry
    data["best_stage_name"] = new
    (out / "models" / "epoch_2").rename(out / "models" / new)


@case("TRN013")
def _trn013(tmp):
    return training(tmp, lambda data, out: rename_stage(data, out, "best@2"))


@case("TRN014")
def _trn014(tmp):
    return training(tmp, lambda data, out: rename_stage(data, out, "2nd"))


@case("TRN015")
def _trn015(tmp):
    return training(tmp, lambda data, out: stage(data).update(files="model.json"))


@case("TRN016")
def _trn016(tmp):
    return training(
        tmp,
        lambda data, out: stage(data).update(
            files=[str(out / "models" / "epoch_2" / "model.json")]
        ),
    )


@case("TRN017")
def _trn017(tmp):
    return training(tmp, lambda data, out: stage(data).update(files=["model.pt"]))


@case("TRN018")
def _trn018(tmp):
    def link(data, out):
        target = out / "models" / "epoch_2" / "model.json"
        real = tmp / "elsewhere.json"
        real.write_text("x")
        target.unlink()
        os.symlink(str(real), str(target))

    return training(tmp, link)


@case("TRN019")
def _trn019(tmp):
    return training(tmp, lambda data, out: stage(data).update(timestamp="yesterday"))


@case("TRN020")
def _trn020(tmp):
    return training(tmp, lambda data, out: stage(data).update(mAP=55.0))


@case("TRN021")
def _trn021(tmp):
    return training(tmp, lambda data, out: stage(data).update(tp=-1))


@case("TRN022")
def _trn022(tmp):
    return training(tmp, lambda data, out: stage(data).pop("mAP"), object_type=3)


@case("TRN023")
def _trn023(tmp):
    return training(tmp, lambda data, out: stage(data).pop("mIoU"), object_type=3)


@case("TRN024")
def _trn024(tmp):
    return training(tmp, lambda data, out: data.update(best_stage_name="epoch_9"))


@case("TRN025")
def _trn025(tmp):
    return training(tmp, lambda data, out: data.update(best_stage_name="epoch_1"))


@case("TRN026")
def _trn026(tmp):
    return training(tmp, lambda data, out: data.update(evaluate_config=dict(conf_thr="low")))


@case("TRN027")
def _trn027(tmp):
    return training(tmp, lambda data, out: data.update(attachments=dict(deploy=["model.onnx"])))


@case("TRN028")
def _trn028(tmp):
    return training(tmp, lambda data, out: data.pop("object_type"))


@case("TRN029")
def _trn029(tmp):
    return training(tmp, lambda data, out: data.update(object_type=3))


@case("TRN030")
def _trn030(tmp):
    def many(data, out):
        for number in range(3, 15):
            name = f"epoch_{number}"
            (out / "models" / name).mkdir()
            (out / "models" / name / "model.json").write_text(name)
            data["model_stages"][name] = dict(
                stage_name=name, files=["model.json"], timestamp=3000 + number, mAP=0.1
            )

    return training(tmp, many)


@case("TRN040")
def _trn040(tmp):
    return training(tmp, lambda data, out: data.update(model="model.json"), legacy=True)


@case("TRN041")
def _trn041(tmp):
    return training(tmp, lambda data, out: data.pop("map"), legacy=True)


@case("TRN042")
def _trn042(tmp):
    def nested(data, out):
        (out / "models" / "last").mkdir()
        (out / "models" / "model.json").rename(out / "models" / "last" / "model.json")
        data["model"] = ["last/model.json"]

    return training(tmp, nested, legacy=True)


@case("TRN050")
def _trn050(tmp):
    good_training(tmp / "out")
    for path in (tmp / "out" / "tensorboard").iterdir():
        path.unlink()
    return verify_training(tmp / "out", MODERN_ENV, dict(), 2)


@case("TRN051")
def _trn051(tmp):
    good_training(tmp / "out")
    for path in (tmp / "out" / "tensorboard").iterdir():
        path.unlink()
    # what the devkit and the platform put there themselves, and an event file with no scalar
    (tmp / "out" / "tensorboard" / "executor.log").write_text("log")
    ScalarWriter(tmp / "out" / "tensorboard")
    return verify_training(tmp / "out", MODERN_ENV, dict(), 2)


def test_tensorboard_curves_of_any_writer_are_read(tmp_path):
    """A torn or foreign event file is reported, not a crash; scalars in sub-folders count."""
    good_training(tmp_path / "out")
    board = tmp_path / "out" / "tensorboard"
    for path in board.iterdir():
        path.unlink()
    ScalarWriter(board / "run-1").add_scalar("loss", 0.25, 3)
    assert "TRN051" not in ids(verify_training(tmp_path / "out", MODERN_ENV, dict(), 2))
    (board / "events.out.tfevents.2.broken").write_bytes(b"\x05\x00")
    findings = verify_training(tmp_path / "out", MODERN_ENV, dict(), 2)
    assert "TRN051" in ids(findings)
    assert "unreadable event file" in format_findings(findings)


# detection infer


def detection(tmp: Path, mutate, legacy=False) -> list:
    out_dir, candidates = good_detection(tmp, legacy)
    data = load_infer(out_dir)
    result = mutate(data, candidates)
    save_infer(out_dir, result.value if isinstance(result, Replace) else data)
    return verify_infer(out_dir, candidates, CLASS_NAMES, 2, legacy)


def first_box(data, candidates, key="boxes") -> dict:
    return data["detection"][os.path.basename(candidates[0])][key][0]


@case("INF001")
def _inf001(tmp):
    out_dir, candidates = good_detection(tmp)
    (out_dir / "infer-result.json").unlink()
    return verify_infer(out_dir, candidates, CLASS_NAMES, 2, False)


@case("INF002")
def _inf002(tmp):
    out_dir, candidates = good_detection(tmp)
    (out_dir / "infer-result.json").write_text('{"detection": ')
    return verify_infer(out_dir, candidates, CLASS_NAMES, 2, False)


@case("DET001")
def _det001(tmp):
    return detection(tmp, lambda data, cands: Replace(data["detection"]))


@case("DET002")
def _det002(tmp):
    return detection(tmp, lambda data, cands: data["detection"].pop(os.path.basename(cands[2])))


@case("DET003")
def _det003(tmp):
    return detection(
        tmp, lambda data, cands: data["detection"].update([("0" * 40 + ".jpg", dict(boxes=[]))])
    )


@case("DET004")
def _det004(tmp):
    def full_path(data, cands):
        key = os.path.basename(cands[2])
        data["detection"][cands[2]] = data["detection"].pop(key)

    return detection(tmp, full_path)


@case("DET005")
def _det005(tmp):
    return detection(
        tmp, lambda data, cands: data["detection"].update([(os.path.basename(cands[2]), [])])
    )


@case("DET006")
def _det006(tmp):
    def boxes_key(data, cands):
        entry = data["detection"][os.path.basename(cands[0])]
        entry["boxes"] = entry.pop("annotations")

    return detection(tmp, boxes_key, legacy=True)


@case("DET007")
def _det007(tmp):
    def annotations_key(data, cands):
        entry = data["detection"][os.path.basename(cands[0])]
        entry["annotations"] = entry.pop("boxes")

    return detection(tmp, annotations_key)


@case("DET010")
def _det010(tmp):
    return detection(tmp, lambda data, cands: first_box(data, cands).pop("box"))


@case("DET011")
def _det011(tmp):
    return detection(tmp, lambda data, cands: first_box(data, cands)["box"].update(score=0.5))


@case("DET012")
def _det012(tmp):
    return detection(tmp, lambda data, cands: first_box(data, cands)["box"].update(x=2.5))


@case("DET013")
def _det013(tmp):
    return detection(
        tmp, lambda data, cands: first_box(data, cands)["box"].update(rotate_angle="0")
    )


@case("DET014")
def _det014(tmp):
    return detection(tmp, lambda data, cands: first_box(data, cands)["box"].update(w=0))


@case("DET015")
def _det015(tmp):
    return detection(tmp, lambda data, cands: first_box(data, cands)["box"].update(x=60))


@case("DET016")
def _det016(tmp):
    return detection(tmp, lambda data, cands: first_box(data, cands).update(class_name=" "))


@case("DET017")
def _det017(tmp):
    return detection(tmp, lambda data, cands: first_box(data, cands).update(class_name="zebra"))


@case("DET018")
def _det018(tmp):
    return detection(tmp, lambda data, cands: first_box(data, cands).pop("score"))


@case("DET019")
def _det019(tmp):
    return detection(tmp, lambda data, cands: first_box(data, cands).update(score=1.5))


@case("DET021")
def _det021(tmp):
    def mutate(data, _candidates):
        for entry in data["detection"].values():
            for box in entry["annotations"]:
                box["box"]["rotate_angle"] = 0.0

    return detection(tmp, mutate, legacy=True)


@case("DET020")
def _det020(tmp):
    def crowd(data, cands):
        entry = data["detection"][os.path.basename(cands[0])]
        entry["annotations"] = entry["annotations"][:1] * 51

    return detection(tmp, crowd, legacy=True)


# segmentation infer


def segmentation(tmp: Path, mutate, object_type=3) -> list:
    out_dir, candidates = good_segmentation(tmp, object_type)
    data = load_infer(out_dir)
    result = mutate(data, candidates)
    save_infer(out_dir, result.value if isinstance(result, Replace) else data)
    return verify_infer(out_dir, candidates, CLASS_NAMES, object_type, False)


def first_annotation(data) -> dict:
    return data["annotations"][0]


@case("SEG001")
def _seg001(tmp):
    return segmentation(tmp, lambda data, cands: data.pop("categories"))


@case("SEG002")
def _seg002(tmp):
    return segmentation(tmp, lambda data, cands: data.update(annotations=dict()))


@case("SEG003")
def _seg003(tmp):
    return segmentation(tmp, lambda data, cands: data["images"][2].pop("file_name"))


@case("SEG004")
def _seg004(tmp):
    return segmentation(
        tmp,
        lambda data, cands: data["images"][2].update(
            file_name="assets/" + data["images"][2]["file_name"]
        ),
    )


@case("SEG005")
def _seg005(tmp):
    return segmentation(tmp, lambda data, cands: data["images"][2].update(file_name="other.png"))


@case("SEG006")
def _seg006(tmp):
    return segmentation(tmp, lambda data, cands: data["images"].pop(2))


@case("SEG007")
def _seg007(tmp):
    return segmentation(tmp, lambda data, cands: data["images"][2].update(id=1))


@case("SEG008")
def _seg008(tmp):
    return segmentation(tmp, lambda data, cands: data["categories"][0].pop("name"))


@case("SEG009")
def _seg009(tmp):
    return segmentation(tmp, lambda data, cands: data["categories"][0].update(name="zebra"))


@case("SEG010")
def _seg010(tmp):
    return segmentation(tmp, lambda data, cands: first_annotation(data).pop("category_id"))


@case("SEG011")
def _seg011(tmp):
    return segmentation(tmp, lambda data, cands: first_annotation(data).update(image_id=99))


@case("SEG012")
def _seg012(tmp):
    return segmentation(tmp, lambda data, cands: first_annotation(data).update(bbox=[1, 2, 3]))


@case("SEG013")
def _seg013(tmp):
    return segmentation(tmp, lambda data, cands: first_annotation(data).update(bbox=[1, 2, 0, 3]))


@case("SEG014")
def _seg014(tmp):
    return segmentation(tmp, lambda data, cands: first_annotation(data).pop("area"))


@case("SEG015")
def _seg015(tmp):
    return segmentation(
        tmp, lambda data, cands: first_annotation(data).update(segmentation="mask.png")
    )


@case("SEG016")
def _seg016(tmp):
    return segmentation(
        tmp, lambda data, cands: first_annotation(data)["segmentation"].update(counts=[0, 10, 3062])
    )


@case("SEG017")
def _seg017(tmp):
    return segmentation(
        tmp, lambda data, cands: first_annotation(data)["segmentation"].update(counts="!!not-rle")
    )


@case("SEG018")
def _seg018(tmp):
    def resized(data, cands):
        mask = np.zeros((10, 10), dtype=bool)
        mask[1:4, 1:4] = True
        first_annotation(data).update(segmentation=encode_rle(mask), area=9)

    return segmentation(tmp, resized)


@case("SEG019")
def _seg019(tmp):
    return segmentation(
        tmp,
        lambda data, cands: first_annotation(data).update(
            segmentation=[[1, 1, 9, 1, 9, 9], [20, 20, 25, 20, 25, 25]]
        ),
    )


@case("SEG020")
def _seg020(tmp):
    return segmentation(
        tmp, lambda data, cands: first_annotation(data).update(segmentation=[[1, 1, 9]])
    )


@case("SEG021")
def _seg021(tmp):
    return segmentation(
        tmp, lambda data, cands: first_annotation(data).pop("confidence"), object_type=4
    )


@case("SEG022")
def _seg022(tmp):
    return segmentation(
        tmp, lambda data, cands: first_annotation(data).update(confidence=80), object_type=4
    )


@case("SEG023")
def _seg023(tmp):
    return segmentation(tmp, lambda data, cands: first_annotation(data).update(confidence=0.5))


@case("SEG024")
def _seg024(tmp):
    return segmentation(tmp, lambda data, cands: data["images"][0].update(width=640))


@case("SEG025")
def _seg025(tmp):
    return segmentation(tmp, lambda data, cands: first_annotation(data).update(area=1))


# mining


def mining(tmp: Path, mutate) -> list:
    out_dir, candidates = good_mining(tmp)
    path = out_dir / "result.tsv"
    lines = path.read_text().splitlines()
    result = mutate(lines, candidates)
    path.write_text("".join(line + "\n" for line in (lines if result is None else result)))
    return verify_mining(out_dir, candidates)


@case("MIN001")
def _min001(tmp):
    out_dir, candidates = good_mining(tmp)
    (out_dir / "result.tsv").unlink()
    return verify_mining(out_dir, candidates)


@case("MIN002")
def _min002(tmp):
    return mining(tmp, lambda lines, cands: [line.replace("\t", " ") for line in lines])


@case("MIN003")
def _min003(tmp):
    return mining(tmp, lambda lines, cands: [lines[0].split("\t")[0] + "\tnan", *lines[1:]])


@case("MIN004")
def _min004(tmp):
    return mining(tmp, lambda lines, cands: [*lines, "/in/assets/ff/" + "f" * 40 + ".png\t-5"])


@case("MIN005")
def _min005(tmp):
    return mining(tmp, lambda lines, cands: [*lines, lines[-1]])


@case("MIN006")
def _min006(tmp):
    return mining(tmp, lambda lines, cands: lines[:-1])


@case("MIN007")
def _min007(tmp):
    return mining(tmp, lambda lines, cands: list(reversed(lines)))


@case("MIN008")
def _min008(tmp):
    images = make_assets(tmp / "in")
    renamed = []
    for index, path in enumerate(images):
        target = path.with_name(f"photo {index}.png")
        path.rename(target)
        renamed.append(target)
    writer = MiningResult(outputs(tmp / "out"), renamed)
    for index, path in enumerate(renamed):
        writer.add(path, float(index))
    writer.write()
    return verify_mining(tmp / "out", [str(path) for path in renamed])


# work dirs


def work_dir(
    root: Path,
    task: str = "training",
    protocol="1.1.0",
    container_paths=False,
    object_type: int = 2,
) -> Path:
    """A complete, successful work dir: in/ (env, config, index) and out/ from the writers."""
    in_dir, out_dir = root / "in", root / "out"
    in_root = Path("/in") if container_paths else in_dir
    out_root = Path("/out") if container_paths else out_dir
    in_dir.mkdir(parents=True)
    candidates = make_assets(in_dir)
    training_task = task == "training"
    env = dict(
        task_id="t0001",
        run_training=training_task,
        run_mining="mining" in task,
        run_infer="infer" in task,
        manifest_file="/img-man/manifest.yaml",
        input=dict(
            root_dir=str(in_root),
            assets_dir=str(in_root / "assets"),
            annotations_dir=str(in_root / "annotations"),
            models_dir=str(in_root / "models"),
            training_index_file=str(in_root / "train-index.tsv") if training_task else "",
            val_index_file=str(in_root / "val-index.tsv") if training_task else "",
            candidate_index_file="" if training_task else str(in_root / "candidate-index.tsv"),
            config_file=str(in_root / "config.yaml"),
        ),
        output=dict(
            root_dir=str(out_root),
            models_dir=str(out_root / "models"),
            tensorboard_dir=str(out_root / "tensorboard"),
            training_result_file=str(out_root / "models" / "result.yaml"),
            mining_result_file=str(out_root / "result.tsv"),
            infer_result_file=str(out_root / "infer-result.json"),
            monitor_file=str(out_root / "monitor.txt"),
            executor_log_file=str(out_root / "ymir-executor-out.log"),
        ),
    )
    if protocol is not None:
        env["protocol_version"] = protocol
    write_yaml(in_dir / "env.yaml", env)
    write_yaml(
        in_dir / "config.yaml",
        dict(class_names=CLASS_NAMES, object_type=object_type, gpu_id="", gpu_count=0),
    )
    as_given = [str(in_root / path.relative_to(in_dir)) for path in candidates]
    if not training_task:
        (in_dir / "candidate-index.tsv").write_text("".join(p + "\n" for p in as_given))
    out = outputs(out_dir)
    legacy = protocol is None
    if training_task:
        good_training(out_dir, object_type, legacy)
    if "mining" in task:
        writer = MiningResult(out, as_given)
        for index, path in enumerate(as_given):
            writer.add(path, 1.0 - 0.1 * index)
        writer.write()
    if "infer" in task:
        boxes = DetectionResult(out, candidates, CLASS_NAMES, legacy)
        boxes.add(candidates[0], [(1, 1, 10, 10, 0, 0.7)])
        boxes.write()
    good_monitor(out.monitor_file, "t0001")
    return root


@pytest.mark.parametrize("task", ["training", "mining", "infer", "mining+infer"])
@pytest.mark.parametrize("protocol", ["1.1.0", None])
@pytest.mark.parametrize("container_paths", [False, True])
def test_good_work_dir_passes(tmp_path, task, protocol, container_paths):
    root = work_dir(tmp_path / "work", task, protocol, container_paths)
    findings = verify_work_dir(root)
    assert findings == [], format_findings(findings)


def test_work_dir_finds_errors_in_each_output(tmp_path):
    root = work_dir(tmp_path / "work", "mining+infer")
    (root / "out" / "result.tsv").write_text("")
    data = load_infer(root / "out")
    data["detection"].popitem()
    save_infer(root / "out", data)
    found = ids(verify_work_dir(root))
    assert {"MIN006", "DET002"} <= found


@pytest.mark.parametrize(("mining", "infer"), [("yes", "no"), ("Y", "n"), ("on", "off"), (1, 0)])
def test_run_flags_are_read_as_the_executor_reads_them(tmp_path, mining, infer):
    """One boolean reading (YMIR's own) for the verifier and the executor: flags the executor
    runs with are no WRK003."""
    root = work_dir(tmp_path / "work", "mining")
    env = yaml.safe_load((root / "in" / "env.yaml").read_text())
    env.update(run_training="false", run_mining=mining, run_infer=infer)
    write_yaml(root / "in" / "env.yaml", env)
    findings = verify_work_dir(root)
    assert findings == [], format_findings(findings)


def failed_run(root: Path, task: str = "training", code=300002) -> Path:
    """A work dir whose executor failed as the protocol says: state 4 and its code, the
    traceback then a one-line reason in the log, no result file."""
    root = work_dir(root, task)
    for name in ("models/result.yaml", "result.tsv", "infer-result.json"):
        if (root / "out" / name).exists():
            (root / "out" / name).unlink()
    Monitor(root / "out" / "monitor.txt", "t0001").error(code, "no valid image\ndetails")
    (root / "out" / "ymir-executor-out.log").write_text(
        'INFO training started\nTraceback (most recent call last):\n  File "x.py", line 1\n'
        f"ValueError: no images\nERROR {code} DATASET: no valid image left\n"
    )
    return root


@pytest.mark.parametrize("task", ["training", "mining+infer"])
def test_failed_run_follows_the_failure_protocol(tmp_path, task):
    root = failed_run(tmp_path / "work", task)
    # the outcome comes from monitor.txt, as the platform reads it: no "exited 0" assumption
    outcome = run_outcome(root)
    assert outcome.failed and (outcome.state, outcome.code) == (4, 300002)
    assert outcome.reason == "ERROR 300002 DATASET: no valid image left"
    assert "monitor state 4, code 300002 DATASET)" in outcome.describe()
    assert verify_work_dir(root) == []
    assert verify_work_dir(root, expect_success=False) == []
    # checked as a success it would be wrong in every way
    assert {"MON012"} <= ids(verify_work_dir(root, expect_success=True))


def test_a_successful_run_is_checked_for_its_results(tmp_path):
    root = work_dir(tmp_path / "work", "training")
    assert not run_outcome(root).failed
    (root / "out" / "models" / "result.yaml").unlink()
    assert "TRN001" in ids(verify_work_dir(root))


def test_an_executor_that_never_reported_failed(tmp_path):
    root = work_dir(tmp_path / "work", "infer")
    (root / "out" / "monitor.txt").write_text("t0001\t1663839980.1\t0.00\t1\t0\n")  # PENDING
    assert run_outcome(root).failed
    assert "MON013" in ids(verify_work_dir(root))


def test_a_failed_mining_may_keep_a_complete_result_of_an_earlier_task(tmp_path):
    """mining+infer: mining finished (result.tsv complete), inference failed."""
    root = failed_run(tmp_path / "work", "mining+infer")
    as_given = (root / "in" / "candidate-index.tsv").read_text().split()
    writer = MiningResult(outputs(root / "out"), as_given)
    for path in as_given:
        writer.add(path, 0.5)
    writer.write()
    assert verify_work_dir(root) == []


@case("FAL001")
def _fal001(tmp):
    root = failed_run(tmp / "work")
    Monitor(root / "out" / "monitor.txt", "t0001").error(None, "Traceback ...")
    return verify_work_dir(root)


@case("FAL002")
def _fal002(tmp):
    root = failed_run(tmp / "work")
    log = root / "out" / "ymir-executor-out.log"
    # an uncaught exception: the UI's last lines are a traceback's, no reason after it
    log.write_text(log.read_text().rsplit("ERROR", 1)[0])
    return verify_work_dir(root)


@pytest.mark.parametrize(
    ("log", "reported"),
    [
        (None, "is missing"),
        ("\n\n", "is empty"),
        ("Traceback (most recent call last):\n", "ends in a traceback"),
        ('Traceback (most recent call last):\n  File "x.py", line 3, in f\n', "traceback"),
        ("ERROR 300002 DATASET: no images\n", None),
        ("  File \"x.py\"\nKeyError: 'a'\nERROR unexpected KeyError: 'a'\n", None),
    ],
)
def test_the_last_log_line_must_be_a_reason(tmp_path, log, reported):
    root = failed_run(tmp_path / "work")
    path = root / "out" / "ymir-executor-out.log"
    if log is None:
        path.unlink()
    else:
        path.write_text(log)
    findings = [f for f in verify_work_dir(root) if f.check_id == "FAL002"]
    if reported is None:
        assert findings == []
    else:
        assert len(findings) == 1 and reported in findings[0].message


@case("FAL003")
def _fal003(tmp):
    root = failed_run(tmp / "work")
    # a killed write: a truncated result.yaml (a writer that does not write atomically)
    good_training(root / "out")
    result = root / "out" / "models" / "result.yaml"
    result.write_text(result.read_text()[:40])
    return verify_work_dir(root)


def test_leftover_temporary_file_is_a_half_written_result(tmp_path):
    root = failed_run(tmp_path / "work", "infer")
    (root / "out" / ".infer-result.json.x1y2.tmp").write_text('{"detection": {')
    findings = verify_work_dir(root)
    assert ids(findings) == {"FAL003"}


def test_work_dir_segmentation_target_from_config(tmp_path):
    root = work_dir(tmp_path / "work", "training", object_type=3)
    assert verify_work_dir(root) == []


@case("WRK001")
def _wrk001(tmp):
    root = work_dir(tmp / "work")
    (root / "in" / "env.yaml").unlink()
    return verify_work_dir(root)


@case("WRK002")
def _wrk002(tmp):
    root = work_dir(tmp / "work")
    (root / "in" / "config.yaml").write_text("- not\n- a mapping\n")
    return verify_work_dir(root)


@case("WRK003")
def _wrk003(tmp):
    root = work_dir(tmp / "work")
    env = yaml.safe_load((root / "in" / "env.yaml").read_text())
    env["run_infer"] = True
    write_yaml(root / "in" / "env.yaml", env)
    return verify_work_dir(root)


@case("WRK004")
def _wrk004(tmp):
    root = work_dir(tmp / "work")
    env = yaml.safe_load((root / "in" / "env.yaml").read_text())
    env["protocol_version"] = "latest"
    write_yaml(root / "in" / "env.yaml", env)
    return verify_work_dir(root)


@case("WRK005")
def _wrk005(tmp):
    root = work_dir(tmp / "work", "mining")
    (root / "in" / "candidate-index.tsv").unlink()
    return verify_work_dir(root)


@case("WRK006")
def _wrk006(tmp):
    root = work_dir(tmp / "work", "infer")
    write_yaml(root / "in" / "config.yaml", dict(gpu_id=""))
    return verify_work_dir(root)


# -- the proof that every check fires ----------------------------------------------------


def test_every_check_has_a_case():
    assert sorted(CASES) == sorted(CHECKS)


@pytest.mark.parametrize("check_id", sorted(CASES))
def test_check_fires(tmp_path, check_id):
    findings = CASES[check_id](tmp_path)
    assert check_id in ids(findings), format_findings(findings)
    check = CHECKS[check_id]
    for finding in findings:
        if finding.check_id == check_id:
            assert finding.severity == check.severity
            assert finding.code == check.code
            assert finding.message


def test_checks_are_well_formed():
    for check_id, check in CHECKS.items():
        assert check.check_id == check_id
        assert check.severity in verify.SEVERITIES
        assert check.code is None or isinstance(check.code, int)
        assert check.title


# -- the RLE decoder ---------------------------------------------------------------------


def test_rle_decoder_matches_pycocotools():
    rng = np.random.default_rng(7)
    for height, width in ((1, 1), (5, 9), (48, 64), (31, 17)):
        mask = rng.random((height, width)) > 0.6
        rle = encode_rle(mask)
        runs = rle_runs(rle["counts"])
        assert sum(runs) == height * width
        assert (runs_to_mask(runs, height, width) == mask).all()
    assert rle_runs("!!") is None  # outside the alphabet
    assert rle_runs("o") is None  # a continuation bit at the end


# -- reporting ------------------------------------------------------------------------------


def test_format_and_has_errors():
    warning = Finding("TRN050", verify.WARNING, "no events", None)
    fatal = Finding("DET012", verify.PLATFORM_FATAL, "x is 2.5", 169999)
    assert not has_errors([warning])
    assert has_errors([warning, fatal])
    text = format_findings([warning, fatal])
    lines = text.splitlines()
    assert lines[0].startswith("PLATFORM-FATAL") and "DET012" in lines[0] and "169999" in text
    assert "1 platform-fatal, 0 verifier-fatal, 1 warning" in lines[-1]
    assert "all checks passed" in format_findings([])
