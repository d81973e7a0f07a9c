"""Model packages: /in/models reading, and packing / unpacking exactly like the platform."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import yaml

from {{ cookiecutter.package_name }}.contract.errors import ErrorCode, ExecutorError
from {{ cookiecutter.package_name }}.contract.models import (
    LEGACY_STAGE,
    ModelPackage,
    load_model_package,
    pack_model,
    resolve_model_files,
    unpack_model,
)

CONFIG = {"class_names": ["cat", "dog"], "export_format": "ark:raw", "epochs": 3}


def write(path, content=b"weights"):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def write_yaml(path, data):
    return write(path, yaml.safe_dump(data, sort_keys=False))


def stage(name, files, map_value, timestamp):
    return {"stage_name": name, "files": files, "timestamp": timestamp, "mAP": map_value}


@pytest.fixture
def trained(tmp_path):
    """/out/models after a modern training with two stages."""
    models = tmp_path / "out" / "models"
    write(models / "epoch10" / "model.pt", b"ten")
    write(models / "epoch20" / "model.pt", b"twenty")
    # A file shared by the stages, directly in /out/models (the platform's fallback lookup).
    write(models / "config.py", "lr = 0.1\n")
    stages = {
        "epoch10": stage("epoch10", ["model.pt", "config.py"], 0.3, 1700000000),
        "epoch20": stage("epoch20", ["model.pt", "config.py"], 0.5, 1700000100),
    }
    result = {
        "best_stage_name": "epoch20",
        "mAP": 0.5,
        "model_stages": stages,
        "evaluate_config": {"conf_thr": 0.005, "iou_thr": 0.5},
        "object_type": 2,
    }
    return write_yaml(models / "result.yaml", result)


@pytest.fixture
def trained_legacy(tmp_path):
    """/out/models after a legacy (YMIR 1.1) training: files flat, model + map."""
    models = tmp_path / "out" / "models"
    write(models / "best-0149.params", b"params")
    write(models / "best-symbol.json", "{}")
    return write_yaml(
        models / "result.yaml", {"model": ["best-0149.params", "best-symbol.json"], "map": 0.87}
    )


def tar_names(path):
    with tarfile.open(path) as archive:
        return sorted(member.name for member in archive.getmembers())


def tar_info(path):
    with tarfile.open(path) as archive:
        return yaml.safe_load(archive.extractfile("ymir-info.yaml").read())


# --- resolve / load ---------------------------------------------------------------------------


def test_resolve_listed_paths(tmp_path):
    models = tmp_path / "models"
    first = write(models / "best" / "a.pt")
    second = write(models / "best" / "b.py")
    resolved = resolve_model_files([str(first), "best/b.py"], models)
    assert resolved == [first, second]


def test_resolve_falls_back_to_a_search_by_basename(tmp_path):
    models = tmp_path / "models"
    flat = write(models / "model.params")
    listed = str(models / "default_best_stage" / "model.params")
    assert resolve_model_files([listed], models) == [flat]
    # Also for paths outside models_dir (e.g. /in/models while the test runs elsewhere).
    assert resolve_model_files(["/in/models/default_best_stage/model.params"], models) == [flat]


def test_resolve_prefers_the_copy_in_the_listed_stage(tmp_path):
    models = tmp_path / "models"
    write(models / "aaa" / "model.pt")
    wanted = write(models / "zzz" / "model.pt")
    write(models / "model.pt")
    listed = "/in/models/zzz/model.pt"
    assert resolve_model_files([listed], models) == [wanted]


def test_resolve_missing_file_is_a_model_error(tmp_path):
    models = tmp_path / "models"
    write(models / "other.pt")
    with pytest.raises(ExecutorError) as caught:
        resolve_model_files(["/in/models/best/missing.pt"], models)
    assert caught.value.code == ErrorCode.MODEL
    assert "missing.pt" in caught.value.message


def test_resolve_ignores_blank_entries_and_accepts_one_string(tmp_path):
    models = tmp_path / "models"
    path = write(models / "m.pt")
    assert resolve_model_files(["", "  "], models) == []
    assert resolve_model_files(str(path), models) == [path]


def test_no_model_chosen_gives_an_empty_package(tmp_path):
    package = load_model_package(tmp_path / "not-there", [])
    assert package == ModelPackage({}, [], None, None)


def test_load_package_with_info(tmp_path):
    models = tmp_path / "models"
    model = write(models / "epoch20" / "model.pt")
    info = {
        "package_version": "2.0.0",
        "executor_config": CONFIG,
        "stages": {"epoch20": stage("epoch20", ["model.pt"], 0.5, 1)},
        "best_stage_name": "epoch20",
    }
    write_yaml(models / "ymir-info.yaml", info)
    package = load_model_package(models, [str(model)])
    assert package.files == [model]
    assert package.class_names == ["cat", "dog"]
    assert package.stage_name == "epoch20"
    assert package.info["best_stage_name"] == "epoch20"
    assert package.find_file("model.pt") == model
    # The platform's /in/models paths name the stage even when read from a local copy.
    assert load_model_package(models, ["/in/models/epoch20/model.pt"]).stage_name == "epoch20"
    with pytest.raises(ExecutorError) as caught:
        package.find_file("other.pt")
    assert caught.value.code == ErrorCode.MODEL


def test_load_package_without_info(tmp_path):
    models = tmp_path / "models"
    model = write(models / "model.params")
    package = load_model_package(models, ["/in/models/model.params"])
    assert package.info == {}
    assert package.class_names is None
    assert package.files == [model]


def test_load_package_stage_from_the_listed_path_even_when_files_are_flat(tmp_path):
    models = tmp_path / "models"
    model = write(models / "model.params")
    stages = {LEGACY_STAGE: stage(LEGACY_STAGE, ["model.params"], 0.8, 1)}
    info = {"stages": stages}
    write_yaml(models / "ymir-info.yaml", info)
    package = load_model_package(models, [str(models / LEGACY_STAGE / "model.params")])
    assert package.files == [model]
    assert package.stage_name == LEGACY_STAGE


@pytest.mark.parametrize("content", ["a: [unclosed", "- just\n- a list\n", "", "plain text"])
def test_corrupt_info_is_a_model_error(tmp_path, content):
    models = tmp_path / "models"
    write(models / "m.pt")
    write(models / "ymir-info.yaml", content)
    with pytest.raises(ExecutorError) as caught:
        load_model_package(models, [str(models / "m.pt")])
    assert caught.value.code == ErrorCode.MODEL
    assert "ymir-info.yaml" in caught.value.message


# --- pack -------------------------------------------------------------------------------------


def test_pack_like_the_platform(trained, tmp_path):
    dest = tmp_path / "pkg" / "model.tar.gz"
    assert pack_model(trained, "epoch20", dest, CONFIG) == "epoch20"
    assert tar_names(dest) == [
        "epoch10/config.py",
        "epoch10/model.pt",
        "epoch20/config.py",
        "epoch20/model.pt",
        "ymir-info.yaml",
    ]
    info = tar_info(dest)
    assert info["package_version"] == "2.0.0"
    assert info["best_stage_name"] == "epoch20"
    assert info["executor_config"] == CONFIG
    assert info["object_type"] == 2
    assert info["evaluate_config"] == {"conf_thr": 0.005, "iou_thr": 0.5}
    assert set(info["stages"]) == {"epoch10", "epoch20"}
    assert info["stages"]["epoch10"]["files"] == ["model.pt", "config.py"]
    assert info["stages"]["epoch10"]["mAP"] == 0.3
    with tarfile.open(dest) as archive:
        assert archive.extractfile("epoch10/model.pt").read() == b"ten"
        assert archive.extractfile("epoch20/model.pt").read() == b"twenty"
    assert [path.name for path in dest.parent.iterdir()] == ["model.tar.gz"]


def test_pack_default_stage_is_the_best(trained, tmp_path):
    assert pack_model(trained, None, tmp_path / "m.tar", CONFIG) == "epoch20"


def test_pack_missing_file_is_a_model_error_and_leaves_nothing(trained, tmp_path):
    (trained.parent / "epoch10" / "model.pt").unlink()
    dest = tmp_path / "pkg" / "model.tar.gz"
    with pytest.raises(ExecutorError) as caught:
        pack_model(trained, "epoch20", dest, CONFIG)
    assert caught.value.code == ErrorCode.MODEL
    assert "model.pt" in caught.value.message
    assert "epoch10" in caught.value.message
    assert not dest.exists()


def test_pack_unknown_stage(trained, tmp_path):
    with pytest.raises(ExecutorError) as caught:
        pack_model(trained, "epoch99", tmp_path / "m.tar", CONFIG)
    assert caught.value.code == ErrorCode.MODEL
    assert "epoch99" in caught.value.message


@pytest.mark.parametrize(
    "result",
    [
        "not: [valid",
        "- a list\n",
        "best_stage_name: x\nmodel_stages: {}\n",
        "best_stage_name: nope\nmodel_stages:\n  a:\n    files: [m.pt]\n",
        "model: [m.pt]\n",
        "best_stage_name: a\nmodel_stages:\n  a:\n    files: [../../etc/passwd]\n",
    ],
)
def test_pack_bad_result(tmp_path, result):
    models = tmp_path / "models"
    write(models / "m.pt")
    result_yaml = write(models / "result.yaml", result)
    with pytest.raises(ExecutorError) as caught:
        pack_model(result_yaml, None, tmp_path / "m.tar", CONFIG)
    assert caught.value.code == ErrorCode.MODEL


def test_pack_model_key_wins_over_model_stages(tmp_path):
    # The platform's precedence trap: any top-level "model" selects the legacy parser.
    models = tmp_path / "models"
    write(models / "flat.pt")
    write(models / "s" / "staged.pt")
    result = {
        "model": ["flat.pt"],
        "map": 0.4,
        "best_stage_name": "s",
        "model_stages": {"s": stage("s", ["staged.pt"], 0.9, 1)},
    }
    dest = tmp_path / "m.tar"
    result_yaml = write_yaml(models / "result.yaml", result)
    assert pack_model(result_yaml, None, dest, CONFIG) == LEGACY_STAGE
    assert tar_names(dest) == [f"{LEGACY_STAGE}/flat.pt", "ymir-info.yaml"]
    assert tar_info(dest)["stages"][LEGACY_STAGE]["mAP"] == 0.4


def test_pack_stores_contents_not_symlinks(trained, tmp_path):
    real = write(tmp_path / "elsewhere" / "real.pt", b"real bytes")
    link = trained.parent / "epoch20" / "model.pt"
    link.unlink()
    link.symlink_to(real)
    dest = tmp_path / "m.tar"
    pack_model(trained, None, dest, CONFIG)
    with tarfile.open(dest) as archive:
        member = archive.getmember("epoch20/model.pt")
        assert member.isfile()
        assert archive.extractfile(member).read() == b"real bytes"


def test_pack_attachments(trained, tmp_path):
    result = yaml.safe_load(trained.read_text())
    result["attachments"] = {"deploy": ["model.onnx"]}
    write_yaml(trained, result)
    write(trained.parent / "attachments" / "deploy" / "model.onnx")
    dest = tmp_path / "m.tar"
    pack_model(trained, None, dest, CONFIG)
    assert "attachments/deploy/model.onnx" in tar_names(dest)
    assert tar_info(dest)["attachments"] == {"deploy": ["model.onnx"]}


# --- unpack -----------------------------------------------------------------------------------


def test_unpack_only_the_chosen_stage(trained, tmp_path):
    package = tmp_path / "model.tar.gz"
    pack_model(trained, None, package, CONFIG)
    models = tmp_path / "in" / "models"
    paths = unpack_model(package, "epoch10", models)
    assert paths == [str(models / "epoch10" / "model.pt"), str(models / "epoch10" / "config.py")]
    assert all(Path(path).is_absolute() for path in paths)
    assert (models / "epoch10" / "model.pt").read_bytes() == b"ten"
    assert not (models / "epoch20").exists()
    assert sorted(path.name for path in models.iterdir()) == ["epoch10", "ymir-info.yaml"]
    loaded = load_model_package(models, paths)
    assert loaded.class_names == ["cat", "dog"]
    assert loaded.stage_name == "epoch10"
    assert loaded.files == [Path(path) for path in paths]


def test_unpack_defaults_to_the_best_stage(trained, tmp_path):
    package = tmp_path / "model.tar.gz"
    pack_model(trained, None, package, CONFIG)
    models = tmp_path / "in" / "models"
    paths = unpack_model(package, None, models)
    assert paths[0] == str(models / "epoch20" / "model.pt")
    assert Path(paths[0]).read_bytes() == b"twenty"


def test_unpack_unknown_stage(trained, tmp_path):
    package = tmp_path / "model.tar.gz"
    pack_model(trained, None, package, CONFIG)
    with pytest.raises(ExecutorError) as caught:
        unpack_model(package, "epoch99", tmp_path / "models")
    assert caught.value.code == ErrorCode.MODEL
    assert "epoch10" in caught.value.message


def test_unpack_corrupt_or_incomplete_packages(tmp_path):
    garbage = write(tmp_path / "garbage.tar", b"this is no tar file at all" * 40)
    with pytest.raises(ExecutorError) as caught:
        unpack_model(garbage, None, tmp_path / "models")
    assert caught.value.code == ErrorCode.MODEL
    no_info = tmp_path / "no-info.tar"
    with tarfile.open(no_info, "w") as archive:
        archive.add(str(write(tmp_path / "m.pt")), arcname="best/m.pt")
    with pytest.raises(ExecutorError) as caught:
        unpack_model(no_info, "best", tmp_path / "models")
    assert caught.value.code == ErrorCode.MODEL
    assert "ymir-info.yaml" in caught.value.message


def test_legacy_result_packed_by_a_modern_platform(trained_legacy, tmp_path):
    package = tmp_path / "model.tar.gz"
    assert pack_model(trained_legacy, None, package, CONFIG) == LEGACY_STAGE
    assert tar_names(package) == [
        f"{LEGACY_STAGE}/best-0149.params",
        f"{LEGACY_STAGE}/best-symbol.json",
        "ymir-info.yaml",
    ]
    info = tar_info(package)
    assert info["best_stage_name"] == LEGACY_STAGE
    assert info["stages"][LEGACY_STAGE]["mAP"] == 0.87
    models = tmp_path / "in" / "models"
    paths = unpack_model(package, None, models)
    assert paths == [
        str(models / LEGACY_STAGE / "best-0149.params"),
        str(models / LEGACY_STAGE / "best-symbol.json"),
    ]
    assert all(Path(path).is_file() for path in paths)


def test_legacy_package_flat_layout(trained_legacy, tmp_path):
    package = tmp_path / "model.tar.gz"
    pack_model(trained_legacy, LEGACY_STAGE, package, CONFIG, legacy=True)
    assert tar_names(package) == ["best-0149.params", "best-symbol.json", "ymir-info.yaml"]
    # YMIR 1.1 extracts flat and lists flat paths.
    models = tmp_path / "legacy" / "models"
    paths = unpack_model(package, None, models, legacy=True)
    assert paths == [str(models / "best-0149.params"), str(models / "best-symbol.json")]
    assert (models / "best-0149.params").read_bytes() == b"params"
    assert load_model_package(models, paths).files == [Path(path) for path in paths]


def test_flat_package_on_a_modern_platform_keeps_the_quirk(trained_legacy, tmp_path):
    # Migrated 1.1 packages: files land flat, the config still names the stage folder.
    package = tmp_path / "model.tar.gz"
    pack_model(trained_legacy, None, package, CONFIG, legacy=True)
    models = tmp_path / "in" / "models"
    paths = unpack_model(package, None, models)
    assert paths[0] == str(models / LEGACY_STAGE / "best-0149.params")
    assert not Path(paths[0]).exists()
    assert (models / "best-0149.params").is_file()
    loaded = load_model_package(models, paths)
    assert loaded.files == [models / "best-0149.params", models / "best-symbol.json"]
    assert loaded.stage_name == LEGACY_STAGE
    assert loaded.class_names == ["cat", "dog"]


def test_legacy_packing_needs_a_legacy_result(trained, tmp_path):
    with pytest.raises(ExecutorError) as caught:
        pack_model(trained, None, tmp_path / "m.tar", CONFIG, legacy=True)
    assert caught.value.code == ErrorCode.MODEL


def test_unpack_refuses_names_that_escape(tmp_path):
    stages = {"s": stage("s", ["../evil.pt"], 0.1, 1)}
    info = {"stages": stages, "best_stage_name": "s"}
    package = tmp_path / "evil.tar"
    info_file = write_yaml(tmp_path / "ymir-info.yaml", info)
    with tarfile.open(package, "w") as archive:
        archive.add(str(info_file), arcname="ymir-info.yaml")
        archive.add(str(write(tmp_path / "evil.pt")), arcname="s/../evil.pt")
    with pytest.raises(ExecutorError) as caught:
        unpack_model(package, None, tmp_path / "in" / "models")
    assert caught.value.code == ErrorCode.MODEL
    assert not (tmp_path / "in" / "evil.pt").exists()
