"""Validate the answers before anything is generated.

Cookiecutter runs this hook in the (still empty) project folder and deletes that folder when the
hook exits non-zero, so a refused answer leaves nothing behind. Every answer reaches the hook as
JSON data (``tojson``), never pasted into code: names with quotes or backslashes cannot break it.

First the Cookiecutter version: older ones generate a wrong project without a word (a ``no``
given on the command line arrives as a true string before 2.7, private variables are not
rendered before 2.2). Then the answers: every problem is printed, followed by one
``cookiecutter --no-input`` command that reproduces the answers given, corrected where only one
answer is right, so that fixing an answer does not mean answering every question again.
"""

import json
import keyword
import os
import re
import shlex
import sys
from typing import NamedTuple

ANSWERS = json.loads(r"""{{ cookiecutter | tojson }}""")

MIN_COOKIECUTTER = (2, 7)
UPGRADE = 'pip install --upgrade "cookiecutter>=2.7"'

FRAMEWORK_TARGETS = {
    "mmdetection": {"detection", "instance-segmentation"},
    "mmsegmentation": {"semantic-segmentation"},
}
# Names a package must not take: it would shadow a dependency the executor imports.
SHADOWED_PACKAGES = {
    "yaml",
    "numpy",
    "PIL",
    "pycocotools",
    "torch",
    "mmcv",
    "mmdet",
    "mmengine",
    "mmseg",
    "tests",
    "test",
    "app",
    "setuptools",
    "pip",
}

SLUG = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
PACKAGE = re.compile(r"^[a-z_][a-z0-9_]*$")
# A Docker repository, optionally behind a registry host (host[:port]/path).
REPOSITORY = re.compile(
    r"^([a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?/)?"
    r"[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$"
)
VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_NAME = 50  # YMIR's limit on an image's display name
MAX_TAG = 128  # Docker's limit on a tag


class Problem(NamedTuple):
    """A refused answer: what is wrong and how to fix it, and the corrected value where only
    one is right (``None``: the user has to choose)."""

    key: str
    message: str
    fix: object = None


def version_tuple(text):
    return tuple(int(part) for part in re.findall(r"[0-9]+", text)[:3])


def cookiecutter_version():
    """The version of the Cookiecutter running this hook (hooks run in its interpreter)."""
    try:
        from importlib.metadata import version

        return version("cookiecutter")  # cookiecutter.__version__ says 2.6.0 in 2.7.0
    except Exception:
        try:
            import cookiecutter

            return cookiecutter.__version__
        except Exception:
            return None


def version_problem(found):
    """The one line refusing a Cookiecutter too old to generate this template correctly."""
    if found is None or version_tuple(found) >= MIN_COOKIECUTTER:
        return None
    needed = ".".join(map(str, MIN_COOKIECUTTER))
    return (
        f"Cookiecutter {found} cannot generate this template correctly; {needed} or newer "
        f"is needed: {UPGRADE}"
    )


def selected_variants(answers):
    return [v for v in answers["cuda_variants"].lower().replace(" ", "").split(",")]


def problems(answers):
    """Every problem with the answers, each as 'what is wrong; how to fix it'."""
    found = []
    name = answers["executor_name"]
    if not name.strip():
        found.append(
            Problem("executor_name", "executor_name is empty; give the executor a display name")
        )
    elif len(name) > MAX_NAME:
        found.append(
            Problem(
                "executor_name",
                f"executor_name has {len(name)} characters; YMIR allows at most {MAX_NAME}",
            )
        )

    slug = answers["project_slug"]
    if not SLUG.match(slug) or len(slug) > MAX_NAME:
        found.append(
            Problem(
                "project_slug",
                f"project_slug {slug!r} is not valid; use lowercase letters, digits and single "
                f"dashes, starting with a letter, at most {MAX_NAME} characters (e.g. my-executor)",
            )
        )

    package = answers["package_name"]
    if not PACKAGE.match(package) or keyword.iskeyword(package):
        found.append(
            Problem(
                "package_name",
                f"package_name {package!r} is not a valid Python package name; use lowercase "
                "letters, digits and underscores, not starting with a digit (e.g. my_executor)",
            )
        )
    elif package in SHADOWED_PACKAGES or package in getattr(sys, "stdlib_module_names", ()):
        found.append(
            Problem(
                "package_name",
                f"package_name {package!r} would shadow a module the executor imports; "
                "choose another name",
            )
        )

    for key in ("executor_name", "description", "author_name"):
        if any(ord(char) < 32 or ord(char) == 127 for char in answers[key]):
            found.append(
                Problem(
                    key,
                    f"{key} contains a line break or another control character; use a single "
                    "line of printable text",
                )
            )
    email = answers["author_email"]
    if email and not EMAIL.match(email):
        found.append(
            Problem(
                "author_email",
                f"author_email {email!r} is not an e-mail address; leave it empty or fix it",
            )
        )

    repository = answers["image_repository"]
    if not REPOSITORY.match(repository):
        found.append(
            Problem(
                "image_repository",
                f"image_repository {repository!r} is not a Docker repository name; use "
                "lowercase path parts such as myorg/ymir-executor (optionally behind "
                "registry.host:5000/)",
            )
        )
    if not VERSION.match(answers["ymir_version"]):
        found.append(
            Problem(
                "ymir_version",
                f"ymir_version {answers['ymir_version']!r} is not a version; use three numbers "
                "such as 2.5.0",
            )
        )

    tasks = [answers["task_training"], answers["task_mining"], answers["task_infer"]]
    if not any(tasks):
        found.append(
            Problem(
                "task_training",
                "no task selected; set at least one of task_training, task_mining, task_infer "
                "to yes",
            )
        )

    matrix = answers["_version_matrix"]
    variants = selected_variants(answers)
    known = ", ".join(matrix)
    if not [v for v in variants if v]:
        found.append(Problem("cuda_variants", f"cuda_variants is empty; choose from {known}"))
    else:
        unknown = [v for v in variants if v not in matrix]
        if unknown:
            found.append(
                Problem(
                    "cuda_variants",
                    f"cuda_variants has unknown entries {unknown}; choose from {known} "
                    "(cu102 is not offered: its images ship Python 3.7)",
                )
            )
        duplicates = sorted({v for v in variants if variants.count(v) > 1})
        if duplicates:
            # Listing each variant once is the only fix, unless an entry is wrong too.
            once = ",".join(dict.fromkeys(v for v in variants if v))
            found.append(
                Problem(
                    "cuda_variants",
                    f"cuda_variants lists {duplicates} more than once",
                    None if unknown else once,
                )
            )

    target = answers["target"]
    framework = answers["framework"]
    if framework in FRAMEWORK_TARGETS and target not in FRAMEWORK_TARGETS[framework]:
        supported = " or ".join(sorted(FRAMEWORK_TARGETS[framework]))
        found.append(
            Problem(
                "framework",
                f"framework {framework} does not do {target}; it supports {supported} "
                "(use framework=auto to pick the right one)",
                "auto",
            )
        )

    letters = answers["__task_letters"]
    for variant in variants:
        tag = f"ymir{answers['ymir_version']}-{slug}-{variant}-{letters}"
        if len(tag) > MAX_TAG:
            found.append(
                Problem(
                    "project_slug",
                    f"the image tag {tag!r} is longer than {MAX_TAG}; shorten project_slug",
                )
            )
            break
    return found


# --- the command that reproduces the answers ---------------------------------------------------


def template_context(answers):
    """cookiecutter.json as the template has it (its order, its default expressions), or None."""
    try:
        path = os.path.join(answers["_repo_dir"], "cookiecutter.json")
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except Exception:
        return None


def default_of(key, raw, answers):
    """What ``key`` would be if it had not been answered: its default, rendered like
    Cookiecutter renders it (``project_slug`` follows ``executor_name``); None if unknown."""
    value = raw[key]
    if isinstance(value, list):
        return value[0]
    if isinstance(value, str) and "{" in value:
        try:
            from cookiecutter.environment import StrictEnvironment

            environment = StrictEnvironment(context={"cookiecutter": raw})
            return environment.from_string(value).render(cookiecutter=answers)
        except Exception:
            return None
    return value


def as_argument(value):
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def sources_of(key, raw):
    """The answers a derived default is made from (``package_name``: ``project_slug``)."""
    value = raw.get(key) if raw else None
    return re.findall(r"cookiecutter\.(\w+)", value) if isinstance(value, str) else []


def reproducing_command(answers, found):
    """``cookiecutter --no-input <template> key=value ...`` and the note on what to change:
    every answer that differs from its default, the clear fixes applied, the answers still to
    change last (a refused answer that follows another, like project_slug from executor_name,
    is left to follow it)."""
    raw = template_context(answers)
    public = [key for key in (raw or answers) if not key.startswith("_") and key in answers]
    fixes = {problem.key: problem.fix for problem in found if problem.fix is not None}
    corrected = {**answers, **fixes}

    def given(key):
        return raw is None or corrected[key] != default_of(key, raw, corrected)

    to_change = [p.key for p in found if p.fix is None and p.key in answers and given(p.key)]
    following = [p.key for p in found if p.fix is None and p.key in answers and not given(p.key)]
    arguments = []
    for key in sorted(public, key=lambda key: key in to_change):
        if key in fixes or key in to_change or given(key):
            arguments.append(f"{key}={shlex.quote(as_argument(corrected[key]))}")
    command = ["cookiecutter", "--no-input", shlex.quote(str(answers.get("_template") or "."))]
    if answers.get("_checkout"):
        command += ["--checkout", shlex.quote(str(answers["_checkout"]))]
    output_dir = answers.get("_output_dir")
    if output_dir and os.path.abspath(os.environ.get("PWD", "")) != output_dir:
        command += ["--output-dir", shlex.quote(output_dir)]
    notes = list(dict.fromkeys(to_change))
    notes += [
        f"{key} (it follows {', '.join(sources_of(key, raw))})" if sources_of(key, raw) else key
        for key in dict.fromkeys(following)
        if key not in notes
    ]
    return " ".join(command + arguments), notes, sorted(fixes)


def main():
    refusal = version_problem(cookiecutter_version())
    if refusal:
        # Before anything else: an older Cookiecutter hands the answers over wrongly.
        print(f"ERROR: {refusal}", file=sys.stderr)
        sys.exit(1)
    found = problems(ANSWERS)
    for problem in found:
        print(f"ERROR: {problem.message}", file=sys.stderr)
    if found:
        command, to_change, fixed = reproducing_command(ANSWERS, found)
        corrected = f", with {' and '.join(fixed)} corrected," if fixed else ""
        print(f"Nothing was generated. Your answers{corrected} as one command:", file=sys.stderr)
        if to_change:
            command += "  # change " + "; ".join(to_change)
        print(f"    {command}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
