"""Validate the answers before anything is generated.

Cookiecutter runs this hook in the (still empty) project folder and deletes that folder when the
hook exits non-zero, so a refused answer leaves nothing behind. Every answer reaches the hook as
JSON data (``tojson``), never pasted into code: names with quotes or backslashes cannot break it.
"""

import json
import keyword
import re
import sys

ANSWERS = json.loads(r"""{{ cookiecutter | tojson }}""")

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


def selected_variants(answers):
    return [v for v in answers["cuda_variants"].lower().replace(" ", "").split(",")]


def problems(answers):
    """Every problem with the answers, each as 'what is wrong; how to fix it'."""
    found = []
    name = answers["executor_name"]
    if not name.strip():
        found.append("executor_name is empty; give the executor a display name")
    elif len(name) > MAX_NAME:
        found.append(f"executor_name has {len(name)} characters; YMIR allows at most {MAX_NAME}")

    slug = answers["project_slug"]
    if not SLUG.match(slug) or len(slug) > MAX_NAME:
        found.append(
            f"project_slug {slug!r} is not valid; use lowercase letters, digits and single "
            f"dashes, starting with a letter, at most {MAX_NAME} characters (e.g. my-executor)"
        )

    package = answers["package_name"]
    if not PACKAGE.match(package) or keyword.iskeyword(package):
        found.append(
            f"package_name {package!r} is not a valid Python package name; use lowercase "
            "letters, digits and underscores, not starting with a digit (e.g. my_executor)"
        )
    elif package in SHADOWED_PACKAGES or package in getattr(sys, "stdlib_module_names", ()):
        found.append(
            f"package_name {package!r} would shadow a module the executor imports; "
            "choose another name"
        )

    for key in ("executor_name", "description", "author_name"):
        if any(ord(char) < 32 or ord(char) == 127 for char in answers[key]):
            found.append(
                f"{key} contains a line break or another control character; use a single line "
                "of printable text"
            )
    email = answers["author_email"]
    if email and not EMAIL.match(email):
        found.append(f"author_email {email!r} is not an e-mail address; leave it empty or fix it")

    repository = answers["image_repository"]
    if not REPOSITORY.match(repository):
        found.append(
            f"image_repository {repository!r} is not a Docker repository name; use lowercase "
            "path parts such as myorg/ymir-executor (optionally behind registry.host:5000/)"
        )
    if not VERSION.match(answers["ymir_version"]):
        found.append(
            f"ymir_version {answers['ymir_version']!r} is not a version; use three numbers "
            "such as 2.5.0"
        )

    tasks = [answers["task_training"], answers["task_mining"], answers["task_infer"]]
    if not any(tasks):
        found.append(
            "no task selected; set at least one of task_training, task_mining, task_infer to yes"
        )

    matrix = answers["_version_matrix"]
    variants = selected_variants(answers)
    known = ", ".join(matrix)
    if not [v for v in variants if v]:
        found.append(f"cuda_variants is empty; choose from {known}")
    else:
        unknown = [v for v in variants if v not in matrix]
        if unknown:
            found.append(
                f"cuda_variants has unknown entries {unknown}; choose from {known} "
                "(cu102 is not offered: its images ship Python 3.7)"
            )
        duplicates = sorted({v for v in variants if variants.count(v) > 1})
        if duplicates:
            found.append(f"cuda_variants lists {duplicates} more than once")

    target = answers["target"]
    framework = answers["framework"]
    if framework in FRAMEWORK_TARGETS and target not in FRAMEWORK_TARGETS[framework]:
        supported = " or ".join(sorted(FRAMEWORK_TARGETS[framework]))
        found.append(
            f"framework {framework} does not do {target}; it supports {supported} "
            "(use framework=auto to pick the right one)"
        )

    letters = answers["__task_letters"]
    for variant in variants:
        tag = f"ymir{answers['ymir_version']}-{slug}-{variant}-{letters}"
        if len(tag) > MAX_TAG:
            found.append(f"the image tag {tag!r} is longer than {MAX_TAG}; shorten project_slug")
            break
    return found


def main():
    found = problems(ANSWERS)
    for problem in found:
        print(f"ERROR: {problem}", file=sys.stderr)
    if found:
        print(
            "Nothing was generated. Run again with corrected key=value arguments "
            "(or --replay to answer the questions again).",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
