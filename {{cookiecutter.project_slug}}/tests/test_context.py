"""The typed contexts: each task gets a context type of its own with the writer of its output
file, and the author's task functions say which one in their signatures (what an editor shows
and what ``make lint``'s type check holds the code to).
"""

from __future__ import annotations

import importlib
import typing
from pathlib import Path

import pytest
import yaml

from conftest import OBJECT_TYPE, SUPPORTED_TASKS, requires
from {{ cookiecutter.package_name }}.__main__ import TASK_FUNCTIONS
from {{ cookiecutter.package_name }}.contract import context
from {{ cookiecutter.package_name }}.contract.env import load_env
from {{ cookiecutter.package_name }}.contract.models import ModelPackage
from {{ cookiecutter.package_name }}.contract.object_types import ObjectType
from {{ cookiecutter.package_name }}.contract.params import Params
from {{ cookiecutter.package_name }}.contract.results import (
    DetectionResult,
    MiningResult,
    SegmentationResult,
    TrainingResult,
)
from {{ cookiecutter.package_name }}.devkit.synth import synthesize

CONTEXT_TYPES = {
    "training": context.TrainingContext,
    "mining": context.MiningContext,
    "infer": context.InferenceContext,
}
INFERENCE_WRITERS = {
    ObjectType.DETECTION: DetectionResult,
    ObjectType.SEMANTIC_SEGMENTATION: SegmentationResult,
    ObjectType.INSTANCE_SEGMENTATION: SegmentationResult,
}


def build(work: Path, task: str, object_type: ObjectType) -> context.TaskContext:
    config = yaml.safe_load((work / "in" / "config.yaml").read_text(encoding="utf-8"))
    return context.build(
        task,
        env=load_env(work / "in" / "env.yaml"),
        params=Params({}, {}),
        config=config,
        object_type=object_type,
        class_names=context.class_names_from(config),
        gpu_ids=[],
        progress=lambda fraction: None,
        model=ModelPackage(),
    )


@requires("training")
def test_training_gets_the_datasets_and_the_result_yaml_writer(tmp_path: Path) -> None:
    synthesize(tmp_path, "training", OBJECT_TYPE)
    ctx = build(tmp_path, "training", OBJECT_TYPE)
    assert type(ctx) is context.TrainingContext
    assert type(ctx.results) is TrainingResult
    assert ctx.task == "training"
    assert ctx.train_items() and ctx.val_items()


# The work dir comes from the executor's own templates: only the tasks it declares.
@pytest.mark.parametrize("task", sorted(SUPPORTED_TASKS & {"mining", "infer"}))
@pytest.mark.parametrize("object_type", list(ObjectType))
def test_candidate_tasks_get_the_candidates_and_their_writer(
    tmp_path: Path, task: str, object_type: ObjectType
) -> None:
    synthesize(tmp_path, task, OBJECT_TYPE, num_candidates=3)
    ctx = build(tmp_path, task, object_type)
    assert type(ctx) is CONTEXT_TYPES[task]
    assert isinstance(ctx, context.CandidateContext)
    writer = MiningResult if task == "mining" else INFERENCE_WRITERS[object_type]
    assert type(ctx.results) is writer
    assert ctx.task == task
    assert len(ctx.candidates()) == 3
    assert [path for path, _image in ctx.images()] == list(ctx.candidates())


@pytest.mark.parametrize("task", sorted(SUPPORTED_TASKS))
def test_task_functions_declare_the_context_of_their_task(task: str) -> None:
    module = importlib.import_module(f"{{ cookiecutter.package_name }}.tasks.{task}")
    hints = typing.get_type_hints(getattr(module, TASK_FUNCTIONS[task]))
    assert hints["ctx"] is CONTEXT_TYPES[task]
    assert hints["return"] is type(None)
