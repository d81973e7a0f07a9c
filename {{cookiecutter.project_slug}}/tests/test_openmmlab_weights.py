"""Baked weights: where the image keeps them, and the build-time bake that fills that folder.

The downloads go to a real HTTP server on 127.0.0.1 (a mirror with OpenMMLab's paths), through
the same ``urllib`` code the image build runs; the files are real ``torch.save`` checkpoints.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import importlib
import logging
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from conftest import FRAMEWORK
from {{ cookiecutter.package_name }}.frameworks.openmmlab import bake_weights, weights

ORIGIN = "https://download.openmmlab.com"
PATH = "/mmdetection/v3.0/tiny/tiny_8xb2_coco"


def spec_named(file_name: str, name: str = "tiny") -> weights.ModelSpec:
    return weights.ModelSpec(
        name=name,
        config="tiny/tiny_8xb2_coco.py",
        weights_url=f"{ORIGIN}{PATH}/{file_name}",
        reference_batch=16,
        description="a model for tests",
    )


def checkpoint_bytes(tmp_path: Path, legacy: bool = False) -> bytes:
    path = tmp_path / "made.pth"
    torch.save(
        {"meta": {"epoch": 3}, "state_dict": {"conv.weight": torch.randn(4, 3, 3, 3)}},
        str(path),
        _use_new_zipfile_serialization=not legacy,
    )
    data = path.read_bytes()
    path.unlink()
    return data


def hash_named(data: bytes, stem: str = "tiny_8xb2_coco_20240101_000000") -> str:
    """A file name with the SHA-256 prefix of ``data``, as OpenMMLab names its checkpoints."""
    return f"{stem}-{hashlib.sha256(data).hexdigest()[:8]}.pth"


class Mirror:
    """A local HTTP server: ``files`` maps URL paths to (status, body, declared length)."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[int, bytes, int | None]] = {}
        self.requests: list[str] = []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                mirror.requests.append(self.path)
                status, body, length = mirror.files.get(self.path, (404, b"not found", None))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def serve(self, spec: weights.ModelSpec, body: bytes, status: int = 200, length=None) -> None:
        self.files[bake_weights.mirrored_url(spec.weights_url, "")] = (status, body, length)


@pytest.fixture
def mirror():
    server = Mirror()
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()
        thread.join()


@contextlib.contextmanager
def umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_bake_downloads_from_the_mirror_and_leaves_files_readable_by_everyone(
    tmp_path: Path, mirror: Mirror
) -> None:
    data = checkpoint_bytes(tmp_path)
    spec = spec_named(hash_named(data))
    mirror.serve(spec, data)
    dest, cache = tmp_path / "weights", tmp_path / "cache"
    # A umask that would make every new file private, as mkstemp does anyway: the baked files
    # must still be readable by the arbitrary uid YMIR runs the image as.
    with umask(0o077):
        (baked,) = bake_weights.bake([spec], dest, base_url=mirror.url, cache_dir=cache)
    assert mirror.requests == [f"{PATH}/{spec.weights_file}"]  # OpenMMLab's path, on the mirror
    assert baked.path == dest / spec.weights_file
    assert baked.path.read_bytes() == data
    assert mode(baked.path) == 0o644 and mode(dest) == 0o755
    assert baked.origin == f"{mirror.url}{PATH}/{spec.weights_file}"
    assert (baked.checkpoint.format, baked.checkpoint.tensors) == ("zip", 1)
    assert sorted(path.name for path in dest.iterdir()) == [spec.weights_file]
    assert sorted(path.name for path in cache.iterdir()) == [spec.weights_file]
    # the next build takes it from the cache: nothing is downloaded again
    bake_weights.bake([spec], tmp_path / "again", base_url=mirror.url, cache_dir=cache)
    assert len(mirror.requests) == 1


def test_mirrored_url_keeps_the_path() -> None:
    url = f"{ORIGIN}{PATH}/x.pth"
    assert bake_weights.mirrored_url(url, "http://m.internal/openmmlab/") == (
        f"http://m.internal/openmmlab{PATH}/x.pth"
    )
    assert bake_weights.mirrored_url(url, ORIGIN) == url


def test_a_name_hash_mismatch_is_reported_but_a_valid_checkpoint_is_kept(
    tmp_path: Path, mirror: Mirror, caplog
) -> None:
    data = checkpoint_bytes(tmp_path, legacy=True)
    spec = spec_named("tiny_8xb2_coco_20240101_000000-0badc0de.pth")
    mirror.serve(spec, data)
    with caplog.at_level(logging.WARNING):
        (baked,) = bake_weights.bake([spec], tmp_path / "weights", base_url=mirror.url)
    assert baked.path.read_bytes() == data and baked.checkpoint.format == "legacy"
    warning = " ".join(record.getMessage() for record in caplog.records)
    assert "its name says 0badc0de" in warning
    assert hashlib.sha256(data).hexdigest()[:8] in warning


@pytest.mark.parametrize(
    "case, message",
    [
        ("truncated", "download stopped after"),
        ("cut zip", "not a usable PyTorch checkpoint: the zip archive has no directory"),
        ("web page", "a web page"),
        ("missing", "HTTP Error 404"),
    ],
)
def test_a_bad_download_fails_the_bake_and_leaves_nothing(
    tmp_path: Path, mirror: Mirror, case: str, message: str
) -> None:
    data = checkpoint_bytes(tmp_path)
    spec = spec_named(hash_named(data))
    if case == "truncated":  # the connection ends before the declared length
        mirror.serve(spec, data[: len(data) // 2], length=len(data))
    elif case == "cut zip":  # a complete response of a file cut short at its origin
        mirror.serve(spec, data[: len(data) // 2])
    elif case == "web page":  # a proxy's or a mirror's error page, served as 200
        mirror.serve(spec, b"<!DOCTYPE html><html><body>Access denied</body></html>")
    dest, cache = tmp_path / "weights", tmp_path / "cache"
    with pytest.raises(bake_weights.WeightsError) as raised:
        bake_weights.bake([spec], dest, base_url=mirror.url, cache_dir=cache)
    assert message in str(raised.value)
    assert spec.weights_file in str(raised.value)
    if case in ("truncated", "missing"):
        assert "WEIGHTS_BASE_URL" in str(raised.value)  # the way out
    assert list(dest.iterdir()) == [] and list(cache.iterdir()) == []


def test_local_files_are_used_checked_and_made_readable(tmp_path: Path, monkeypatch) -> None:
    data = checkpoint_bytes(tmp_path)
    spec = spec_named(hash_named(data))
    local = tmp_path / "context"
    local.mkdir()
    (local / spec.weights_file).write_bytes(data)
    (local / spec.weights_file).chmod(0o600)  # e.g. copied from a private folder

    def no_network(*args, **kwargs):
        raise AssertionError("a local file must not be downloaded")

    monkeypatch.setattr(bake_weights.urllib.request, "urlopen", no_network)
    (baked,) = bake_weights.bake([spec], tmp_path / "weights", local_dirs=[local])
    assert baked.path.read_bytes() == data and mode(baked.path) == 0o644
    assert baked.origin == "the build context's weights/ folder"
    (local / spec.weights_file).write_bytes(data[:1000])
    with pytest.raises(bake_weights.WeightsError, match="build context's weights/ folder"):
        bake_weights.bake([spec], tmp_path / "weights", local_dirs=[local])


def test_a_damaged_cache_entry_is_downloaded_again(tmp_path: Path, mirror: Mirror, caplog) -> None:
    data = checkpoint_bytes(tmp_path)
    spec = spec_named(hash_named(data))
    mirror.serve(spec, data)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / spec.weights_file).write_bytes(data[:100])
    with caplog.at_level(logging.WARNING):
        (baked,) = bake_weights.bake(
            [spec], tmp_path / "weights", base_url=mirror.url, cache_dir=cache
        )
    assert baked.path.read_bytes() == data and len(mirror.requests) == 1
    assert "downloading it again" in caplog.text


def test_name_hash() -> None:
    assert bake_weights.name_hash("rtmdet_tiny_8xb32-300e_coco_20220902_112414-78e30dcc.pth") == (
        "78e30dcc"
    )
    assert bake_weights.name_hash("model.pth") == ""
    assert bake_weights.name_hash("segformer-b0.pth") == ""  # not 8 hex digits


def test_models_command_line_bakes_through_the_mirror(
    tmp_path: Path, mirror: Mirror, capsys
) -> None:
    """``python -m <package>.frameworks.<framework>.models --download`` as the Dockerfile runs
    it: the default model of this executor's target, from the mirror, one line per model."""
    models = importlib.import_module(f"{weights.__package__.rsplit('.', 1)[0]}.{FRAMEWORK}.models")
    spec = next(iter(models.MODELS.values()))
    data = checkpoint_bytes(tmp_path)
    mirror.serve(spec, data)
    dest = tmp_path / "weights"
    argv = ["--download", str(dest), "--base-url", mirror.url, "--models", spec.name]
    assert models.main(argv) == 0
    assert (dest / spec.weights_file).read_bytes() == data
    assert (
        f"{spec.name}: {dest / spec.weights_file} (zip format, 1 tensors" in capsys.readouterr().out
    )
    # a failure is one line on stderr and exit status 1, nothing on stdout
    assert models.main([*argv[:2], "--base-url", f"{mirror.url}/nothing-here"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: cannot download")
    assert len(captured.err.strip().splitlines()) == 1
    assert models.main([*argv[:2], "--models", "no_such_model"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_models_command_line_lists_the_models_of_a_target(capsys) -> None:
    """``--list`` (also without ``--download``) prints every offered model once, with its
    config; MMDetection's ``--object-type`` keeps one target's and refuses a model of the other."""
    models = importlib.import_module(f"{weights.__package__.rsplit('.', 1)[0]}.{FRAMEWORK}.models")
    for argv in (["--list"], []):
        assert models.main(argv) == 0
        listed = capsys.readouterr().out.splitlines()
        assert len(listed) == len(models.MODELS)
        for spec in models.MODELS.values():
            (line,) = [line for line in listed if line.startswith(spec.name)]
            assert spec.config in line
    if FRAMEWORK != "mmdetection":
        return
    for object_type, other in ((2, 4), (4, 2)):
        assert models.main(["--list", "--object-type", str(object_type)]) == 0
        listed = capsys.readouterr().out.splitlines()
        assert {line.split()[0] for line in listed} == {
            spec.name for spec in models.models_for(object_type)
        }
        foreign = models.models_for(other)[0].name
        argv = ["--download", "unused", "--object-type", str(object_type), "--models", foreign]
        assert models.main(argv) == 2
        assert "this executor does" in capsys.readouterr().err


def test_models_command_line_needs_only_the_standard_library() -> None:
    """The Dockerfile's weights stage runs it with the base image's bare python3: no PyYAML,
    numpy or torch there. ``-S`` leaves site-packages out, as that stage has none."""
    package = weights.__package__.rsplit(".", 2)[0]
    source = Path(importlib.import_module(package).__file__).parents[1]
    completed = subprocess.run(
        [sys.executable, "-S", "-m", f"{package}.frameworks.{FRAMEWORK}.models", "--list"],
        env={**os.environ, "PYTHONPATH": str(source)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip(), completed.stderr


def test_baked_weights_location(tmp_path: Path, monkeypatch) -> None:
    spec = spec_named("tiny.pth")
    monkeypatch.setenv(weights.WEIGHTS_DIR_VARIABLE, str(tmp_path))
    assert weights.weights_dir() == tmp_path
    assert weights.baked_weights(spec) is None
    (tmp_path / spec.weights_file).write_bytes(b"x")
    assert weights.baked_weights(spec) == tmp_path / spec.weights_file
    monkeypatch.delenv(weights.WEIGHTS_DIR_VARIABLE)
    assert weights.weights_dir() == Path(weights.DEFAULT_WEIGHTS_DIR)
