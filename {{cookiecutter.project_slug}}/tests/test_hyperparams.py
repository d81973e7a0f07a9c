"""Each hyper-parameter declared once (``tasks/hyperparams.py``): the declarations against the
templates and the README, how values are read (kinds, ranges, choices, one message format),
mining + inference precedence, and the one boolean parser of the project."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

import pytest

from conftest import IMG_MAN, OBJECT_TYPE, requires
from {{ cookiecutter.package_name }}.__main__ import task_params
from {{ cookiecutter.package_name }}.contract.booleans import parse_bool
from {{ cookiecutter.package_name }}.contract.errors import ErrorCode, ExecutorError
from {{ cookiecutter.package_name }}.contract.hyperparams import (
    TASKS,
    Boolean,
    Choice,
    Integer,
    List,
    Number,
    Text,
    by_precedence,
    declared_for,
    disagreements,
)
from {{ cookiecutter.package_name }}.contract.params import Params, load_template
from {{ cookiecutter.package_name }}.devkit import hyperparams as documentation
from {{ cookiecutter.package_name }}.tasks.hyperparams import HYPERPARAMETERS

PROJECT = Path(__file__).resolve().parents[1]


def templates(img_man: Path = PROJECT / "img-man") -> dict:
    """task -> its template's keys and defaults, for the tasks this executor has."""
    found = {task: load_template(img_man, task) for task in TASKS}
    return {task: values for task, values in found.items() if values is not None}


def problems_with(changed: dict) -> str:
    return "\n".join(disagreements(HYPERPARAMETERS, changed, OBJECT_TYPE))


# --- the declarations against the templates and the README --------------------------------


def test_every_template_key_is_declared_and_every_declaration_has_its_key() -> None:
    assert disagreements(HYPERPARAMETERS, templates(), OBJECT_TYPE) == []


def test_template_comments_and_readme_table_are_written_from_the_declarations() -> None:
    assert documentation.update(PROJECT, write=False) == []


def test_a_template_key_without_declaration_is_found() -> None:
    changed = templates()
    task = next(iter(changed))
    changed[task]["warmup_epochs"] = 1
    assert re.search(
        rf"{task}-template.yaml: 'warmup_epochs' has no declaration", problems_with(changed)
    )


def test_a_declaration_without_its_template_key_is_found() -> None:
    changed = templates()
    task = next(iter(changed))
    key = next(iter(changed[task]))
    del changed[task][key]
    assert f"{key!r} is declared for {task}" in problems_with(changed)


def wrong_kind(default: object) -> object:
    """A default of another kind than ``default``."""
    return "many" if isinstance(default, (bool, int, float)) else 5


def test_a_default_of_the_wrong_kind_is_found() -> None:
    for task, values in templates().items():
        for key, default in values.items():
            changed = copy.deepcopy(templates())
            changed[task][key] = wrong_kind(default)
            assert f"the default of {key!r} is {changed[task][key]!r}" in problems_with(changed)


def out_of_range(declaration: object) -> object:
    """A value of the right kind that ``declaration`` refuses, if it refuses any."""
    if isinstance(declaration, Choice):
        return "none-of-these"
    if isinstance(declaration, (Integer, Number)) and declaration.minimum is not None:
        return type(declaration.minimum)(declaration.minimum - 1)
    if isinstance(declaration, (Integer, Number)) and declaration.above is not None:
        return declaration.above
    if isinstance(declaration, Text) and declaration.pattern is not None:
        return "?"
    return None


def test_a_default_out_of_range_or_choices_is_found() -> None:
    checked = 0
    for task, values in templates().items():
        declared = declared_for(HYPERPARAMETERS, [task], OBJECT_TYPE)
        for key in values:
            value = out_of_range(declared[key])
            if value is None:
                continue
            changed = copy.deepcopy(templates())
            changed[task][key] = value
            assert f"the default of {key!r} is {value!r}" in problems_with(changed)
            checked += 1
    assert checked  # every executor has a Choice (export_format or mining_algorithm)


def test_a_key_declared_twice_is_found() -> None:
    first = HYPERPARAMETERS[0]
    twice = [*HYPERPARAMETERS, copy.copy(first)]
    found = "\n".join(disagreements(twice, templates(), OBJECT_TYPE))
    assert f"{first.name!r} is declared twice" in found


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """The README and img-man/ of this project, to change."""
    shutil.copytree(PROJECT / "img-man", tmp_path / "img-man")
    shutil.copy(PROJECT / "README.md", tmp_path / "README.md")
    return tmp_path


def test_an_out_of_date_readme_or_comment_is_found_and_rewritten(project_copy: Path) -> None:
    readme = project_copy / "README.md"
    readme.write_text(readme.read_text(encoding="utf-8").replace("| `shm_size` |", "| `shm` |"))
    template = next((project_copy / "img-man").glob("*-template.yaml"))
    text = template.read_text(encoding="utf-8")
    template.write_text(re.sub(r"\n# [^\n]*\nshm_size:", "\n# old help\nshm_size:", text))
    found = "\n".join(documentation.update(project_copy, write=False))
    assert "README.md is out of date" in found and f"{template.name} is out of date" in found
    assert documentation.update(project_copy) == []
    assert documentation.update(project_copy, write=False) == []
    assert template.read_text(encoding="utf-8") == text


def test_every_declared_key_is_read_as_declared_from_its_default() -> None:
    """What a task gets when config.yaml lacks every key: the template defaults, typed."""
    for task in templates():
        params = task_params(IMG_MAN, {}, [task], OBJECT_TYPE)
        for key, declaration in declared_for(HYPERPARAMETERS, [task], OBJECT_TYPE).items():
            assert params[key] == declaration.read(load_template(IMG_MAN, task)[key])


# --- reading values: kinds, ranges, choices, one message format ---------------------------


def message(declaration, value) -> str:
    with pytest.raises(ExecutorError) as caught:
        declaration.read(value)
    assert caught.value.code == ErrorCode.CONFIG
    return caught.value.message


def test_a_bad_value_names_the_key_the_value_and_what_is_allowed() -> None:
    epochs = Integer("epochs", minimum=1, tasks=["training"], help="Passes.")
    assert message(epochs, 0) == (
        "hyper-parameter 'epochs' must be an integer of 1 or more, got 0; correct it in the "
        "task's hyper-parameters"
    )
    iou = Number("iou_threshold", above=0.0, maximum=1.0, tasks=["infer"], help="IoU.")
    assert "must be a number above 0.0 and up to 1.0, got '0'" in message(iou, "0")
    assert "must be a number above 0.0 and up to 1.0, got 1.5" in message(iou, 1.5)
    algorithm = Choice("mining_algorithm", [("a", ""), ("b", "")], tasks=["mining"], help="How")
    assert "must be one of 'a', 'b', got 'c'" in message(algorithm, "c")
    options = Text("cfg_options", max_length=4, tasks=["training"], help="Options.")
    assert "must be a text of at most 4 characters, got 'a=1 b=2'" in message(options, "a=1 b=2")
    assert "must be a boolean" in message(Boolean("fp16", tasks=["infer"], help="Half."), "half")


@pytest.mark.parametrize(
    ("declaration", "given", "read"),
    [
        (Integer("n", minimum=1, tasks=TASKS, help=""), "3", 3),
        (Integer("n", minimum=1, tasks=TASKS, help=""), 2.0, 2),
        (Integer("n", tasks=TASKS, help=""), "-4", -4),
        (Number("x", minimum=0.0, maximum=1.0, tasks=TASKS, help=""), "0.5", 0.5),
        (Number("x", minimum=0.0, maximum=1.0, tasks=TASKS, help=""), 1, 1.0),
        (
            Choice("c", [("entropy", ""), ("random", "")], tasks=TASKS, help=""),
            " Random ",
            "random",
        ),
        (Text("t", max_length=3, tasks=TASKS, help=""), 16, "16"),
        (Text("s", pattern=r"[0-9]+[gG]?", tasks=TASKS, help=""), "64G", "64G"),
        (List("l", tasks=TASKS, help=""), "0.1,0.2", [0.1, 0.2]),
        (Boolean("b", tasks=TASKS, help=""), "y", True),
        (Boolean("b", tasks=TASKS, help=""), "OFF", False),
    ],
)
def test_values_are_read_as_their_kind(declaration, given, read) -> None:
    value = declaration.read(given)
    assert value == read and type(value) is type(read)


def test_params_read_config_values_and_template_defaults_as_declared() -> None:
    declared = {"epochs": Integer("epochs", minimum=1, tasks=["training"], help="")}
    assert Params({"epochs": "12"}, {"epochs": 30}, declared).epochs == 12
    assert Params({"epochs": ""}, {"epochs": 30}, declared).epochs == 30  # the UI dropped it
    with pytest.raises(ExecutorError, match="'epochs' must be an integer of 1 or more, got '0'"):
        Params({"epochs": "0"}, {"epochs": 30}, declared).as_dict()


def test_a_choice_read_by_the_implementation_keeps_its_other_codes() -> None:
    def read(name: str) -> str:
        if name == "other_target_model":
            raise ExecutorError(ErrorCode.OBJECT_TYPE, "that model does another target")
        if name.lower() != "small":
            raise ExecutorError(ErrorCode.CONFIG, f"unknown model {name!r}")
        return "small"

    model = Choice("model", [("small", "")], read=read, tasks=["training"], help="")
    assert model.read("SMALL") == "small"
    assert "hyper-parameter 'model' must be one of 'small', got 'huge'" in message(model, "huge")
    with pytest.raises(ExecutorError) as caught:
        model.read("other_target_model")
    assert caught.value.code == ErrorCode.OBJECT_TYPE


# --- mining + inference ----------------------------------------------------------------------


def test_mining_declarations_and_defaults_win_over_inference() -> None:
    mining = Number("threshold", maximum=1.0, tasks=["mining"], help="")
    infer = Number("threshold", maximum=0.5, tasks=["infer"], help="")
    assert declared_for([mining, infer], ["mining", "infer"], 2)["threshold"] is mining
    assert declared_for([infer, mining], ["infer", "mining"], 2)["threshold"] is mining
    assert by_precedence(["mining", "infer"]) == ["infer", "mining"]


@requires("mining", "infer")
def test_a_mining_and_infer_task_takes_the_mining_template_defaults(tmp_path: Path) -> None:
    """The UI submits the mining template: where config.yaml lacks a key both templates have,
    the mining default applies (__main__ runs mining first, yet must not let infer's win)."""
    img_man = tmp_path / "img-man"
    shutil.copytree(IMG_MAN, img_man)
    for task, value in (("mining", 0.25), ("infer", 0.75)):
        path = img_man / f"{task}-template.yaml"
        text = path.read_text(encoding="utf-8")
        path.write_text(
            re.sub(
                r"^confidence_threshold: .*$", f"confidence_threshold: {value}", text, flags=re.M
            ),
            encoding="utf-8",
        )
    params = task_params(img_man, {}, ["mining", "infer"], OBJECT_TYPE)
    assert params.confidence_threshold == 0.25


# --- one boolean parser: YMIR's own reading (strtobool) ---------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *[(word, True) for word in ("y", "yes", "t", "true", "on", "1", "True", " YES ")],
        *[(word, False) for word in ("n", "no", "f", "false", "off", "0", "False", " Off ")],
        (True, True),
        (False, False),
        (1, True),
        (0, False),
        (1.0, True),
        *[(value, None) for value in ("maybe", "", "2", 2, -1, 0.5, None, [True])],
    ],
)
def test_booleans_read_as_ymir_reads_them(value, expected) -> None:
    assert parse_bool(value) is expected
