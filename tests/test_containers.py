"""Container tier: build a generated executor's cpu image with a real Docker engine and run it the
way YMIR does.

A private engine (``scripts/docker-engine.sh``: no bridge, no iptables, its own data root) builds
the generated ``docker/cpu.Dockerfile`` unmodified, with build arguments only: a local debootstrap
base image (``scripts/base-image.sh``; Docker Hub is not reachable), the CPU torch wheel from a
local wheelhouse (``scripts/wheelhouse.sh``) and the host CA bundle as a BuildKit secret. Builds
use ``--network host``; every container runs with ``--network none``.

Then the image goes through what the platform does with it: registration (``docker run --rm IMAGE
cat /img-man/...`` must print nothing but the YAML), training, and mining / infer / mining+infer
with the packaged model, each run like ``mir`` runs it (``/in`` read-only, ``/out`` writable, the
asset cache bind-mounted at its real path, an arbitrary ``--user`` without a passwd entry,
``--shm-size``, no command) and checked by the generated devkit's verifier. ``docker kill`` during
training must leave no half-written result behind.

The devkit (synth, packaging, verify) runs inside the built image too: the image has the package
and its dependencies, so the host needs nothing but Python and root for the engine. Work dirs are
mounted at their own path for it; for the executor they are mounted at ``/in`` and ``/out`` and
their files name container paths, as the platform writes them.

The build time, the rebuild time after a one-file code change (and their ratio) and the image
size are printed and written to ``container-metrics.json`` in pytest's base temp dir; nothing is
asserted about them.

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
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import TEMPLATE, bake, run

pytestmark = [pytest.mark.container, pytest.mark.xdist_group("docker")]

SCRIPTS = TEMPLATE / "scripts"
BASE_IMAGE = os.environ.get("YMIR_BASE_IMAGE", "ymir-test-base:bookworm-py311")
TORCH_VERSION = "2.13.0"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# An arbitrary uid:gid without a passwd entry, as the platform's backend user may be.
RUN_USER = "12345:12345"
SHM_SIZE = "256m"
REGISTRATION_FILES = (
    "manifest.yaml",
    "training-template.yaml",
    "mining-template.yaml",
    "infer-template.yaml",
)
PACKAGE = "container_exec"


def bridges() -> set[str]:
    """Names of the bridge interfaces of this machine (the engine must never add one)."""
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
    if os.geteuid() != 0 and subprocess.run(["sudo", "-n", "true"]).returncode != 0:
        pytest.skip("the container tier runs dockerd: it needs root or passwordless sudo")
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
    wheels = path / "wheels"
    wheels.mkdir()
    for wheel in wheelhouse.glob("*.whl"):
        try:
            os.link(wheel, wheels / wheel.name)
        except OSError:
            shutil.copy2(wheel, wheels / wheel.name)
    return path


def build(
    engine: Engine, project: Path, base_image: str, tag: str, no_cache: bool = False
) -> float:
    """``docker build`` of docker/cpu.Dockerfile as it was generated; returns the seconds taken."""
    args = [
        "build",
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
        "-f",
        "docker/cpu.Dockerfile",
        "-t",
        tag,
    ]
    if no_cache:
        args.append("--no-cache")
    started = time.monotonic()
    engine.docker(*args, ".", timeout=1800, cwd=project)
    return time.monotonic() - started


def image_id(engine: Engine, tag: str) -> str:
    return engine.docker("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()


@pytest.fixture(scope="module")
def image(engine, base_image, project, tmp_path_factory):
    """The built image: a full build, then a rebuild after a one-line code change (timed)."""
    tag = f"ymir-template-test/container-exec:cpu-{uuid.uuid4().hex[:8]}"
    full = build(engine, project, base_image, tag, no_cache=True)
    first_id = image_id(engine, tag)
    # BuildKit keys its cache on file contents, so the change must be a real one.
    source = project / "src" / PACKAGE / "tasks" / "infer.py"
    source.write_text(source.read_text() + "\n# changed by test_containers\n")
    rebuild = build(engine, project, base_image, tag)
    size = int(engine.docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())
    if image_id(engine, tag) != first_id:
        engine.docker("image", "rm", first_id, check=False)  # the untagged first build
    metrics = {
        "image": tag,
        "base_image": base_image,
        "image_size_bytes": size,
        "image_size_mb": round(size / 1e6, 1),
        "full_build_s": round(full, 1),
        "rebuild_after_code_change_s": round(rebuild, 1),
        "rebuild_ratio": round(rebuild / full, 3),
    }
    report = tmp_path_factory.getbasetemp() / "container-metrics.json"
    report.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"\ncontainer metrics ({report}):\n{json.dumps(metrics, indent=2)}")
    try:
        yield tag
    finally:
        engine.docker("image", "rm", "--force", tag, check=False)


# ------------------------------------------------------------------------------------------------
# running like the platform


@pytest.fixture(scope="module")
def work_base(tmp_path_factory):
    return tmp_path_factory.mktemp("work")


def devkit(engine: Engine, image: str, base: Path, *args: str):
    """``python -m <package>.devkit ARGS`` inside the image, ``base`` mounted at its own path."""
    return engine.docker(
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        f"{os.getuid()}:{os.getgid()}",
        "-v",
        f"{base}:{base}",
        "-w",
        str(base),
        image,
        "python3",
        "-m",
        f"{PACKAGE}.devkit",
        *args,
        timeout=300,
    )


def to_container_paths(work: Path) -> None:
    """Make ``<work>/in`` name ``/in``, ``/out`` and ``/img-man`` as the platform writes them.

    synth writes host paths (``<work>/in/...``) into env.yaml, config.yaml (model paths) and the
    index files, for runs without a container; the image sees the work dir at /in and /out.
    """
    pattern = re.compile(re.escape(str(work)) + r"/(in|out|img-man)(?=[/\s'\"]|$)", re.MULTILINE)
    for path in (work / "in").iterdir():
        if path.is_symlink() or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        changed = pattern.sub(lambda match: "/" + match.group(1), text)
        if changed != text:
            path.write_text(changed, encoding="utf-8")
    assert str(work) not in (work / "in" / "env.yaml").read_text(encoding="utf-8")


def prepare_out(work: Path) -> Path:
    """An empty ``<work>/out`` as mir leaves it: tensorboard dir, log file, ``chmod -R 777``."""
    out = work / "out"
    if out.exists():
        shutil.rmtree(out)
    (out / "tensorboard").mkdir(parents=True)
    log = out / "ymir-executor-out.log"
    log.touch()
    for path in [out, *out.rglob("*")]:
        path.chmod(0o777)
    return log


def platform_run_args(work: Path, image: str, name: str | None = None) -> list[str]:
    """``docker run`` as ``mir`` executes it (contract §5.2), without GPUs and without network."""
    assets = (work / "in" / "assets").resolve()
    args = [
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        f"{work / 'in'}:/in:ro",
        "-v",
        f"{work / 'out'}:/out",
        "-v",
        f"{assets}:{assets}:ro",
        "--user",
        RUN_USER,
        "--shm-size",
        SHM_SIZE,
    ]
    if name:
        args += ["--name", name]
    return [*args, image]


def run_like_platform(engine: Engine, work: Path, image: str, timeout: int = 300) -> int:
    """Run the image's CMD on ``work``; its output is appended to the log, as mir does."""
    log = prepare_out(work)
    with log.open("a") as sink:
        completed = subprocess.run(
            [engine.cli, *platform_run_args(work, image)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=engine.env,
            timeout=timeout,
        )
    return completed.returncode


def verify(engine: Engine, image: str, base: Path, work: Path) -> str:
    completed = devkit(engine, image, base, "verify", "--work", str(work))
    return completed.stdout


def log_tail(work: Path) -> str:
    log = work / "out" / "ymir-executor-out.log"
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"


@pytest.fixture(scope="module")
def trained(engine, image, work_base):
    """A training task run in the container: its work dir, with out/models/result.yaml."""
    work = work_base / "training"
    devkit(engine, image, work_base, "synth", "--work", str(work), "--task", "training")
    to_container_paths(work)
    returncode = run_like_platform(engine, work, image)
    assert returncode == 0, log_tail(work)
    return work


# ------------------------------------------------------------------------------------------------
# the tests


def test_image_runs_without_entrypoint_and_with_start_script(engine, image):
    config = json.loads(
        engine.docker("image", "inspect", "--format", "{{json .Config}}", image).stdout
    )
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


@pytest.mark.parametrize("name", REGISTRATION_FILES)
def test_registration_prints_only_the_yaml(engine, image, project, name):
    """What ``invoker_cmd_inspect_image`` does: stdout must be the file and parse to a dict."""
    completed = engine.docker("run", "--rm", "--network", "none", image, "cat", f"/img-man/{name}")
    assert completed.stdout == (project / "img-man" / name).read_text(encoding="utf-8")
    parsed = yaml.safe_load(completed.stdout)
    assert isinstance(parsed, dict), parsed
    if name == "manifest.yaml":
        assert parsed["object_type"] == 2


def test_training_in_container(engine, image, work_base, trained):
    result = yaml.safe_load((trained / "out" / "models" / "result.yaml").read_text())
    assert result["best_stage_name"] in result["model_stages"]
    print(verify(engine, image, work_base, trained))


@pytest.mark.parametrize("task", ["infer", "mining", "mining+infer"])
def test_packaged_model_in_container(engine, image, work_base, trained, task):
    work = work_base / task.replace("+", "-")
    # --model <training work dir>: packed like the platform packs a training result, then
    # extracted into in/models like mir does before the task.
    devkit(
        engine,
        image,
        work_base,
        "synth",
        "--work",
        str(work),
        "--task",
        task,
        "--model",
        str(trained),
    )
    to_container_paths(work)
    returncode = run_like_platform(engine, work, image)
    assert returncode == 0, log_tail(work)
    print(verify(engine, image, work_base, work))


def _monitor(work: Path) -> tuple[float, int] | None:
    """(percent, state) of monitor.txt's first line, or None while it is missing or partial."""
    try:
        fields = (work / "out" / "monitor.txt").read_text().splitlines()[0].split("\t")
        return float(fields[2]), int(fields[3])
    except (OSError, IndexError, ValueError):
        return None


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


def test_docker_kill_during_training_leaves_no_half_written_result(engine, image, work_base):
    """Kill the container at several points of a training (a user cancelling the task)."""
    work = work_base / "cancel"
    devkit(
        engine,
        image,
        work_base,
        "synth",
        "--work",
        str(work),
        "--task",
        "training",
        "--num-train",
        "400",
        "--num-val",
        "150",
    )
    to_container_paths(work)
    # None: as soon as the container exists; a number: once monitor.txt reports that progress.
    thresholds = (None, 0.0, 0.25, 0.5, 0.75, 0.9)
    outcomes = []
    for threshold in thresholds:
        log = prepare_out(work)
        name = f"ymir-test-cancel-{uuid.uuid4().hex[:10]}"
        with log.open("a") as sink:
            process = subprocess.Popen(
                [engine.cli, *platform_run_args(work, image, name=name)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=engine.env,
            )
            seen = None
            deadline = time.monotonic() + 120
            killed = False
            while process.poll() is None and time.monotonic() < deadline:
                seen = _monitor(work)
                ready = threshold is None or (
                    seen is not None and seen[1] == 2 and seen[0] >= threshold
                )
                if ready:
                    kill = engine.docker("kill", name, check=False, timeout=60)
                    if kill.returncode == 0:
                        killed = True
                        break
                time.sleep(0.01)
            returncode = process.wait(timeout=120)
        final = _monitor(work)
        outcomes.append(
            {
                "kill_at": threshold,
                "killed": killed,
                "progress_at_kill": seen,
                "returncode": returncode,
                "final_monitor": final,
                "result_yaml": (work / "out" / "models" / "result.yaml").exists(),
                "problems": _result_problems(work),
            }
        )
    print("\n".join(json.dumps(outcome) for outcome in outcomes))
    assert all(not outcome["problems"] for outcome in outcomes), outcomes
    # At least one kill must have hit a running executor (not one that had already finished).
    assert any(outcome["killed"] and outcome["returncode"] != 0 for outcome in outcomes), outcomes
