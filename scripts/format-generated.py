#!/usr/bin/env python3
"""Apply ruff fixes and formatting to the generated Python sources of the template.

The generated ``src/`` and ``tests/`` cannot be linted in place: ``pyproject.toml`` and the test
imports are Jinja. This bakes a project with every task, runs ``ruff check --fix`` and ``ruff
format`` there with the project's own configuration, and copies the results back (the tests with
their import lines turned back into Jinja). Run it before committing changes to those files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cookiecutter.main import cookiecutter

TEMPLATE = Path(__file__).resolve().parents[1]
PROJECT = TEMPLATE / "{{cookiecutter.project_slug}}"
PACKAGE = "format_probe"
JINJA_PACKAGE = "{{ cookiecutter.package_name }}"


def main() -> int:
    with tempfile.TemporaryDirectory() as output:
        config = Path(output) / "config.json"
        config.write_text(json.dumps({"replay_dir": output, "cookiecutters_dir": output}))
        baked = Path(
            cookiecutter(
                str(TEMPLATE),
                no_input=True,
                output_dir=output,
                config_file=str(config),
                extra_context={"executor_name": "Format Probe"},
            )
        )
        ruff = [sys.executable, "-m", "ruff"]
        subprocess.run([*ruff, "check", "--fix", "--quiet", "src", "tests"], cwd=baked)
        subprocess.run([*ruff, "format", "--quiet", "src", "tests"], cwd=baked, check=True)
        for source in (baked / "src" / PACKAGE).rglob("*.py"):
            target = (
                PROJECT
                / "src"
                / "{{cookiecutter.package_name}}"
                / source.relative_to(baked / "src" / PACKAGE)
            )
            shutil.copyfile(source, target)
        for source in (baked / "tests").glob("*.py"):
            text = source.read_text(encoding="utf-8").replace(PACKAGE, JINJA_PACKAGE)
            (PROJECT / "tests" / source.name).write_text(text, encoding="utf-8")
        return subprocess.run([*ruff, "check", "src", "tests"], cwd=baked).returncode


if __name__ == "__main__":
    sys.exit(main())
