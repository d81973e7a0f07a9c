"""``python3 -m <package>``: the executor's only entrypoint, started by ``/usr/bin/start.sh``.

Data flows one way: ``env.yaml`` and ``config.yaml`` -> a typed context (one per task) -> the
author's task function -> validated result writers -> ``/out``. This module owns the failure
protocol: a known failure writes monitor state 4 with its executor code, an unexpected one
state 4 without a code; either way the last log line is a one-line reason (the YMIR UI shows
the last five lines) and the process exits non-zero.
"""

from __future__ import annotations

import importlib
import logging
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import yaml

from .contract import context, models
from .contract import env as env_module
from .contract import params as params_module
from .contract.errors import ErrorCode, ExecutorError
from .contract.handover import PredictionHandover
from .contract.hyperparams import by_precedence, declared_for
from .contract.monitor import Monitor
from .contract.object_types import ObjectType
from .tasks.hyperparams import HYPERPARAMETERS

log = logging.getLogger(__package__)

# The function each task module must define.
TASK_FUNCTIONS = {"training": "train", "mining": "mine", "infer": "infer"}
# Mining runs before inference when both are asked for (the SDK's convention).
TASK_ORDER = ("training", "mining", "infer")


def planned_tasks(env: env_module.Env) -> list[str]:
    flags = {"training": env.run_training, "mining": env.run_mining, "infer": env.run_infer}
    return [task for task in TASK_ORDER if flags[task]]


def task_function(task: str) -> Callable[[Any], None]:
    """The author's function for ``task`` (it takes the task's context type, see
    :func:`.contract.context.build`); a task pruned at generation time is refused."""
    module_name = f"{__package__}.tasks.{task}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        raise ExecutorError(
            ErrorCode.CONFIG, f"this executor does not support {task}; it was generated without it"
        ) from error
    return getattr(module, TASK_FUNCTIONS[task])


def check_object_type(env: env_module.Env, config: dict, object_type: ObjectType) -> None:
    requested = config.get("object_type")
    if requested not in (None, "") and str(requested) != str(object_type):
        raise ExecutorError(
            ErrorCode.OBJECT_TYPE,
            f"the task asks for object_type {requested}, this executor does "
            f"{object_type.title} (object_type {object_type})",
        )
    if env.legacy and object_type != ObjectType.DETECTION:
        raise ExecutorError(
            ErrorCode.OBJECT_TYPE,
            f"{object_type.title} requires YMIR >= 2.1; this platform speaks the "
            "legacy protocol (env.yaml has no protocol_version) and supports detection only",
        )


def task_params(
    img_man: Path, config: dict, tasks: list[str], object_type: int
) -> params_module.Params:
    """The run's hyper-parameters: config.yaml over the templates' defaults, read as declared.

    With mining and inference in one task, the mining template's defaults and declarations win
    (the UI shows and submits that template), though mining runs first. Every value is read
    here, so a bad one fails the run (CONFIG) before any work.
    """
    params = params_module.Params(
        config,
        params_module.task_defaults(img_man, by_precedence(tasks)),
        declared_for(HYPERPARAMETERS, tasks, object_type),
    )
    params.as_dict()
    return params


def execute(env: env_module.Env, monitor: Monitor) -> None:
    img_man = params_module.find_img_man(env)
    object_type = params_module.manifest_object_type(img_man)
    config = params_module.load_config(env)
    check_object_type(env, config, object_type)
    tasks = planned_tasks(env)
    # Resolve everything that can be wrong before the first task starts work.
    functions = {task: task_function(task) for task in tasks}
    params = task_params(img_man, config, tasks, object_type)
    class_names = context.class_names_from(config)
    gpu_ids = context.gpu_ids_from(config)
    # Mining then inference in one task: what mining predicted reaches inference through here.
    handover: PredictionHandover[Any] | None = None
    if {"mining", "infer"} <= set(tasks):
        handover = PredictionHandover()

    try:
        for index, task in enumerate(tasks):
            model_key = "pretrained_model_params" if task == "training" else "model_params_path"
            model = models.load_model_package(
                env.input.models_dir, context.model_paths(config, model_key)
            )
            ctx = context.build(
                task,
                env=env,
                params=params,
                config=config,
                object_type=object_type,
                class_names=class_names,
                gpu_ids=gpu_ids,
                progress=monitor.subrange(index / len(tasks), (index + 1) / len(tasks)),
                model=model,
                handover=handover,
            )
            log.info("%s started on %s with %d classes", task, ctx.device, len(class_names))
            functions[task](ctx)
            if not isinstance(ctx, context.TrainingContext):
                # Written once, after the whole task succeeded: a failure leaves no partial file.
                ctx.results.write()
            ctx.progress(1.0)
            log.info("%s finished", task)
    finally:
        if handover is not None:
            # Whatever inference did not take (it failed, or used other settings) goes with
            # the run: no prediction file outlives it in /out.
            handover.discard()
    monitor.progress(1.0)


def fallback_monitor(env_path: Path) -> Monitor | None:
    """A monitor for failures before env.yaml could be validated, if its path is readable."""
    try:
        raw = yaml.safe_load(env_path.read_text(encoding="utf-8"))
        return Monitor(Path(raw["output"]["monitor_file"]), str(raw.get("task_id", "")))
    except Exception:
        return None


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def main(env_path: Path | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    env_path = env_path or env_module.env_file_path()
    monitor: Monitor | None = None
    try:
        env = env_module.load_env(env_path)
        monitor = Monitor(env.output.monitor_file, env.task_id)
        execute(env, monitor)
    except ExecutorError as error:
        monitor = monitor or fallback_monitor(env_path)
        if monitor:
            monitor.error(int(error.code), error.message)
        print(
            f"ERROR {int(error.code)} {error.code.name}: {one_line(error.message)}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    except MemoryError:
        traceback.print_exc()
        if monitor:
            monitor.error(int(ErrorCode.OUT_OF_MEMORY), traceback.format_exc())
        print(
            f"ERROR {int(ErrorCode.OUT_OF_MEMORY)} OUT_OF_MEMORY: the executor ran out of "
            "memory; lower the batch size or the number of workers",
            file=sys.stderr,
            flush=True,
        )
        return 1
    except Exception as error:
        details = traceback.format_exc()
        print(details, file=sys.stderr)
        monitor = monitor or fallback_monitor(env_path)
        if monitor:
            monitor.error(None, details)
        print(
            f"ERROR unexpected {type(error).__name__}: {one_line(error)}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    log.info("done: %s", ", ".join(planned_tasks(env)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
