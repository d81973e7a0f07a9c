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

Static checks that need no engine: every GPU Dockerfile of a bake with every matrix line has the
same application layers as the cpu one, and the Dockerfiles keep images small (no caches, no
wheels, runtime bases).

The build time, the rebuild time after a one-file code change (and their ratio), the image size
and what the executor adds to its base are printed and written to ``container-metrics.json`` in
pytest's base temp dir; nothing is asserted about them.

Set ``YMIR_DOCKER_KEEP=1`` to leave the engine running after the tests (faster iterations), and
see the scripts for the other ``YMIR_*`` variables.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import tomllib
import uuid
import venv
from pathlib import Path

import pytest
import yaml
from conftest import MATRIX, TARGETS, TEMPLATE, bake, run

# Only the tests that use the engine are container tests (root, minutes); the static Dockerfile
# checks run everywhere.
container = pytest.mark.container
docker_group = pytest.mark.xdist_group("docker")

SCRIPTS = TEMPLATE / "scripts"
BASE_IMAGE = os.environ.get("YMIR_BASE_IMAGE", "ymir-test-base:bookworm-py311")
TORCH_VERSION = "2.13.0"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
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
# The default executor: detection with the reference MMDetection implementation. Its cpu image
# takes mmcv from the wheelhouse too (OpenMMLab's wheel index is not reachable from here): the
# shared prebuilt wheel when there is one, else the one scripts/install-cpu-stack.sh compiles.
FRAMEWORK_PACKAGE = "container_mmdet"
MMCV_WHEELHOUSE = Path(
    os.environ.get("MMCV_WHEELHOUSE", str(TEMPLATE.parent / "shared" / "wheelhouse"))
)
# Training settings that keep the chain in the container to minutes on a CPU.
QUICK_PARAMS = [
    "--param=epochs=1",
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


def bridges() -> set[str]:
    """Names of the bridge interfaces of this machine (the engine must never add one)."""
    if not shutil.which("ip"):
        return set()
    completed = subprocess.run(
        ["ip", "-o", "link", "show", "type", "bridge"], capture_output=True, text=True
    )
    return {line.split(":")[1].strip() for line in completed.stdout.splitlines() if ":" in line}


def docker_cli() -> str:
    """Debian's docker client (20.10 builds with BuildKit without the buildx plugin newer clients
    need for it); YMIR_DOCKER_CLI overrides, like for scripts/docker-engine.sh."""
    if os.environ.get("YMIR_DOCKER_CLI"):
        return os.environ["YMIR_DOCKER_CLI"]
    if Path("/usr/bin/docker").exists():
        return "/usr/bin/docker"
    return shutil.which("docker") or "docker"


class Engine:
    """The private engine: the environment for the docker client, and the client itself."""

    def __init__(self, docker_host: str):
        self.cli = docker_cli()
        self.env = {**os.environ, "DOCKER_HOST": docker_host, "DOCKER_BUILDKIT": "1"}

    def docker(self, *args: str, timeout: int = 600, check: bool = True, **kwargs):
        command = [self.cli, *args]
        if check:
            return run(command, timeout=timeout, env=self.env, **kwargs)
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=self.env, **kwargs
        )


@pytest.fixture(scope="module")
def engine():
    """Install and start the private engine; stop it (by PID) when the module is done."""
    if os.geteuid() != 0:
        pytest.skip("the container tier runs dockerd and debootstrap: run it as root")
    bridges_before = bridges()
    script = str(SCRIPTS / "docker-engine.sh")
    run([script, "install"], timeout=900)
    started = run([script, "start"], timeout=180)
    match = re.search(r"^export DOCKER_HOST=(\S+)$", started.stdout, re.MULTILINE)
    assert match, started.stdout
    try:
        yield Engine(match.group(1))
    finally:
        if os.environ.get("YMIR_DOCKER_KEEP") != "1":
            run([script, "stop"], timeout=180)
        new = bridges() - bridges_before
        assert not new, f"the engine created bridge interfaces {sorted(new)}"


@pytest.fixture(scope="module")
def base_image(engine):
    completed = run([str(SCRIPTS / "base-image.sh"), BASE_IMAGE], timeout=900, env=engine.env)
    return completed.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wheelhouse")
    run([str(SCRIPTS / "wheelhouse.sh"), str(folder), f"torch=={TORCH_VERSION}"], timeout=900)
    wheels = sorted(folder.glob("torch-*.whl"))
    assert wheels, f"no torch wheel in {folder}"
    return folder


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


def add_wheels(project: Path, wheels) -> None:
    """Put ``wheels`` into the build context's ./wheels folder (the Dockerfiles' wheelhouse)."""
    folder = project / "wheels"
    folder.mkdir(exist_ok=True)
    for wheel in wheels:
        try:
            os.link(wheel, folder / wheel.name)
        except OSError:
            shutil.copy2(wheel, folder / wheel.name)


@pytest.fixture(scope="module")
def framework_project(cookies_session, wheelhouse):
    """The executor the defaults generate (MMDetection detection), cpu image only."""
    path = bake(cookies_session, executor_name="Container MMDet", cuda_variants="cpu")
    assert (path / "src" / FRAMEWORK_PACKAGE / "frameworks" / "mmdetection").is_dir()
    mmcv = sorted(MMCV_WHEELHOUSE.glob("mmcv-2.1.0-*.whl")) if MMCV_WHEELHOUSE.is_dir() else []
    if not mmcv:
        pytest.skip(f"no mmcv 2.1.0 wheel for torch {TORCH_VERSION} in {MMCV_WHEELHOUSE}")
    add_wheels(path, [*wheelhouse.glob("*.whl"), *mmcv])
    return path


def build_args(base_image: str) -> list[str]:
    """The only thing the tests change about a build: its options and build arguments."""
    return [
        "--network",
        "host",
        "--progress",
        "plain",
        "--secret",
        f"id=pip_ca,src={CA_BUNDLE}",
        "--build-arg",
        f"BASE_IMAGE={base_image}",
        "--build-arg",
        f"TORCH_VERSION={TORCH_VERSION}",
        # the CPU wheel comes from the wheelhouse; its dependencies from the default index
        "--build-arg",
        "TORCH_INDEX_URL=",
        "--build-arg",
        "PIP_FIND_LINKS=/wheels",
    ]


def build(
    engine: Engine, project: Path, base_image: str, tag: str, no_cache: bool = False
) -> float:
    """``docker build`` of docker/cpu.Dockerfile as it was generated; returns the seconds taken."""
    args = ["build", *build_args(base_image), "-f", "docker/cpu.Dockerfile", "-t", tag]
    if no_cache:
        args.append("--no-cache")
    started = time.monotonic()
    engine.docker(*args, ".", timeout=1800, cwd=project)
    return time.monotonic() - started


def inspect(engine: Engine, image: str, field: str) -> str:
    return engine.docker("image", "inspect", "--format", "{{" + field + "}}", image).stdout.strip()


@pytest.fixture(scope="module")
def image(engine, base_image, project, tmp_path_factory):
    """The built image: a full build, then a rebuild after a one-line code change (timed)."""
    tag = f"ymir-template-test/container-exec:cpu-{uuid.uuid4().hex[:8]}"
    full = build(engine, project, base_image, tag, no_cache=True)
    first_id = inspect(engine, tag, ".Id")
    # BuildKit keys its cache on file contents, so the change must be a real one.
    source = project / "src" / PACKAGE / "tasks" / "infer.py"
    source.write_text(source.read_text() + f"\n# changed by test_containers {uuid.uuid4().hex}\n")
    rebuild = build(engine, project, base_image, tag)
    size = int(inspect(engine, tag, ".Size"))
    base_size = int(inspect(engine, base_image, ".Size"))
    if inspect(engine, tag, ".Id") != first_id:
        engine.docker("image", "rm", first_id, check=False)  # the untagged first build
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
    }
    base = tmp_path_factory.getbasetemp()
    if re.fullmatch(r"popen-gw\d+", base.name):  # an xdist worker's: report next to them
        base = base.parent
    report = base / "container-metrics.json"
    report.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"\ncontainer metrics ({report}):\n{json.dumps(metrics, indent=2)}")
    try:
        yield tag
    finally:
        engine.docker("image", "rm", "--force", tag, check=False)


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


@container
@docker_group
def test_default_executor_image_trains_infers_and_mines(
    engine, base_image, framework_project, devkit, work_base
):
    """The image of the default bake, built as generated (mmcv from the wheelhouse, no baked
    weights: nothing is downloaded), goes through the whole devkit chain in the container."""
    tag = f"ymir-template-test/container-mmdet:cpu-{uuid.uuid4().hex[:8]}"
    engine.docker(
        "build",
        *build_args(base_image),
        "--build-arg",
        "MMCV_INDEX_URL=",
        "--build-arg",
        "BAKE_WEIGHTS=0",
        "-f",
        "docker/cpu.Dockerfile",
        "-t",
        tag,
        ".",
        timeout=2400,
        cwd=framework_project,
    )
    try:
        mmdet_devkit = Devkit(devkit.python, framework_project, engine, FRAMEWORK_PACKAGE)
        completed = mmdet_devkit(
            "chain",
            "--work",
            str(work_base / "mmdet-chain"),
            "--image",
            tag,
            *mmdet_devkit.container_options(),
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
    finally:
        engine.docker("image", "rm", "--force", tag, check=False)


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
