"""The option matrix: every target x task subset x CUDA set bakes into exactly the right project.

Each bake is checked statically: the exact file set, no unrendered Jinja, parseable YAML / TOML /
HCL, a manifest and templates that match the answers, Dockerfiles that agree with the version
matrix, and clean ruff, mypy and hadolint runs on the output.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tomllib

import hcl2
import pytest
import yaml
from conftest import (
    DEFAULT_VARIANTS,
    LETTER_TASK,
    MATRIX,
    OBJECT_TYPES,
    TARGET_FRAMEWORKS,
    TARGETS,
    TASK_SUBSETS,
    TEMPLATE,
    bake,
    expected_files,
    make,
    project_files,
    run,
    task_answers,
    tool,
    type_check,
)

STACK = json.loads((TEMPLATE / "cookiecutter.json").read_text())["_openmmlab_stack"]
CUDA_SETS = {
    "default": DEFAULT_VARIANTS,
    "every-line": list(MATRIX),
    "cpu-only": ["cpu"],
}
# GitHub Actions expressions are copied verbatim into workflows; anything else in braces is not.
GITHUB_EXPRESSION = re.compile(r"\$\{\{.*?\}\}")
JINJA_LEFTOVER = re.compile(r"\{\{|\{%|\{#")
RENOVATE_TEMPLATE = re.compile(r'"autoReplaceStringTemplate": "[^"]*"')
RESERVED_KEYS = {
    "class_names",
    "gpu_id",
    "gpu_count",
    "task_id",
    "pretrained_model_params",
    "model_params_path",
    "object_type",
}


def check_no_jinja(project):
    for name in project_files(project):
        text = (project / name).read_text(encoding="utf-8")
        if name.startswith(".github/workflows/"):
            text = GITHUB_EXPRESSION.sub("", text)
        if name == "renovate.json":  # Renovate's own (Handlebars) templates
            text = RENOVATE_TEMPLATE.sub("", text)
        match = JINJA_LEFTOVER.search(text)
        assert match is None, f"unrendered Jinja {match.group()!r} in {name}"


def check_img_man(project, target, letters, framework):
    manifest = yaml.safe_load((project / "img-man/manifest.yaml").read_text())
    assert manifest == {"object_type": OBJECT_TYPES[target]}
    for letter, task in LETTER_TASK.items():
        path = project / "img-man" / f"{task}-template.yaml"
        assert path.exists() == (letter in letters)
        if not path.exists():
            continue
        template = yaml.safe_load(path.read_text())
        assert isinstance(template, dict) and template, f"{path.name} must declare the task"
        for key, value in template.items():
            assert len(key) <= 50
            assert isinstance(value, (str, int, float, bool)), f"{key} is not a flat scalar"
            if isinstance(value, str):
                assert len(value) <= 100
        assert not RESERVED_KEYS & set(template), "reserved keys must stay commented out"
        if task == "training":
            family = "ark" if target == "detection" else "seg-coco"
            assert template["export_format"] == f"{family}:raw"
        assert set(HYPER_PARAMETERS[framework][task]) <= set(template), (framework, task)


# The hyper-parameter names each implementation promises (part of the interface).
HYPER_PARAMETERS = {
    "none": {
        "training": ["export_format", "shm_size"],
        "mining": ["mining_algorithm", "random_seed", "confidence_threshold", "shm_size"],
        "infer": ["confidence_threshold", "shm_size"],
    },
    "mmdetection": {
        "training": [
            "model",
            "epochs",
            "batch_size_per_gpu",
            "num_workers_per_gpu",
            "learning_rate",
            "img_size",
            "val_interval",
            "max_keep_checkpoints",
            "cfg_options",
            "export_format",
            "shm_size",
        ],
        "mining": [
            "mining_algorithm",
            "confidence_threshold",
            "batch_size_per_gpu",
            "num_workers_per_gpu",
            "shm_size",
        ],
        "infer": [
            "confidence_threshold",
            "iou_threshold",
            "batch_size_per_gpu",
            "num_workers_per_gpu",
            "shm_size",
        ],
    },
    "mmsegmentation": {
        "training": [
            "model",
            "max_iters",
            "val_interval",
            "batch_size_per_gpu",
            "num_workers_per_gpu",
            "learning_rate",
            "img_size",
            "cfg_options",
            "max_keep_checkpoints",
            "export_format",
            "shm_size",
        ],
        "mining": ["mining_algorithm", "batch_size_per_gpu", "num_workers_per_gpu", "shm_size"],
        "infer": ["batch_size_per_gpu", "num_workers_per_gpu", "shm_size"],
    },
}


def check_dockerfile(project, variant, framework="none"):
    text = (project / "docker" / f"{variant}.Dockerfile").read_text()
    line = MATRIX[variant]
    assert f"ARG BASE_IMAGE={line['base_image']}" in text
    assert re.search(r"^FROM \$\{BASE_IMAGE\}", text, re.M)
    assert 'CMD ["bash", "/usr/bin/start.sh"]' in text
    assert "# syntax" not in text
    for entrypoint in re.findall(r"^ENTRYPOINT (.*)$", text, re.M):
        assert entrypoint.strip() == "[]", "only an empty ENTRYPOINT is allowed"
    assert ":latest" not in text
    if variant == "cpu":
        assert f"ARG TORCH_VERSION={line['torch']}" in text
        assert f"ARG TORCH_INDEX_URL={line['torch_index']}" in text
    if framework == "none":
        assert "mmcv" not in text, "framework layers come only with a framework"
        return
    # The framework layers: the stack's pins, mmcv installed the way the line's kind needs.
    assert re.search(r"^ENV TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", text, re.M) is None
    package = {"mmdetection": "mmdet", "mmsegmentation": "mmsegmentation"}[framework]
    for pin in [
        "setuptools<82",
        f"mmcv=={STACK['mmcv']}",
        f"mmengine=={STACK['mmengine']}",
        f"{package}=={STACK[package]}",
    ]:
        assert f'"{pin}"' in text, pin
    if line["mmcv_install"] == "compile":
        assert f"ARG DEVEL_IMAGE={line['devel_image']}" in text
        assert "FROM ${DEVEL_IMAGE} AS mmcv-build" in text
        assert f'ARG TORCH_CUDA_ARCH_LIST="{line["cuda_arch_list"]}"' in text
        assert 'bash /tmp/build-mmcv.sh /mmcv-wheel "mmcv==' in text
    else:
        assert f"ARG MMCV_INDEX_URL={line['mmcv_index']}" in text
        assert "--only-binary=mmcv" in text


def check_bake_file(project, variants, letters, answers):
    bake_file = hcl2.loads(
        (project / "docker-bake.hcl").read_text(),
        serialization_options=hcl2.utils.SerializationOptions(strip_string_quotes=True),
    )
    variables = {}
    for block in bake_file["variable"]:
        variables.update({name: body["default"] for name, body in block.items()})
    assert variables["IMAGE_REPOSITORY"] == answers["image_repository"]
    assert variables["YMIR_VERSION"] == answers["ymir_version"]
    targets = {}
    for block in bake_file["target"]:
        targets.update(block)
    assert set(targets) == set(variants)
    groups = {}
    for block in bake_file["group"]:
        groups.update(block)
    assert set(groups["all"]["targets"]) == set(variants)
    compiled = {v for v in variants if MATRIX[v]["mmcv_install"] == "compile"}
    assert set(groups["compile"]["targets"]) == compiled
    assert set(groups["default"]["targets"]) == set(variants) - compiled
    for variant in variants:
        target = targets[variant]
        assert target["dockerfile"] == f"docker/{variant}.Dockerfile"
        (tag,) = target["tags"]
        for name, value in variables.items():
            tag = tag.replace("${" + name + "}", value)
        assert tag == (
            f"{answers['image_repository']}:ymir{answers['ymir_version']}-"
            f"{answers['project_slug']}-{variant}-{letters}"
        )


def check_ci_pythons(project, framework):
    """The test job runs on Python 3.8 (the cu111 / cu113 images) unless a framework is chosen:
    then on the cpu image's Python, whose prebuilt PyTorch and mmcv wheels `make install` uses."""
    workflow = yaml.safe_load((project / ".github/workflows/ci.yml").read_text())
    matrix = workflow["jobs"]["test"]["strategy"]["matrix"]
    pythons = [entry["python"] for entry in matrix["include"]]
    if framework == "none":
        assert pythons == ["3.8", "3.11"]
    else:
        assert pythons == [MATRIX["cpu"]["python"]]


TARGETS_AND_FRAMEWORKS = [
    (target, framework) for target in TARGETS for framework in TARGET_FRAMEWORKS[target]
]


@pytest.mark.parametrize("cuda_set", sorted(CUDA_SETS))
@pytest.mark.parametrize("letters", TASK_SUBSETS)
@pytest.mark.parametrize(("target", "framework"), TARGETS_AND_FRAMEWORKS)
def test_bake_matrix(cookies, mypy_cache, target, framework, letters, cuda_set):
    variants = CUDA_SETS[cuda_set]
    answers = {
        "executor_name": "Matrix Exec",
        "target": target,
        "framework": framework,
        "cuda_variants": ",".join(variants),
        **task_answers(letters),
    }
    project = bake(cookies, **answers)
    answers.update(
        project_slug="matrix-exec", ymir_version="2.5.0", image_repository="myorg/ymir-executor"
    )
    assert project.name == "matrix-exec"

    assert project_files(project) == expected_files("matrix_exec", letters, variants, framework)
    check_no_jinja(project)
    check_img_man(project, target, letters, framework)
    for variant in variants:
        check_dockerfile(project, variant, framework)
    check_bake_file(project, variants, letters, answers)

    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == "matrix-exec"
    assert pyproject["project"]["requires-python"] == ">=3.8"
    assert pyproject["tool"]["ruff"]["target-version"] == "py38"
    for name in [
        ".pre-commit-config.yaml",
        ".github/workflows/ci.yml",
        ".github/workflows/images.yml",
        ".hadolint.yaml",
    ]:
        assert isinstance(yaml.safe_load((project / name).read_text()), dict), name
    check_ci_pythons(project, framework)

    run([tool("ruff"), "check", "."], cwd=project)
    run([tool("ruff"), "format", "--check", "."], cwd=project)
    type_check(project, mypy_cache)
    dockerfiles = [f"docker/{variant}.Dockerfile" for variant in variants]
    run([tool("hadolint"), "--config", ".hadolint.yaml", *dockerfiles], cwd=project)


def test_the_type_checker_is_the_version_the_projects_pin(cookies):
    """The template's tests check the bakes with the mypy their dev extra installs: a newer one
    finds other errors, so the two pins must not drift apart."""
    pinned = json.loads((TEMPLATE / "cookiecutter.json").read_text())["_dev_stack"]["mypy"]
    assert run([tool("mypy"), "--version"]).stdout.split()[:2] == ["mypy", pinned]
    project = bake(cookies)
    dev = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    assert f"mypy=={pinned}" in dev["optional-dependencies"]["dev"]


@pytest.mark.parametrize(("target", "framework"), TARGETS_AND_FRAMEWORKS)
def test_generated_sources_run_on_python_38(cookies, mypy_cache, target, framework):
    """The cu111 / cu113 bases ship Python 3.8: the generated code must not need newer, stubs
    included. Checked by the generated ``make lint`` (ruff, the format check, mypy, vermin),
    which must also fail when vermin leaves a file out of its verdict (it read devkit/synth.py's
    ``bytes.decode`` calls as Python 2 code and exited 0)."""
    project = bake(cookies, target=target, framework=framework)
    completed = run(
        [make(), "lint", f"PYTHON={sys.executable}"],
        cwd=project,
        env={**os.environ, "MYPY_CACHE_DIR": str(mypy_cache)},
    )
    assert "Success: no issues found" in completed.stdout, completed.stdout
    assert "Minimum required versions: 3." in completed.stdout, completed.stdout
    assert "incompatible versions" not in completed.stdout.replace("Incompatible versions:", "")


def test_every_matrix_line_renders_a_dockerfile(cookies):
    """Adding a line to the matrix is a one-place change: it must render like the others."""
    project = bake(cookies, cuda_variants=",".join(MATRIX))
    for variant, line in MATRIX.items():
        check_dockerfile(project, variant, "mmdetection")
        if line["cuda"]:
            assert line["cuda"] in line["base_image"]
            assert line["torch"] in line["base_image"]


def test_answers_are_recorded(cookies):
    project = bake(
        cookies,
        executor_name="Recorded",
        target="instance-segmentation",
        cuda_variants="cpu",
        task_mining=False,
    )
    recorded = yaml.safe_load((project / ".cookiecutter.json").read_text())["default_context"]
    assert recorded["executor_name"] == "Recorded"
    assert recorded["target"] == "instance-segmentation"
    assert recorded["task_mining"] is False
    assert not [key for key in recorded if key.startswith("_")]
