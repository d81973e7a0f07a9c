"""The hooks: bad answers are refused cleanly, hostile but legal answers bake as data."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tomllib

import pytest
import yaml
from conftest import TEMPLATE, bake, project_files, run, tool
from cookiecutter.exceptions import FailedHookException

# (answers, a fragment of the expected ERROR line)
BAD_ANSWERS = [
    ({"executor_name": "   "}, "executor_name is empty"),
    ({"executor_name": "x" * 51}, "YMIR allows at most 50"),
    ({"executor_name": "Two\nLines"}, "executor_name contains a line break"),
    ({"author_name": "Bell\a"}, "author_name contains a line break or another control"),
    ({"project_slug": "My Exec"}, "project_slug 'My Exec' is not valid"),
    ({"project_slug": "-exec"}, "project_slug '-exec' is not valid"),
    ({"package_name": "1exec"}, "not a valid Python package name"),
    ({"package_name": "class"}, "not a valid Python package name"),
    ({"package_name": "yaml"}, "would shadow a module"),
    ({"package_name": "json"}, "would shadow a module"),
    ({"task_training": False, "task_mining": False, "task_infer": False}, "no task selected"),
    ({"cuda_variants": "cu102,cpu"}, "unknown entries ['cu102']"),
    ({"cuda_variants": ""}, "cuda_variants is empty"),
    ({"cuda_variants": " , "}, "cuda_variants is empty"),
    ({"cuda_variants": "cu118,cpu,cu118"}, "lists ['cu118'] more than once"),
    ({"image_repository": "MyOrg/Exec"}, "not a Docker repository name"),
    ({"image_repository": "myorg//exec"}, "not a Docker repository name"),
    ({"ymir_version": "latest"}, "ymir_version 'latest' is not a version"),
    ({"author_email": "nobody"}, "not an e-mail address"),
    ({"description": "one\ntwo"}, "description contains a line break"),
    ({"description": "tab\tseparated"}, "description contains a line break"),
    ({"framework": "mmsegmentation"}, "framework mmsegmentation does not do detection"),
    (
        {"framework": "mmdetection", "target": "semantic-segmentation"},
        "framework mmdetection does not do semantic-segmentation",
    ),
    # Each part within its own limit, the tag (ymir<version>-<slug>-<variant>-<tasks>) beyond
    # Docker's 128 characters.
    (
        {"project_slug": "a" * 50, "ymir_version": "2.5." + "0" * 70},
        "is longer than 128; shorten project_slug",
    ),
]


@pytest.mark.parametrize(("answers", "message"), BAD_ANSWERS)
def test_bad_answers_are_refused_and_leave_nothing(cookies, tmp_path, capfd, answers, message):
    result = cookies.bake(extra_context=answers)
    assert result.exit_code != 0
    assert isinstance(result.exception, FailedHookException)
    assert result.project_path is None
    error = capfd.readouterr().err
    assert "ERROR: " in error and message in error, error
    # pytest-cookies bakes into <tmp_path>/bake00: nothing may be left there.
    assert [path for path in tmp_path.rglob("*") if path.is_file()] == []


def test_unknown_choice_is_refused_before_any_hook(cookies):
    result = cookies.bake(extra_context={"target": "classification"})
    assert result.exit_code != 0
    assert isinstance(result.exception, ValueError)


def test_derived_names(cookies):
    project = bake(cookies, executor_name="Fancy Détecteur 2")
    assert project.name == "fancy-detecteur-2"
    assert (project / "src" / "fancy_detecteur_2" / "__main__.py").exists()


HOSTILE = {
    "executor_name": 'O\'Brien "Quoted" \\ Détecteur',
    "description": "He said \"hi\" \\ and 'bye' \"\"\" ''' \\n $HOME ${x} 🙂 end \\",
    "author_name": 'Zoë "Z" O\'Neil \\',
    "author_email": "zoe+ymir@example.org",
}
INJECTION = '"""; import pathlib; pathlib.Path("PWNED").touch(); """'


def test_hostile_strings_bake_as_data(cookies, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    project = bake(cookies, **HOSTILE)
    assert project.name == "o-brien-quoted-detecteur"
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["description"] == HOSTILE["description"]
    assert pyproject["project"]["authors"][0]["name"] == HOSTILE["author_name"]
    recorded = json.loads((project / ".cookiecutter.json").read_text(encoding="utf-8"))
    assert recorded["default_context"]["executor_name"] == HOSTILE["executor_name"]
    assert HOSTILE["executor_name"] in (project / "README.md").read_text(encoding="utf-8")
    for name in project_files(project):
        if name.endswith((".yaml", ".yml")):
            yaml.safe_load((project / name).read_text(encoding="utf-8"))
    run([tool("ruff"), "check", "."], cwd=project)


def test_hooks_treat_answers_as_data(cookies, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    project = bake(cookies, description=INJECTION, author_name=INJECTION)
    assert not list(tmp_path.rglob("PWNED")) and not (TEMPLATE / "PWNED").exists()
    assert not (project / "PWNED").exists()
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["description"] == INJECTION


# The template's img-man files, and one change to them that the declarations do not allow.
IMG_MAN = TEMPLATE / "{{cookiecutter.project_slug}}" / "img-man"
DISAGREEMENTS = [
    (
        "infer-template.yaml",
        ("shm_size: '16G'\n", "shm_size: '16G'\nwarmup_epochs: 1\n"),
        "img-man/infer-template.yaml: 'warmup_epochs' has no declaration",
    ),
    (
        "mining-template.yaml",
        ("'image_entropy'\nrandom_seed: 1\n", "'image_entropy'\n"),
        "img-man/mining-template.yaml: 'random_seed' is declared for mining",
    ),
    (
        "infer-template.yaml",
        ("confidence_threshold: 0.05\n", "confidence_threshold: 1.5\n"),
        "img-man/infer-template.yaml: the default of 'confidence_threshold' is 1.5, not a "
        "number from 0.0 to 1.0",
    ),
    (
        "mining-template.yaml",
        ("'image_entropy'\nrandom_seed: 1\n", "'image_entropy'\nrandom_seed: 'one'\n"),
        "img-man/mining-template.yaml: the default of 'random_seed' is 'one', not an integer",
    ),
]


@pytest.mark.parametrize(("name", "change", "message"), DISAGREEMENTS)
def test_templates_that_disagree_with_the_declarations_are_refused(
    cookies, tmp_path, capfd, name, change, message
):
    """Every bake checks its img-man templates against the hyper-parameter declarations: the
    post-generation hook runs the generated project's own check, and a disagreement leaves
    nothing behind but an ERROR naming the file and the key."""
    template = tmp_path / "template"
    shutil.copytree(TEMPLATE, template, ignore=shutil.ignore_patterns(".git", "__pycache__"))
    path = template / IMG_MAN.relative_to(TEMPLATE) / name
    text = path.read_text(encoding="utf-8")
    assert change[0] in text
    path.write_text(text.replace(change[0], change[1], 1), encoding="utf-8")
    result = cookies.bake(template=str(template), extra_context={"framework": "none"})
    assert isinstance(result.exception, FailedHookException)
    assert result.project_path is None
    error = capfd.readouterr().err
    assert f"ERROR: {message}" in error, error


def test_post_gen_is_idempotent(cookies, tmp_path):
    """cruft re-runs the hooks on fresh copies: two bakes of the same answers are identical."""
    first = bake(cookies, target="semantic-segmentation", task_mining=False)
    second = bake(cookies, target="semantic-segmentation", task_mining=False)
    assert project_files(first) == project_files(second)
    for name in project_files(first):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


# --- a refusal ends with one command that reproduces the answers -------------------------------


def cookiecutter_cli(cwd, *args, answers=None):
    """The cookiecutter command line as a user runs it, in ``cwd`` (a shell's PWD too)."""
    return subprocess.run(
        [tool("cookiecutter"), *args],
        cwd=cwd,
        input=answers,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PWD": str(cwd)},
    )


def printed_command(stderr):
    """The refusal's command as arguments (without the note) and the note after ``#``."""
    (line,) = [line for line in stderr.splitlines() if line.startswith("    cookiecutter ")]
    command, _, note = line.partition("  # ")
    return shlex.split(command), note


def recorded_answers(project):
    return json.loads((project / ".cookiecutter.json").read_text(encoding="utf-8"))[
        "default_context"
    ]


# The questions in order, answered as a new user did: a name, semantic segmentation (the second
# target), no mining, cu121 and cpu, and at question 14 "MMDetection 3.3", which cannot do it.
INTERACTIVE = [
    "Road Damage Detector",
    *[""] * 2,
    "2",
    *[""] * 6,
    "no",
    "",
    "cu121,cpu",
    "3",
]


def test_refused_interactive_answers_come_back_as_one_corrected_command(tmp_path):
    refused = cookiecutter_cli(tmp_path, str(TEMPLATE), answers="\n".join(INTERACTIVE) + "\n")
    assert refused.returncode != 0
    assert "ERROR: framework mmdetection does not do semantic-segmentation" in refused.stderr
    assert "--replay" not in refused.stderr  # it would replay the same refused answers
    assert list(tmp_path.iterdir()) == []
    command, note = printed_command(refused.stderr)
    # Every answer given, the refused one corrected (the fix is unambiguous), nothing to change.
    assert command == [
        "cookiecutter",
        "--no-input",
        str(TEMPLATE),
        "executor_name=Road Damage Detector",
        "target=semantic-segmentation",
        "task_mining=no",
        "cuda_variants=cu121,cpu",
        "framework=auto",
    ]
    assert note == ""

    generated = cookiecutter_cli(tmp_path, *command[1:])
    assert generated.returncode == 0, generated.stderr
    answers = recorded_answers(tmp_path / "road-damage-detector")
    assert answers["executor_name"] == "Road Damage Detector"
    assert answers["target"] == "semantic-segmentation"
    assert answers["task_mining"] is False and answers["task_training"] is True
    assert answers["cuda_variants"] == "cu121,cpu"
    assert answers["framework"] == "auto"


def test_refused_answer_to_change_is_named_and_derived_ones_follow(tmp_path):
    long_name = "Road Damage Detector For The Municipal Maintenance Office"  # 57 characters
    refused = cookiecutter_cli(
        tmp_path,
        "--no-input",
        str(TEMPLATE),
        f"executor_name={long_name}",
        "cuda_variants=cu121,cpu,cu121",
        'author_name=O\'Brien "Q"',
    )
    assert refused.returncode != 0
    assert "ERROR: executor_name has 57 characters" in refused.stderr
    assert list(tmp_path.iterdir()) == []
    command, note = printed_command(refused.stderr)
    assert command[:3] == ["cookiecutter", "--no-input", str(TEMPLATE)]
    # The duplicate is dropped (the only fix); the long name is last and named, and the slug,
    # refused too, is not pinned: it follows the name once that is changed.
    assert command[3:] == [
        'author_name=O\'Brien "Q"',
        "cuda_variants=cu121,cpu",
        f"executor_name={long_name}",
    ]
    assert note == "change executor_name; project_slug (it follows executor_name)"

    command[-1] = "executor_name=Road Damage Detector"
    generated = cookiecutter_cli(tmp_path, *command[1:])
    assert generated.returncode == 0, generated.stderr
    answers = recorded_answers(tmp_path / "road-damage-detector")
    assert answers["cuda_variants"] == "cu121,cpu"
    assert answers["author_name"] == 'O\'Brien "Q"'
