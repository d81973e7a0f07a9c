"""Fixtures shared by the test modules: what this executor supports, and a ready model package."""

from __future__ import annotations

from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.contract.params import TEMPLATE_FILES, manifest_object_type
from {{ cookiecutter.package_name }}.devkit.chain import baseline_package
from {{ cookiecutter.package_name }}.devkit.synth import default_img_man

IMG_MAN = default_img_man()
OBJECT_TYPE = manifest_object_type(IMG_MAN)
# A task is supported when its img-man template exists, exactly as YMIR decides at registration.
SUPPORTED_TASKS = {task for task, name in TEMPLATE_FILES.items() if (IMG_MAN / name).is_file()}


def requires(*tasks: str):
    """Skip a test that needs tasks this executor was generated without."""
    missing = sorted(set(tasks) - SUPPORTED_TASKS)
    return pytest.mark.skipif(bool(missing), reason=f"generated without {', '.join(missing)}")


@pytest.fixture(scope="session")
def stub_model_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A platform model package holding the stub baseline, fitted on synthetic data.

    It lets mining and inference be tested without a training run (and in executors generated
    without training). When you replace the stubs, package your own model files here instead.
    """
    root = tmp_path_factory.mktemp("stub-model")
    tar = root / "model.tar"
    baseline_package(root, tar, OBJECT_TYPE, IMG_MAN, root / "asset_cache")
    return tar
