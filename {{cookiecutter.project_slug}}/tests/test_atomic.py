"""Atomic writes: complete files only, no temporary files left behind, readable permissions."""

from __future__ import annotations

import os
import stat

import pytest

from {{ cookiecutter.package_name }}.contract import atomic
from {{ cookiecutter.package_name }}.contract.atomic import write_bytes_atomic, write_text_atomic


def test_write_text_creates_parents_and_writes_utf8(tmp_path):
    path = tmp_path / "out" / "models" / "result.yaml"
    write_text_atomic(path, "class_names: [狗]\n")
    assert path.read_bytes() == "class_names: [狗]\n".encode()
    assert os.listdir(path.parent) == ["result.yaml"]


def test_line_endings_are_written_as_given(tmp_path):
    path = tmp_path / "monitor.txt"
    write_text_atomic(path, "a\tb\n")
    assert path.read_bytes() == b"a\tb\n"
    write_text_atomic(path, "x\r\n")
    assert path.read_bytes() == b"x\r\n"


def test_write_bytes_and_string_paths(tmp_path):
    path = tmp_path / "blob.bin"
    write_bytes_atomic(str(path), b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"


def test_overwrite_replaces_the_whole_file(tmp_path):
    path = tmp_path / "result.tsv"
    write_text_atomic(path, "a long first version\n" * 10)
    write_text_atomic(path, "short\n")
    assert path.read_text() == "short\n"
    assert sorted(os.listdir(tmp_path)) == ["result.tsv"]


def test_files_are_readable_by_others(tmp_path):
    path = tmp_path / "infer-result.json"
    write_text_atomic(path, "{}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_failed_replace_keeps_the_old_file_and_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "monitor.txt"
    write_text_atomic(path, "old\n")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(path, "new\n")
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["monitor.txt"]


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    with pytest.raises(TypeError):
        write_bytes_atomic(tmp_path / "x.bin", "not bytes")  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


def test_parent_that_is_a_file_is_an_error(tmp_path):
    (tmp_path / "out").write_text("")
    with pytest.raises(OSError):
        write_text_atomic(tmp_path / "out" / "monitor.txt", "x")
