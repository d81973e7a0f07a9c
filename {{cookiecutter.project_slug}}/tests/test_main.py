"""The failure protocol of ``python -m <package>``: monitor state, error code, last log line.

Each case runs the entrypoint in-process on a synthesized work dir, breaks one thing, and checks
what the platform would see: exit status, ``monitor.txt`` (state 4, the executor code or none for
an unexpected failure), the one-line reason as the last line of stderr, and no partial result.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import yaml

from conftest import OBJECT_TYPE, QUICK_PARAMS, SUPPORTED_TASKS, requires
from {{ cookiecutter.package_name }} import tasks
from {{ cookiecutter.package_name }}.__main__ import main
from {{ cookiecutter.package_name }}.devkit.synth import synthesize

CANDIDATE_TASKS = sorted(SUPPORTED_TASKS & {"mining", "infer"})


def monitor_fields(work: Path) -> list[str]:
    first_line = (work / "out" / "monitor.txt").read_text(encoding="utf-8").splitlines()[0]
    return first_line.split("\t")


def edit_config(work: Path, **changes) -> None:
    path = work / "in" / "config.yaml"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(yaml.safe_dump(config), encoding="utf-8")


def run_main(work: Path, capsys) -> tuple[int, str]:
    status = main(work / "in" / "env.yaml")
    lines = capsys.readouterr().err.strip().splitlines()
    return status, lines[-1] if lines else ""


def assert_failed_with(work: Path, status: int, last_line: str, code: int) -> None:
    assert status == 1
    fields = monitor_fields(work)
    assert fields[3] == "4" and fields[4] == str(code)
    assert last_line.startswith(f"ERROR {code} ")


@pytest.fixture
def candidate_work(tmp_path: Path, stub_model_tar: Path):
    """A mining or infer work dir (whichever this executor supports) with a model."""
    if not CANDIDATE_TASKS:
        pytest.skip("generated without mining and infer")
    task = CANDIDATE_TASKS[0]
    synthesize(
        tmp_path / "work", task, OBJECT_TYPE, model_params=stub_model_tar, params=QUICK_PARAMS
    )
    return tmp_path / "work", task


def test_success_ends_at_full_progress_with_running_state(candidate_work, capsys) -> None:
    work, _task = candidate_work
    status, last_line = run_main(work, capsys)
    assert status == 0, last_line
    fields = monitor_fields(work)
    assert fields[2:4] == ["1.00", "2"]


def test_missing_env_file_is_a_config_error(tmp_path: Path, capsys) -> None:
    status = main(tmp_path / "nowhere" / "env.yaml")
    assert status == 1
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith("ERROR 300001 ") and "env.yaml" in last_line


def test_missing_class_names_is_a_config_error(candidate_work, capsys) -> None:
    work, _task = candidate_work
    edit_config(work, class_names=None)
    assert_failed_with(work, *run_main(work, capsys), code=300001)


def test_wrong_object_type_is_refused(candidate_work, capsys) -> None:
    work, _task = candidate_work
    other = 3 if OBJECT_TYPE == 2 else 2
    edit_config(work, object_type=other)
    assert_failed_with(work, *run_main(work, capsys), code=300005)


def test_bad_hyper_parameter_names_the_key(candidate_work, capsys) -> None:
    work, task = candidate_work
    key = "mining_algorithm" if task == "mining" else "confidence_threshold"
    edit_config(work, **{key: [1, 2] if key == "confidence_threshold" else "best-guess"})
    status, last_line = run_main(work, capsys)
    assert_failed_with(work, status, last_line, code=300001)
    assert key in last_line


def test_missing_model_file_is_a_model_error(candidate_work, capsys) -> None:
    work, _task = candidate_work
    edit_config(work, model_params_path=[str(work / "in" / "models" / "last" / "gone.json")])
    assert_failed_with(work, *run_main(work, capsys), code=300004)


@requires("training")
def test_unknown_export_format_is_a_config_error(tmp_path: Path, capsys) -> None:
    work = tmp_path / "work"
    synthesize(work, "training", OBJECT_TYPE, params=QUICK_PARAMS)
    edit_config(work, export_format="lmdb:raw")
    assert_failed_with(work, *run_main(work, capsys), code=300001)
    assert not (work / "out" / "models" / "result.yaml").exists()


@requires("training")
@pytest.mark.parametrize(
    ("platform", "choice"),
    [
        ("2.0", "choose 'ark:raw' or 'voc:raw'" if OBJECT_TYPE == 2 else "needs YMIR >= 2.1"),
        ("2.3", "'seg-coco:raw'"),
        ("2.4", "'seg-coco:raw'"),
    ],
)
def test_a_coco_export_the_platform_does_not_know_names_what_to_choose(
    tmp_path: Path, capsys, platform: str, choice: str
) -> None:
    """YMIR before 2.5 exports nothing for 'coco:raw': not 'no valid image left' (300002) but
    what happened and the export_format that works on this platform."""
    work = tmp_path / "work"
    synthesize(
        work,
        "training",
        OBJECT_TYPE,
        platform=platform,
        annotation_format="coco",
        params=QUICK_PARAMS,
    )
    status, last_line = run_main(work, capsys)
    assert_failed_with(work, status, last_line, code=300001)
    assert "the train index is empty: YMIR exports 'coco:raw' since 2.5 only" in last_line
    assert choice in last_line
    assert not (work / "out" / "models" / "result.yaml").exists()


@pytest.mark.parametrize("task", ["training", "mining", "infer"])
def test_a_task_generated_without_is_refused(tmp_path: Path, capsys, task: str) -> None:
    if task in SUPPORTED_TASKS:
        pytest.skip(f"this executor supports {task}")
    work = tmp_path / "work"
    # The devkit needs a template to synthesize the task: borrow one the executor has.
    synthesize(work, sorted(SUPPORTED_TASKS)[0], OBJECT_TYPE)
    env_file = work / "in" / "env.yaml"
    env = yaml.safe_load(env_file.read_text(encoding="utf-8"))
    env.update(
        run_training=task == "training", run_mining=task == "mining", run_infer=task == "infer"
    )
    env_file.write_text(yaml.safe_dump(env), encoding="utf-8")
    status, last_line = run_main(work, capsys)
    assert_failed_with(work, status, last_line, code=300001)
    assert f"does not support {task}" in last_line


def test_unexpected_exception_writes_state_4_without_code(
    candidate_work, capsys, monkeypatch
) -> None:
    work, task = candidate_work
    module = importlib.import_module(f"{tasks.__name__}.{task}")
    function = {"mining": "mine", "infer": "infer"}[task]

    def broken(ctx) -> None:
        ctx.progress(0.5)
        raise RuntimeError("something nobody planned for")

    monkeypatch.setattr(module, function, broken)
    status, last_line = run_main(work, capsys)
    assert status == 1
    fields = monitor_fields(work)
    assert fields[3] == "4" and len(fields) == 4, "no code: the platform reports 160004"
    assert last_line == "ERROR unexpected RuntimeError: something nobody planned for"
    assert not (work / "out" / "infer-result.json").exists()
    assert not (work / "out" / "result.tsv").exists()


@requires("infer")
def test_failed_inference_leaves_no_partial_result(
    tmp_path: Path, stub_model_tar: Path, capsys, monkeypatch
) -> None:
    work = tmp_path / "work"
    synthesize(work, "infer", OBJECT_TYPE, model_params=stub_model_tar, params=QUICK_PARAMS)
    module = importlib.import_module(f"{tasks.__name__}.infer")
    original = module.infer

    def fails_after_the_results(ctx) -> None:
        original(ctx)
        raise MemoryError

    monkeypatch.setattr(module, "infer", fails_after_the_results)
    assert_failed_with(work, *run_main(work, capsys), code=300103)
    assert not (work / "out" / "infer-result.json").exists()


class KeptPredictions:
    """Stands for a framework's rows files kept for inference; records its removal."""

    removed = False

    def remove(self) -> None:
        self.removed = True


@requires("mining", "infer")
@pytest.mark.parametrize("inference", ["fails", "succeeds"])
def test_mining_predictions_never_outlive_the_run(
    tmp_path: Path, stub_model_tar: Path, capsys, monkeypatch, inference: str
) -> None:
    work = tmp_path / "work"
    synthesize(work, "mining+infer", OBJECT_TYPE, model_params=stub_model_tar, params=QUICK_PARAMS)
    mining, infer = (
        importlib.import_module(f"{tasks.__name__}.{name}") for name in ("mining", "infer")
    )
    kept = KeptPredictions()
    original_mine, original_infer = mining.mine, infer.infer

    def mine_and_keep(ctx) -> None:
        original_mine(ctx)
        ctx.handover.keep("settings inference does not ask for", kept)

    def infer_or_fail(ctx) -> None:
        if inference == "fails":
            raise RuntimeError("inference broke after mining")
        original_infer(ctx)

    monkeypatch.setattr(mining, "mine", mine_and_keep)
    monkeypatch.setattr(infer, "infer", infer_or_fail)
    status, last_line = run_main(work, capsys)
    assert status == (1 if inference == "fails" else 0), last_line
    assert kept.removed


def test_unreadable_candidates_get_empty_results_and_the_run_succeeds(
    candidate_work, capsys
) -> None:
    work, task = candidate_work
    index = work / "in" / "candidate-index.tsv"
    broken = work / "broken image.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    index.write_text(index.read_text(encoding="utf-8") + f"{broken}\n", encoding="utf-8")
    status, last_line = run_main(work, capsys)
    assert status == 0, last_line
    if task == "mining":
        lines = (work / "out" / "result.tsv").read_text(encoding="utf-8").splitlines()
        assert lines[-1].split("\t")[0] == str(broken), "an unreadable image ranks last"
    elif OBJECT_TYPE == 2:
        detection = json.loads((work / "out" / "infer-result.json").read_text())["detection"]
        assert detection[broken.name]["boxes"] == []
    else:
        coco = json.loads((work / "out" / "infer-result.json").read_text())
        (image,) = [image for image in coco["images"] if image["file_name"] == broken.name]
        assert not [a for a in coco["annotations"] if a["image_id"] == image["id"]]
