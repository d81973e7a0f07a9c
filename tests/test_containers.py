"""Container tier: build a generated executor's cpu image with a real Docker engine and run it the
way YMIR does, through the generated devkit's container mode.

A private engine (``scripts/docker-engine.sh``: no bridge, no iptables, its own data root) builds
the generated ``docker/cpu.Dockerfile`` unmodified, with build arguments only: a local debootstrap
base image (``scripts/base-image.sh``; Docker Hub is not reachable), the CPU torch wheel from a
local wheelhouse (``scripts/wheelhouse.sh``) and the host CA bundle as a BuildKit secret. Builds
use ``--network host``; every container runs with ``--network none``.

Then the image goes through what the platform does with it, driven by the generated project's
own devkit on the host (``python -m <package>.devkit ... --image IMAGE``, in a virtual environment
with the project's dependencies): registration (``docker run --rm IMAGE cat /img-man/...`` must
print nothing but the YAML), then the devkit chain in the container: training, packaging, and
infer / mining / mining+infer (and single-image inference, and a model migrated from YMIR 1.1)
with the packaged model, each run like ``mir`` runs it (``/in`` read-only, ``/out`` writable, the
asset cache bind-mounted at its real path, an arbitrary ``--user`` without a passwd entry,
``--shm-size``, no command) and checked by the devkit's verifier. ``docker kill`` during training
must leave no half-written result behind.

The images tested are the stub executor's and the reference frameworks' default executors, one
per target (MMDetection detection, the default bake; MMDetection instance segmentation;
MMSegmentation semantic segmentation), each built with the Dockerfile's defaults: their weights
are baked (``BAKE_WEIGHTS=1``) through the real download code, from a mirror of
download.openmmlab.com on 127.0.0.1 (``WEIGHTS_BASE_URL``) that serves real-format checkpoints
with random weights, made in a container of the image's own stack. Training in the container
must start from those baked weights, as the arbitrary uid; the build's own permission check
(``docker/check-permissions.sh``) must pass and must catch what it is there for.

Static checks that need no engine: every GPU Dockerfile of a bake with every matrix line has the
same application layers as the cpu one, and the Dockerfiles keep images small (no caches, no
wheels, runtime bases).

After a one-file code change, every layer before the code's must come from the layer cache
(asserted from BuildKit's log, not timed). The build time, the rebuild time (and their ratio),
the image size and what the executor adds to its base are printed and written to
``container-metrics.json`` in pytest's base temp dir.

Set ``YMIR_DOCKER_KEEP=1`` to leave the engine running after the tests (faster iterations), and
see the scripts for the other ``YMIR_*`` variables.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time
import tomllib
import uuid
import venv
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import (
    MATRIX,
    MMCV_WHEELHOUSE,
    OBJECT_TYPES,
    TARGETS,
    TORCH_VERSION,
    Engine,
    add_wheels,
    bake,
    build_args,
    run,
)

# Only the tests that use the engine are container tests (root, minutes); the static Dockerfile
# checks run everywhere.
container = pytest.mark.container
docker_group = pytest.mark.xdist_group("docker")

# An arbitrary uid:gid without a passwd entry, as the platform's backend user may be (the
# devkit's default, passed explicitly so that the ownership check below can rely on it).
RUN_USER = "12345:12345"
SHM_SIZE = "256m"
REGISTRATION_FILES = (
    "manifest.yaml",
    "training-template.yaml",
    "mining-template.yaml",
    "infer-template.yaml",
)
PACKAGE = "container_exec"
# Training settings that keep the chain in the container to minutes on a CPU (epochs for
# MMDetection, max_iters for MMSegmentation; a key the executor does not declare is ignored).
QUICK_PARAMS = [
    "--param=epochs=1",
    "--param=max_iters=2",
    "--param=val_interval=1",
    "--param=img_size=64",
    "--param=batch_size_per_gpu=2",
    "--param=num_workers_per_gpu=0",
]
# The steps of `devkit chain` (protocol 1.1.0) after registration, training and packaging.
MODEL_STEPS = (
    "infer",
    "mining",
    "mining+infer",
    "infer (single image)",
    "infer (migrated model)",
)


@pytest.fixture(scope="module")
def project(cookies_session, wheelhouse):
    """A detection executor with the stub model (framework none), cpu image only."""
    path = bake(
        cookies_session,
        executor_name="Container Exec",
        target="detection",
        framework="none",
        cuda_variants="cpu",
    )
    add_wheels(path, wheelhouse.glob("*.whl"))
    return path


def mmcv_wheels() -> list[Path]:
    """The mmcv wheel the framework images take (OpenMMLab's wheel index is not reachable from
    here); the tests of those images are skipped without one."""
    found = sorted(MMCV_WHEELHOUSE.glob("mmcv-2.1.0-*.whl")) if MMCV_WHEELHOUSE.is_dir() else []
    if not found:
        pytest.skip(f"no mmcv 2.1.0 wheel for torch {TORCH_VERSION} in {MMCV_WHEELHOUSE}")
    return found


def build(
    engine: Engine, project: Path, base_image: str, tag: str, no_cache: bool = False
) -> tuple[float, str]:
    """``docker build`` of docker/cpu.Dockerfile as it was generated: seconds taken, log."""
    args = ["build", *build_args(base_image), "-f", "docker/cpu.Dockerfile", "-t", tag]
    if no_cache:
        args.append("--no-cache")
    started = time.monotonic()
    completed = engine.docker(*args, ".", timeout=1800, cwd=project)
    return time.monotonic() - started, completed.stdout + completed.stderr


def inspect(engine: Engine, image: str, field: str) -> str:
    return engine.docker("image", "inspect", "--format", "{{" + field + "}}", image).stdout.strip()


@dataclass
class BuiltImage:
    tag: str
    rebuild_log: str  # of the rebuild after a one-line code change


@pytest.fixture(scope="module")
def built_image(engine, base_image, project, tmp_path_factory):
    """The stub image: a full build, then a rebuild after a one-line code change (timed)."""
    tag = f"ymir-template-test/container-exec:cpu-{uuid.uuid4().hex[:8]}"
    full, _ = build(engine, project, base_image, tag, no_cache=True)
    first_id = inspect(engine, tag, ".Id")
    # BuildKit keys its cache on file contents, so the change must be a real one.
    source = project / "src" / PACKAGE / "tasks" / "infer.py"
    source.write_text(source.read_text() + f"\n# changed by test_containers {uuid.uuid4().hex}\n")
    rebuild, rebuild_log = build(engine, project, base_image, tag)
    size = int(inspect(engine, tag, ".Size"))
    base_size = int(inspect(engine, base_image, ".Size"))
    if inspect(engine, tag, ".Id") != first_id:
        engine.docker("image", "rm", first_id, check=False)  # the untagged first build
    steps = build_steps(rebuild_log)
    metrics = {
        "image": tag,
        "base_image": base_image,
        "image_size_bytes": size,
        "image_size_mb": round(size / 1e6, 1),
        "base_image_size_mb": round(base_size / 1e6, 1),
        # torch (CPU), the executor's dependencies and its code
        "added_to_base_mb": round((size - base_size) / 1e6, 1),
        "full_build_s": round(full, 1),
        "rebuild_after_code_change_s": round(rebuild, 1),
        "rebuild_ratio": round(rebuild / full, 3),
        "rebuild_layers_reused": f"{sum(cached for _, cached in steps)} of {len(steps)}",
    }
    base = tmp_path_factory.getbasetemp()
    if re.fullmatch(r"popen-gw\d+", base.name):  # an xdist worker's: report next to them
        base = base.parent
    report = base / "container-metrics.json"
    report.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"\ncontainer metrics ({report}):\n{json.dumps(metrics, indent=2)}")
    try:
        yield BuiltImage(tag, rebuild_log)
    finally:
        engine.docker("image", "rm", "--force", tag, check=False)


@pytest.fixture(scope="module")
def image(built_image) -> str:
    return built_image.tag


# ------------------------------------------------------------------------------------------------
# the devkit on the host


class Devkit:
    """``python -m <package>.devkit`` of a baked project, with the engine's DOCKER_HOST."""

    def __init__(self, python: Path, project: Path, engine: Engine, package: str = PACKAGE):
        self.python = str(python)
        self.engine = engine
        self.package = package
        self.env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(project / "src"),
            "DOCKER_HOST": engine.env["DOCKER_HOST"],
        }

    def __call__(self, *args: str, check: bool = True, timeout: int = 900):
        command = [self.python, "-m", f"{self.package}.devkit", *args]
        if check:
            return run(command, timeout=timeout, env=self.env)
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=self.env
        )

    def container_options(self) -> list[str]:
        return ["--docker", self.engine.cli, "--user", RUN_USER, "--shm-size", SHM_SIZE]

    def python_api(self, code: str, *args: str, timeout: int = 300) -> dict:
        """Run ``code`` (which prints one JSON line last) with the devkit importable."""
        completed = run([self.python, "-c", code, *args], timeout=timeout, env=self.env)
        return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def devkit(engine, project, tmp_path_factory):
    """A virtual environment with the project's dependencies (not the project: it runs from its
    source folder, as a developer runs it); the host interpreter's packages are used where they
    fit, so only a fresh machine downloads anything."""
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    environment = tmp_path_factory.mktemp("devkit-venv") / "venv"
    venv.create(environment, with_pip=True, system_site_packages=True)
    python = environment / "bin" / "python"
    run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *pyproject["project"]["dependencies"],
        ],
        timeout=900,
    )
    return Devkit(python, project, engine)


@pytest.fixture(scope="module")
def work_base(tmp_path_factory):
    return tmp_path_factory.mktemp("work")


def parse_chain(output: str) -> dict[str, str]:
    """Step name -> its summary line, from ``devkit chain`` output."""
    steps = {}
    for line in output.splitlines():
        match = re.match(r"^\s+(PASS|FAIL) (.+?)(?: \| |$)", line)
        if match:
            steps[match.group(2)] = line.strip()
    return steps


@pytest.fixture(scope="module")
def chain(devkit, image, work_base):
    """``devkit chain --image``: registration, training, packaging, then every mining / infer
    step, each run in the container like the platform and verified."""
    work = work_base / "chain"
    completed = devkit(
        "chain",
        "--work",
        str(work),
        "--image",
        image,
        *devkit.container_options(),
        "--timeout",
        "300",
        check=False,
    )
    output = completed.stdout + completed.stderr
    print(output)
    return completed.returncode, output, work


# ------------------------------------------------------------------------------------------------
# the tests that need the engine


@container
@docker_group
def test_image_runs_without_entrypoint_and_with_start_script(engine, image):
    config = json.loads(inspect(engine, image, "json .Config"))
    assert not config.get("Entrypoint"), config.get("Entrypoint")
    assert config["Cmd"] == ["bash", "/usr/bin/start.sh"]
    # Nothing the build used is left in the image: no wheel (the wheelhouse is bind-mounted, only
    # its empty mount point stays), no CA secret, no pip cache. (Debian's venv support ships pip
    # and setuptools wheels in the base: not the build's.)
    leftovers = engine.docker(
        "run",
        "--rm",
        "--network",
        "none",
        image,
        "bash",
        "-c",
        "find / -xdev -path /usr/share/python-wheels -prune -o \\( -name '*.whl' "
        "-o -path /run/secrets/pip_ca -o -path '*/.cache/pip' \\) -print; "
        "test -f /usr/bin/start.sh || echo 'no /usr/bin/start.sh'",
    )
    assert leftovers.stdout == "", leftovers.stdout


@container
@docker_group
def test_a_code_change_rebuilds_only_the_code_layers(built_image):
    """The layer order's promise, asserted by cache hits (not by time): after a one-line code
    change, every layer before the code's comes from the cache."""
    assert_only_code_layers_rebuilt(built_image.rebuild_log)


@container
@docker_group
@pytest.mark.parametrize("name", REGISTRATION_FILES)
def test_registration_prints_only_the_yaml(engine, image, project, name):
    """What ``invoker_cmd_inspect_image`` does: stdout must be the file and parse to a dict."""
    completed = engine.docker("run", "--rm", "--network", "none", image, "cat", f"/img-man/{name}")
    assert completed.stdout == (project / "img-man" / name).read_text(encoding="utf-8")
    parsed = yaml.safe_load(completed.stdout)
    assert isinstance(parsed, dict), parsed
    if name == "manifest.yaml":
        assert parsed["object_type"] == 2


@container
@docker_group
def test_devkit_chain_in_container_passes(chain):
    returncode, output, _work = chain
    assert returncode == 0, output[-6000:]
    assert "chain PASSED" in output
    steps = parse_chain(output)
    assert list(steps)[:3] == ["registration", "training", "package"], output
    assert "object_type 2, tasks training, mining, infer" in steps["registration"]


@container
@docker_group
def test_training_in_container(chain, devkit):
    _returncode, output, work = chain
    training = work / "training"
    assert parse_chain(output)["training"].startswith("PASS"), output[-6000:]
    result_file = training / "out" / "models" / "result.yaml"
    result = yaml.safe_load(result_file.read_text())
    assert result["best_stage_name"] in result["model_stages"]
    # written by the container's arbitrary user, not by the host
    uid, gid = (int(part) for part in RUN_USER.split(":"))
    assert (result_file.stat().st_uid, result_file.stat().st_gid) == (uid, gid)
    # in/ names container paths, as the platform writes it
    env = yaml.safe_load((training / "in" / "env.yaml").read_text())
    assert env["input"]["root_dir"] == "/in" and env["manifest_file"] == "/img-man/manifest.yaml"
    assert (training / "out" / "tensorboard" / "executor.log").is_symlink()
    print(devkit("verify", "--work", str(training)).stdout)


@container
@docker_group
@pytest.mark.parametrize("step", MODEL_STEPS)
def test_packaged_model_in_container(chain, step):
    _returncode, output, _work = chain
    steps = parse_chain(output)
    assert step in steps, output[-6000:]
    assert steps[step].startswith("PASS"), output[-6000:]


# ------------------------------------------------------------------------------------------------
# the reference framework images, built as users build them

# The framework bakes: the default executor (MMDetection detection) and the defaults of the other
# two targets. Their images are built with the Dockerfile's defaults, BAKE_WEIGHTS=1 included;
# only build arguments differ from a user's build (the local base, the wheelhouse, and
# WEIGHTS_BASE_URL pointed at a mirror on 127.0.0.1, since download.openmmlab.com is not
# reachable from here).
FRAMEWORK_BAKES = {
    "detection": ("Container MMDet", "mmdetection"),
    "instance-segmentation": ("Container MMDet Ins", "mmdetection"),
    "semantic-segmentation": ("Container MMSeg", "mmsegmentation"),
}
# Run in a container of the framework image built without weights: a checkpoint with random
# weights, in the format OpenMMLab publishes, for every model whose weights the image bakes,
# written where the mirror serves it (the URL's path). OpenMMLab's checkpoints of 2019-2020
# predate PyTorch 1.6 and its zip format: those are written in the legacy format, as theirs are.
MAKE_CHECKPOINTS = """
import importlib, sys
from pathlib import Path
import torch
from mmengine.config import Config
package, framework, object_type, root = sys.argv[1:]
models = importlib.import_module(f"{package}.frameworks.{framework}.models")
weights = importlib.import_module(f"{package}.frameworks.openmmlab.weights")
bake_weights = importlib.import_module(f"{package}.frameworks.openmmlab.bake_weights")
scope = "mmdet" if framework == "mmdetection" else "mmseg"
specs = [s for s in models.MODELS.values() if getattr(s, "object_type", int(object_type))
         == int(object_type)]
for spec in specs:
    model = weights.build_cpu_model(scope, Config.fromfile(models.config_file(spec)).model)
    target = Path(root + bake_weights.mirrored_url(spec.weights_url, ""))
    target.parent.mkdir(parents=True, exist_ok=True)
    legacy = "_2019" in spec.weights_file or "_2020" in spec.weights_file
    meta = {"note": "random weights made by the template's container tests"}
    torch.save({"meta": meta, "state_dict": model.state_dict()}, str(target),
               _use_new_zipfile_serialization=not legacy)
    print(spec.name, target.stat().st_size, "legacy" if legacy else "zip")
"""


class WeightsMirror:
    """A mirror of download.openmmlab.com on 127.0.0.1 (the image build reaches it through
    ``--network host``), serving the files under ``root`` by their URL paths."""

    def __init__(self, root: Path):
        self.root = root
        handler = functools.partial(QuietHandler, directory=str(root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def weights_mirror(tmp_path_factory):
    mirror = WeightsMirror(tmp_path_factory.mktemp("weights-mirror"))
    try:
        yield mirror
    finally:
        mirror.close()


def build_log(completed) -> str:
    return completed.stdout + completed.stderr


def docker_build(engine: Engine, project: Path, base_image: str, tag: str, *build_arguments):
    """``docker build`` of the cpu Dockerfile with the tests' build arguments and more."""
    extra = [part for argument in build_arguments for part in ("--build-arg", argument)]
    return engine.docker(
        "build",
        *build_args(base_image),
        "--build-arg",
        "MMCV_INDEX_URL=",  # mmcv from the wheelhouse: OpenMMLab's index is not reachable
        *extra,
        "-f",
        "docker/cpu.Dockerfile",
        "-t",
        tag,
        ".",
        timeout=2400,
        cwd=project,
    )


@dataclass
class FrameworkImage:
    target: str
    project: Path
    package: str
    framework: str
    tag: str
    build_log: str
    checkpoints: str  # what MAKE_CHECKPOINTS printed: "<model> <bytes> <format>" per line
    checkpoints_root: Path  # where the mirror serves them from


@pytest.fixture(scope="module")
def framework_images(engine):
    """The framework images built so far on this worker (each target's is built once).

    The weights' BuildKit cache mount outlives builds: it is emptied first, so that files an
    earlier build left there (same names, other bytes) cannot stand in for the downloads. The
    targets' files differ, and the code-change test takes its target's from there afterwards.
    """
    engine.docker("builder", "prune", "--force", "--filter", "type=exec.cachemount")
    images: dict[str, FrameworkImage] = {}
    try:
        yield images
    finally:
        for built in images.values():
            engine.docker("image", "rm", "--force", built.tag, check=False)


@pytest.fixture
def framework_image(
    request, framework_images, engine, base_image, wheelhouse, weights_mirror, cookies_session
) -> FrameworkImage:
    """The target's default executor image as a user builds it (BAKE_WEIGHTS=1), its weights
    baked through the real download code from the local mirror."""
    target = request.param
    if target in framework_images:
        return framework_images[target]
    name, framework = FRAMEWORK_BAKES[target]
    project = bake(cookies_session, executor_name=name, target=target, cuda_variants="cpu")
    package = name.lower().replace(" ", "_")
    assert (project / "src" / package / "frameworks" / framework).is_dir()
    add_wheels(project, [*wheelhouse.glob("*.whl"), *mmcv_wheels()])
    suffix = uuid.uuid4().hex[:8]
    # 1. Without weights, to make the mirror's checkpoints with the image's own stack.
    probe = f"ymir-template-test/{package.replace('_', '-')}:probe-{suffix}"
    docker_build(engine, project, base_image, probe, "BAKE_WEIGHTS=0")
    object_type = str(OBJECT_TYPES[target])
    made = engine.docker(
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        f"{weights_mirror.root}:/mirror",
        probe,
        "python3",
        "-c",
        MAKE_CHECKPOINTS,
        package,
        framework,
        object_type,
        "/mirror",
        timeout=900,
    )
    engine.docker("image", "rm", "--force", probe, check=False)
    # 2. With the Dockerfile's defaults: BAKE_WEIGHTS=1 downloads from WEIGHTS_BASE_URL.
    tag = f"ymir-template-test/{package.replace('_', '-')}:cpu-{suffix}"
    completed = docker_build(
        engine, project, base_image, tag, f"WEIGHTS_BASE_URL={weights_mirror.url}"
    )
    image = FrameworkImage(
        target,
        project,
        package,
        framework,
        tag,
        build_log(completed),
        made.stdout,
        weights_mirror.root,
    )
    framework_images[target] = image
    return image


def framework_params():
    return pytest.mark.parametrize("framework_image", list(FRAMEWORK_BAKES), indirect=True)


def baked_models(image: FrameworkImage) -> dict[str, str]:
    """Model name -> weights file name, for the models the image baked (from its build log)."""
    return dict(re.findall(r"(\w+): /weights/(\S+\.pth) \(", image.build_log))


@container
@docker_group
@framework_params()
def test_framework_image_bakes_every_models_weights_from_the_mirror(framework_image, engine):
    made = {line.split()[0] for line in framework_image.checkpoints.splitlines() if line}
    assert made, framework_image.checkpoints
    log = framework_image.build_log
    assert set(baked_models(framework_image)) == made, log[-6000:]
    assert log.count(f"from {WEIGHTS_MIRROR_PREFIX}") >= len(made), log[-6000:]
    # Random weights do not match the SHA-256 prefix in OpenMMLab's names: reported, not fatal.
    assert log.count("its name says") == len(made), log[-6000:]
    assert "permissions: every run-time path is usable by any user" in log
    # What the arbitrary user YMIR runs the image as finds at run time.
    listing = engine.docker(
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        RUN_USER,
        framework_image.tag,
        "bash",
        "-c",
        RUN_TIME_PERMISSIONS,
    ).stdout
    files = set(baked_models(framework_image).values())
    assert listing.split() == ["readable:", *sorted(files)], listing


# What a non-root user must be able to do in a framework image at run time: read every baked
# weight, the code and the packages; write into HOME's caches. Prints the readable weights.
RUN_TIME_PERMISSIONS = r"""
set -e
site="$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
unreadable="$(find /weights /app /img-man "$site" ! -readable 2>&1 | head -n 5)"
unwritable="$(find "$HOME" -type d ! -writable 2>&1 | head -n 5)"
[ -z "$unreadable" ] || { echo "unreadable: $unreadable"; exit 1; }
[ -z "$unwritable" ] || { echo "unwritable: $unwritable"; exit 1; }
echo readable: $(cd /weights && ls | sort)
"""
WEIGHTS_MIRROR_PREFIX = "http://127.0.0.1:"


@container
@docker_group
@framework_params()
def test_framework_image_trains_from_baked_weights_infers_and_mines(
    framework_image, engine, devkit, work_base
):
    """The whole devkit chain in the container as YMIR runs it (an arbitrary uid, /in
    read-only, no network): training must start from the weights baked into the image."""
    kit = Devkit(devkit.python, framework_image.project, engine, framework_image.package)
    work = work_base / f"chain-{framework_image.package}"
    completed = kit(
        "chain",
        "--work",
        str(work),
        "--image",
        framework_image.tag,
        *kit.container_options(),
        *QUICK_PARAMS,
        "--timeout",
        "900",
        check=False,
        timeout=2400,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-6000:]
    steps = parse_chain(output)
    for step in ("registration", "training", "package", *MODEL_STEPS):
        assert steps.get(step, "").startswith("PASS"), output[-6000:]
    training_log = (work / "training" / "out" / "ymir-executor-out.log").read_text()
    template = framework_image.project / "img-man" / "training-template.yaml"
    model = yaml.safe_load(template.read_text(encoding="utf-8"))["model"]
    baked = f"weights baked into the image (/weights/{baked_models(framework_image)[model]})"
    assert baked in training_log, training_log[-4000:]
    assert "from scratch" not in training_log


@container
@docker_group
@pytest.mark.parametrize("framework_image", ["detection"], indirect=True)
def test_a_code_change_takes_the_weights_from_the_build_cache(framework_image, engine, base_image):
    """After a code change the weights stage runs again (its source mount changed): it must
    take the files from the BuildKit cache (the mirror's address is now a closed port), and
    the image's every layer before the code's must come from the layer cache, the weights'
    included (the same files)."""
    source = framework_image.project / "src" / framework_image.package / "tasks" / "infer.py"
    source.write_text(source.read_text() + f"\n# changed by test_containers {uuid.uuid4().hex}\n")
    tag = f"{framework_image.tag}-rebuilt"
    completed = docker_build(
        engine,
        framework_image.project,
        base_image,
        tag,
        "WEIGHTS_BASE_URL=http://127.0.0.1:9",  # the discard port: nothing answers there
    )
    try:
        log = build_log(completed)
        assert log.count("from the build cache") == len(baked_models(framework_image)), log
        assert "downloading" not in log
        assert_only_code_layers_rebuilt(log)
    finally:
        engine.docker("image", "rm", "--force", tag, check=False)


@container
@docker_group
@pytest.mark.parametrize("framework_image", ["detection"], indirect=True)
def test_bake_arguments_choose_what_is_baked(framework_image, engine, base_image, tmp_path):
    """BAKE_MODELS bakes only the models named; a checkpoint in the build context's weights/
    folder is taken instead of a download (WEIGHTS_BASE_URL points at a closed port here, and
    the file is made private, as a copy from a private folder would be); BAKE_WEIGHTS=0 bakes
    nothing. Only build arguments and the weights/ folder differ from the image above."""
    project = framework_image.project
    template = project / "img-man" / "training-template.yaml"
    model = yaml.safe_load(template.read_text(encoding="utf-8"))["model"]
    file_name = baked_models(framework_image)[model]
    mirrored = next(weights_mirror_files(framework_image, file_name))
    context = project / "weights"
    context.mkdir()
    shutil.copyfile(mirrored, context / file_name)
    (context / file_name).chmod(0o600)
    tag = f"{framework_image.tag}-one-model"
    try:
        log = build_log(
            docker_build(
                engine,
                project,
                base_image,
                tag,
                f"BAKE_MODELS={model}",
                "WEIGHTS_BASE_URL=http://127.0.0.1:9",
            )
        )
        assert f"{model}: /weights/{file_name} (" in log, log[-4000:]
        assert "from the build context's weights/ folder" in log
        assert "downloading" not in log
        assert run_listing(engine, tag, "ls -l /weights") == [f"-rw-r--r-- {file_name}"]
    finally:
        shutil.rmtree(context)
        engine.docker("image", "rm", "--force", tag, check=False)
    tag = f"{framework_image.tag}-no-weights"
    try:
        docker_build(engine, project, base_image, tag, "BAKE_WEIGHTS=0")
        assert run_listing(engine, tag, "ls -l /weights") == []
    finally:
        engine.docker("image", "rm", "--force", tag, check=False)


def weights_mirror_files(image: FrameworkImage, file_name: str):
    """The mirror's copies of ``file_name`` (the checkpoints the image's build downloaded)."""
    return Path(image.checkpoints_root).rglob(file_name)


def run_listing(engine: Engine, image: str, command: str) -> list[str]:
    """``ls -l`` in a container of ``image`` as the arbitrary uid: "<mode> <name>" per file."""
    listed = engine.docker(
        "run", "--rm", "--network", "none", "--user", RUN_USER, image, "bash", "-c", command
    ).stdout
    return [
        f"{parts[0]} {parts[-1]}"
        for parts in (line.split() for line in listed.splitlines())
        if parts and parts[0] != "total"
    ]


@container
@docker_group
@pytest.mark.parametrize("framework_image", ["detection"], indirect=True)
def test_the_build_refuses_files_other_users_cannot_use(framework_image, engine):
    """docker/check-permissions.sh, the build's last step, fails on each kind of finding: a
    private weights file, a cache directory only root may write, a file left in HOME."""
    script = framework_image.project / "docker" / "check-permissions.sh"
    weights_file = next(iter(baked_models(framework_image).values()))
    completed = engine.docker(
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        f"{script}:/tmp/check-permissions.sh:ro",
        framework_image.tag,
        "bash",
        "-c",
        f"chmod 600 /weights/{weights_file} && mkdir -m 755 $HOME/.cache/private "
        "&& touch $HOME/.config/left-behind && bash /tmp/check-permissions.sh /weights",
        check=False,
    )
    assert completed.returncode == 1, completed.stdout + completed.stderr
    report = completed.stderr
    assert f"-rw------- root /weights/{weights_file}" in report, report
    assert "/home/ymir/.cache/private" in report and "/home/ymir/.config/left-behind" in report
    assert "arbitrary, non-root user" in report


def assert_only_code_layers_rebuilt(log: str) -> None:
    """What "a code change rebuilds only the last layers" means, read off a rebuild's log:
    every step of the final stage before ``COPY src/`` came from the layer cache, the rest ran."""
    steps = [(step, cached) for step, cached in build_steps(log) if not step.startswith("FROM ")]
    code = next(i for i, (step, _) in enumerate(steps) if step.startswith("COPY src/ /app/src/"))
    rebuilt = [step for step, cached in steps[:code] if not cached]
    assert code >= 5 and not rebuilt, f"rebuilt before the code: {rebuilt}"
    assert not any(cached for _, cached in steps[code:]), steps[code:]


def build_steps(log: str) -> list[tuple[str, bool]]:
    """The final stage's steps of a BuildKit ``--progress plain`` log, in order, each with
    whether it came from the layer cache."""
    titles, cached = {}, set()
    for line in log.splitlines():
        match = re.match(r"^#(\d+) \[stage-\d+\s+(\d+)/\d+\] (.*)$", line)
        if match:
            titles[match.group(1)] = (int(match.group(2)), match.group(3))
        match = re.match(r"^#(\d+) CACHED$", line)
        if match:
            cached.add(match.group(1))
    ordered = sorted(titles.items(), key=lambda item: item[1][0])
    return [(title, number in cached) for number, (_, title) in ordered]


@container
@docker_group
def test_cli_run_with_image(devkit, image, chain, work_base):
    """``devkit run --image`` on its own: mining+infer with the chain's training as the model."""
    _returncode, _output, chain_work = chain
    work = work_base / "cli-mining-infer"
    devkit(
        "synth",
        "--work",
        str(work),
        "--task",
        "mining+infer",
        "--model",
        str(chain_work / "training"),
    )
    completed = devkit("run", "--work", str(work), "--image", image, *devkit.container_options())
    assert "executor finished: exit code 0" in completed.stdout, completed.stdout
    ran = completed.stdout.split("ran: ", 1)[1].splitlines()[0].split()
    assert ran[1:5] == ["run", "--rm", "--network", "none"] and ran[-1] == image
    assert f"{work}/in:/in:ro" in ran and f"{work}/out:/out" in ran
    assert ran[ran.index("--user") + 1] == RUN_USER
    assert ran[ran.index("--shm-size") + 1] == SHM_SIZE
    print(devkit("verify", "--work", str(work)).stdout)


@container
@docker_group
def test_a_private_checkout_builds_an_image_any_user_can_run(
    engine, base_image, cookies_session, wheelhouse
):
    """A checkout made under a strict umask (077: files 0600, folders 0700, as on hardened
    servers) must still give an image the arbitrary uid can run: ``COPY`` keeps the
    context's modes, so the build makes what it copied readable itself."""
    project = bake(
        cookies_session, executor_name="Private Checkout", framework="none", cuda_variants="cpu"
    )
    add_wheels(project, wheelhouse.glob("*.whl"))
    for path in [project, *project.rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)
    tag = f"ymir-template-test/private-checkout:cpu-{uuid.uuid4().hex[:8]}"
    try:
        build(engine, project, base_image, tag)
        completed = engine.docker(
            "run",
            "--rm",
            "--network",
            "none",
            "--user",
            RUN_USER,
            tag,
            "bash",
            "-c",
            "cat /img-man/manifest.yaml /img-man/training-template.yaml > /dev/null "
            "&& test -r /usr/bin/start.sh && python3 -c 'import private_checkout.tasks.training' "
            "&& echo usable",
            check=False,
        )
        assert completed.stdout.strip() == "usable", completed.stdout + completed.stderr
    finally:
        engine.docker("image", "rm", "--force", tag, check=False)


@container
@docker_group
def test_make_container_check(devkit, image, base_image, project, work_base):
    """The generated Makefile's container-check: build VARIANT, registration, chain --image (what
    the generated images workflow runs too). The build hits the cache of the image fixture's."""
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    command = [
        "make",
        "container-check",
        "VARIANT=cpu",
        f"DOCKER={devkit.engine.cli}",
        f"PYTHON={devkit.python}",
        f"WORK={work_base / 'make'}",
        "DOCKER_BUILD_ARGS=" + " ".join(build_args(base_image)),
    ]
    tag = None
    try:
        completed = run(command, cwd=project, timeout=1800, env=devkit.env)
        tag = re.search(r" -t (\S+)", completed.stdout).group(1)
    finally:
        listed = devkit.engine.docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}")
        for name in listed.stdout.split():
            if name.startswith("myorg/ymir-executor:") and "container-exec-cpu" in name:
                devkit.engine.docker("image", "rm", name, check=False)
    output = completed.stdout
    assert output.count("registration: /img-man/") == len(REGISTRATION_FILES), output
    assert "chain PASSED" in output, output[-6000:]
    assert tag and tag.endswith("-container-exec-cpu-tmi"), output[:2000]


def _result_problems(work: Path) -> list[str]:
    """What is half-written in ``<work>/out``: result.yaml must be absent or complete."""
    out = work / "out"
    problems = [
        f"{name} exists after a killed training"
        for name in ("infer-result.json", "result.tsv")
        if (out / name).exists()
    ]
    result_file = out / "models" / "result.yaml"
    if not result_file.exists():
        return problems
    try:
        result = yaml.safe_load(result_file.read_text())
    except yaml.YAMLError as error:
        return [*problems, f"result.yaml does not parse: {error}"]
    if not isinstance(result, dict) or not isinstance(result.get("model_stages"), dict):
        return [*problems, f"result.yaml is incomplete: {result!r}"]
    for stage, content in result["model_stages"].items():
        for name in content.get("files") or []:
            candidates = [out / "models" / stage / name, out / "models" / name]
            if not any(path.is_file() and path.stat().st_size > 0 for path in candidates):
                problems.append(f"result.yaml names {stage}/{name}, which is missing or empty")
    return problems


# Runs the devkit's container mode, cancelling (docker kill) once monitor.txt reaches a point.
CANCEL_RUN = """
import json, sys
from container_exec.devkit.run import run
work, image, docker, user, shm_size, cancel_at = sys.argv[1:]
cancel = cancel_at if cancel_at == "start" else float(cancel_at)
result = run(work, image=image, docker=docker, user=user, shm_size=shm_size, timeout=300,
             cancel_at=cancel)
seen = [r.split("\\t")[2:4] for r in result.monitor_records]
print(json.dumps(dict(returncode=result.returncode, cancelled=result.cancelled,
                      timed_out=result.timed_out, seconds=round(result.duration, 2),
                      monitor=seen[-2:])))
"""


@container
@docker_group
def test_docker_kill_during_training_leaves_no_half_written_result(devkit, image, work_base):
    """Kill the container at several points of a training (a user cancelling the task)."""
    work = work_base / "cancel"
    devkit(
        "synth",
        "--work",
        str(work),
        "--task",
        "training",
        # the stub trains in about a second: big enough for kills to land while it runs
        "--num-train",
        "1600",
        "--num-val",
        "400",
    )
    # "start": as soon as the container exists; a number: once monitor.txt reports that progress.
    thresholds = ("start", "0.0", "0.25", "0.5", "0.75", "0.9")
    outcomes = []
    for threshold in thresholds:
        # every platform task starts with an empty out/
        shutil.rmtree(work / "out")
        (work / "out").mkdir()
        outcome = devkit.python_api(
            CANCEL_RUN, str(work), image, devkit.engine.cli, RUN_USER, SHM_SIZE, threshold
        )
        outcome["cancel_at"] = threshold
        outcome["result_yaml"] = (work / "out" / "models" / "result.yaml").exists()
        outcome["problems"] = _result_problems(work)
        outcomes.append(outcome)
    print("\n".join(json.dumps(outcome) for outcome in outcomes))
    assert all(not outcome["problems"] for outcome in outcomes), outcomes
    assert not any(outcome["timed_out"] for outcome in outcomes), outcomes
    # At least one kill must have hit a running executor (not one that had already finished).
    assert any(o["cancelled"] and o["returncode"] != 0 for o in outcomes), outcomes


# ------------------------------------------------------------------------------------------------
# static checks of the Dockerfiles (no engine)

# The application part of every Dockerfile starts with the dependency layer.
APPLICATION_START = "COPY pyproject.toml /tmp/skeleton/"
# LABEL keys whose values name the variant (everything else in the labels is the same).
VARIANT_LABELS = ("org.opencontainers.image.base.name", "ymir.executor.variant")
# ENV keys that describe the line to the executor (its preflight names them).
VARIANT_ENV = ("YMIR_IMAGE_VARIANT", "YMIR_DRIVER_MIN", "YMIR_MMCV_WHEEL")


def instructions(dockerfile: Path) -> list[str]:
    """The Dockerfile's instructions, one string each: continuations joined, comments dropped,
    whitespace normalised."""
    result, current = [], ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped too
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        result.append(" ".join((current + line).split()))
        current = ""
    assert not current, f"{dockerfile} ends inside a continued instruction"
    return result


def stages(lines: list[str]) -> list[list[str]]:
    """The instructions split at FROM (the leading ARGs form a stage of their own)."""
    result: list[list[str]] = [[]]
    for line in lines:
        if line.startswith("FROM "):
            result.append([])
        result[-1].append(line)
    return result


def named_stage(all_stages: list[list[str]], name: str) -> list[str]:
    for stage in all_stages:
        if stage and re.fullmatch(rf"FROM \S+ AS {re.escape(name)}", stage[0], re.IGNORECASE):
            return stage
    raise AssertionError(f"no stage named {name}")


def normalise_labels(line: str) -> str:
    if line.startswith("ENV "):
        for key in VARIANT_ENV:
            line = re.sub(rf"\b{key}=(\"[^\"]*\"|\S+)", f'{key}="<variant>"', line)
    if not line.startswith("LABEL "):
        return line
    for key in VARIANT_LABELS:
        line = re.sub(rf'{re.escape(key)}="[^"]*"', f'{key}="<variant>"', line)
    return line


def application_layers(dockerfile: Path) -> list[str]:
    final = stages(instructions(dockerfile))[-1]
    assert APPLICATION_START in final, f"{dockerfile}: no {APPLICATION_START!r} in the last stage"
    return [normalise_labels(line) for line in final[final.index(APPLICATION_START) :]]


def bake_every_line(cookies, target: str, framework: str) -> Path:
    """A bake with every matrix line, or a skip while the framework is not in the template."""
    result = cookies.bake(
        extra_context={
            "executor_name": f"Layers {target} {framework}",
            "target": target,
            "framework": framework,
            "cuda_variants": ",".join(MATRIX),
        }
    )
    if result.exception is not None:
        message = str(result.exception)
        if "not available yet" in message or "does not do" in message:
            pytest.skip(message.splitlines()[-1][:200])
        raise AssertionError(message)
    return Path(result.project_path)


@pytest.mark.parametrize("framework", ["none", "auto"])
@pytest.mark.parametrize("target", TARGETS)
def test_gpu_images_have_the_cpu_images_application_layers(cookies, target, framework):
    """A GPU line differs from the cpu image in its base (and how torch gets there), never in
    what the executor adds: the cpu image the tests build stands for every line."""
    project = bake_every_line(cookies, target, framework)
    cpu = project / "docker" / "cpu.Dockerfile"
    expected = application_layers(cpu)
    cpu_stages = stages(instructions(cpu))
    for variant, line in MATRIX.items():
        dockerfile = project / "docker" / f"{variant}.Dockerfile"
        assert application_layers(dockerfile) == expected, variant
        variant_stages = stages(instructions(dockerfile))
        final = variant_stages[-1]
        assert final[0] == "FROM ${BASE_IMAGE}", (variant, final[0])
        assert variant_stages[0][0] == f"ARG BASE_IMAGE={line['base_image']}", variant
        # the same runtime environment: empty entrypoint, ENV (HOME, caches, ...), command
        for keyword in ("ENTRYPOINT", "ENV", "CMD", "WORKDIR"):
            assert [normalise_labels(i) for i in final if i.startswith(keyword + " ")] == [
                normalise_labels(i) for i in cpu_stages[-1] if i.startswith(keyword + " ")
            ], (variant, keyword)
        # the wheelhouse stage is shared, and so is every stage the application layers copy
        # from (e.g. baked weights); build stages for the base part (e.g. compiling in a -devel
        # image) are the line's own
        assert variant_stages[1] == cpu_stages[1], variant
        for source in re.findall(r"--from=(\S+)", " ".join(expected)):
            assert named_stage(variant_stages, source) == named_stage(cpu_stages, source), (
                variant,
                source,
            )


@pytest.mark.parametrize("framework", ["none", "auto"])
def test_dockerfiles_keep_images_small(cookies, framework):
    """What keeps the runtime images small, statically: the sizes are reported by the
    container tier (image_size_mb, added_to_base_mb in container-metrics.json)."""
    project = bake_every_line(cookies, "detection", framework)
    for variant, line in MATRIX.items():
        dockerfile = project / "docker" / f"{variant}.Dockerfile"
        lines = instructions(dockerfile)
        final = stages(lines)[-1]
        for instruction in lines:
            if re.search(r"\bpip install\b", instruction):
                assert "--no-cache-dir" in instruction, (variant, instruction)
            if "apt-get install" in instruction:
                assert "--no-install-recommends" in instruction, (variant, instruction)
                assert "rm -rf /var/lib/apt/lists" in instruction, (variant, instruction)
            assert not instruction.startswith("ADD "), (variant, instruction)
        # wheels reach pip through a bind mount, never through a layer of the image
        for instruction in final:
            if instruction.startswith("COPY "):
                sources = [arg for arg in instruction.split()[1:-1] if not arg.startswith("--")]
                assert not any("wheel" in source for source in sources), (variant, instruction)
        # GPU lines run on the -runtime base (a -devel image may only serve a build stage)
        if line["cuda"]:
            assert "-runtime" in line["base_image"], variant
