"""Training overhead: the executor's training task against a bare mmengine runner, same config.

Each round synthesises a training task (devkit data, outside the timing) and measures, side
by side:

- **executor**: the whole training task through the entrypoint (``main``): reading the YMIR
  dataset, writing the COCO files, config surgery, the runner with the executor's hooks
  (progress to monitor.txt, model stages ``best`` / ``last`` with their config, result.yaml);
- **bare**: ``Runner.from_cfg(cfg).train()`` on the config the executor dumped for that run
  (``train_config.py``: same model, data, schedule, evaluation and checkpoints), without any
  YMIR hook.

Inside the executor's run it also clocks where the extra time goes: the **preparation** before
its runner starts (dataset reading, COCO conversion, config surgery: once per task) and the
executor's **hooks** (progress, NaN check, stage writing; the runner calls them synchronously,
so their wall time is exactly what they add to training).

It prints the median seconds and two overheads: end to end, ``executor / bare - 1`` (noisy on a
shared CPU: runs of the same config differ by several percent), and the hooks' share of the
runner's own training time, ``hooks / (runner - hooks)``, which is what the executor adds to
every epoch. With tiny runs the fixed costs weigh more than they do in a real training: raise
``--train-images`` and ``--epochs`` for a representative end-to-end number. Example::

    PYTHONPATH=src python benchmarks/mmdetection_training.py --train-images 16 --img-size 128
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import yaml

from {{ cookiecutter.package_name }}.__main__ import main as executor_main
from {{ cookiecutter.package_name }}.contract.params import manifest_object_type
from {{ cookiecutter.package_name }}.devkit.synth import default_img_man, synthesize
from {{ cookiecutter.package_name }}.frameworks.mmdetection import models
from {{ cookiecutter.package_name }}.frameworks.openmmlab import checkpoint, hooks, weights


def training_work(work: Path, object_type: int, args: argparse.Namespace) -> Path:
    """A synthetic training task (``<work>/in``) with the benchmark's hyper-parameters."""
    syn = synthesize(
        work, "training", object_type, num_train=args.train_images, num_val=args.val_images
    )
    config = yaml.safe_load(syn.config_file.read_text(encoding="utf-8"))
    config.update(
        {
            "model": args.model,
            "epochs": args.epochs,
            "batch_size_per_gpu": args.batch_size,
            "num_workers_per_gpu": args.workers,
            "img_size": args.img_size,
            "val_interval": 1,
        }
    )
    syn.config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    return syn.env_file


@contextlib.contextmanager
def quiet():
    """Keep the runners' log lines out of the benchmark's output (shown when a run fails)."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield buffer
    except BaseException:
        print(buffer.getvalue()[-5000:], file=sys.stderr)
        raise


def settle() -> None:
    """Collect the previous run's garbage before timing the next one.

    A finished runner's DataLoaders (persistent workers) sit in reference cycles; collected at
    a random moment of the next run, their workers' shutdown (seconds) would be timed there.
    """
    gc.collect()


class ExecutorClock:
    """Where the executor's seconds go: before its runner exists, and inside its own hooks.

    Patches, for the duration of :meth:`watching`, ``Runner.__init__`` (the first call marks
    the end of the preparation) and every stage method of the executor's hooks (their wall
    time is summed). The executor runs them in this process (one CPU process).
    """

    def __init__(self) -> None:
        self.started = 0.0
        self.runner_built: float | None = None
        self.in_hooks = 0.0

    @property
    def preparation(self) -> float:
        """Seconds from the task's start to the runner's construction."""
        return (self.runner_built or self.started) - self.started

    @contextlib.contextmanager
    def watching(self):
        from mmengine.hooks import Hook
        from mmengine.runner import Runner

        patches = [(Runner, "__init__", self._marking(Runner.__init__))]
        for hook in (hooks.YmirTrainingHook, hooks.NonFiniteLossHook):
            for stage in Hook.stages:
                if stage in vars(hook):
                    patches.append((hook, stage, self._timing(vars(hook)[stage])))
        saved = [(owner, name, vars(owner)[name]) for owner, name, _ in patches]
        for owner, name, replacement in patches:
            setattr(owner, name, replacement)
        self.started = time.perf_counter()
        try:
            yield self
        finally:
            for owner, name, original in saved:
                setattr(owner, name, original)

    def _marking(self, init):
        def marked(runner, *args, **kwargs):
            if self.runner_built is None:
                self.runner_built = time.perf_counter()
            return init(runner, *args, **kwargs)

        return marked

    def _timing(self, method):
        def timed(hook, *args, **kwargs):
            started = time.perf_counter()
            try:
                return method(hook, *args, **kwargs)
            finally:
                self.in_hooks += time.perf_counter() - started

        return timed


def run_executor(env_file: Path, clock: ExecutorClock | None = None) -> tuple[float, Path]:
    """Seconds of the executor's training task, and the config it dumped for its runner.

    With a ``clock``, the task's preparation and hook seconds are recorded there too.
    """
    settle()
    watching = clock.watching() if clock is not None else contextlib.nullcontext()
    with quiet() as buffer, watching:
        started = time.perf_counter()
        code = executor_main(env_file)
        seconds = time.perf_counter() - started
    if code != 0:
        print(buffer.getvalue()[-5000:], file=sys.stderr)
        raise RuntimeError(f"the executor's training failed (exit {code})")
    found = sorted(env_file.parent.parent.glob("out/**/train_config.py"))
    if not found:
        raise RuntimeError("the executor left no train_config.py")
    return seconds, min(found, key=lambda path: len(path.parts))


def run_bare(config_file: Path, work_dir: Path, name: str) -> tuple[float, list]:
    """Seconds of a bare mmengine runner on ``config_file``, and its training epochs' seconds."""
    from mmengine.config import Config
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    class EpochTimer(Hook):
        """Wall time of each training epoch (validation excluded)."""

        def __init__(self) -> None:
            self.epochs: list = []
            self.started = 0.0

        def before_train_epoch(self, runner) -> None:
            self.started = time.perf_counter()

        def after_train_epoch(self, runner) -> None:
            self.epochs.append(time.perf_counter() - self.started)

    cfg = Config.fromfile(str(config_file))
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = name  # mmengine keys its logger and visualizer singletons by it
    timer = EpochTimer()
    settle()
    with quiet():
        started = time.perf_counter()
        runner = Runner.from_cfg(cfg)
        runner.register_hook(timer, priority="VERY_LOW")
        # Same trust as the executor: the config's load_from is a checkpoint it prepared.
        with checkpoint.trusted_load():
            runner.train()
        seconds = time.perf_counter() - started
    return seconds, timer.epochs


def parser(description: str) -> argparse.ArgumentParser:
    object_type = manifest_object_type(default_img_man())
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default=models.default_model(object_type).name)
    parser.add_argument("--train-images", type=int, default=16)
    parser.add_argument("--val-images", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--img-size", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    return parser


def main(argv=None) -> int:
    arguments = parser(__doc__.split("\n\n")[0])
    arguments.add_argument("--rounds", type=int, default=2, help="interleaved rounds (median)")
    args = arguments.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")
    # No baked COCO weights: both runs start from the same random initialisation.
    os.environ.setdefault(weights.WEIGHTS_DIR_VARIABLE, tempfile.mkdtemp(prefix="no-weights-"))
    object_type = manifest_object_type(default_img_man())
    print(
        f"model {args.model}, {args.train_images} training / {args.val_images} validation "
        f"images, {args.epochs} epochs, img_size {args.img_size}, batch {args.batch_size}, "
        f"{args.workers} workers, CPU, median of {args.rounds} interleaved rounds"
    )
    executor_times, bare_times, preparations, hook_shares = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="ymir-bench-") as temporary:
        # An untimed executor run first: its imports (mmdet's registries, pycocotools, ...)
        # happen once per process and would be charged to whichever side runs first.
        _, config_file = run_executor(training_work(Path(temporary) / "warm-up", object_type, args))
        for round_index in range(args.rounds):
            work = Path(temporary) / f"round-{round_index}"
            env_file = training_work(work / "task", object_type, args)
            clock = ExecutorClock()
            name = f"bare-{round_index}-{time.time_ns()}"
            # Alternate which side runs first (the bare runner takes the previous executor
            # run's config then): whatever one run leaves behind must not favour one side.
            if round_index % 2:
                bare, _ = run_bare(config_file, work / "bare", name)
                seconds, config_file = run_executor(env_file, clock)
            else:
                seconds, config_file = run_executor(env_file, clock)
                bare, _ = run_bare(config_file, work / "bare", name)
            executor_times.append(seconds)
            bare_times.append(bare)
            preparations.append(clock.preparation)
            runner_seconds = seconds - clock.preparation
            hook_shares.append(clock.in_hooks / max(1e-9, runner_seconds - clock.in_hooks))
            print(
                f"round {round_index + 1}: executor {seconds:.2f} s (preparation "
                f"{clock.preparation:.2f} s, hooks {clock.in_hooks:.2f} s), bare runner "
                f"{bare:.2f} s"
            )
    executor, bare = statistics.median(executor_times), statistics.median(bare_times)
    print(
        f"executor {executor:.2f} s, bare runner {bare:.2f} s: overhead end to end "
        f"{100 * (executor / bare - 1):+.1f}% (preparation {statistics.median(preparations):.2f} s "
        f"once per task); executor hooks {100 * statistics.median(hook_shares):.2f}% of the "
        "runner's training time"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
