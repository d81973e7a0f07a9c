"""The whole platform round trip: train -> package -> unpack -> infer, mine, mine+infer.

Each step is a separate platform task in its own work dir under ``base_dir``: synthesized like
the platform (``synth``), run like the platform (``run``) and checked against the platform's
rules (``verify``, plus what only the run sees: timeouts, writes under ``in/``, the monitor's
history). Between training and the others the model goes through the platform's packaging: the
training output becomes a tar (``<stage>/<file>`` + ``ymir-info.yaml``, or files at the root for
YMIR 1.1) and is extracted into the next task's ``in/models`` the way ``mir`` does it, with
``class_names`` taken from the package. All work dirs share one asset cache, like the platform's
per-user cache.

Only the tasks the executor declares (its img-man templates) run. Without a training task the
model comes from ``model=`` or, for the generated stub, from the baseline fitted in-process.

Container mode (``image=``, ``chain --image``): every task runs the built image like the platform
(see :mod:`.run`), after a first step that reads the image's ``/img-man`` the way YMIR does when
the image is added (:func:`.run.register`); the tasks, the object type and the templates the
configs are made from are then the image's, not the checkout's.

Protocol ``legacy`` with a segmentation executor: YMIR 1.1 had no segmentation, so the executor's
first task must refuse with monitor state 4 and code 300005; the chain reports that as the
expected outcome and stops there.
"""

from __future__ import annotations

import importlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contract.errors import ExecutorError
from ..contract.object_types import ObjectType
from . import synth as synth_module
from .run import (
    DEFAULT_DOCKER,
    DEFAULT_SHM_SIZE,
    DEFAULT_TIMEOUT,
    DEFAULT_USER,
    RunResult,
    register,
    run,
)
from .verify import (
    PLATFORM_FATAL,
    VERIFIER_FATAL,
    WARNING,
    Finding,
    format_findings,
    has_errors,
    verify_work_dir,
)

# The mining / infer steps after training: (step name, synthesize() task, extra options).
_MODERN_STEPS: tuple[tuple[str, str, dict], ...] = (
    ("infer", "infer", {}),
    ("mining", "mining", {}),
    ("mining+infer", "mining+infer", {}),
    ("infer (single image)", "infer", {"single_image": True}),
    # 2.x running a package migrated from 1.1: files flat, config names default_best_stage
    ("infer (migrated model)", "infer", {"model_layout": "migrated"}),
)
_LEGACY_STEPS: tuple[tuple[str, str, dict], ...] = (
    ("infer", "infer", {}),
    ("mining", "mining", {}),
    ("mining+infer", "mining+infer", {}),
    ("infer (single image)", "infer", {"single_image": True}),
)
# Options of synthesize() that only make sense for one side of the chain.
_TRAINING_ONLY = ("annotation_format", "num_train", "num_val", "pretrained")
_CANDIDATES_ONLY = ("num_candidates", "images_dir", "model_stage")
OBJECT_TYPE_ERROR = 300005
# Findings only a run can produce (the verifier checks the files; these check the process).
RUN_TIMEOUT = "RUN001"  # the executor did not finish in time
RUN_IN_WRITTEN = "RUN002"  # it wrote under in/, which is a read-only mount on the platform
RUN_HOME_WRITTEN = "RUN003"  # it created HOME (arbitrary uid without a passwd entry)
RUN_MONITOR_DONE = "RUN004"  # monitor.txt showed state 3 (done), which only the platform writes
RUN_MONITOR_BACKWARDS = "RUN005"  # progress went back between two samples
MODEL_TAR = "model-package.tar"


@dataclass
class ChainStep:
    """One step of the chain: a platform task (or the packaging between them)."""

    name: str
    ok: bool
    returncode: int | None = None
    findings: list[Finding] = field(default_factory=list)
    work_dir: Path | None = None
    expected_failure: bool = False
    note: str = ""
    duration: float = 0.0

    def summary(self) -> str:
        """One line: verdict, step, exit code, finding counts, time, note."""
        verdict = "PASS" if self.ok else "FAIL"
        parts = [f"{verdict} {self.name}"]
        if self.returncode is not None:
            parts.append(f"exit {self.returncode}")
        errors = sum(1 for f in self.findings if _is_error(f))
        warnings = len(self.findings) - errors
        if self.returncode is not None or self.findings:
            parts.append(f"{errors} error(s), {warnings} warning(s)")
        parts.append(f"{self.duration:.1f} s")
        if self.expected_failure:
            parts.append("expected failure")
        if self.note:
            parts.append(self.note)
        return " | ".join(parts)


@dataclass
class ChainReport:
    """All steps of one chain; ``ok`` when every step passed (expected failures included)."""

    base_dir: Path
    protocol: str
    object_type: int
    steps: list[ChainStep] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(step.ok for step in self.steps)

    def step(self, name: str) -> ChainStep:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    def summary_lines(self) -> list[str]:
        head = f"chain protocol={self.protocol} object_type={self.object_type} ({self.base_dir})"
        return [head] + ["  " + step.summary() for step in self.steps]

    def format(self, details: bool = True) -> str:
        """The summary lines, plus (``details``) the findings of every step that has some."""
        lines = self.summary_lines()
        if details:
            for step in self.steps:
                if step.findings:
                    lines.append(f"findings of {step.name}:")
                    lines.extend(
                        "    " + line for line in format_findings(step.findings).splitlines()
                    )
        lines.append("chain " + ("PASSED" if self.ok else "FAILED"))
        return "\n".join(lines)


def chain(
    base_dir: str | os.PathLike,
    object_type: int | None = None,
    protocol: str | None = "1.1.0",
    *,
    timeout: float | None = DEFAULT_TIMEOUT,
    img_man: str | os.PathLike | None = None,
    model: str | os.PathLike | None = None,
    image: str | None = None,
    user: str | None = DEFAULT_USER,
    shm_size: str = DEFAULT_SHM_SIZE,
    docker: str = DEFAULT_DOCKER,
    gpus: str | None = None,
    **synth_options: Any,
) -> ChainReport:
    """Run the chain for one protocol under ``base_dir`` (created; replaced if the devkit made it).

    Only the tasks the executor declares (the img-man templates) run. ``object_type``: default
    the executor's, from its img-man manifest. ``model``: a model package tar (or a training
    work dir) for the mining / infer steps instead of training one; without it and without a
    training task the stub baseline is fitted in-process (see :func:`baseline_package`).
    ``synth_options`` go to :func:`synth.synthesize` (``annotation_format``, ``config_variant``,
    ``seed``, ``num_*``, ``images_dir`` ...): training-only ones to the training step, candidate
    ones to the others. ``image``: run that image like the platform instead of the checkout's
    package, with ``user``, ``shm_size`` and the ``docker`` client (see :func:`.run.run`); its
    registration comes first and, unless ``img_man`` is given, provides the img-man. ``gpus``:
    the host GPUs every task gets (``"0"``; see :func:`.run.run`), as ``gpu_id`` ``'0,...'``
    in its config. The report lists every step that ran; the chain stops at the first failing
    step.
    """
    protocol = synth_module.normalize_protocol(protocol)
    base = Path(base_dir).absolute()
    _prepare_base(base)
    run_options: dict[str, Any] = {"gpus": gpus}
    if gpus:
        synth_options["gpu_count"] = len(gpus.split(","))
    registration_step = None
    if image:
        run_options.update(image=image, user=user, shm_size=shm_size, docker=docker)
        registration_step, registered_img_man = _registration_step(image, base, docker)
        if img_man is None:
            img_man = registered_img_man
    img_man_dir = Path(img_man) if img_man is not None else synth_module.default_img_man()
    if registration_step is not None and not registration_step.ok:
        report = ChainReport(base_dir=base, protocol=protocol, object_type=object_type or 0)
        report.steps.append(registration_step)
        return report
    if object_type is None:
        object_type = executor_object_type(img_man_dir)
    tasks = supported_tasks(img_man_dir)
    if not tasks:
        raise ValueError(f"{img_man_dir} declares no task (no template parses to a mapping)")
    report = ChainReport(base_dir=base, protocol=protocol, object_type=object_type)
    if registration_step is not None:
        report.steps.append(registration_step)
    excluded = _TRAINING_ONLY + _CANDIDATES_ONLY
    steps = _ChainSteps(
        base=base,
        protocol=protocol,
        object_type=object_type,
        img_man=img_man_dir,
        report=report,
        run_options=run_options,
        timeout=timeout,
        common={k: v for k, v in synth_options.items() if k not in excluded},
        training_options={k: v for k, v in synth_options.items() if k in _TRAINING_ONLY},
        candidate_options={k: v for k, v in synth_options.items() if k in _CANDIDATES_ONLY},
        # YMIR 1.1 had no segmentation: the executor's first task must refuse with 300005
        expect_refusal=protocol == "legacy" and ObjectType(object_type).segmentation,
    )
    if "training" in tasks and model is None:
        packaged = steps.train_and_package()
    elif not tasks & {"mining", "infer"}:
        return report  # a training-only executor given a model: nothing to chain
    else:
        packaged = steps.package_without_training(model, seed=synth_options.get("seed", 0))
    if packaged:
        steps.run_model_tasks(tasks)
    return report


def _registration_step(image: str, base: Path, docker: str) -> tuple[ChainStep, Path]:
    """Read the image's ``/img-man`` the way YMIR does when the image is added."""
    started = time.monotonic()
    registration = register(image, base / "registered-img-man", docker=docker)
    step = ChainStep(
        "registration",
        ok=registration.ok,
        work_dir=registration.img_man,
        note="; ".join(registration.problems)
        or "{}: object_type {}, tasks {}".format(
            image, registration.object_type, ", ".join(registration.tasks)
        ),
        duration=time.monotonic() - started,
    )
    return step, registration.img_man


@dataclass
class _ChainSteps:
    """The steps of one chain after registration, appending to ``report`` as they run."""

    base: Path
    protocol: str
    object_type: int
    img_man: Path
    report: ChainReport
    run_options: dict[str, Any]
    timeout: float | None
    common: dict[str, Any]
    training_options: dict[str, Any]
    candidate_options: dict[str, Any]
    expect_refusal: bool
    package: Path | None = None  # the model package tar the mining / infer steps install

    @property
    def cache(self) -> Path:
        return self.base / "asset_cache"

    def train_and_package(self) -> bool:
        """1. training, 2. package like the platform; whether a model package came out."""
        work = self.base / "training"
        started = time.monotonic()
        synth_module.synthesize(
            work,
            "training",
            self.object_type,
            protocol=self.protocol,
            img_man=self.img_man,
            assets_cache=self.cache,
            **self.common,
            **self.training_options,
        )
        result = run(work, timeout=self.timeout, **self.run_options)
        if self.expect_refusal:
            self.report.steps.append(
                _expected_object_type_failure("training", work, result, started)
            )
            return False
        step = task_step("training", work, result, started)
        self.report.steps.append(step)
        if not step.ok:
            return False

        started = time.monotonic()
        self.package = self.base / MODEL_TAR
        try:
            stage = synth_module.package_training_output(
                work / "out" / "models" / "result.yaml", self.package, work / "in" / "config.yaml"
            )
        except Exception as error:  # any failure here is the platform's 160011 "no result"
            return self._package_step(False, f"packaging failed: {error}", started)
        return self._package_step(True, f"stage {stage!r} -> {self.package.name}", started)

    def package_without_training(self, model: str | os.PathLike | None, seed: int) -> bool:
        """The given model package (or training work dir), else the stub baseline fitted
        in-process; whether a model package came out."""
        started = time.monotonic()
        try:
            if model is not None:
                self.package = synth_module.model_package(Path(model), self.base)
                note = f"given model {self.package}"
            else:
                self.package = self.base / MODEL_TAR
                stage = baseline_package(
                    self.base, self.package, self.object_type, self.img_man, self.cache, seed=seed
                )
                note = (
                    f"no training task: the stub baseline fitted in-process, stage {stage!r} -> "
                    f"{self.package.name}"
                )
        except Exception as error:
            return self._package_step(False, f"no model to chain: {error}", started)
        return self._package_step(True, note, started)

    def _package_step(self, ok: bool, note: str, started: float) -> bool:
        work_dir = self.base if ok else None
        duration = time.monotonic() - started
        self.report.steps.append(
            ChainStep("package", ok=ok, work_dir=work_dir, note=note, duration=duration)
        )
        return ok

    def run_model_tasks(self, tasks: set[str]) -> None:
        """3. mining / infer with the packaged model, until the first failing step."""
        steps = _LEGACY_STEPS if self.protocol == "legacy" else _MODERN_STEPS
        steps = tuple(step for step in steps if set(step[1].split("+")) <= tasks)
        for index, (name, task, extra) in enumerate(steps, start=1):
            if not self._run_model_task(index, name, task, extra):
                break

    def _run_model_task(self, index: int, name: str, task: str, extra: dict) -> bool:
        work = self.base / f"{index}-{task.replace('+', '-')}"
        if extra.get("single_image"):
            work = self.base / f"{index}-single-image"
        elif extra.get("model_layout"):
            work = self.base / f"{index}-{task}-{extra['model_layout']}"
        started = time.monotonic()
        options = dict(self.common)
        options.update(self.candidate_options)
        if extra.get("single_image"):
            options.pop("images_dir", None)  # user images keep hash names in the other steps only
            options["num_candidates"] = min(3, int(options.get("num_candidates", 3)))
        options.update(extra)
        try:
            synth_module.synthesize(
                work,
                task,
                self.object_type,
                protocol=self.protocol,
                img_man=self.img_man,
                assets_cache=self.cache,
                model_params=self.package,
                **options,
            )
        except ExecutorError as error:
            # the package cannot be installed the way the platform extracts it
            note = f"cannot install the model package: {error}"
            duration = time.monotonic() - started
            self.report.steps.append(
                ChainStep(name, ok=False, work_dir=work, note=note, duration=duration)
            )
            return False
        result = run(work, timeout=self.timeout, **self.run_options)
        if self.expect_refusal:
            self.report.steps.append(_expected_object_type_failure(name, work, result, started))
            return False
        step = task_step(name, work, result, started)
        self.report.steps.append(step)
        return step.ok


def supported_tasks(img_man: Path) -> set[str]:
    """The tasks the executor declares: those whose template parses to a mapping."""
    tasks = set()
    for task in ("training", "mining", "infer"):
        try:
            synth_module.load_template_file(Path(img_man), task)
        except ValueError:
            continue
        tasks.add(task)
    return tasks


def baseline_package(
    base: Path,
    tar: Path,
    object_type: int,
    img_man: Path,
    cache: Path,
    seed: int = 0,
) -> str:
    """A model package for an executor without a training task; returns its stage name.

    The stub baseline (``baseline.py``, what the generated tasks load) is fitted in-process on
    a synthetic training set read back by the contract's dataset reader, evaluated on its
    validation set, written through the validated training-result writer as the stage
    ``baseline`` and packed like the platform. An executor whose author replaced the baseline
    needs ``model=`` instead.
    """
    try:
        # baseline.py is only in the stub executor (framework=none): imported by name, so that
        # the type check of a framework executor does not look for it either.
        baseline = importlib.import_module("..baseline", __package__)
    except ImportError as error:
        raise ValueError(
            "this executor has no training task and no stub baseline: pass a model package "
            "(chain --model)"
        ) from error
    from .. import evaluation
    from ..contract.dataset import read_split
    from ..contract.env import load_env
    from ..contract.images import image_size
    from ..contract.models import pack_model
    from ..contract.results import TrainingResult

    data = synth_module.synthesize(
        base / "baseline-data",
        "training",
        object_type,
        img_man=img_man,
        assets_cache=cache,
        seed=seed,
        template={},  # the executor has no training template
    )
    if data.train_index is None or data.val_index is None:
        raise ValueError("the synthesized training data has no train / val index")
    train, val = (
        read_split(index, data.class_names, data.config["export_format"], object_type)
        for index in (data.train_index, data.val_index)
    )
    num_classes = len(data.class_names)
    model = baseline.fit(train, num_classes, object_type)
    predictions = {
        item.image: baseline.predict(model, *image_size(item.image), object_type) for item in val
    }
    metrics = evaluation.evaluate_predictions(object_type, val, predictions, num_classes)
    stage = "baseline"
    output = load_env(data.env_file).output
    baseline.save(model, output.models_dir / stage / baseline.MODEL_FILE)
    main_metric = ObjectType(object_type).main_metric
    TrainingResult(output, object_type, legacy=False).add_stage(
        stage, [baseline.MODEL_FILE], {main_metric: metrics[main_metric]}
    )
    return pack_model(output.training_result_file, stage, tar, data.config)


def executor_object_type(img_man: Path) -> int:
    """The executor's object_type from its manifest (contract.params, as the executor reads it)."""
    from ..contract.params import manifest_object_type

    return int(manifest_object_type(Path(img_man)))


# ----------------------------------------------------------------------------------------------
# steps


def task_step(name: str, work: Path, result: RunResult, started: float) -> ChainStep:
    """A finished platform task as a chain step: passed when it exited 0 within its time and
    neither the run nor the verifier found an error."""
    findings = _run_findings(result) + verify_findings(work)
    ok = result.returncode == 0 and not result.timed_out and not has_errors(findings)
    note = "" if result.returncode == 0 else _last_log_line(result.log_path)
    return ChainStep(
        name,
        ok=ok,
        returncode=result.returncode,
        findings=findings,
        work_dir=work,
        note=note,
        duration=time.monotonic() - started,
    )


def _expected_object_type_failure(
    name: str, work: Path, result: RunResult, started: float
) -> ChainStep:
    """Legacy env + segmentation executor: exit != 0, monitor state 4, code 300005, nothing else."""
    state, code = read_monitor_state(work / "out" / "monitor.txt")
    problems = []
    if result.timed_out:
        problems.append("timed out")
    if result.returncode == 0:
        problems.append("exited 0")
    if state != 4:
        problems.append(f"monitor state {state} instead of 4")
    if code != OBJECT_TYPE_ERROR:
        problems.append(f"monitor code {code} instead of {OBJECT_TYPE_ERROR}")
    if (work / "out" / "models" / "result.yaml").exists():
        problems.append("a result.yaml was written anyway")
    findings = _run_findings(result) + verify_findings(work, expect_success=False)
    ok = not problems and not has_errors(findings)
    if problems:
        note = "expected a refusal with code 300005: " + ", ".join(problems)
    else:
        note = "refused with 300005 as required (YMIR 1.1 has no segmentation)"
    last = _last_log_line(result.log_path)
    if last:
        note += f"; last log line: {last}"
    return ChainStep(
        name,
        ok=ok,
        returncode=result.returncode,
        findings=findings,
        work_dir=work,
        expected_failure=True,
        note=note,
        duration=time.monotonic() - started,
    )


def read_monitor_state(monitor_file: Path) -> tuple[int | None, int | None]:
    """(state, code) from the first line of monitor.txt; None where absent or unparsable."""
    try:
        first = monitor_file.read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return None, None
    fields = first.split("\t")

    def number(index: int) -> int | None:
        try:
            return int(fields[index])
        except (IndexError, ValueError):
            return None

    return number(3), number(4)


def _last_log_line(log_path: Path) -> str:
    try:
        lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:300] if lines else ""


# ----------------------------------------------------------------------------------------------
# findings: the verifier checks the files, the run adds what only the run can see


def verify_findings(work: Path, expect_success: bool = True) -> list[Finding]:
    """The verifier's findings for a work dir (devkit.verify.verify_work_dir)."""
    return list(verify_work_dir(work, expect_success=expect_success))


def _run_findings(result: RunResult) -> list[Finding]:
    """What only the run sees: timeouts, writes under in/, HOME, monitor history."""
    findings = []
    if result.timed_out:
        findings.append(
            Finding(RUN_TIMEOUT, VERIFIER_FATAL, f"killed after {result.duration:.0f} s (timeout)")
        )
    for change in result.in_changes:
        findings.append(
            Finding(
                RUN_IN_WRITTEN,
                PLATFORM_FATAL,
                f"{change}: /in is mounted read-only on the platform, this write would fail",
            )
        )
    if result.home_written:
        findings.append(
            Finding(
                RUN_HOME_WRITTEN,
                WARNING,
                "the executor created its HOME; in the image HOME must point somewhere writable "
                "(arbitrary uid, no passwd entry)",
            )
        )
    last_percent = 0.0
    for record in result.monitor_records:
        fields = record.split("\n", 1)[0].split("\t")
        if len(fields) < 4:
            continue  # malformed records are the verifier's business (final file)
        if fields[3].strip() == "3":
            findings.append(
                Finding(
                    RUN_MONITOR_DONE,
                    PLATFORM_FATAL,
                    "monitor.txt had state 3 (done) while running: only the platform writes it",
                )
            )
            break
        try:
            percent = float(fields[2])
        except ValueError:
            continue
        if percent + 1e-9 < last_percent:
            findings.append(
                Finding(
                    RUN_MONITOR_BACKWARDS,
                    WARNING,
                    f"progress went back from {last_percent:.2f} to {percent:.2f}",
                )
            )
        last_percent = max(last_percent, percent)
    return findings


def _is_error(finding: Finding) -> bool:
    return has_errors([finding])


# ----------------------------------------------------------------------------------------------
# base dir


def _prepare_base(base: Path) -> None:
    """Like synth's work dirs: refuse a foreign non-empty folder, clear one the devkit made."""
    marker = base / synth_module.MARKER_FILE
    if base.is_dir() and any(base.iterdir()):
        if not marker.is_file():
            raise ValueError(
                f"{base} is not empty and was not made by the devkit: refusing to overwrite it"
            )
        synth_module.make_writable(base)
        for child in base.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(str(child))
            else:
                child.unlink()
    base.mkdir(parents=True, exist_ok=True)
    marker.write_text("created by the devkit's chain; safe to delete\n", encoding="utf-8")
