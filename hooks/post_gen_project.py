"""Shape the generated project to the answers: one Dockerfile per variant, only the chosen tasks.

The template always contains every variant and task; this hook removes what was not chosen
(Cookiecutter cannot skip directories by name) and renders ``docker/variant.Dockerfile.j2``
once per selected CUDA line from the version matrix in ``cookiecutter.json``, so adding a line
to that matrix is the only change a new CUDA version needs. Last, the generated project's own
devkit writes the help comments of the img-man templates and the README's hyper-parameter table
from the hyper-parameter declarations (``tasks/hyperparams.py``), which it checks against the
templates first.

The hook touches only files inside the project: no network, git or docker, and running it again
on a fresh copy gives the same result, as ``cruft update`` requires.
"""

import importlib
import json
import shutil
import sys
from pathlib import Path

import jinja2

ANSWERS = json.loads(r"""{{ cookiecutter | tojson }}""")

DOCKERFILE_TEMPLATE = Path("docker", "variant.Dockerfile.j2")
# Answer -> the name of the task's img-man template and of its module in tasks/.
TASKS = {"task_training": "training", "task_mining": "mining", "task_infer": "infer"}
# The reference implementations: each has frameworks/<name>/ and tasks/_<name>/ in the package.
FRAMEWORKS = ("mmdetection", "mmsegmentation")
ANSWERS_FILE = ".cookiecutter.json"
# Tool caches a developer's runs may have left inside the template folder.
CACHE_DIRS = ("__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache")


def remove(path):
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def selected_variants(answers):
    return answers["__variants"].split(",")


def prune_tasks(answers, package_dir):
    for key, task in TASKS.items():
        if not answers[key]:
            remove(Path("img-man", f"{task}-template.yaml"))
            remove(package_dir / "tasks" / f"{task}.py")


def select_framework(answers, package_dir):
    """Keep the chosen implementation: its task functions replace the stubs, the rest goes."""
    framework = answers["__framework"]
    tasks_dir = package_dir / "tasks"
    if framework != "none":
        for task in TASKS.values():
            chosen = tasks_dir / f"_{framework}" / f"{task}.py"
            if (tasks_dir / f"{task}.py").exists():
                shutil.copyfile(chosen, tasks_dir / f"{task}.py")
        # The framework's hyper-parameter declarations replace the stubs'.
        declarations = tasks_dir / f"_{framework}" / "hyperparams.py"
        shutil.copyfile(declarations, tasks_dir / "hyperparams.py")
        # The stub baseline model is what the framework replaces.
        remove(package_dir / "baseline.py")
        remove(Path("tests", "test_baseline.py"))
    for name in FRAMEWORKS:
        remove(tasks_dir / f"_{name}")
        if name != framework:
            remove(package_dir / "frameworks" / name)
            for test in Path("tests").glob(f"test_{name}_*.py"):
                remove(test)
    if framework == "none":
        remove(package_dir / "frameworks")
        for test in Path("tests").glob("test_openmmlab_*.py"):
            remove(test)
        # They install and check the OpenMMLab stack; the lint script stays.
        remove(Path("scripts", "install-cpu-stack.sh"))
        remove(Path("scripts", "gpu_check.py"))
        remove(Path("docker", "build-mmcv.sh"))  # it compiles mmcv
    # The benchmarks of the reference frameworks go with them; the scale benchmark stays.
    for name in FRAMEWORKS:
        if name != framework:
            for benchmark in Path("benchmarks").glob(f"{name}_*.py"):
                remove(benchmark)


def render_dockerfiles(answers):
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(DOCKERFILE_TEMPLATE.parent)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    template = environment.get_template(DOCKERFILE_TEMPLATE.name)
    for variant in selected_variants(answers):
        text = template.render(
            variant=variant,
            line=answers["_version_matrix"][variant],
            stack=answers["_openmmlab_stack"],
            cookiecutter=answers,
        )
        Path("docker", f"{variant}.Dockerfile").write_text(text, encoding="utf-8")
    remove(DOCKERFILE_TEMPLATE)


def document_hyperparams(answers):
    """Write the templates' help comments and the README table from the declarations.

    The project's own ``python -m <package>.devkit hyperparams`` does it (so the project can
    do it again when an author adds a hyper-parameter); it imports only the standard library,
    PyYAML (a Cookiecutter dependency) and the package's contract and declarations. Templates
    and declarations that disagree stop the generation: the project's tests would fail.
    """
    sys.dont_write_bytecode = True
    sys.path.insert(0, str(Path("src").resolve()))
    hyperparams = importlib.import_module(f"{answers['package_name']}.devkit.hyperparams")
    problems = hyperparams.update(Path("."))
    if problems:
        for problem in problems:
            print(f"ERROR: {problem}", file=sys.stderr)
        sys.exit(1)


def write_answers(answers):
    """Record the public answers as a Cookiecutter user config.

    ``cookiecutter --no-input --config-file .cookiecutter.json <template>`` regenerates the
    project with the same choices, while the private values (the version matrix) come from the
    template version used then, so a regeneration picks up new CUDA lines.
    """
    public = {key: value for key, value in answers.items() if not key.startswith("_")}
    Path(ANSWERS_FILE).write_text(
        json.dumps({"default_context": public}, indent=2, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )


def remove_caches():
    for name in CACHE_DIRS:
        for path in sorted(Path(".").rglob(name), reverse=True):
            remove(path)


def main():
    package_dir = Path("src", ANSWERS["package_name"])
    prune_tasks(ANSWERS, package_dir)
    select_framework(ANSWERS, package_dir)
    render_dockerfiles(ANSWERS)
    document_hyperparams(ANSWERS)
    write_answers(ANSWERS)
    remove_caches()


if __name__ == "__main__":
    main()
