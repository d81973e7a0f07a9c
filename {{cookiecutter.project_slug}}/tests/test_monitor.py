"""monitor.txt: the line format the platform parses, progress rules and failure reports."""

from __future__ import annotations

import math

import pytest

from {{ cookiecutter.package_name }}.contract.monitor import (
    ERROR,
    MAX_MESSAGE_LINES,
    PENDING,
    RUNNING,
    Monitor,
    format_monitor_line,
)
from {{ cookiecutter.package_name }}.devkit.verify import verify_monitor


def parse_like_platform(path):
    """PercentLogHandler.parse_percent_log (YMIR 2.x), reduced to its checks."""
    with open(path) as handle:
        lines = handle.readlines()
    fields = lines[0].strip().split("\t")
    assert len(fields) >= 4
    task_id, timestamp, percent, state = fields[:4]
    code = int(fields[4]) if len(fields) > 4 else None
    return task_id, float(timestamp), float(percent), int(state), code, lines[1:]


def test_states_are_the_platform_values():
    assert (PENDING, RUNNING, ERROR) == (1, 2, 4)


def test_format_line():
    line = format_monitor_line("t1", 0.354, RUNNING, 0, timestamp=1663839980.5)
    assert line == "t1\t1663839980.500000\t0.35\t2\t0\n"
    assert format_monitor_line("t1", 1, ERROR, timestamp=1.0) == "t1\t1.000000\t1.00\t4\n"
    assert format_monitor_line("t1", 0.0, PENDING, 0, timestamp=2).split("\t")[3] == "1"


def test_format_line_uses_the_current_time():
    stamp = float(format_monitor_line("t1", 0.5, RUNNING).split("\t")[1])
    assert stamp > 1.6e9


@pytest.mark.parametrize(
    "args",
    [
        ("t1", 0.5, 3, 0),  # done belongs to the platform
        ("t1", 0.5, 0, 0),
        ("t1", 0.5, True, 0),
        ("t1", 1.5, RUNNING, 0),
        ("t1", -0.1, RUNNING, 0),
        ("t1", math.nan, RUNNING, 0),
        ("t1", "half", RUNNING, 0),
        ("t\t1", 0.5, RUNNING, 0),
        ("t1\n", 0.5, RUNNING, 0),
        ("t1", 0.5, ERROR, 1.5),
        ("t1", 0.5, ERROR, True),
        ("t1", 0.5, ERROR, "x"),
    ],
)
def test_format_line_refuses_what_the_platform_cannot_parse(args):
    with pytest.raises(ValueError):
        format_monitor_line(*args)


def test_format_line_refuses_bad_timestamps():
    for stamp in (math.inf, -1.0, "now"):
        with pytest.raises(ValueError):
            format_monitor_line("t1", 0.5, RUNNING, 0, timestamp=stamp)


def test_constructor_writes_nothing(tmp_path):
    Monitor(tmp_path / "monitor.txt", "t1")
    assert not (tmp_path / "monitor.txt").exists()


def test_progress_line(tmp_path):
    path = tmp_path / "out" / "monitor.txt"
    monitor = Monitor(path, "t1")
    monitor.progress(0.25)
    task_id, _stamp, percent, state, code, rest = parse_like_platform(path)
    assert (task_id, percent, state, code, rest) == ("t1", 0.25, RUNNING, 0, [])
    assert monitor.fraction == 0.25


def test_progress_clamps_and_never_goes_back(tmp_path):
    path = tmp_path / "monitor.txt"
    monitor = Monitor(path, "t1")
    monitor.progress(-3)
    assert parse_like_platform(path)[2] == 0.0
    monitor.progress(0.6)
    monitor.progress(0.2)
    assert parse_like_platform(path)[2] == 0.6
    monitor.progress(7)
    assert parse_like_platform(path)[2] == 1.0


def test_progress_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        Monitor(tmp_path / "monitor.txt", "t1").progress(math.nan)


def test_progress_writes_only_visible_changes(tmp_path):
    path = tmp_path / "monitor.txt"
    monitor = Monitor(path, "t1")
    monitor.progress(0.5)
    before = path.read_text()
    monitor.progress(0.501)
    assert path.read_text() == before
    monitor.progress(0.51)
    assert path.read_text() != before


def test_zero_and_one_are_always_written_with_new_timestamps(tmp_path):
    path = tmp_path / "monitor.txt"
    monitor = Monitor(path, "t1")
    stamps = []
    for value in (0.0, 0.0, 1.0, 1.0):
        monitor.progress(value)
        stamps.append(parse_like_platform(path)[1])
    # The monitor service detects updates by a changed timestamp string.
    assert stamps == sorted(stamps) and len(set(stamps)) == 4


def test_error_with_code_and_message(tmp_path):
    path = tmp_path / "monitor.txt"
    monitor = Monitor(path, "t1")
    monitor.progress(0.4)
    monitor.error(300002, "no valid image in the training set\n\nsee the log")
    task_id, _stamp, percent, state, code, rest = parse_like_platform(path)
    assert (task_id, percent, state, code) == ("t1", 0.4, ERROR, 300002)
    assert rest == ["no valid image in the training set\n", "see the log\n"]
    assert verify_monitor(path, expect_success=False, task_id="t1") == []


def test_error_without_code_has_four_fields(tmp_path):
    path = tmp_path / "monitor.txt"
    Monitor(path, "t1").error(None, "")
    first = path.read_text().splitlines()[0].split("\t")
    assert len(first) == 4 and first[3] == "4"


def test_error_message_is_capped_to_the_kept_lines(tmp_path):
    path = tmp_path / "monitor.txt"
    Monitor(path, "t1").error(None, "\n".join(f"line {n}" for n in range(500)))
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + MAX_MESSAGE_LINES
    assert lines[-1] == "line 499"  # a traceback's end names the error


def test_error_refuses_bad_codes(tmp_path):
    with pytest.raises(ValueError):
        Monitor(tmp_path / "monitor.txt", "t1").error("oops", "message")


def test_progress_after_error_keeps_the_error(tmp_path):
    path = tmp_path / "monitor.txt"
    monitor = Monitor(path, "t1")
    monitor.error(300004, "bad model")
    monitor.progress(1.0)
    assert parse_like_platform(path)[3] == ERROR


def test_subrange_maps_into_its_slice(tmp_path):
    path = tmp_path / "monitor.txt"
    monitor = Monitor(path, "t1")
    mining, infer = monitor.subrange(0.0, 0.5), monitor.subrange(0.5, 1.0)
    mining(0.5)
    assert parse_like_platform(path)[2] == 0.25
    mining(1.0)
    infer(0.0)
    assert parse_like_platform(path)[2] == 0.5
    infer(2.0)
    assert parse_like_platform(path)[2] == 1.0
    assert verify_monitor(path, expect_success=True) == []


@pytest.mark.parametrize("start,end", [(0.6, 0.4), (-0.1, 0.5), (0.5, 1.2)])
def test_subrange_refuses_bad_ranges(tmp_path, start, end):
    with pytest.raises(ValueError):
        Monitor(tmp_path / "monitor.txt", "t1").subrange(start, end)


def test_writes_are_atomic_and_leave_no_temporary_files(tmp_path):
    monitor = Monitor(tmp_path / "monitor.txt", "t1")
    for step in range(101):
        monitor.progress(step / 100)
    assert [path.name for path in tmp_path.iterdir()] == ["monitor.txt"]
    assert len(tmp_path.joinpath("monitor.txt").read_text().splitlines()) == 1
