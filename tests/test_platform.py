"""Platform tier: the YMIR platform's own command line (``mir``, PyPI ``ymir-cmd``) drives the
generated images.

The devkit imitates the platform; ``ymir-cmd`` *is* the platform's data side: ``mir`` exports a
dataset into ``in/``, runs the executor with ``docker run`` and parses ``out/`` into its
repository. For every ``ymir-cmd`` release that installs on this Python, the real ``mir``:

1. ``init`` a repository and ``import`` a small training and a validation dataset (detection: VOC
   files; segmentation: the COCO json that version exports);
2. ``train`` with the executor's training template, as composed by the controller (below);
3. ``mining --topk`` and ``mining --topk`` with predictions (``--add-prediction``; 1.1:
   ``--add-annotations``) on the validation dataset with the trained model;
4. ``infer`` (dataset inference) on the validation images;

and each step must exit 0, training must pack the model into the model location, and the
repository must hold the expected number of mined assets and predictions. The stub image of
every target the version supports goes through it (1.1 exercises the legacy protocol for real;
segmentation needs the seg-coco export of 2.1; instance segmentation models exist since 2.2),
and the default MMDetection image through the newest version.

What ``ymir-cmd`` does not contain is reproduced here:

- the controller's part, composing the task config (``executor_config`` + ``task_context``) from
  the image's template: IndustryEssentials/ymir,
  ``ymir/backend/src/ymir_controller/controller/utils/tasks_util.py``
  (``gen_executor_config_find_gpus``: ``class_names`` for training, ``gpu_id`` =
  ``"0,..,gpu_count-1"``, ``object_type`` only from 2.4, ``task_context.available_gpu_id`` and
  ``server_runtime``), after the web UI's own step (``gpu_count`` added; the training form
  drops ``''`` values, the mining and inference forms every falsy value);
- the controller's work folders: the per-task TensorBoard folder, the asset cache, and for
  dataset inference the images under ``<work>/assets`` (original names, spaces and non-ASCII);
- a ``docker`` (and 1.1's ``nvidia-docker``) on PATH that adds ``--network none`` to ``docker
  run`` and changes nothing else (``mir`` passes no ``--network``; the test engine has no
  bridge); after each container it copies the executor's result files and config.yaml aside,
  since ``mir`` deletes them when the command ends.

``mir`` runs as this user (root here), so the containers run as ``--user 0:0``; the container
tier covers an arbitrary uid. ``mir init`` refuses to run inside a git repository: the work
folders live in pytest's temp dir. ``ymir-cmd`` pins versions that have no wheel for Python
3.11 (see PIN_REPLACEMENTS); its environments are cached under ``YMIR_CMD_CACHE`` (default
``~/.cache/ymir-template-tests/ymir-cmd``).
"""

from __future__ import annotations

import email.parser
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
import uuid
import venv
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from conftest import MMCV_WHEELHOUSE, TORCH_VERSION, add_wheels, bake, build_args, run

pytestmark = [pytest.mark.container, pytest.mark.platform, pytest.mark.xdist_group("docker")]

# ymir-cmd releases on PyPI that are YMIR platform releases this template speaks to (older ones,
# 1.0.0 and the 0.x previews, predate the executor protocol of YMIR 1.1).
VERSIONS = ("1.1.0", "2.0.0", "2.1.0", "2.2.0", "2.3.0")
NEWEST = VERSIONS[-1]
# The targets each version's mir can import, export and post-process for an executor.
VERSION_TARGETS = {
    "1.1.0": ("detection",),
    "2.0.0": ("detection",),  # 2.0 exports segmentation only as seg-mask / seg-poly, not COCO
    "2.1.0": ("detection", "semantic-segmentation"),
    "2.2.0": ("detection", "semantic-segmentation", "instance-segmentation"),
    "2.3.0": ("detection", "semantic-segmentation", "instance-segmentation"),
}
OBJECT_TYPES = {"detection": 2, "semantic-segmentation": 3, "instance-segmentation": 4}
# ymir-cmd's pins without a wheel for Python 3.11 (PyYAML 5.4.1's sdist no longer builds either:
# Cython 3), replaced by the oldest release that has one; every other pin is installed as is.
PIN_REPLACEMENTS = {
    "pillow": "Pillow==9.2.0",
    "numpy": "numpy==1.23.5",
    "pyyaml": "PyYAML==6.0.1",
    "lmdb": "lmdb==1.4.1",
}
# Open-ended requirements (YMIR 1.1's) that today resolve to a major release they predate.
ERA_BOUNDS = {"pydantic": "<2"}
# Imported by mir (its COCO evaluation) but not declared by these releases.
UNDECLARED = {"2.1.0": ["pycocotools"], "2.2.0": ["pycocotools"], "2.3.0": ["pycocotools"]}
# Same executor name as the container tier's stub bake: same pyproject.toml, so the image
# builds share BuildKit's cache (the torch layer is built once per engine).
STUB_NAME = "Container Exec"
# The same answers as the container tier's default bake, for the same reason.
MMDET_NAME = "Container MMDet"
MMDET_PACKAGE = "container_mmdet"
# Present in the data, in a non-alphabetical order (the devkit's synthetic images also hold a
# third class that never occurs; mir refuses class names its label store does not know).
CLASS_NAMES = ["rect", "ellipse"]
NUM_TRAIN, NUM_VAL, TOP_K = 8, 5, 3
# Keep the MMDetection training to a few minutes on a CPU.
MMDET_PARAMS = {
    "epochs": 1,
    "val_interval": 1,
    "img_size": 64,
    "batch_size_per_gpu": 2,
    "num_workers_per_gpu": 0,
}
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "platform tier",
    "GIT_AUTHOR_EMAIL": "platform-tier@example.invalid",
    "GIT_COMMITTER_NAME": "platform tier",
    "GIT_COMMITTER_EMAIL": "platform-tier@example.invalid",
}


# ------------------------------------------------------------------------------------------------
# ymir-cmd environments


def ymir_cmd_cache() -> Path:
    default = Path.home() / ".cache" / "ymir-template-tests" / "ymir-cmd"
    return Path(os.environ.get("YMIR_CMD_CACHE", str(default)))


def requirements(wheel: Path, version: str) -> list[str]:
    """The release's own requirements, with PIN_REPLACEMENTS and UNDECLARED applied."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(archive.read(name).decode("utf-8"))
    result = []
    for requirement in metadata.get_all("Requires-Dist") or []:
        project = re.split(r"[\s(<>=!~;\[]", requirement, maxsplit=1)[0].lower()
        spec = re.sub(r"[\s()]", "", requirement)
        if project in ERA_BOUNDS and "==" not in spec:
            spec += ("," if spec != project else "") + ERA_BOUNDS[project]
        result.append(PIN_REPLACEMENTS.get(project, spec))
    return result + UNDECLARED.get(version, [])


def ymir_cmd_environment(version: str) -> Path:
    """A virtual environment with ``ymir-cmd==version`` (its ``bin/mir``), made once and cached;
    a failed install fails the test with pip's reason."""
    target = ymir_cmd_cache() / version
    marker = target / "installed.json"
    if marker.is_file():
        return target
    shutil.rmtree(target, ignore_errors=True)
    downloads = target.parent / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    venv.create(target, with_pip=True)
    python = str(target / "bin" / "python")
    pip = [python, "-m", "pip", "--disable-pip-version-check", "-q"]
    run([*pip, "download", "--no-deps", "-d", str(downloads), f"ymir-cmd=={version}"], timeout=600)
    wheel = next(downloads.glob(f"ymir_cmd-{version}-*.whl"))
    needed = requirements(wheel, version)
    run([*pip, "install", "--no-deps", str(wheel)], timeout=600)
    run([*pip, "install", "--only-binary", ":all:", *needed], timeout=1200)
    marker.write_text(json.dumps({"version": version, "requirements": needed}) + "\n")
    return target


# ------------------------------------------------------------------------------------------------
# images


def docker_shim(folder: Path, docker: str) -> Path:
    """``docker`` and ``nvidia-docker`` (YMIR 1.1 always calls it) for mir: ``docker run`` gets
    ``--network none`` (mir passes no network; the engine has no bridge) and nothing else; after
    the container exits, its result files and config.yaml are copied to
    ``$YMIR_CAPTURE/<work dir name>/``, because mir's cleanup removes them."""
    folder.mkdir(parents=True, exist_ok=True)
    script = DOCKER_SHIM.replace("@DOCKER@", docker)
    for name in ("docker", "nvidia-docker"):
        path = folder / name
        path.write_text(script)
        path.chmod(0o755)
    return folder


DOCKER_SHIM = """#!/bin/sh
if [ "$1" != run ]; then exec @DOCKER@ "$@"; fi
shift
out=
config=
for arg in "$@"; do
    case "$arg" in
    -v*:/out) out=${arg#-v}; out=${out%:/out} ;;
    -v*:/in:ro) config=${arg#-v}; config=${config%:/in:ro}/config.yaml ;;
    -v*:/in) config=${arg#-v}; config=${config%:/in}/config.yaml ;;
    -v*:/in/config.yaml) config=${arg#-v}; config=${config%:/in/config.yaml} ;;
    esac
done
@DOCKER@ run --network none "$@"
status=$?
if [ -n "$YMIR_CAPTURE" ] && [ -n "$out" ]; then
    dest="$YMIR_CAPTURE/$(basename "$(dirname "$out")")"
    mkdir -p "$dest"
    for name in monitor.txt result.tsv infer-result.json models/result.yaml; do
        if [ -f "$out/$name" ]; then cp "$out/$name" "$dest/"; fi
    done
    if [ -n "$config" ] && [ -f "$config" ]; then cp "$config" "$dest/config.yaml"; fi
fi
exit $status
"""


def build_image(engine, base_image: str, project: Path, tag: str, *extra: str) -> str:
    engine.docker(
        "build",
        *build_args(base_image),
        *extra,
        "-f",
        "docker/cpu.Dockerfile",
        "-t",
        tag,
        ".",
        timeout=2400,
        cwd=project,
    )
    return tag


@pytest.fixture(scope="module")
def stub_image(engine, base_image, cookies_session, wheelhouse):
    """target -> the cpu image of the stub executor for that target (framework none), built
    when a test first asks for it."""
    images: dict[str, str] = {}

    def image_for(target: str) -> str:
        if target not in images:
            project = bake(
                cookies_session,
                executor_name=STUB_NAME,
                target=target,
                framework="none",
                cuda_variants="cpu",
            )
            add_wheels(project, wheelhouse.glob("*.whl"))
            tag = f"ymir-template-test/platform-{target}:cpu-{uuid.uuid4().hex[:8]}"
            images[target] = build_image(engine, base_image, project, tag)
        return images[target]

    try:
        yield image_for
    finally:
        for tag in images.values():
            engine.docker("image", "rm", "--force", tag, check=False)


@pytest.fixture(scope="module")
def devkit_project(cookies_session):
    """A stub project whose devkit writes the raw datasets the tests import."""
    return bake(cookies_session, executor_name="Platform Data", framework="none")


# ------------------------------------------------------------------------------------------------
# the platform around mir


def task_id(kind: str) -> str:
    """A 30-character id shaped like the controller's (t + digits + 16 hex characters)."""
    digest = hashlib.sha1(f"{kind}{uuid.uuid4()}".encode()).hexdigest()
    return "t" + "0" * 5 + "1" + "0" * 7 + digest[:16]


def template(engine, image: str, task: str) -> dict:
    """What registration reads: ``docker run --rm IMAGE cat /img-man/<task>-template.yaml``."""
    completed = engine.docker(
        "run", "--rm", "--network", "none", image, "cat", f"/img-man/{task}-template.yaml"
    )
    return yaml.safe_load(completed.stdout)


def web_ui(template_values: dict, params: dict, task: str, gpu_count: int = 0) -> dict:
    """The web UI's submission: the template edited by the user, the training form dropping
    ``''`` values, the mining and inference forms every falsy one (``key && value``); then
    ``gpu_count`` is added."""
    values = {**template_values, **params}
    if task == "training":
        values = {key: value for key, value in values.items() if value != ""}
    else:
        values = {key: value for key, value in values.items() if value not in ("", 0, False, None)}
    values["gpu_count"] = gpu_count
    return values


def controller_task_config(
    executor_config: dict, task: str, version: str, object_type: int, class_names: list[str]
) -> dict:
    """``tasks_util.gen_executor_config_find_gpus`` (ymir_controller): class names (training),
    in-container GPU ids for ``gpu_count`` GPUs, ``object_type`` from 2.4 on, and the task
    context mir reads (``available_gpu_id``: the physical GPUs; ``server_runtime``: '' runs
    ``docker``, 'nvidia' ``nvidia-docker``)."""
    config = dict(executor_config)
    if task == "training":
        config["class_names"] = list(class_names)
    gpu_count = int(config.get("gpu_count", 0))
    config["gpu_id"] = ",".join(str(index) for index in range(gpu_count))
    context: dict = {"available_gpu_id": config["gpu_id"], "server_runtime": ""}
    if tuple(int(part) for part in version.split(".")[:2]) >= (2, 4):
        config["object_type"] = object_type
        context["object_type"] = object_type
    return {"executor_config": config, "task_context": context}


class Platform:
    """One mir repository and the folders the controller hands to mir."""

    def __init__(self, version: str, environment: Path, root: Path, engine, shim: Path):
        self.version = version
        self.legacy = version.startswith("1.")
        self.mir_bin = str(environment / "bin" / "mir")
        self.python = str(environment / "bin" / "python")
        self.root = root / "repo"
        self.media = root / "media"  # the asset storage (import's --gen-dir)
        self.models = root / "models"  # the model location
        self.cache = root / "asset_cache"  # the per-user asset cache (must exist)
        self.tensorboard = root / "tensorboard"
        self.work = root / "work"
        self.configs = root / "configs"
        self.captured = root / "captured"  # what the docker shim saved of each container run
        for folder in (self.root, self.media, self.models, self.cache, self.work, self.configs):
            folder.mkdir(parents=True)
        self.env = {
            **engine.env,
            **GIT_IDENTITY,
            "PATH": f"{shim}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
            "LANG": "C.UTF-8",
            "YMIR_CAPTURE": str(self.captured),
        }
        self.log: list[str] = []

    def capture(self, run_name: str, name: str):
        """A file the executor left in ``<work>/<run_name>``: text, parsed YAML / JSON, or None."""
        path = self.captured / run_name / name
        if not path.is_file():
            return None
        text = path.read_text(encoding="utf-8")
        if name.endswith(".json"):
            return json.loads(text)
        return yaml.safe_load(text) if name.endswith(".yaml") else text

    def mir(self, command: str, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
        argv = [self.mir_bin, command, "--root", str(self.root), *args]
        started = time.monotonic()
        completed = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=self.env, cwd=self.root
        )
        self.log.append(
            f"$ mir {command} ({time.monotonic() - started:.1f} s, exit {completed.returncode})"
        )
        assert completed.returncode == 0, (
            f"mir {self.version} {command} exited {completed.returncode}:\n"
            + " ".join(argv)
            + f"\n{completed.stdout[-3000:]}\n{completed.stderr[-5000:]}"
            + self.executor_log(args)
        )
        return completed

    def executor_log(self, args: tuple) -> str:
        if "-w" not in args:
            return ""
        log = Path(args[args.index("-w") + 1]) / "out" / "ymir-executor-out.log"
        return f"\nexecutor log:\n{log.read_text()[-3000:]}" if log.is_file() else ""

    def task_config(self, name: str, content: dict) -> str:
        path = self.configs / f"{name}.yaml"
        path.write_text(yaml.safe_dump(content, allow_unicode=True))
        return str(path)

    def prediction_counts(self, path: Path) -> dict:
        """Images and objects in mir infer's ``prediction.mir`` (a SingleTaskAnnotations)."""
        completed = run([self.python, "-c", PREDICTION_COUNTS, str(path)], timeout=300)
        return json.loads(completed.stdout.strip().splitlines()[-1])

    def branch_counts(self, branch: str) -> dict:
        """Assets and predictions a branch of the repository holds, read with mir's own
        protobuf classes."""
        completed = run(
            [self.python, "-c", BRANCH_COUNTS, str(self.root), branch], env=self.env, timeout=300
        )
        return json.loads(completed.stdout.strip().splitlines()[-1])


# Runs in the ymir-cmd environment: the .mir files of a branch, parsed by mir's protobuf classes
# (YMIR 1.1 keeps predictions as the head task's annotations, 2.x as `prediction`).
BRANCH_COUNTS = """
import json, subprocess, sys
from mir.protos import mir_command_pb2 as pb
root, branch = sys.argv[1:]
def load(name, message):
    data = subprocess.run(["git", "-C", root, "show", f"{branch}:{name}"], check=True,
                          capture_output=True).stdout
    message.ParseFromString(data)
    return message
metadatas = load("metadatas.mir", pb.MirMetadatas())
annotations = load("annotations.mir", pb.MirAnnotations())
if hasattr(annotations, "prediction"):
    images = annotations.prediction.image_annotations
    objects = [len(image.boxes) for image in images.values()]
else:
    images = annotations.task_annotations[annotations.head_task_id].image_annotations
    objects = [len(image.annotations) for image in images.values()]
print(json.dumps({"assets": len(metadatas.attributes),
                  "predicted_images": sum(1 for count in objects if count),
                  "predicted_objects": sum(objects)}))
"""


PREDICTION_COUNTS = """
import json, sys
from mir.protos import mir_command_pb2 as pb
predictions = pb.SingleTaskAnnotations()
with open(sys.argv[1], "rb") as handle:
    predictions.ParseFromString(handle.read())
objects = [len(image.boxes) for image in predictions.image_annotations.values()]
print(json.dumps({"predicted_images": sum(1 for count in objects if count),
                  "predicted_objects": sum(objects)}))
"""


def raw_dataset(devkit_python: str, project: Path, folder: Path, target: str, seed: int) -> dict:
    """Synthetic images with their annotations in the import format of the target (VOC files
    named like the images for detection, one COCO json for segmentation), from the devkit."""
    object_type = OBJECT_TYPES[target]
    work = folder / "synth"
    fmt = "voc" if object_type == 2 else "seg-coco"
    run(
        [
            devkit_python,
            "-c",
            SYNTH_RAW,
            str(work),
            str(object_type),
            fmt,
            str(NUM_TRAIN),
            str(NUM_VAL),
            str(seed),
        ],
        env={**os.environ, "PYTHONPATH": str(project / "src")},
        timeout=300,
    )
    splits = {}
    for split in ("train", "val"):
        images = folder / split / "images"
        gt = folder / split / "gt"
        images.mkdir(parents=True)
        gt.mkdir(parents=True)
        lines = (work / "in" / f"{split}-index.tsv").read_text().splitlines()
        paths = []
        for line in lines:
            image, annotation = (Path(part) for part in line.split("\t"))
            copy = images / image.name
            shutil.copy(os.path.realpath(image), copy)
            paths.append(str(copy))
            if fmt == "voc":
                shutil.copy(annotation, gt / f"{image.stem}.xml")
            else:
                shutil.copy(annotation, gt / annotation.name)
        index = folder / split / "index.tsv"
        index.write_text("".join(f"{path}\n" for path in paths))
        splits[split] = {"index": index, "gt": gt, "images": paths}
    return splits


# The devkit writes a training task's in/ (exactly as the platform exports it); its images and
# annotation files are what a user would import.
SYNTH_RAW = """
import sys
from platform_data.devkit.synth import synthesize
work, object_type, fmt, num_train, num_val, seed = sys.argv[1:]
synthesize(work, "training", int(object_type), annotation_format=fmt, num_train=int(num_train),
           num_val=int(num_val), seed=int(seed))
"""


def model_packages(models: Path) -> list[Path]:
    return sorted(path for path in models.iterdir() if path.is_file())


def package_info(tar: Path) -> dict:
    with tarfile.open(tar) as archive:
        member = archive.extractfile("ymir-info.yaml")
        assert member is not None, f"{tar} has no ymir-info.yaml"
        return yaml.safe_load(member.read())


# ------------------------------------------------------------------------------------------------
# one platform session: import, train, mine, mine with predictions, infer


def import_dataset(platform: Platform, name: str, split: dict, target: str) -> str:
    """``mir import`` of one dataset into branch ``name``; returns its ``rev@tid``."""
    rev = f"{name}@{task_id('import')}"
    work = str(platform.work / f"import-{name}")
    if platform.legacy:
        platform.mir(
            "import",
            "--index-file",
            str(split["index"]),
            "--annotation-dir",
            str(split["gt"]),
            "--gen-dir",
            str(platform.media),
            "--dataset-name",
            name,
            "--dst-rev",
            rev,
            "-w",
            work,
        )
        return rev
    anno_type = "det-box" if target == "detection" else "seg"
    extra = ["--ins-seg"] if target == "instance-segmentation" and platform.version >= "2.3" else []
    platform.mir(
        "import",
        "--index-file",
        str(split["index"]),
        "--gt-dir",
        str(split["gt"]),
        "--gen-dir",
        str(platform.media),
        "--dst-rev",
        rev,
        "-w",
        work,
        "--anno-type",
        anno_type,
        "--unknown-types-strategy",
        "add",
        *extra,
    )
    return rev


def write_labels(platform: Platform) -> None:
    """YMIR 1.1's import only keeps classes its label store knows (the controller adds them)."""
    labels = {
        "version": 1,
        "labels": [{"id": index, "name": name} for index, name in enumerate(CLASS_NAMES)],
    }
    path = platform.root / ".mir" / "labels.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(labels))


def drive(platform: Platform, engine, image: str, target: str, splits: dict, params: dict) -> dict:
    """The platform's whole life of an executor; returns what each step left behind."""
    object_type = OBJECT_TYPES[target]
    platform.mir("init")
    if platform.legacy:
        write_labels(platform)
    train_rev = import_dataset(platform, "train", splits["train"], target)
    val_rev = import_dataset(platform, "val", splits["val"], target)
    outcome: dict = {}
    training_revs = f"tr:{train_rev};va:{val_rev}"
    if platform.version < "2.1":
        # before 2.1 mir trains on one revision: the controller merges the sets first, marking
        # each asset's split (tr: / va:)
        merged = f"training-set@{task_id('merge')}"
        platform.mir(
            "merge",
            "--src-revs",
            training_revs,
            "--dst-rev",
            merged,
            "-s",
            "stop",
            "-w",
            str(platform.work / "merge"),
        )
        training_revs = merged

    # training
    config = controller_task_config(
        web_ui(template(engine, image, "training"), params, "training"),
        "training",
        platform.version,
        object_type,
        CLASS_NAMES,
    )
    before = set(model_packages(platform.models))
    train_work = platform.work / "train"
    train_task = task_id("train")
    # <TENSORBOARD_ROOT>/<user>/<task>, made by the controller; mir links out/tensorboard to it
    tensorboard = platform.tensorboard / train_task
    tensorboard.mkdir(parents=True)
    platform.mir(
        "train",
        "-w",
        str(train_work),
        "--model-location",
        str(platform.models),
        "--media-location",
        str(platform.media),
        "--asset-cache-dir",
        str(platform.cache),
        "--executor",
        image,
        "--executant-name",
        f"train-{uuid.uuid4().hex[:8]}",
        "--src-revs",
        training_revs,
        "--dst-rev",
        f"trained@{train_task}",
        "--task-config-file",
        platform.task_config("training", config),
        "--tensorboard-dir",
        str(tensorboard),
    )
    (package,) = set(model_packages(platform.models)) - before
    info = package_info(package)
    outcome["package"] = info
    outcome["train_config"] = platform.capture("train", "config.yaml")
    outcome["tensorboard"] = sorted(path.name for path in tensorboard.iterdir())
    # YMIR 1.1 names a model by its package hash, 2.x by hash@stage
    model_hash = package.name if platform.legacy else f"{package.name}@{info['best_stage_name']}"

    # mining with top-k, then with predictions too
    for name, with_predictions in (("mined", False), ("mined-predicted", True)):
        config = controller_task_config(
            web_ui(template(engine, image, "mining"), params, "mining"),
            "mining",
            platform.version,
            object_type,
            CLASS_NAMES,
        )
        work = platform.work / name
        flag = "--add-annotations" if platform.legacy else "--add-prediction"
        platform.mir(
            "mining",
            "-w",
            str(work),
            "--model-location",
            str(platform.models),
            "--media-location",
            str(platform.media),
            "--asset-cache-dir",
            str(platform.cache),
            "--topk",
            str(TOP_K),
            *([flag] if with_predictions else []),
            "--model-hash",
            model_hash,
            "--src-revs",
            val_rev,
            "--dst-rev",
            f"{name}@{task_id('mining')}",
            "--task-config-file",
            platform.task_config(name, config),
            "--executor",
            image,
            "--executant-name",
            f"{name}-{uuid.uuid4().hex[:8]}",
        )
        outcome[name] = {
            "counts": platform.branch_counts(name),
            "result_tsv": (platform.capture(name, "result.tsv") or "").splitlines(),
            "config": platform.capture(name, "config.yaml"),
            "infer_result": platform.capture(name, "infer-result.json"),
        }

    # dataset inference on the validation images
    config = controller_task_config(
        web_ui(template(engine, image, "infer"), params, "infer"),
        "infer",
        platform.version,
        object_type,
        CLASS_NAMES,
    )
    # single-image / dataset inference (CMD_INFERENCE): the controller puts the images into
    # <work>/assets under their original names (spaces, non-ASCII) and lists them in index.txt
    work = platform.work / "infer"
    uploads = work / "assets"
    uploads.mkdir(parents=True)
    for number, source in enumerate(splits["val"]["images"]):
        shutil.copy(source, uploads / f"upload {number} \u2013 Stra\u00dfe{Path(source).suffix}")
    index = work / "index.txt"
    index.write_text("".join(f"{path}\n" for path in sorted(uploads.iterdir())))
    platform.mir(
        "infer",
        "--index-file",
        str(index),
        "-w",
        str(work),
        "--model-location",
        str(platform.models),
        "--model-hash",
        model_hash,
        "--task-config-file",
        platform.task_config("infer", config),
        "--executor",
        image,
        "--executant-name",
        f"infer-{uuid.uuid4().hex[:8]}",
    )
    prediction_mir = work / "out" / "prediction.mir"
    outcome["infer"] = {
        "result": platform.capture("infer", "infer-result.json"),
        # what mir 2.1+ hands the controller; before, the controller read infer-result.json
        "prediction_mir": platform.prediction_counts(prediction_mir)
        if prediction_mir.is_file()
        else None,
    }
    return outcome


def predicted(infer_result: dict, object_type: int) -> dict[str, int]:
    """Image basename -> objects predicted for it, from an executor's infer-result.json."""
    if object_type == 2:
        return {
            name: len(entry.get("boxes") or entry.get("annotations") or [])
            for name, entry in infer_result["detection"].items()
        }
    names = {image["id"]: image["file_name"] for image in infer_result["images"]}
    counts = dict.fromkeys(names.values(), 0)
    for annotation in infer_result["annotations"]:
        counts[names[annotation["image_id"]]] += 1
    return counts


def check_outcome(
    outcome: dict, platform: Platform, target: str, expect_predictions: bool = True
) -> None:
    """What mir made of the executor's outputs. ``expect_predictions``: the model predicts
    something (a one-epoch model from scratch need not)."""
    object_type = OBJECT_TYPES[target]
    info = outcome["package"]
    # the package holds the executor's model files (YMIR 1.1: result.yaml's `model` list; 2.x:
    # its stages) and the training config as the platform composed it
    if platform.legacy:
        assert info["models"], info
    else:
        assert info["stages"], info
        assert info["best_stage_name"] in info["stages"], info
    assert info["executor_config"]["class_names"] == CLASS_NAMES, info["executor_config"]
    assert outcome["train_config"]["class_names"] == CLASS_NAMES
    assert "object_type" not in outcome["train_config"]  # no ymir-cmd release is 2.4+
    # the training curves land where the platform's TensorBoard reads them
    assert any("tfevents" in name for name in outcome["tensorboard"]), outcome["tensorboard"]
    for name in ("mined", "mined-predicted"):
        step = outcome[name]
        # mir keeps the top-k of the executor's result.tsv: one line per candidate, best first
        assert len(step["result_tsv"]) == NUM_VAL, step["result_tsv"]
        assert step["counts"]["assets"] == TOP_K, (name, step["counts"])
        # mining and inference forms drop falsy values; mir adds the model's class names
        assert step["config"]["class_names"] == CLASS_NAMES
        assert all(
            value not in ("", 0, False, None)
            for key, value in step["config"].items()
            if key not in ("gpu_id", "gpu_count", "run_infer", "run_mining")
        ), step["config"]
    if not platform.legacy:
        # (YMIR 1.1 keeps the ground truth under the same head task as annotations)
        assert outcome["mined"]["counts"]["predicted_objects"] == 0
    # predictions of the top-k images only, as many as the executor wrote for them
    mined = outcome["mined-predicted"]
    top = {Path(line.split("\t")[0]).name for line in mined["result_tsv"][:TOP_K]}
    per_image = predicted(mined["infer_result"], object_type)
    expected_images = sum(1 for name in top if per_image.get(name))
    expected_objects = sum(per_image.get(name, 0) for name in top)
    assert mined["counts"]["predicted_images"] == expected_images, (mined["counts"], per_image)
    assert mined["counts"]["predicted_objects"] == expected_objects, (mined["counts"], per_image)
    if expect_predictions:
        assert expected_objects > 0, "the executor predicted nothing for the mined images"
    # dataset inference: every candidate in the result, predictions handed to the platform
    per_image = predicted(outcome["infer"]["result"], object_type)
    assert len(per_image) == NUM_VAL, per_image
    if expect_predictions:
        assert sum(per_image.values()) > 0, per_image
    stored = outcome["infer"]["prediction_mir"]
    if platform.version >= "2.1":
        assert stored == {
            "predicted_images": sum(1 for count in per_image.values() if count),
            "predicted_objects": sum(per_image.values()),
        }, (stored, per_image)
    else:
        assert stored is None  # the controller itself read infer-result.json


# ------------------------------------------------------------------------------------------------
# the tests


@pytest.fixture(scope="module")
def shim(engine, tmp_path_factory) -> Path:
    return docker_shim(tmp_path_factory.mktemp("docker-shim"), engine.cli)


@pytest.fixture(scope="module")
def ymir_cmd() -> dict[str, Path]:
    """version -> its environment; the releases install side by side (pip mostly waits for
    downloads), a few minutes on a cold cache, nothing on a warm one."""
    with ThreadPoolExecutor(max_workers=len(VERSIONS)) as pool:
        return dict(zip(VERSIONS, pool.map(ymir_cmd_environment, VERSIONS), strict=True))


@pytest.fixture(scope="module")
def devkit_python(ymir_cmd) -> str:
    """The newest ymir-cmd environment holds what the devkit needs (numpy, Pillow, PyYAML,
    pycocotools)."""
    return str(ymir_cmd[NEWEST] / "bin" / "python")


CASES = [(version, target) for version in VERSIONS for target in VERSION_TARGETS[version]]


@pytest.mark.parametrize(("version", "target"), CASES)
def test_mir_drives_the_stub_image(
    version, target, engine, stub_image, shim, ymir_cmd, devkit_python, devkit_project, tmp_path
):
    platform = Platform(version, ymir_cmd[version], tmp_path / "platform", engine, shim)
    splits = raw_dataset(devkit_python, devkit_project, tmp_path / "raw", target, seed=3)
    started = time.monotonic()
    outcome = drive(platform, engine, stub_image(target), target, splits, params={})
    print(f"mir {version} {target}: {time.monotonic() - started:.0f} s\n" + "\n".join(platform.log))
    check_outcome(outcome, platform, target)


def test_mir_drives_the_default_mmdetection_image(
    engine,
    base_image,
    cookies_session,
    wheelhouse,
    shim,
    ymir_cmd,
    devkit_python,
    devkit_project,
    tmp_path,
):
    """The default bake's image (built with the container tier's answers and build arguments,
    so that BuildKit's cache serves both) through the newest mir, with a training short enough
    for a CPU."""
    mmcv = sorted(MMCV_WHEELHOUSE.glob("mmcv-2.1.0-*.whl")) if MMCV_WHEELHOUSE.is_dir() else []
    if not mmcv:
        pytest.skip(f"no mmcv 2.1.0 wheel for torch {TORCH_VERSION} in {MMCV_WHEELHOUSE}")
    project = bake(cookies_session, executor_name=MMDET_NAME, cuda_variants="cpu")
    assert (project / "src" / MMDET_PACKAGE / "frameworks" / "mmdetection").is_dir()
    add_wheels(project, [*wheelhouse.glob("*.whl"), *mmcv])
    tag = f"ymir-template-test/platform-mmdet:cpu-{uuid.uuid4().hex[:8]}"
    build_image(
        engine,
        base_image,
        project,
        tag,
        "--build-arg",
        "MMCV_INDEX_URL=",
        "--build-arg",
        "BAKE_WEIGHTS=0",
    )
    try:
        platform = Platform(
            NEWEST, ymir_cmd_environment(NEWEST), tmp_path / "platform", engine, shim
        )
        splits = raw_dataset(devkit_python, devkit_project, tmp_path / "raw", "detection", seed=5)
        started = time.monotonic()
        outcome = drive(platform, engine, tag, "detection", splits, params=MMDET_PARAMS)
        print(
            f"mir {NEWEST} mmdetection: {time.monotonic() - started:.0f} s\n"
            + "\n".join(platform.log)
        )
    finally:
        engine.docker("image", "rm", "--force", tag, check=False)
    check_outcome(outcome, platform, "detection", expect_predictions=False)
    assert set(outcome["package"]["stages"]) == {"best", "last"}
    assert outcome["train_config"]["epochs"] == 1
