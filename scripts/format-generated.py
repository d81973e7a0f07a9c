#!/usr/bin/env python3
"""Apply ruff fixes and formatting to the generated Python sources of the template.

The generated ``src/`` and ``tests/`` cannot be linted in place: ``pyproject.toml`` and the test
imports are Jinja. This bakes a project with every task, runs ``ruff check --fix`` and ``ruff
format`` there with the project's own configuration, and copies the results back (the tests with
their import lines turned back into Jinja). Run it before committing changes to those files.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from cookiecutter.main import cookiecutter

TEMPLATE = Path(__file__).resolve().parents[1]
PROJECT = TEMPLATE / "{{cookiecutter.project_slug}}"
PACKAGE = "format_probe"
JINJA_PACKAGE = "{{ cookiecutter.package_name }}"


# Each bake shows one implementation: the stubs, or a framework whose tasks/_<name>/ modules
# become tasks/ (post_gen_project) and go back there.
FRAMEWORKS = ("none", "mmdetection", "mmsegmentation")
TARGETS = {
    "none": "detection",
    "mmdetection": "instance-segmentation",
    "mmsegmentation": "semantic-segmentation",
}


def bake(output: Path, framework: str) -> Path:
    config = output / "config.json"
    config.write_text(json.dumps({"replay_dir": str(output), "cookiecutters_dir": str(output)}))
    return Path(
        cookiecutter(
            str(TEMPLATE),
            no_input=True,
            output_dir=str(output),
            config_file=str(config),
            extra_context={
                "executor_name": "Format Probe",
                "framework": framework,
                "target": TARGETS[framework],
            },
        )
    )


def template_path(relative: Path, framework: str) -> Path:
    """Where a baked file comes from in the template."""
    parts = relative.parts
    if parts[0] == "src":
        relative = Path("src", "{{cookiecutter.package_name}}", *parts[2:])
        task_module = parts[2] == "tasks" and parts[-1] in (
            "training.py",
            "mining.py",
            "infer.py",
            "hyperparams.py",
        )
        if framework != "none" and task_module:
            relative = Path(
                "src", "{{cookiecutter.package_name}}", "tasks", f"_{framework}", parts[3]
            )
    return PROJECT / relative


def main() -> int:
    ruff = [sys.executable, "-m", "ruff"]
    status = 0
    for framework in FRAMEWORKS:
        with tempfile.TemporaryDirectory() as output:
            baked = bake(Path(output), framework)
            folders = [name for name in ("src", "tests", "benchmarks") if (baked / name).is_dir()]
            subprocess.run([*ruff, "check", "--fix", "--quiet", *folders], cwd=baked)
            subprocess.run([*ruff, "format", "--quiet", *folders], cwd=baked, check=True)
            for folder in folders:
                for source in (baked / folder).rglob("*.py"):
                    relative = source.relative_to(baked)
                    text = source.read_text(encoding="utf-8")
                    if folder != "src":  # rendered files: the package name is Jinja there
                        text = text.replace(PACKAGE, JINJA_PACKAGE)
                    template_path(relative, framework).write_text(text, encoding="utf-8")
            status |= subprocess.run([*ruff, "check", *folders], cwd=baked).returncode
    return status


if __name__ == "__main__":
    sys.exit(main())
