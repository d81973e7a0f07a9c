"""The platform's active-learning cycle, with the executor as a black box (``devkit al-loop``).

What a YMIR user does to improve a model with mining, played end to end::

    start set -> train -> mine the unlabelled pool, take the top-k -> label them -> train ...

for ``rounds`` rounds, once per mining algorithm (``random`` always, the bar to beat). Every
step is a platform task of its own, run the way the platform runs the executor (:func:`.run.run`,
locally or ``image=``) and verified with the platform's rules (:mod:`.verify`); "labelling"
reveals annotations the loop held back (:mod:`.al_dataset`). After each training the executor
infers a fixed held-out validation set and :mod:`.al_scoring` scores that with the project's
evaluation, so every executor is measured alike. Round 0 (the start set) is trained once per
seed and shared by the algorithms; its model also infers the pool once, for the one-round
enrichment measure of every algorithm's first top-k (cheap: ``enrichment_only`` stops there).

The work dir, each step kept for inspection::

    al-loop.json                   the experiment's settings (a resumed run must match them)
    asset_cache/                   every image once, shared like the platform's per-user cache
    seed-<s>/split.json            the seed's validation, start and pool images
    seed-<s>/round-0/{training,evaluation,pool-inference}/, model.tar
    seed-<s>/<algorithm>/round-<r>/{mining,training,evaluation}/, model.tar, picks.png
    report.json, report.md, curve.png          (rewritten after every round)

Resumable: a step that succeeded leaves ``step.json`` and is not run again; rounds, seeds and
algorithms can be added to a finished experiment.

Seeds are independent experiments: ``jobs`` runs them side by side, each job a process of its
own (optionally pinned to ``cores_per_job`` CPU cores, which the tasks it starts inherit), the
report written by this process from what the jobs send.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, cast

from ..contract.atomic import write_bytes_atomic, write_text_atomic
from ..contract.object_types import ObjectType
from . import al_report, al_scoring, synth
from .al_dataset import (
    LabelledDataset,
    Split,
    ground_truth,
    split_dataset,
    store_assets,
    write_candidate_task,
    write_training_task,
)
from .chain import executor_object_type, supported_tasks, task_step
from .run import DEFAULT_DOCKER, DEFAULT_SHM_SIZE, DEFAULT_USER, register, run
from .verify import format_findings

RANDOM = "random"
SETTINGS_FILE = "al-loop.json"
STEP_FILE = "step.json"
MODEL_TAR = "model.tar"
PICKS_PNG = "picks.png"
DEFAULT_TIMEOUT = 3600.0
NEEDED_TASKS = ("training", "mining", "infer")


class StepFailed(RuntimeError):
    """A platform task of the loop failed or wrote output the platform would reject."""


@dataclass
class LoopSettings:
    """What an experiment is: sizes, rounds, algorithms, seeds and the hyper-parameters.

    ``algorithms``: the mining algorithms to compare (``random`` is always added); empty
    means the mining template's default. ``seeds``: repetitions 1..seeds, each with its own
    start set and pool (the validation set is the same for all). ``*_params``: values a user
    sets in the web UI for each task; ``start_training_params``: round 0's over them (a start
    model trained longer, say, as the public experiment's was to convergence). ``fine_tune``:
    each round trains from the previous round's model instead of from the template's starting
    point. ``start_positives``: how many start images hold an object of the task's classes,
    the others none (default: a random start set; see :func:`.al_dataset.split_dataset`).
    """

    top_k: int = 50
    rounds: int = 3
    start: int = 100
    val: int = 100
    pool: int | None = None
    algorithms: Sequence[str] = ()
    seeds: int = 1
    training_params: dict = field(default_factory=dict)
    start_training_params: dict = field(default_factory=dict)
    mining_params: dict = field(default_factory=dict)
    infer_params: dict = field(default_factory=dict)
    fine_tune: bool = False
    enrichment_only: bool = False
    start_positives: int | None = None

    def experiment(self, dataset: LabelledDataset, object_type: int) -> dict[str, Any]:
        """What a resumed run must share with the first (rounds, seeds, algorithms may grow)."""
        kept: tuple[str, ...] = ("top_k", "start", "start_positives", "val", "pool")
        kept += ("training_params", "mining_params", "infer_params", "fine_tune")
        kept += ("start_training_params",) if self.start_training_params else ()
        values = {key: value for key, value in asdict(self).items() if key in kept}
        values.update(
            dataset=dataset.fingerprint(),
            class_names=list(dataset.class_names),
            object_type=object_type,
        )
        return json.loads(json.dumps(values))  # the form it has once read back


def al_loop(
    work_dir: str | os.PathLike,
    dataset: LabelledDataset,
    settings: LoopSettings,
    *,
    img_man: str | os.PathLike | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    image: str | None = None,
    user: str | None = DEFAULT_USER,
    shm_size: str = DEFAULT_SHM_SIZE,
    docker: str = DEFAULT_DOCKER,
    log: Callable[[str], None] = print,
    jobs: int = 1,
    cores_per_job: int | None = None,
) -> dict[str, Any]:
    """Run (or resume) the experiment in ``work_dir``; return the report (see :mod:`.al_report`).

    ``image``: run the built image like the platform, with ``user``, ``shm_size`` and the
    ``docker`` client; its ``/img-man`` is read first, as YMIR does when the image is added,
    and used unless ``img_man`` is given.

    ``jobs``: seeds run at once, each job in a process of its own; ``cores_per_job``: pin
    each job, and so every task it starts, to that many CPU cores of its own (Linux). The
    results are the same as one after the other: each seed's steps depend on that seed alone.

    Raises:
        ValueError: bad input (sizes, classes, a work dir of another experiment, an executor
            without training, mining or inference, more cores than this process may use),
            before any task runs.
        StepFailed: a task failed; the steps before it are kept for a resumed run (with
            several jobs, the other jobs finish their seeds first).
    """
    job_cores = _job_cores(jobs, cores_per_job)
    work = prepare_work_dir(work_dir)
    runner = _Runner(work, timeout, log, image=image, user=user, shm_size=shm_size, docker=docker)
    if image and img_man is None:
        registration = register(image, work / "registered-img-man", docker=docker)
        if not registration.ok:
            raise ValueError("; ".join(registration.problems))
        img_man = registration.img_man
    img_man_dir = Path(img_man) if img_man is not None else synth.default_img_man()
    object_type = executor_object_type(img_man_dir)
    missing = [task for task in NEEDED_TASKS if task not in supported_tasks(img_man_dir)]
    if missing:
        raise ValueError(
            "the loop trains, mines and infers: this executor has no {} task".format(
                " or ".join(missing)
            )
        )
    dataset.require_masks(object_type)
    mining_template = synth.load_template_file(img_man_dir, "mining")
    algorithms = _algorithms(settings.algorithms, mining_template)
    splits = {
        seed: split_dataset(
            dataset,
            settings.val,
            settings.start,
            settings.pool,
            settings.top_k,
            settings.rounds,
            seed,
            settings.start_positives,
        )
        for seed in range(1, settings.seeds + 1)
    }
    _claim(work, settings.experiment(dataset, object_type))

    counts = dataset.counts(range(len(dataset.images)))
    rare_class = min(range(len(counts)), key=lambda class_id: (counts[class_id], class_id))
    experiment = _Experiment(
        work=work,
        dataset=dataset,
        settings=settings,
        object_type=object_type,
        img_man=img_man_dir,
        cache=work / "asset_cache",
        algorithms=algorithms,
        rare_class=rare_class,
        random_seed_param="random_seed" in mining_template,
        runner=runner,
    )
    for split in splits.values():  # every image once, before any job starts
        store_assets(dataset, experiment.cache, [*split.val, *split.start, *split.pool])
    if job_cores is None:
        for seed, split in splits.items():
            experiment.run_seed(seed, split)
    else:
        _run_jobs(experiment, splits, job_cores)
    return experiment.report(final=True)


def one_job_per_core(seeds: int) -> tuple[int, int | None, str]:
    """``jobs`` and ``cores_per_job`` that run the seeds side by side, each on a CPU core of
    its own, and a line that says so: ``(jobs, cores_per_job, line)``.

    For small models on a CPU: PyTorch on one core runs one thread, and at 64 px a second
    thread does not help. A round-1 training of the MMDetection mining benchmark took 73 CPU
    seconds (74 s wall) on one thread, 346 CPU seconds (308 s wall) on two while one other
    job ran on the machine's 2 cores, its threads spinning while they wait for each other.
    The seeds are independent, so the cores are better spent on one seed each.
    """
    if not hasattr(os, "sched_setaffinity"):  # macOS, Windows: as many threads as cores
        return 1, None, "the seeds one after the other, on all cores (no pinning on this system)"
    jobs = max(1, min(seeds, len(os.sched_getaffinity(0))))
    return jobs, 1, f"{jobs} seed(s) at once, each on a CPU core of its own (one PyTorch thread)"


def _job_cores(jobs: int, cores_per_job: int | None) -> list[set[int] | None] | None:
    """The CPU cores of each job (``None``: not pinned), or ``None`` for no jobs at all (the
    seeds one after the other in this process)."""
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a whole number of at least 1, got {jobs!r}")
    if cores_per_job is None:
        if jobs == 1:
            return None
        if not hasattr(os, "fork"):
            raise ValueError("several jobs need os.fork, which this system has not")
        return [None] * jobs
    if not isinstance(cores_per_job, int) or cores_per_job < 1:
        raise ValueError(
            f"cores_per_job must be a whole number of at least 1, got {cores_per_job!r}"
        )
    if not hasattr(os, "sched_setaffinity"):
        raise ValueError("this system cannot pin a process to CPU cores: leave cores_per_job out")
    cores = sorted(os.sched_getaffinity(0))
    if jobs * cores_per_job > len(cores):
        raise ValueError(
            f"{jobs} job(s) of {cores_per_job} core(s) need {jobs * cores_per_job} CPU cores; "
            f"this process may use {len(cores)}"
        )
    return [set(cores[n * cores_per_job : (n + 1) * cores_per_job]) for n in range(jobs)]


def _run_jobs(
    experiment: _Experiment, splits: dict[int, Split], job_cores: list[set[int] | None]
) -> None:
    """Run the seeds in forked jobs, seed ``s`` in job ``(s - 1) % jobs``; log their lines and
    write the report from what they send. A job's failure is raised once every job ended."""
    context = multiprocessing.get_context("fork")
    seeds = sorted(splits)
    used = job_cores[: len(seeds)]
    jobs: dict[Any, tuple[Any, list[int]]] = {}
    for number, cores in enumerate(used):
        share = seeds[number :: len(used)]
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=_job, args=(experiment, {s: splits[s] for s in share}, cores, sender)
        )
        process.start()
        sender.close()  # the job holds the only sending end: its exit ends the pipe
        jobs[receiver] = (process, share)
    failures: dict[Any, tuple[bool, str]] = {}
    try:
        _follow_jobs(experiment, list(jobs), failures)
    except BaseException:  # Ctrl-C, or the report could not be written: stop every job's task
        for process, _ in jobs.values():
            process.terminate()
        raise
    for receiver, (process, share) in jobs.items():
        process.join()
        if process.exitcode and receiver not in failures:  # killed: memory, a signal
            seeds_text = ", ".join(map(str, share))
            failures[receiver] = (
                False,
                f"the job of seed(s) {seeds_text} ended with exit code {process.exitcode}",
            )
    if failures:
        step_failed = [text for is_step, text in failures.values() if is_step]
        if step_failed:
            raise StepFailed("\n".join(step_failed))
        raise RuntimeError("\n".join(text for _, text in failures.values()))


def _follow_jobs(
    experiment: _Experiment, receivers: list[Any], failures: dict[Any, tuple[bool, str]]
) -> None:
    """Until every job has ended: log their lines, write the report from their results, note
    their failures."""
    waiting = list(receivers)
    while waiting:
        for ready in multiprocessing.connection.wait(waiting):
            receiver = cast(multiprocessing.connection.Connection, ready)
            try:
                kind, *payload = receiver.recv()
            except EOFError:
                waiting.remove(receiver)
                continue
            if kind == "log":
                experiment.runner.log(payload[0])
            elif kind == "progress":
                seed, runs, enrichment = payload
                experiment.runs[seed], experiment.enrichment[seed] = runs, enrichment
                experiment.report(final=False)
            else:
                failures[receiver] = (payload[0], payload[1])


def _job(
    experiment: _Experiment,
    splits: dict[int, Split],
    cores: set[int] | None,
    sender: multiprocessing.connection.Connection,
) -> None:
    """One job, in its forked process: run its seeds, sending log lines and results."""
    # terminated (by the parent, or a kill of the process group): stop the running task too,
    # which run() does on any exception; a plain SIGTERM would leave it running
    signal.signal(signal.SIGTERM, _interrupted)
    if cores:
        os.sched_setaffinity(0, cores)
    experiment.runner.log = lambda line: sender.send(("log", line))
    experiment.publish = lambda seed: sender.send(
        ("progress", seed, experiment.runs[seed], experiment.enrichment[seed])
    )
    try:
        for seed, split in splits.items():
            experiment.run_seed(seed, split)
    except StepFailed as error:
        sender.send(("failed", True, str(error)))
        raise SystemExit(1) from None
    except BaseException as error:  # whatever stopped it, the parent says what
        sender.send(("failed", False, f"seed job: {type(error).__name__}: {error}"))
        raise SystemExit(1) from None


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _algorithms(requested: Sequence[str], mining_template: dict) -> list[str]:
    names = [str(name).strip().lower() for name in requested if str(name).strip()]
    if not names:
        names = [str(mining_template.get("mining_algorithm") or RANDOM).strip().lower()]
    ordered = [RANDOM]
    ordered += [name for name in names if name not in ordered]
    return ordered


def prepare_work_dir(work_dir: str | os.PathLike) -> Path:
    """The experiment folder, created and marked as the devkit's; refuses a foreign one."""
    work = Path(work_dir).absolute()
    if work.exists() and not work.is_dir():
        raise ValueError(f"{work} exists and is not a folder")
    if work.is_dir() and any(work.iterdir()) and not (work / synth.MARKER_FILE).is_file():
        raise ValueError(f"{work} is not empty and was not made by the devkit: use another --work")
    work.mkdir(parents=True, exist_ok=True)
    (work / synth.MARKER_FILE).write_text(
        "created by the devkit's al-loop; safe to delete\n", encoding="utf-8"
    )
    return work


def _claim(work: Path, experiment: dict[str, Any]) -> None:
    """Record the experiment in ``work``, or check it is the one a previous run started there."""
    settings_file = work / SETTINGS_FILE
    if settings_file.is_file():
        before = json.loads(settings_file.read_text(encoding="utf-8"))
        changed = [
            f"{key} {before.get(key)!r} there, {experiment.get(key)!r} now"
            for key in sorted(set(before) | set(experiment))
            if before.get(key) != experiment.get(key)
        ]
        if changed:
            raise ValueError(
                f"{work} holds another experiment ({'; '.join(changed)}): use another --work "
                "to start a new one"
            )
        return
    write_text_atomic(settings_file, json.dumps(experiment, indent=1) + "\n")


# --- one experiment ------------------------------------------------------------------------------


@dataclass
class _Experiment:
    work: Path
    dataset: LabelledDataset
    settings: LoopSettings
    object_type: int
    img_man: Path
    cache: Path
    algorithms: list[str]
    rare_class: int
    random_seed_param: bool
    runner: _Runner
    # seed -> algorithm -> per round {"round", "labelled", "metrics"}
    runs: dict[int, dict[str, list[dict]]] = field(default_factory=dict)
    # seed -> algorithm -> the enrichment of its first top-k
    enrichment: dict[int, dict[str, dict]] = field(default_factory=dict)
    splits: dict[int, Split] = field(default_factory=dict)
    # in a job (see _run_jobs): sends a seed's results to the process that writes the report
    publish: Callable[[int], None] | None = None

    def run_seed(self, seed: int, split: Split) -> None:
        self.splits[seed] = split
        self.runs[seed] = {algorithm: [] for algorithm in self.algorithms}
        self.enrichment[seed] = {}
        root = self.work / f"seed-{seed}"
        root.mkdir(exist_ok=True)
        write_text_atomic(root / "split.json", json.dumps(self._split_record(split), indent=1))
        counts = self.dataset.counts(split.start)
        rare = self.dataset.class_names[self.rare_class]
        positives = sum(1 for index in split.start if self.dataset.images[index].objects)
        self.runner.log(
            f"seed {seed}: {len(split.start)} start, {len(split.pool)} pool, {len(split.val)} "
            f"validation images; {positives} start images hold objects, "
            f"{counts[self.rare_class]} of the rarest class '{rare}'"
        )
        model, metrics = self._train_and_measure(root / "round-0", seed, 0, "", split.start, None)
        for algorithm in self.algorithms:
            self.runs[seed][algorithm].append(
                {"round": 0, "labelled": len(split.start), "metrics": metrics}
            )
        missed = self._pool_misses(root / "round-0" / "pool-inference", seed, split, model)
        labelled = {algorithm: list(split.start) for algorithm in self.algorithms}
        models = {algorithm: model for algorithm in self.algorithms}
        for round_number in range(1, self.settings.rounds + 1):
            # every algorithm mines first: the round's enrichment is known before its trainings
            for algorithm in self.algorithms:
                folder = root / algorithm / f"round-{round_number}"
                unlabelled = sorted(set(split.pool) - set(labelled[algorithm]))
                selected = self._mine(
                    folder / "mining", seed, round_number, algorithm, unlabelled, models[algorithm]
                )
                if round_number == 1:
                    self.enrichment[seed][algorithm] = al_scoring.enrichment(
                        self.dataset, split.pool, selected, missed, self.rare_class
                    )
                labelled[algorithm] += selected
            self.progress(seed)
            if self.settings.enrichment_only:
                break
            for algorithm in self.algorithms:
                folder = root / algorithm / f"round-{round_number}"
                start_from = models[algorithm] if self.settings.fine_tune else None
                models[algorithm], metrics = self._train_and_measure(
                    folder, seed, round_number, algorithm, labelled[algorithm], start_from
                )
                self.runs[seed][algorithm].append(
                    {
                        "round": round_number,
                        "labelled": len(labelled[algorithm]),
                        "metrics": metrics,
                    }
                )
            self.progress(seed)
        self.progress(seed)  # also a seed without rounds

    # --- steps -----------------------------------------------------------------------------------

    def _train_and_measure(
        self,
        folder: Path,
        seed: int,
        round_number: int,
        algorithm: str,
        labelled: Sequence[int],
        pretrained: Path | None,
    ) -> tuple[Path, dict[str, float]]:
        """Train on ``labelled``, package the model, measure it on the validation set."""
        split = self.splits[seed]
        what = f"seed {seed} round {round_number}" + (f" {algorithm}" if algorithm else "")
        tar = folder / MODEL_TAR
        params = dict(self.settings.training_params)
        if round_number == 0:
            params.update(self.settings.start_training_params)

        def train(work: Path) -> dict:
            write_training_task(
                work,
                self.dataset,
                labelled,
                split.val,
                self.object_type,
                self.img_man,
                self.cache,
                params,
                pretrained=pretrained,
            )
            self.runner.run_task(f"{what}: training", work)
            stage = synth.package_training_output(
                work / "out" / "models" / "result.yaml", tar, work / "in" / "config.yaml"
            )
            return {"stage": stage, "images": len(labelled)}

        self.runner.step(f"{what}: training on {len(labelled)} images", folder / "training", train)

        def measure(work: Path) -> dict:
            write_candidate_task(
                work,
                "infer",
                self.dataset,
                self._ordered(split.val),
                self.object_type,
                self.img_man,
                self.cache,
                self.settings.infer_params,
                tar,
            )
            self.runner.run_task(f"{what}: evaluation", work)
            predictions = self._predictions(work)
            gt = ground_truth(self.dataset, split.val, self.object_type)
            metrics = al_scoring.evaluate(
                self.object_type, gt, predictions, len(self.dataset.class_names)
            )
            return {"metrics": metrics}

        record = self.runner.step(
            f"{what}: evaluation on {len(split.val)} images",
            folder / "evaluation",
            measure,
            summary=lambda done: self._metrics_line(done["metrics"]),
        )
        return tar, record["metrics"]

    def _pool_misses(
        self, work_dir: Path, seed: int, split: Split, model: Path
    ) -> dict[int, float]:
        """The start model's missed objects per pool image (for the enrichment measure)."""

        def infer_pool(work: Path) -> dict:
            write_candidate_task(
                work,
                "infer",
                self.dataset,
                self._ordered(split.pool),
                self.object_type,
                self.img_man,
                self.cache,
                self.settings.infer_params,
                model,
            )
            self.runner.run_task(f"seed {seed} round 0: pool inference", work)
            missed = al_scoring.missed_objects(
                self.dataset, split.pool, self._predictions(work), self.object_type
            )
            return {"missed": {self.dataset.images[i].asset_id: n for i, n in missed.items()}}

        record = self.runner.step(
            f"seed {seed} round 0: inference on the {len(split.pool)} pool images",
            work_dir,
            infer_pool,
            summary=lambda done: f"{sum(done['missed'].values()):.1f} objects missed",
        )
        by_asset = self._by_asset(split.pool)
        return {by_asset[asset]: float(count) for asset, count in record["missed"].items()}

    def _mine(
        self,
        work_dir: Path,
        seed: int,
        round_number: int,
        algorithm: str,
        candidates: Sequence[int],
        model: Path,
    ) -> list[int]:
        """Mine ``candidates`` with ``algorithm``; the top-k, as the platform takes them."""
        top_k = self.settings.top_k
        what = f"seed {seed} round {round_number} {algorithm}"
        params = dict(self.settings.mining_params, mining_algorithm=algorithm)
        if self.random_seed_param:
            # a fresh random order every round and seed (the template's seed would repeat it)
            params.setdefault("random_seed", seed * 1000 + round_number)

        def mine(work: Path) -> dict:
            write_candidate_task(
                work,
                "mining",
                self.dataset,
                self._ordered(candidates),
                self.object_type,
                self.img_man,
                self.cache,
                params,
                model,
            )
            self.runner.run_task(f"{what}: mining", work)
            # the platform: the first top-k lines, the asset id from the file name
            lines = (work / "out" / "result.tsv").read_text(encoding="utf-8").splitlines()
            chosen = [os.path.basename(line.split("\t")[0]) for line in lines if line.strip()]
            return {"selected": [name.rsplit(".", 1)[0] for name in chosen[:top_k]]}

        record = self.runner.step(
            f"{what}: mining {len(candidates)} candidates, top {top_k}",
            work_dir,
            mine,
        )
        by_asset = self._by_asset(candidates)
        selected = [by_asset[asset] for asset in record["selected"]]
        picks = work_dir.parent / PICKS_PNG
        if not picks.is_file():  # what the algorithm chose, to look at
            shown = [
                (
                    self.dataset.images[i].source,
                    [(o["category_id"], o["bbox"]) for o in self.dataset.images[i].objects],
                )
                for i in selected
            ]
            write_bytes_atomic(picks, al_report.contact_sheet(shown, self.dataset.class_names))
        return selected

    # --- helpers ---------------------------------------------------------------------------------

    def _ordered(self, indices: Sequence[int]) -> list[int]:
        # the platform lists candidates by asset id: an order unrelated to their content
        return sorted(indices, key=lambda i: self.dataset.images[i].asset_id)

    def _by_asset(self, indices: Sequence[int]) -> dict[str, int]:
        return {self.dataset.images[i].asset_id: i for i in indices}

    def _predictions(self, work: Path) -> dict[str, list[tuple]]:
        return al_scoring.read_predictions(
            work / "out" / "infer-result.json", self.object_type, self.dataset.class_names
        )

    def _metrics_line(self, metrics: dict[str, float]) -> str:
        main, at_50 = al_scoring.METRICS[ObjectType(self.object_type)]
        names = [main] if main == at_50 else [at_50, main]
        return ", ".join(f"{name} {metrics[name]:.3f}" for name in names)

    def _split_record(self, split: Split) -> dict[str, list[str]]:
        return {
            name: [self.dataset.images[i].asset_id for i in getattr(split, name)]
            for name in ("val", "start", "pool")
        }

    def progress(self, seed: int) -> None:
        """The seed's results so far go to the report files, or from a job to its parent."""
        if self.publish is not None:
            self.publish(seed)
        else:
            self.report(final=False)

    def report(self, final: bool) -> dict[str, Any]:
        report = al_report.build_report(
            object_type=self.object_type,
            class_names=self.dataset.class_names,
            rare_class=self.rare_class,
            settings=asdict(self.settings),
            runs=self.runs,
            enrichment=self.enrichment,
        )
        al_report.write_report(report, self.work)
        if final:
            self.runner.log(al_report.format_report(report))
            self.runner.log(f"report: {self.work}/report.md (and .json), plot: curve.png")
        return report


# --- running steps -------------------------------------------------------------------------------


class _Runner:
    """Runs the platform tasks of the loop, skips the ones a previous run finished, logs."""

    def __init__(
        self,
        work: Path,
        timeout: float | None,
        log: Callable[[str], None],
        **run_options: Any,
    ) -> None:
        self.work = work
        self.timeout = timeout
        self.log = log
        self.run_options = run_options if run_options.get("image") else {}

    def step(
        self,
        title: str,
        folder: Path,
        action: Callable[[Path], dict],
        summary: Callable[[dict], str] | None = None,
    ) -> dict:
        """``action(folder)``'s record, from ``folder/step.json`` when a run already did it."""
        record_file = folder / STEP_FILE
        if record_file.is_file():
            record = json.loads(record_file.read_text(encoding="utf-8"))
            note = f": {summary(record)}" if summary else ""
            self.log(f"{title} (done before{note})")
            return record
        started, cpu = time.monotonic(), _children_cpu()
        self.log(f"{title} ...")
        record = action(folder)
        # CPU seconds of the tasks run (a busy machine stretches the wall time, not these; in
        # container mode they are the docker client's only)
        record.update(seconds=time.monotonic() - started, cpu_seconds=_children_cpu() - cpu)
        write_text_atomic(record_file, json.dumps(record) + "\n")
        note = f", {summary(record)}" if summary else ""
        self.log(
            f"{title}: done in {record['seconds']:.0f} s (CPU {record['cpu_seconds']:.0f} s){note}"
        )
        return record

    def run_task(self, name: str, work: Path) -> None:
        """Run the task in ``work`` like the platform and verify it; StepFailed if it fails."""
        started = time.monotonic()
        result = run(work, timeout=self.timeout, **self.run_options)
        outcome = task_step(name, work, result, started)
        if not outcome.ok:
            details = format_findings(outcome.findings)
            raise StepFailed(
                f"{name} failed (exit code {outcome.returncode}) in {work}"
                + (f": {outcome.note}" if outcome.note else "")
                + (f"\n{details}" if details else "")
            )


def _children_cpu() -> float:
    """CPU seconds of the finished child processes so far (the executor runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
