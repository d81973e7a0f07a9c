"""scripts/function_length.py, the ``make lint`` check that no function is over 80 lines."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "function_length.py"


def load_script():
    spec = importlib.util.spec_from_file_location("function_length", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


function_length = load_script()


def long_source(folder: Path) -> Path:
    body = "".join(f"    x{index} = {index}\n" for index in range(function_length.MAX_LINES))
    source = folder / "long.py"
    source.write_text(f'def long():\n    """Docstrings do not count."""\n{body}', encoding="utf-8")
    return source


def test_no_function_is_longer_than_max_lines():
    folders = [function_length.ROOT / name for name in function_length.SOURCE_DIRS]
    files = function_length.python_files(folders)
    assert SCRIPT in files and Path(__file__).resolve() in files
    assert [found for path in files for found in function_length.long_functions(path)] == []


def test_a_long_function_is_found(tmp_path):
    tree = function_length.ast.parse(long_source(tmp_path).read_text(encoding="utf-8"))
    assert [function_length.code_lines(node) for node in tree.body] == [
        function_length.MAX_LINES + 1
    ]


def test_the_command_names_a_long_function_and_fails(tmp_path):
    source = long_source(tmp_path)
    command = [sys.executable, str(SCRIPT), str(tmp_path)]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    assert completed.returncode == 1
    assert completed.stdout.strip() == f"{source}:1 long: 81 lines (at most 80)"
    source.write_text("def short():\n    return 1\n", encoding="utf-8")
    assert subprocess.run(command, capture_output=True, check=False).returncode == 0
