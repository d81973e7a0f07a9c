"""Write what the hyper-parameter declarations document: the templates' comments, the README table.

``python -m <package>.devkit hyperparams`` reads the declarations (``tasks/hyperparams.py``) and
the defaults (the img-man templates) and rewrites, in the project folder,

* the comment directly above every key of ``img-man/*-template.yaml`` (what YMIR users see
  when they edit the hyper-parameters): the declaration's help, what is allowed, the default;
* the hyper-parameter table of ``README.md``, between its two marker comments.

``--check`` changes nothing and fails when a file is out of date or a template and the
declarations disagree (a key without declaration, a declaration without key, a default of the
wrong kind or out of range); the project's tests run it. The template's post-generation hook
runs :func:`update` once, so a generated project starts up to date; this module therefore
imports nothing a bare Python with PyYAML lacks.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Mapping, Sequence

from ..contract import params
from ..contract.hyperparams import TASKS, HyperParameter, declared_for, disagreements
from ..tasks.hyperparams import HYPERPARAMETERS

PACKAGE = __package__.rsplit(".", 1)[0]
COMMAND = f"python -m {PACKAGE}.devkit hyperparams"
README = "README.md"
TABLE_START = "<!-- hyper-parameter table: written from tasks/hyperparams.py and img-man/ -->"
TABLE_END = "<!-- end of the hyper-parameter table -->"
TABLE_HEADER = (
    "| task | key | default | values | what it does |",
    "| --- | --- | --- | --- | --- |",
)
# A top-level `key: value` line of a (flat) template.
_KEY_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):[ \t]*(.*?)[ \t]*$")


def template_keys(text: str) -> list[tuple[str, str]]:
    """``(key, default as written)`` of every top-level key of a template, in file order."""
    return [
        (match.group(1), match.group(2))
        for match in map(_KEY_LINE.match, text.splitlines())
        if match
    ]


def commented_template(text: str, declared: Mapping[str, HyperParameter]) -> str:
    """``text`` with the comment lines directly above each declared key written anew.

    Comments separated from a key by a blank line (the file's header) are kept as they are.
    """
    lines: list[str] = []
    for line in text.splitlines():
        match = _KEY_LINE.match(line)
        if match and match.group(1) in declared:
            while lines and lines[-1].startswith("#"):
                lines.pop()
            lines.extend(declared[match.group(1)].comment(match.group(2)))
        lines.append(line)
    return "\n".join(lines) + "\n"


def table(templates: Mapping[str, str], declarations: Sequence[HyperParameter], target: int) -> str:
    """The README's hyper-parameter table: one row per key of each task's template."""
    rows = list(TABLE_HEADER)
    for task in TASKS:
        if task not in templates:
            continue
        declared = declared_for(declarations, [task], target)
        for key, default in template_keys(templates[task]):
            declaration = declared.get(key)
            if declaration is not None:
                cells: tuple[str, ...] = (task, f"`{key}`", f"`{default}`")
                cells += (declaration.table_values(), declaration.table_help())
                rows.append("| {} |".format(" | ".join(cell.replace("|", "\\|") for cell in cells)))
    return "\n".join(rows)


def readme_with_table(text: str, rows: str) -> str | None:
    """``text`` with ``rows`` between the markers; None when the markers are missing."""
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        return None
    return f"{text[: start + len(TABLE_START)]}\n{rows}\n{text[end:]}"


def update(root: Path, *, write: bool = True) -> list[str]:
    """Bring the templates' comments and the README table of the project at ``root`` up to
    date (``write=False``: only report what is out of date); returns every problem found."""
    img_man = Path(root) / "img-man"
    target = params.manifest_object_type(img_man)
    paths = {task: img_man / params.TEMPLATE_FILES[task] for task in TASKS}
    texts = {
        task: path.read_text(encoding="utf-8") for task, path in paths.items() if path.is_file()
    }
    values = {task: params.load_template(img_man, task) or {} for task in texts}
    problems = disagreements(HYPERPARAMETERS, values, target)

    wanted = {
        paths[task]: commented_template(text, declared_for(HYPERPARAMETERS, [task], target))
        for task, text in texts.items()
    }
    readme = Path(root) / README
    current = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    new_readme = readme_with_table(current, table(texts, HYPERPARAMETERS, target))
    if new_readme is None:
        problems.append(f"{README}: no hyper-parameter table markers ({TABLE_START})")
    else:
        wanted[readme] = new_readme
    for path, text in wanted.items():
        if path.read_text(encoding="utf-8") == text:
            continue
        if write:
            path.write_text(text, encoding="utf-8")
        else:
            name = path.relative_to(root).as_posix()
            problems.append(f"{name} is out of date with tasks/hyperparams.py; run {COMMAND}")
    return problems


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root", type=Path, default=Path("."), help="the project folder (default: here)"
    )
    parser.add_argument(
        "--check", action="store_true", help="change nothing; fail when something is out of date"
    )


def run(args: argparse.Namespace) -> int:
    problems = update(args.root, write=not args.check)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
