"""Baked weights: where the image keeps them, and the build-time download that fills it."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.frameworks.openmmlab import weights

HASH_NAMED = weights.ModelSpec(
    name="tiny",
    config="tiny/tiny_8xb2_coco.py",
    weights_url="https://example.invalid/tiny/tiny_8xb2_coco_20240101-0badc0de.pth",
    reference_batch=16,
    description="a model for tests",
)
OTHER = weights.ModelSpec(
    name="other",
    config="other/other_8xb2_coco.py",
    weights_url="https://example.invalid/other/other_8xb2_coco_20240101-12345678.pth",
    reference_batch=16,
    description="another model for tests",
)


def test_download_keeps_existing_files(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / HASH_NAMED.weights_file).write_bytes(b"baked")

    def no_network(*args, **kwargs):
        raise AssertionError("an existing file must not be downloaded again")

    monkeypatch.setattr(weights.urllib.request, "urlopen", no_network)
    assert weights.download([HASH_NAMED], tmp_path) == [tmp_path / HASH_NAMED.weights_file]
    assert (tmp_path / HASH_NAMED.weights_file).read_bytes() == b"baked"


def test_download_checks_the_hash_in_the_name_and_leaves_nothing_behind(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(
        weights.urllib.request, "urlopen", lambda *args, **kwargs: io.BytesIO(b"not weights")
    )
    with pytest.raises(OSError, match="sha256"):
        weights.download([OTHER], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_download_writes_matching_content(tmp_path: Path, monkeypatch) -> None:
    content = b"weights whose hash is in the name"
    digest = hashlib.sha256(content).hexdigest()[:8]
    spec = weights.ModelSpec(
        name="m",
        config="m.py",
        weights_url=f"https://example.invalid/m_20240101-{digest}.pth",
        reference_batch=1,
        description="",
    )
    monkeypatch.setattr(weights.urllib.request, "urlopen", lambda *a, **k: io.BytesIO(content))
    (written,) = weights.download([spec], tmp_path / "new")
    assert written.read_bytes() == content
    assert [path.name for path in written.parent.iterdir()] == [spec.weights_file]


def test_baked_weights_location(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(weights.WEIGHTS_DIR_VARIABLE, str(tmp_path))
    assert weights.weights_dir() == tmp_path
    assert weights.baked_weights(HASH_NAMED) is None
    (tmp_path / HASH_NAMED.weights_file).write_bytes(b"x")
    assert weights.baked_weights(HASH_NAMED) == tmp_path / HASH_NAMED.weights_file
    monkeypatch.delenv(weights.WEIGHTS_DIR_VARIABLE)
    assert weights.weights_dir() == Path(weights.DEFAULT_WEIGHTS_DIR)
