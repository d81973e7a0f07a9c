"""The devkit's active-learning loop, end to end with the stub executor (seconds per run).

Every task of the loop is a real run of the executor as the platform starts it, so these tests
need the stubs to be fast: in projects generated with a reference framework the loop runs in
the mining benchmark's smoke test instead, and only the refusals of bad input (which come
before any run) are tested here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import FRAMEWORK, IMG_MAN, OBJECT_TYPE, SUPPORTED_TASKS
from {{ cookiecutter.package_name }}.contract.params import load_template
from {{ cookiecutter.package_name }}.devkit import al_loop as al_loop_module
from {{ cookiecutter.package_name }}.devkit.__main__ import main as devkit_main
from {{ cookiecutter.package_name }}.devkit.al_dataset import (
    LabelledDataset,
    load_dataset,
    object_box,
    object_mask,
    split_dataset,
    store_assets,
)
from {{ cookiecutter.package_name }}.devkit.al_loop import LoopSettings, StepFailed, al_loop
from {{ cookiecutter.package_name }}.devkit.al_scoring import enrichment, missed_objects
from {{ cookiecutter.package_name }}.devkit.pool import PoolRecipe, write_pool

ALL_TASKS = {"training", "mining", "infer"} <= SUPPORTED_TASKS
needs_stub_loop = pytest.mark.skipif(
    FRAMEWORK != "none" or not ALL_TASKS,
    reason="the loop's runs are tested with the fast stub executor of a project with every "
    "task (a framework's loop runs in the mining benchmark's smoke test)",
)
# Small enough for seconds per task: 10 validation, 10 start, 40 pool images, top-5, 2 rounds.
TINY = dict(val=10, start=10, pool=40, top_k=5, rounds=2)
DEFAULT_ALGORITHM = str((load_template(IMG_MAN, "mining") or {}).get("mining_algorithm", ""))


@pytest.fixture(scope="module")
def pool_dataset(tmp_path_factory: pytest.TempPathFactory) -> LabelledDataset:
    folder = tmp_path_factory.mktemp("pool")
    write_pool(folder, PoolRecipe(images=60, image_size=64, rare_fraction=0.2, seed=3))
    return load_dataset(folder)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, pool_dataset: LabelledDataset) -> dict:
    """One tiny experiment, run once for the tests that inspect it: the report, the log."""
    if FRAMEWORK != "none" or not ALL_TASKS:
        pytest.skip("needs the stub executor with every task")
    work = tmp_path_factory.mktemp("loop") / "experiment"
    lines: list[str] = []
    report = al_loop(work, pool_dataset, LoopSettings(**TINY), log=lines.append)
    return {"work": work, "report": report, "log": lines}


def training_dirs(work: Path) -> list[Path]:
    return sorted(work.glob("seed-*/**/training"))


def asset_ids(index_file: Path) -> list[str]:
    lines = index_file.read_text(encoding="utf-8").splitlines()
    return [Path(line.split("\t")[0]).stem for line in lines if line.strip()]


# --- one experiment ------------------------------------------------------------------------------


@needs_stub_loop
def test_each_round_adds_the_top_k_to_the_labelled_set(finished: dict) -> None:
    report = finished["report"]
    assert report["algorithms"] == ["random", DEFAULT_ALGORITHM]
    for algorithm in report["algorithms"]:
        rounds = report["runs"]["1"][algorithm]
        assert [entry["round"] for entry in rounds] == [0, 1, 2]
        assert [entry["labelled"] for entry in rounds] == [10, 15, 20]
        for entry in rounds:
            metric = entry["metrics"][report["metric_50"]]
            assert isinstance(metric, float) and 0.0 <= metric <= 1.0
    split = json.loads((finished["work"] / "seed-1" / "split.json").read_text(encoding="utf-8"))
    assert len(split["val"]) == 10 and len(split["start"]) == 10 and len(split["pool"]) == 40
    for algorithm in report["algorithms"]:
        mined = []
        for round_number in (1, 2):
            step = finished["work"] / "seed-1" / algorithm / f"round-{round_number}" / "mining"
            selected = json.loads((step / "step.json").read_text(encoding="utf-8"))["selected"]
            # the platform's top-k: the first k lines of the executor's result.tsv
            lines = (step / "out" / "result.tsv").read_text(encoding="utf-8").splitlines()
            assert selected == [Path(line.split("\t")[0]).stem for line in lines[:5]]
            candidates = asset_ids(step / "in" / "candidate-index.tsv")
            assert set(candidates) == set(split["pool"]) - set(mined)
            mined += selected
        assert len(set(mined)) == 10


@needs_stub_loop
def test_labels_are_revealed_only_for_mined_images(finished: dict) -> None:
    work = finished["work"]
    split = json.loads((work / "seed-1" / "split.json").read_text(encoding="utf-8"))
    for algorithm in finished["report"]["algorithms"]:
        revealed = list(split["start"])
        for round_number in (0, 1, 2):
            if round_number:
                folder = work / "seed-1" / algorithm / f"round-{round_number}"
                mining = folder / "mining"
                # mining sees images only: no annotation, no pool image in any index but its own
                assert list((mining / "in" / "annotations").iterdir()) == []
                revealed += json.loads((mining / "step.json").read_text(encoding="utf-8"))[
                    "selected"
                ]
            else:
                folder = work / "seed-1" / "round-0"
            training = folder / "training" / "in"
            assert sorted(asset_ids(training / "train-index.tsv")) == sorted(revealed)
            assert sorted(asset_ids(training / "val-index.tsv")) == sorted(split["val"])
            coco = json.loads((training / "annotations" / "coco-annotations.json").read_text())
            exported = {Path(image["file_name"]).stem for image in coco["images"]}
            assert exported == set(revealed) | set(split["val"])
            hidden = set(split["pool"]) - set(revealed)
            assert not hidden & exported
            assert len(hidden) == 40 - 5 * round_number


@needs_stub_loop
def test_every_step_is_a_verified_platform_task(finished: dict) -> None:
    from {{ cookiecutter.package_name }}.devkit.verify import has_errors, verify_work_dir

    steps = sorted(finished["work"].glob("seed-*/**/step.json"))
    # round 0: training, evaluation, pool inference; per round and algorithm: mining,
    # training, evaluation
    assert len(steps) == 3 + 2 * 2 * 3
    for step in steps:
        assert not has_errors(verify_work_dir(step.parent)), step.parent
    env = yaml.safe_load((steps[0].parent / "in" / "env.yaml").read_text(encoding="utf-8"))
    assert env["protocol_version"] == "1.1.0"


@needs_stub_loop
def test_report_files_and_progress(finished: dict) -> None:
    work, report = finished["work"], finished["report"]
    assert json.loads((work / "report.json").read_text(encoding="utf-8")) == report
    table = (work / "report.md").read_text(encoding="utf-8")
    assert f"## {report['metric_50']}" in table
    for algorithm in report["algorithms"]:
        assert f"| {algorithm} |" in table
    assert "round 2 (20 images)" in table and "last round vs random" in table
    with Image.open(work / "curve.png") as plot:
        assert plot.format == "PNG" and plot.size == (800, 520)
    for algorithm in report["algorithms"]:  # each top-k as thumbnails, 10 per row
        with Image.open(work / "seed-1" / algorithm / "round-1" / "picks.png") as picks:
            assert picks.size == (960, 96 + 16)
    summary = report["summary"][DEFAULT_ALGORITHM][-1]
    paired = summary[f"{report['metric_50']}_vs_random"]
    assert paired["values"] == [
        report["runs"]["1"][DEFAULT_ALGORITHM][-1]["metrics"][report["metric_50"]]
        - report["runs"]["1"]["random"][-1]["metrics"][report["metric_50"]]
    ]
    assert set(report["enrichment_summary"]) == set(report["algorithms"])
    progress = "\n".join(finished["log"])
    assert "seed 1 round 2 random: training on 20 images: done in" in progress
    assert "last round vs random" in progress  # the final table is printed too


@needs_stub_loop
def test_a_rerun_resumes_and_adds_rounds_only(
    finished: dict, pool_dataset: LabelledDataset, tmp_path: Path
) -> None:
    work = tmp_path / "copy"
    shutil.copytree(str(finished["work"]), str(work), symlinks=True)
    before = {path: path.stat().st_mtime_ns for path in work.glob("seed-*/**/step.json")}
    lines: list[str] = []
    al_loop(work, pool_dataset, LoopSettings(**dict(TINY, rounds=3)), log=lines.append)
    after = {path: path.stat().st_mtime_ns for path in work.glob("seed-*/**/step.json")}
    assert {path: after[path] for path in before} == before  # nothing done twice
    assert len(after) == len(before) + 2 * 3  # round 3 of both algorithms
    assert sum("(done before" in line for line in lines) == len(before)
    with pytest.raises(ValueError, match=r"holds another experiment .*top_k 5 there, 6 now"):
        al_loop(work, pool_dataset, LoopSettings(**dict(TINY, top_k=6)), log=lines.append)


@needs_stub_loop
def test_seeds_repeat_with_other_start_sets_and_report_the_spread(
    tmp_path: Path, pool_dataset: LabelledDataset
) -> None:
    settings = LoopSettings(**dict(TINY, rounds=1), seeds=2, enrichment_only=True)
    report = al_loop(tmp_path / "seeds", pool_dataset, settings, log=lambda line: None)
    splits = [
        json.loads((tmp_path / "seeds" / f"seed-{seed}" / "split.json").read_text())
        for seed in (1, 2)
    ]
    assert splits[0]["val"] == splits[1]["val"]  # the same held-out set
    assert splits[0]["start"] != splits[1]["start"]
    # enrichment only: the start model is trained and measured, no later round
    assert all(len(rounds) == 1 for rounds in report["runs"]["2"].values())
    assert not list((tmp_path / "seeds").glob("seed-*/*/round-1/training"))
    for algorithm in report["algorithms"]:
        stats = report["summary"][algorithm][0][report["metric_50"]]
        assert len(stats["values"]) == 2 and stats["std"] >= 0.0
        assert set(report["enrichment"]["2"][algorithm]) >= {"missed", "rare"}


@needs_stub_loop
def test_a_failing_task_stops_the_loop_with_its_last_log_line(
    tmp_path: Path, pool_dataset: LabelledDataset
) -> None:
    settings = LoopSettings(**TINY, algorithms=["no-such-algorithm"])
    with pytest.raises(
        StepFailed, match=r"(?s)no-such-algorithm: mining failed .*mining_algorithm"
    ):
        al_loop(tmp_path / "fails", pool_dataset, settings, log=lambda line: None)
    # what ran before is kept for a resumed run
    assert (tmp_path / "fails" / "seed-1" / "round-0" / "training" / "step.json").is_file()


@needs_stub_loop
def test_the_start_model_trains_with_its_own_params(
    tmp_path: Path, pool_dataset: LabelledDataset
) -> None:
    """``start_training_params`` apply to round 0 only, over ``training_params``; a resumed
    run must share them."""
    work = tmp_path / "start-params"
    settings = LoopSettings(
        **dict(TINY, rounds=1),
        training_params={"shm_size": "8G"},
        start_training_params={"shm_size": "4G"},
    )
    al_loop(work, pool_dataset, settings, log=lambda line: None)

    def config(step: str) -> dict:
        path = work / "seed-1" / step / "training" / "in" / "config.yaml"
        return yaml.safe_load(path.read_text(encoding="utf-8"))

    assert config("round-0")["shm_size"] == "4G"
    assert config("random/round-1")["shm_size"] == "8G"
    recorded = json.loads((work / "al-loop.json").read_text(encoding="utf-8"))
    assert recorded["start_training_params"] == {"shm_size": "4G"}
    settings.start_training_params = {}
    with pytest.raises(ValueError, match=r"holds another experiment .*start_training_params"):
        al_loop(work, pool_dataset, settings, log=lambda line: None)


# --- jobs ----------------------------------------------------------------------------------------


@needs_stub_loop
def test_jobs_run_the_seeds_side_by_side_each_on_its_own_core(
    finished: dict, pool_dataset: LabelledDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two seeds in two forked jobs: the same results as one after the other (seed 1 is the
    sequential experiment's seed 1), every log line and the report in this process, each job's
    tasks pinned to a core of their own when the machine has two."""
    if not hasattr(os, "fork"):
        pytest.skip("jobs are forked processes")
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    cores_per_job = 1 if len(cores) >= 2 else None
    seen = tmp_path / "tasks.txt"
    real_run = al_loop_module.run

    def recording_run(work: Path, **options: object) -> object:
        # runs in the job's process: what it was pinned to goes to a file
        pinned = sorted(os.sched_getaffinity(0)) if cores_per_job else []
        with seen.open("a", encoding="utf-8") as fh:
            seed = next(part for part in Path(work).parts if part.startswith("seed-"))
            fh.write(json.dumps([seed, os.getpid(), pinned]) + "\n")
        return real_run(work, **options)

    monkeypatch.setattr(al_loop_module, "run", recording_run)
    lines: list[str] = []
    work = tmp_path / "jobs"
    settings = LoopSettings(**TINY, seeds=2)
    report = al_loop(
        work, pool_dataset, settings, log=lines.append, jobs=2, cores_per_job=cores_per_job
    )

    # the stub's random scores hang on the candidates' paths, which lie in another work dir
    sequential = finished["report"]["runs"]["1"]
    assert report["runs"]["1"][DEFAULT_ALGORITHM] == sequential[DEFAULT_ALGORITHM]
    assert report["runs"]["1"]["random"][0] == sequential["random"][0]
    assert set(report["runs"]) == {"1", "2"} and report["runs"]["2"] != report["runs"]["1"]
    assert json.loads((work / "report.json").read_text(encoding="utf-8")) == report
    log = "\n".join(lines)
    for seed in (1, 2):
        assert f"seed {seed} round 2 random: training on 20 images: done in" in log
    assert "last round vs random" in log
    tasks = [json.loads(line) for line in seen.read_text(encoding="utf-8").splitlines()]
    seed_of = {pid: {seed for seed, p, _ in tasks if p == pid} for _, pid, _ in tasks}
    assert sorted(map(sorted, seed_of.values())) == [["seed-1"], ["seed-2"]]  # a job per seed
    assert os.getpid() not in seed_of
    if cores_per_job:
        pinned = {seed: tuple(p) for seed, _, p in tasks}
        assert sorted(pinned.values()) == [(cores[0],), (cores[1],)]


@needs_stub_loop
def test_a_failing_job_lets_the_others_finish_then_stops_the_loop(
    tmp_path: Path, pool_dataset: LabelledDataset
) -> None:
    if not hasattr(os, "fork"):
        pytest.skip("jobs are forked processes")
    settings = LoopSettings(**dict(TINY, rounds=1), seeds=2, algorithms=["no-such-algorithm"])
    with pytest.raises(StepFailed, match=r"(?s)seed 1 round 1 no-such-algorithm: mining failed"):
        al_loop(tmp_path / "fails", pool_dataset, settings, log=lambda line: None, jobs=2)
    for seed in (1, 2):  # each job ran until its own failure; kept for a resumed run
        assert (
            tmp_path / "fails" / f"seed-{seed}" / "round-0" / "training" / "step.json"
        ).is_file()


# The loop with two jobs, each task a `sleep` in a session of its own as run() starts tasks; the
# pids of the sleeps go to a file. Run in a process of its own, which the test then terminates.
TERMINATED_LOOP = """
import os, signal, subprocess, sys, time
from pathlib import Path

from {{ cookiecutter.package_name }}.devkit import al_loop as module
from {{ cookiecutter.package_name }}.devkit.al_dataset import load_dataset

work, pool, pids = (Path(arg) for arg in sys.argv[1:])


def slow_run(task, **options):
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    with pids.open("a") as fh:
        fh.write(f"{proc.pid}\\n")
    try:
        proc.wait()
    except BaseException:  # what run() does: no task outlives the loop
        os.killpg(proc.pid, signal.SIGKILL)
        raise


module.run = slow_run
settings = module.LoopSettings(val=10, start=10, pool=40, top_k=5, rounds=1, seeds=2)
module.al_loop(work, load_dataset(pool), settings, log=lambda line: None, jobs=2)
"""


@needs_stub_loop
@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups")
def test_terminated_jobs_stop_their_tasks(tmp_path: Path, pool_dataset: LabelledDataset) -> None:
    script, pids = tmp_path / "loop.py", tmp_path / "pids.txt"
    script.write_text(TERMINATED_LOOP, encoding="utf-8")
    folder = str(pool_dataset.annotations_file.parent)
    arguments = [sys.executable, str(script), str(tmp_path / "work"), folder, str(pids)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    loop = subprocess.Popen(arguments, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_lines(pids)) < 2:  # both jobs in a task
        time.sleep(0.1)
    assert len(_lines(pids)) == 2, "the jobs never started their tasks"
    os.killpg(loop.pid, signal.SIGTERM)  # the loop and its jobs, not the tasks' sessions
    loop.wait(timeout=30)
    tasks = [int(pid) for pid in _lines(pids)]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in tasks):
        time.sleep(0.1)
    assert not [pid for pid in tasks if _alive(pid)]


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split() if path.is_file() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not reaped: its parent, the job, was killed) is no running task
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    return True


@pytest.mark.parametrize(
    "jobs, cores_per_job, message",
    [
        (0, None, "jobs must be a whole number of at least 1, got 0"),
        (1, 0, "cores_per_job must be a whole number of at least 1, got 0"),
        (1000, 1, r"1000 job\(s\) of 1 core\(s\) need 1000 CPU cores; this process may use"),
    ],
)
def test_bad_jobs_are_refused_before_any_task_runs(
    tmp_path: Path,
    pool_dataset: LabelledDataset,
    jobs: int,
    cores_per_job: int | None,
    message: str,
) -> None:
    if cores_per_job and not hasattr(os, "sched_setaffinity"):
        pytest.skip("no pinning on this system")
    with pytest.raises(ValueError, match=message):
        al_loop(
            tmp_path / "bad",
            pool_dataset,
            LoopSettings(**TINY),
            log=lambda line: None,
            jobs=jobs,
            cores_per_job=cores_per_job,
        )
    assert not (tmp_path / "bad").exists()


# --- container mode ------------------------------------------------------------------------------

# A stand-in `docker` that runs the executor on what would be mounted: it copies /in, rewrites the
# container paths to the copy (what the container's mounts would resolve them to), runs the
# executor into the real /out and names the candidates by their /in paths in result.tsv again.
# Registration (`cat /img-man/...`) prints the project's img-man.
FAKE_DOCKER = """
import json, os, shutil, subprocess, sys, tempfile
from pathlib import Path

args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_CALLS"], "a") as fh:
    fh.write(json.dumps(args) + "\\n")
if args[0] != "run" or "--entrypoint" in args:
    sys.exit(0)
if "cat" in args:
    source = Path(os.environ["FAKE_IMG_MAN"]) / Path(args[-1]).name
    if not source.exists():
        sys.exit(1)
    sys.stdout.write(source.read_text())
    sys.exit(0)
mounts = dict(reversed(args[i + 1].split(":")[:2]) for i, a in enumerate(args) if a == "-v")
root = Path(tempfile.mkdtemp())
shutil.copytree(mounts["/in"], str(root / "in"), symlinks=True)
os.symlink(mounts["/out"], str(root / "out"))
os.symlink(os.environ["FAKE_IMG_MAN"], str(root / "img-man"))
sys.path.insert(0, os.environ["FAKE_PYTHONPATH"])
from {{ cookiecutter.package_name }}.devkit.run import to_host_paths

to_host_paths(root)
env = dict(os.environ, YMIR_ENV_FILE=str(root / "in" / "env.yaml"))
code = subprocess.call([sys.executable, "-m", "{{ cookiecutter.package_name }}"], env=env)
mined = Path(mounts["/out"]) / "result.tsv"
if mined.exists():  # in a container the candidates' paths start with /in
    mined.write_text(mined.read_text().replace(str(root / "in"), "/in"))
sys.exit(code)
"""


@needs_stub_loop
def test_container_mode_runs_every_task_in_the_image(
    tmp_path: Path, pool_dataset: LabelledDataset, monkeypatch: pytest.MonkeyPatch, finished: dict
) -> None:
    docker = tmp_path / "docker"
    docker.write_text("#!" + sys.executable + "\n" + FAKE_DOCKER, encoding="utf-8")
    docker.chmod(0o755)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_DOCKER_CALLS", str(calls))
    monkeypatch.setenv("FAKE_IMG_MAN", str(IMG_MAN))
    monkeypatch.setenv("FAKE_PYTHONPATH", str(Path(al_loop_module.__file__).parents[2]))
    work = tmp_path / "container"
    report = al_loop(
        work, pool_dataset, LoopSettings(**TINY), image="exec:1", docker=str(docker), log=print
    )
    runs = [json.loads(line) for line in calls.read_text().splitlines()]
    registration = [call for call in runs if "cat" in call]
    tasks = [
        call
        for call in runs
        if call[0] == "run" and "cat" not in call and "--entrypoint" not in call
    ]
    assert len(registration) == 4 and (work / "registered-img-man" / "manifest.yaml").is_file()
    assert len(tasks) == 3 + 2 * 2 * 3
    for call in tasks:
        assert call[call.index("--network") + 1] == "none" and call[-1] == "exec:1"
        assert any(value.endswith("/in:/in:ro") for value in call)
    # the stub is deterministic: the image's runs give the local runs' numbers, except random's
    # (its seed is the image path, which differs between /in and a local folder)
    local = finished["report"]["runs"]["1"][DEFAULT_ALGORITHM]
    assert report["runs"]["1"][DEFAULT_ALGORITHM] == local


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sizes, message",
    [
        (dict(pool=4, top_k=5, rounds=1), "the pool has 4 images, fewer than top_k = 5"),
        (dict(pool=8, top_k=5, rounds=2), "fewer than top_k x rounds = 5 x 2"),
        (dict(start=0), "the start set is empty"),
        (dict(val=0), "the validation set is empty"),
        (dict(val=30, start=30, pool=5), "the dataset has 60 images: 30 validation"),
    ],
)
def test_bad_sizes_are_refused_before_any_task_runs(
    tmp_path: Path, pool_dataset: LabelledDataset, sizes: dict, message: str
) -> None:
    if not ALL_TASKS:
        pytest.skip("the loop needs training, mining and inference")
    settings = LoopSettings(**dict(TINY, **sizes))
    with pytest.raises(ValueError, match=message):
        al_loop(tmp_path / "bad", pool_dataset, settings, log=lambda line: None)
    assert not list((tmp_path / "bad").glob("seed-*"))


def test_a_start_set_with_positives_like_the_public_experiment(
    pool_dataset: LabelledDataset,
) -> None:
    """``start_positives``: that many start images with an object of the task's classes, the
    rest without any; the validation set stays the random split's, the pool the images left."""
    rare_only = load_dataset(pool_dataset.annotations_file.parent, class_names=["rare"])
    sizes = dict(val=10, start=8, pool=30, top_k=5, rounds=2)
    plain = split_dataset(rare_only, **sizes, seed=1)
    for seed in (1, 2):
        split = split_dataset(rare_only, **sizes, seed=seed, start_positives=3)
        positives = [index for index in split.start if rare_only.images[index].objects]
        assert len(split.start) == 8 and len(positives) == 3
        assert split.val == plain.val
        assert len(split.pool) == 30 and not set(split.pool) & (set(split.start) | set(split.val))
    seeds = [split_dataset(rare_only, **sizes, seed=seed, start_positives=3) for seed in (1, 2)]
    assert seeds[0].start != seeds[1].start
    assert split_dataset(rare_only, **sizes, seed=1, start_positives=None) == plain


def test_a_start_set_the_dataset_cannot_fill_is_refused(pool_dataset: LabelledDataset) -> None:
    rare_only = load_dataset(pool_dataset.annotations_file.parent, class_names=["rare"])
    sizes = dict(val=10, pool=10, top_k=5, rounds=2, seed=1)
    val = set(split_dataset(rare_only, start=8, **sizes).val)
    left = [image for i, image in enumerate(rare_only.images) if i not in val]
    with_objects = sum(1 for image in left if image.objects)
    without = len(left) - with_objects
    refusals = [
        (8, 9, "start_positives must be between 0 and the start set's 8 images, got 9"),
        (8, -1, "start_positives must be between 0 and the start set's 8 images, got -1"),
        (
            with_objects + 1,
            with_objects + 1,
            f"asks for {with_objects + 1} images with an object of the task's classes "
            f"\\(rare\\); outside the validation set the dataset has {with_objects}$",
        ),
    ]
    if without < len(left) - sizes["pool"]:
        refusals.append(
            (without + 1, 0, f"asks for {without + 1} images without an object of the task's")
        )
    for start, positives, message in refusals:
        with pytest.raises(ValueError, match=message):
            split_dataset(rare_only, start=start, **sizes, start_positives=positives)


def test_a_dataset_without_the_tasks_classes_is_refused(pool_dataset: LabelledDataset) -> None:
    folder = pool_dataset.annotations_file.parent
    with pytest.raises(ValueError, match="classes differ from the task's: cat not in"):
        load_dataset(folder, class_names=["common", "cat"])
    chosen = load_dataset(folder, class_names=["Rare"])  # names are matched like YMIR's
    assert chosen.class_names == ["rare"]
    assert all(obj["category_id"] == 0 for image in chosen.images for obj in image.objects)


def test_a_segmentation_executor_needs_masks(tmp_path: Path, pool_dataset: LabelledDataset) -> None:
    coco = json.loads(pool_dataset.annotations_file.read_text(encoding="utf-8"))
    for annotation in coco["annotations"]:
        annotation.pop("segmentation")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps(coco), encoding="utf-8")
    dataset = load_dataset(pool_dataset.annotations_file.parent, boxes)
    dataset.require_masks(2)  # boxes are all detection needs
    for object_type in (3, 4):
        with pytest.raises(ValueError, match="has no segmentation; a segmentation executor"):
            dataset.require_masks(object_type)


def test_an_executor_without_every_task_is_refused(
    tmp_path: Path, pool_dataset: LabelledDataset
) -> None:
    img_man = tmp_path / "img-man"
    img_man.mkdir()
    (img_man / "manifest.yaml").write_text(f"object_type: {OBJECT_TYPE}\n", encoding="utf-8")
    (img_man / "training-template.yaml").write_text("epochs: 1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="has no mining or infer task"):
        al_loop(tmp_path / "w", pool_dataset, LoopSettings(**TINY), img_man=img_man)


def test_a_foreign_work_dir_is_never_touched(tmp_path: Path, pool_dataset) -> None:
    (tmp_path / "mine.txt").write_text("precious", encoding="utf-8")
    with pytest.raises(ValueError, match="not made by the devkit"):
        al_loop(tmp_path, pool_dataset, LoopSettings(**TINY))
    assert os.listdir(tmp_path) == ["mine.txt"]


# --- the synthetic pool --------------------------------------------------------------------------


def test_pool_lookalikes_and_a_faint_rare_class(tmp_path: Path) -> None:
    """Lookalikes: the rare class's ellipses, unannotated and without the white dot that the
    rare objects then carry; ``rare_contrast`` fades both into the background."""
    size = 64

    def rare_objects(recipe: PoolRecipe, name: str) -> list[tuple[np.ndarray, np.ndarray]]:
        dataset = load_dataset(tmp_path / name, write_pool(tmp_path / name, recipe), ["rare"])
        found = []
        for image in dataset.images:
            pixels = np.asarray(Image.open(image.source).convert("RGB"), dtype=float)
            for obj in image.objects:
                found.append((pixels, object_mask(obj, image)))
        return found

    full = rare_objects(PoolRecipe(images=40, image_size=size, rare_fraction=1.0), "plain")
    marked = rare_objects(
        PoolRecipe(images=40, image_size=size, rare_fraction=1.0, lookalike_fraction=0.5), "dots"
    )
    faint = rare_objects(
        PoolRecipe(
            images=40,
            image_size=size,
            rare_fraction=1.0,
            lookalike_fraction=0.5,
            rare_contrast=0.5,
        ),
        "faint",
    )
    assert len(full) == len(marked) == len(faint) == 40  # the same objects, drawn otherwise

    def brightest(pixels: np.ndarray, mask: np.ndarray) -> float:
        return float(pixels[mask].sum(axis=1).max())

    def blue_over_red(pixels: np.ndarray, mask: np.ndarray) -> float:
        body = np.median(pixels[mask], axis=0)
        return float(body[2] - body[0])

    # a white dot inside every marked rare object, none inside the plain ones
    assert all(brightest(*obj) < 600 for obj in full)
    assert all(brightest(*obj) > 600 for obj in marked)
    # faded: the body's blue stands out less from the (grey-ish) background
    assert np.mean([blue_over_red(*o) for o in faint]) < 0.7 * np.mean(
        [blue_over_red(*o) for o in marked]
    )
    # lookalikes are never annotated: a pool of nothing else has no objects, but blue ellipses
    only = PoolRecipe(
        images=10,
        image_size=size,
        rare_fraction=0.0,
        common_fraction=0.0,
        distractor_fraction=0.0,
        lookalike_fraction=1.0,
    )
    dataset = load_dataset(tmp_path / "only", write_pool(tmp_path / "only", only))
    assert not any(image.objects for image in dataset.images)
    for image in dataset.images:
        pixels = np.asarray(Image.open(image.source).convert("RGB"), dtype=int)
        assert ((pixels[..., 2] - pixels[..., 0]) > 100).sum() > 30  # a blue blob
    with pytest.raises(ValueError, match="rare_contrast must be between 0 and 1, got 2"):
        PoolRecipe(rare_contrast=2).check()


# --- the measures --------------------------------------------------------------------------------


def test_enrichment_is_one_for_the_base_rate(pool_dataset: LabelledDataset) -> None:
    rare = pool_dataset.class_names.index("rare")
    pool = list(range(20))
    with_rare = [
        i for i in pool if any(o["category_id"] == rare for o in pool_dataset.images[i].objects)
    ]
    missed = {i: (2 if i < 10 else 0) for i in pool}
    everything = enrichment(pool_dataset, pool, pool, missed, rare)
    assert everything["missed"] == pytest.approx(1.0) and everything["rare"] == pytest.approx(1.0)
    # the first ten images hold every miss: picking five of them is twice the base rate
    half = enrichment(pool_dataset, pool, pool[:5], missed, rare)
    assert half["missed"] == pytest.approx((10 / 20) / (5 / 20))
    assert half["missed_in_top_k"] == 10
    if with_rare:
        top = enrichment(pool_dataset, pool, with_rare[:1], missed, rare)
        assert top["rare"] >= 1.0
    nothing = enrichment(pool_dataset, pool, pool[:5], {i: 0 for i in pool}, rare)
    assert nothing["missed"] is None


def test_a_miss_counts_one_minus_the_best_matching_score(
    pool_dataset: LabelledDataset, tmp_path: Path
) -> None:
    index = next(i for i, image in enumerate(pool_dataset.images) if len(image.objects) == 1)
    store_assets(pool_dataset, tmp_path, [index])
    image = pool_dataset.images[index]
    (obj,) = image.objects
    x, y, w, h = object_box(obj)
    other = 1 - obj["category_id"]
    if OBJECT_TYPE in (3, 4):
        mask = object_mask(obj, image)
        shifted = np.roll(mask, image.width // 2, axis=1)  # the same shape elsewhere
        found, elsewhere = (mask, obj["category_id"]), (shifted, obj["category_id"])
        wrong_class = (mask, other)
    else:
        found, elsewhere = (x, y, w, h, obj["category_id"]), (x + w, y, w, h, obj["category_id"])
        wrong_class = (x, y, w, h, other)

    def missed(*predictions: tuple) -> float:
        result = missed_objects(
            pool_dataset, [index], {image.asset: list(predictions)}, OBJECT_TYPE
        )
        return result[index]

    assert missed() == 1.0
    assert missed((*found, 0.8)) == pytest.approx(0.2)
    assert missed((*found, 0.3), (*found, 0.9)) == pytest.approx(0.1)  # the best match counts
    assert missed((*elsewhere, 0.9)) == 1.0  # IoU < 0.5
    assert missed((*wrong_class, 0.9)) == 1.0


# --- command line --------------------------------------------------------------------------------


@needs_stub_loop
def test_cli_al_loop(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    work = tmp_path / "cli"
    arguments = ["al-loop", "--work", str(work), "--synthetic", "40", "--val", "5"]
    arguments += ["--start", "5", "--start-positives", "2", "--classes", "rare"]
    arguments += ["--top-k", "5", "--rounds", "1", "--enrichment-only"]
    assert devkit_main(arguments) == 0
    out = capsys.readouterr().out
    assert "One-round enrichment" in out and (work / "dataset" / "annotations.json").is_file()
    assert "2 start images hold objects" in out
    assert json.loads((work / "al-loop.json").read_text(encoding="utf-8"))["start_positives"] == 2
    assert devkit_main([*arguments[:-3], "--top-k", "6", "--rounds", "1"]) == 2
    assert "holds another experiment" in capsys.readouterr().err
    assert devkit_main(["al-loop", "--work", str(tmp_path / "x"), "--dataset", str(tmp_path)]) == 2
    assert "json files" in capsys.readouterr().err
    assert devkit_main([*arguments, "--jobs", "0"]) == 2
    assert "jobs must be a whole number of at least 1, got 0" in capsys.readouterr().err
