"""End to end: the real executor run like the platform, train -> package -> infer / mine, verified.

Every run here is a separate process started by the devkit exactly as ``make run-local`` does, and
every output is checked by the devkit's verifier (the platform's own parsing rules).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import QUICK_PARAMS
from {{ cookiecutter.package_name }}.devkit import chain as chain_module
from {{ cookiecutter.package_name }}.devkit.__main__ import main as devkit_main
from {{ cookiecutter.package_name }}.devkit.chain import (
    MODEL_TAR,
    OBJECT_TYPE_ERROR,
    RUN_TIMEOUT,
    ChainReport,
    executor_object_type,
    read_monitor_state,
    supported_tasks,
)
from {{ cookiecutter.package_name }}.devkit.chain import chain as devkit_chain
from {{ cookiecutter.package_name }}.devkit.run import run
from {{ cookiecutter.package_name }}.devkit.synth import (
    default_img_man,
)
from {{ cookiecutter.package_name }}.devkit.synth import synthesize as devkit_synthesize
from {{ cookiecutter.package_name }}.devkit.verify import (
    format_findings,
    has_errors,
    verify_work_dir,
)

IMG_MAN = default_img_man()
OBJECT_TYPE = executor_object_type(IMG_MAN)
TASKS = supported_tasks(IMG_MAN)
SEGMENTATION = OBJECT_TYPE in (3, 4)
TRAINING_FORMATS = ["seg-coco", "coco"] if SEGMENTATION else ["ark", "voc", "coco"]
# the mining / infer steps of the chain and the tasks each needs
CANDIDATE_STEPS = [
    ("infer", {"infer"}),
    ("mining", {"mining"}),
    ("mining+infer", {"mining", "infer"}),
    ("infer (single image)", {"infer"}),
    ("infer (migrated model)", {"infer"}),  # not on the legacy protocol
]
CANDIDATE_TASKS = [t for t in ("infer", "mining", "mining+infer") if set(t.split("+")) <= TASKS]
PROTOCOLS = ["1.1.0", "1.0.0", "legacy"]
needs_training = pytest.mark.skipif("training" not in TASKS, reason="generated without training")


# Every run here trains (or infers) with the quick settings: the tests check the round trip,
# not the model, and the template defaults would take long on a CPU.
QUICK_ARGS = [f"--param={key}={value}" for key, value in QUICK_PARAMS.items()]


# Set for executors without training: their chains start from a ready model package.
CHAIN_OPTIONS: dict = {}


def chain(base_dir: Path, **options):
    return devkit_chain(base_dir, params=QUICK_PARAMS, **CHAIN_OPTIONS, **options)


def synthesize(work: Path, task: str, object_type: int, **options):
    return devkit_synthesize(work, task, object_type, params=QUICK_PARAMS, **options)


def expected_steps(protocol: str) -> list[str]:
    names = ["training", "package"] if "training" in TASKS else ["package"]
    for name, needs in CANDIDATE_STEPS:
        if needs <= TASKS and not (protocol == "legacy" and "migrated" in name):
            names.append(name)
    return names


def assert_verified(work: Path) -> None:
    findings = verify_work_dir(work)
    assert not has_errors(findings), format_findings(findings)


@pytest.fixture(scope="module", autouse=True)
def chain_model(request: pytest.FixtureRequest) -> Iterator[None]:
    """Without a training task there is nothing to train: chains use the ready package."""
    if "training" not in TASKS:
        CHAIN_OPTIONS["model"] = request.getfixturevalue("stub_model_tar")
    yield
    CHAIN_OPTIONS.clear()


@pytest.fixture(scope="module")
def chain_report(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], ChainReport]:
    """The chain of a protocol, run once per module and shared by the tests that only read it.

    A framework's chain is minutes of CPU (every step a process that loads the framework): the
    summary, the command line and the model package reuse the chains ``test_chain_passes`` ran.
    """
    reports: dict[str, ChainReport] = {}

    def report_for(protocol: str) -> ChainReport:
        if protocol not in reports:
            base = tmp_path_factory.mktemp(f"chain-{protocol}") / "chain"
            reports[protocol] = chain(base, protocol=protocol)
        return reports[protocol]

    return report_for


@pytest.fixture(scope="module")
def model_tar(chain_report: Callable[[str], ChainReport]) -> Path:
    """A model package made like the platform (from a real training run when there is one)."""
    if "model" in CHAIN_OPTIONS:
        return CHAIN_OPTIONS["model"]
    report = chain_report("1.1.0")
    assert report.ok, report.format()
    return report.base_dir / MODEL_TAR


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_chain_passes(chain_report: Callable[[str], ChainReport], protocol: str) -> None:
    report = chain_report(protocol)
    assert report.ok, report.format()
    names = [step.name for step in report.steps]
    expected = expected_steps(protocol)
    if protocol == "legacy" and SEGMENTATION:
        # YMIR 1.1 had no segmentation: refusing with 300005 is the required outcome of the
        # executor's first task
        first = 0 if "training" in TASKS else 1
        assert names == expected[: first + 1]
        step = report.steps[first]
        assert step.expected_failure and step.returncode != 0
        assert read_monitor_state(step.work_dir / "out" / "monitor.txt") == (4, OBJECT_TYPE_ERROR)
        return
    assert names == expected
    for step in report.steps:
        if step.name != "package":
            assert step.returncode == 0
            assert (step.work_dir / "out" / "monitor.txt").is_file()
    if "training" in TASKS:
        training = report.step("training").work_dir
        result = yaml.safe_load((training / "out" / "models" / "result.yaml").read_text())
        if protocol == "legacy":
            assert set(result) == {"model", "map"}
        else:
            assert "model" not in result and result["best_stage_name"] in result["model_stages"]
    if len(report.steps) < 3:
        return  # a training-only executor
    user = report.steps[names.index("package") + 1].work_dir
    config = yaml.safe_load((user / "in" / "config.yaml").read_text())
    models_dir = user / "in" / "models"
    assert (models_dir / "ymir-info.yaml").is_file()
    info = yaml.safe_load((models_dir / "ymir-info.yaml").read_text())
    # flat as YMIR 1.1 extracts, else in the best stage's folder
    folder = models_dir if protocol == "legacy" else models_dir / info["best_stage_name"]
    assert config["model_params_path"]
    for path in config["model_params_path"]:
        assert Path(path).is_file() and Path(path).parent == folder


def test_summary_lines_name_every_step(chain_report: Callable[[str], ChainReport]) -> None:
    report = chain_report("legacy")
    lines = report.summary_lines()
    assert len(lines) == 1 + len(report.steps)
    assert all(line.strip().startswith("PASS") for line in lines[1:])
    assert report.format().endswith("chain PASSED")


def test_chain_reports_a_refusing_executor_as_a_failure(tmp_path: Path) -> None:
    # a task of another object type (config.yaml's object_type, YMIR 2.4+) must be refused
    other = 2 if SEGMENTATION else 3
    fmt = "ark" if other == 2 else "seg-coco"
    report = chain(tmp_path / "chain", object_type=other, protocol="1.1.0", annotation_format=fmt)
    assert not report.ok
    step = report.steps[-1]
    assert step.returncode not in (0, None)
    assert str(OBJECT_TYPE_ERROR) in step.note
    assert report.format().endswith("chain FAILED")


def test_legacy_expected_failure_is_checked_not_assumed(tmp_path: Path) -> None:
    if SEGMENTATION:
        pytest.skip("a segmentation executor really refuses the legacy protocol")
    # pretend the executor were a segmentation one: it runs instead of refusing -> failure
    report = chain(tmp_path / "chain", object_type=3, protocol="legacy")
    assert not report.ok
    assert report.steps[-1].expected_failure
    assert "expected a refusal" in report.steps[-1].note


def test_chain_timeout_is_a_failure(tmp_path: Path) -> None:
    report = chain(tmp_path / "chain", protocol="1.1.0", timeout=0.01)
    assert not report.ok
    assert RUN_TIMEOUT in [finding.check_id for finding in report.steps[-1].findings]


# Every export format as the platform writes it, and the config's values as strings (how some
# UI versions save them) once: the config is read the same whatever the annotation format.
TRAINING_CASES = [(fmt, "as-is") for fmt in TRAINING_FORMATS] + [(TRAINING_FORMATS[0], "strings")]


@needs_training
@pytest.mark.parametrize(("fmt", "variant"), TRAINING_CASES)
def test_training_reads_every_export_format(tmp_path: Path, fmt: str, variant: str) -> None:
    result = synthesize(
        tmp_path / "w", "training", OBJECT_TYPE, annotation_format=fmt, config_variant=variant
    )
    outcome = run(result.work_dir, timeout=120)
    assert outcome.returncode == 0, outcome.log_path.read_text()
    assert outcome.in_changes == []
    assert_verified(result.work_dir)


@needs_training
def test_training_with_a_pretrained_model(tmp_path: Path, model_tar: Path) -> None:
    result = synthesize(tmp_path / "w", "training", OBJECT_TYPE, pretrained=model_tar)
    paths = result.config["pretrained_model_params"]
    assert paths and all(Path(p).is_file() for p in paths)
    assert (result.in_dir / "models" / "ymir-info.yaml").is_file()
    outcome = run(result.work_dir, timeout=120)
    assert outcome.returncode == 0, outcome.log_path.read_text()
    assert_verified(result.work_dir)


# Each task with the config as the UI writes it; the UI's other variants (falsy values
# dropped, values as strings) with the task that reads both mining's and inference's keys.
UI_VARIANT_CASES = [(task, "as-is") for task in CANDIDATE_TASKS] + [
    (CANDIDATE_TASKS[-1], variant) for variant in ("drop-falsy", "strings") if CANDIDATE_TASKS
]


@pytest.mark.parametrize(("task", "variant"), UI_VARIANT_CASES)
def test_mining_and_infer_with_every_ui_variant(
    tmp_path: Path, model_tar: Path, task: str, variant: str
) -> None:
    result = synthesize(
        tmp_path / "w", task, OBJECT_TYPE, model_params=model_tar, config_variant=variant
    )
    outcome = run(result.work_dir, timeout=120)
    assert outcome.returncode == 0, outcome.log_path.read_text()
    assert_verified(result.work_dir)
    state, _code = read_monitor_state(result.out_dir / "monitor.txt")
    assert state == 2  # the executor's last word; DONE is the platform's


def test_user_images_with_a_corrupt_one(tmp_path: Path, model_tar: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    noise = np.random.RandomState(0).randint(0, 256, size=(70, 90, 3)).astype(np.uint8)
    Image.fromarray(noise).save(folder / "noise.jpg", "JPEG")  # noise: the pixel data is large
    Image.new("RGBA", (64, 64), (0, 0, 200, 128)).save(folder / "blue.png")
    whole = folder / "noise.jpg"
    # a truncated JPEG: the header (and so the detected type) is fine, the pixels are not
    data = whole.read_bytes()
    (folder / "broken.jpg").write_bytes(data[: len(data) // 2])
    for task in [t for t in ("infer", "mining") if t in TASKS]:
        result = synthesize(
            tmp_path / task, task, OBJECT_TYPE, model_params=model_tar, images_dir=folder
        )
        assert len(result.candidates) == 3
        outcome = run(result.work_dir, timeout=120)
        assert outcome.returncode == 0, outcome.log_path.read_text()
        assert_verified(result.work_dir)


def test_cli_synth_run_verify(
    tmp_path: Path, model_tar: Path, capsys: pytest.CaptureFixture
) -> None:
    model = model_tar
    if "training" in TASKS:
        train = tmp_path / "train"
        command = ["synth", "--work", str(train), "--task", "training", *QUICK_ARGS]
        assert devkit_main(command) == 0
        assert devkit_main(["run", "--work", str(train), "--timeout", "120"]) == 0
        assert devkit_main(["verify", "--work", str(train)]) == 0
        model = train  # a training work dir is packaged on the fly
    if not CANDIDATE_TASKS:
        return
    work = tmp_path / "use"
    command = ["synth", "--work", str(work), "--task", CANDIDATE_TASKS[-1], "--model", str(model)]
    command += QUICK_ARGS
    assert devkit_main(command) == 0
    assert (work / "model-package.tar").is_file() == (model != model_tar)
    assert devkit_main(["run", "--work", str(work)]) == 0
    assert devkit_main(["verify", "--work", str(work)]) == 0
    # a broken monitor file is caught
    (work / "out" / "monitor.txt").write_text("garbage\n", encoding="utf-8")
    assert devkit_main(["verify", "--work", str(work)]) == 1
    capsys.readouterr()


def test_cli_chain_all_protocols(
    tmp_path: Path,
    chain_report: Callable[[str], ChainReport],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """``chain --protocol all`` runs each protocol's chain in a folder of its own and reports each.

    The chains themselves are the ones ``test_chain_passes`` ran (the command line is a loop
    around :func:`chain`); here the command line's part is checked: what it passes, what it
    prints and its exit status.
    """
    calls: list[tuple[Path, str, dict]] = []

    def recorded_chain(base: Path, *, protocol: str, params: dict, **options: object):
        calls.append((Path(base), protocol, params))
        return chain_report(protocol)

    monkeypatch.setattr(chain_module, "chain", recorded_chain)
    work = tmp_path / "c"
    model = [f"--model={CHAIN_OPTIONS['model']}"] if "model" in CHAIN_OPTIONS else []
    command = ["chain", "--work", str(work), "--protocol", "all", "--quiet", *QUICK_ARGS, *model]
    assert devkit_main(command) == 0
    out = capsys.readouterr().out
    assert out.count("chain PASSED") == len(PROTOCOLS)
    assert sorted(calls) == sorted(
        (work / protocol, protocol, QUICK_PARAMS) for protocol in PROTOCOLS
    )
