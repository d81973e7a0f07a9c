"""Run the executor on a synthesized work dir the way the platform runs its container.

What ``mir`` does around ``docker run`` (``executant.py``, ``percent_log_util.py``):

- ``out/monitor.txt`` is overwritten with the PENDING line (``<tid>\\t<ts>\\t0.00\\t1\\t0``)
  before the start;
- ``out/tensorboard`` exists; for training it is a symlink into a separate "TensorBoard root" (as on
  the platform) and holds ``executor.log``, a symlink to the output log, and the log is truncated;
- stdout and stderr are *appended* to ``out/ymir-executor-out.log``;
- a timeout kills the executor with SIGKILL, like a user cancelling (``docker rm -f``); so does
  ``cancel_at`` once ``monitor.txt`` reports that much progress (to test cancellation);
- nothing may be written under ``in/``: every file there is fingerprinted before and after the
  run and any change is reported in :attr:`RunResult.in_changes`.

Two modes:

- **local** (default): the checkout's package as a separate process, ``[sys.executable, "-m",
  <package>]``, with a clean environment (``PATH``, ``LANG=C.UTF-8``, ``PYTHONPATH`` so the package
  imports, ``YMIR_ENV_FILE`` and a ``HOME`` that does not exist, nothing else), another working
  directory and no stdin. ``in/`` is made read-only (``chmod a-w``, restored afterwards); root
  ignores permission bits, hence the fingerprints.
- **container** (``image=``, ``run --image``): the image itself, started exactly like ``mir`` does
  (docs/protocol.md#docker-run), except that it never gets a network::

      docker run --rm --network none -v <work>/in:/in:ro -v <work>/out:/out
          -v <asset cache>:<asset cache>:ro [-v <tensorboard dir>:<tensorboard dir>]
          --user 12345:12345 --shm-size 256m --name <master task id> IMAGE

  No command: the image's CMD starts the executor. Before that, the files in ``in/`` are rewritten
  to name container paths (``/in/...``, ``/out/...``, ``/img-man/...``), as the platform writes
  them (:func:`to_container_paths`; the verifier maps them back, and a later local run rewrites
  them to host paths again), ``out/`` is made world-writable (``chmod -R 777``) for the arbitrary
  uid, and a timeout or cancellation is a ``docker kill <name>``. The files the container writes
  belong to that uid; unless the devkit runs as root, a second container with the same uid
  afterwards makes them writable for everyone (``chmod -R a+rwX``), so that the developer can
  remove the work dir (the platform does not do this: its backend is root or that uid).

:func:`register` reads an image's ``/img-man`` the way YMIR does when the image is added.

The platform's own final record (DONE / ERROR after the container exits) is *not* written, so that
the verifier sees the executor's last word in ``monitor.txt``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from ..contract.booleans import parse_bool
from ..contract.monitor import PENDING, RUNNING, format_monitor_line

LOG_NAME = "ymir-executor-out.log"
DEFAULT_TIMEOUT = 600.0
# The platform runs the image as its backend's uid, which need not exist in the image.
DEFAULT_USER = "12345:12345"
# Enough for the stubs; the platform passes the template's shm_size (16G by default).
DEFAULT_SHM_SIZE = "256m"
DEFAULT_DOCKER = "docker"
# How often the monitor file is sampled while the executor runs (the platform polls every 20 s;
# sampling faster catches more intermediate records for the verifier).
_POLL_SECONDS = 0.05
# How long a killed executor (or docker client) may take to go away before it is killed harder.
_KILL_GRACE_SECONDS = 60.0
# The folders the platform mounts (img-man is baked into the image), by their container path.
_CONTAINER_ROOTS = ("in", "out", "img-man")
REGISTRATION_FILES = (
    "manifest.yaml",
    "training-template.yaml",
    "mining-template.yaml",
    "infer-template.yaml",
)


@dataclass
class RunResult:
    """How the run went. ``returncode`` is negative when the process was killed by a signal (in
    container mode: docker's code, 137 for a killed container, 125 when docker could not start
    it)."""

    returncode: int
    log_path: Path
    timed_out: bool = False
    duration: float = 0.0
    # every distinct monitor.txt content seen while the executor ran (PENDING first), in order
    monitor_records: list[str] = field(default_factory=list)
    # files under in/ that the executor created, changed or removed (it must never write there)
    in_changes: list[str] = field(default_factory=list)
    # the executor created its HOME although it does not exist on the platform (arbitrary uid)
    home_written: bool = False
    # killed on purpose because monitor.txt reached ``cancel_at``
    cancelled: bool = False
    # the command that was started (the docker command line in container mode)
    command: list[str] = field(default_factory=list)
    image: str | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.cancelled


def package_name() -> str:
    """The executor's top-level package (the devkit's parent)."""
    return (__package__ or __name__).split(".")[0]


def run(
    work_dir: str | os.PathLike,
    timeout: float | None = DEFAULT_TIMEOUT,
    *,
    image: str | None = None,
    package: str | None = None,
    user: str | None = DEFAULT_USER,
    shm_size: str = DEFAULT_SHM_SIZE,
    docker: str = DEFAULT_DOCKER,
    name: str | None = None,
    cancel_at: float | str | None = None,
    gpus: str | None = None,
) -> RunResult:
    """Run the executor on ``<work_dir>/in`` -> ``<work_dir>/out`` like the platform.

    ``timeout`` in seconds (None: no limit). ``package``: the module to run locally (default:
    this executor's package). ``image``: run that image instead, like the platform (container
    mode), with ``--user user`` (None: the image's user), ``--shm-size shm_size`` and ``--name
    name`` (default: the master task id), using the ``docker`` client (its environment, e.g.
    ``DOCKER_HOST``, is passed on). ``cancel_at``: kill the executor once ``monitor.txt`` reports
    running with at least this fraction done, or ``"start"``: as soon as it runs. ``gpus``: the
    host GPUs the task gets (``"0"``, ``"2,3"``; the config's ``gpu_id`` counts them from 0):
    ``docker run --gpus "device=..."`` like the platform, or ``CUDA_VISIBLE_DEVICES`` locally.
    """
    if isinstance(cancel_at, str) and cancel_at != "start":
        raise ValueError(f"cancel_at must be a fraction or 'start', got {cancel_at!r}")
    work = Path(work_dir).absolute()
    env = _read_env(work)
    if image:
        to_container_paths(work)
    elif _names_container_paths(env):
        to_host_paths(work)  # left by a container run: a local executor needs host paths
    env = _read_env(work)
    output = env.get("output")
    if not isinstance(output, dict):
        output = {}
    out_dir = work / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    # The log is always <work>/out/ymir-executor-out.log, whatever env.yaml says (the legacy env
    # names no log file at all).
    log_path = out_dir / LOG_NAME
    # As the executor reads the flag; one it cannot read makes the executor fail anyway.
    training = bool(parse_bool(env.get("run_training")))
    task_id = str(env.get("task_id") or "default-task")

    _prepare_out(work, out_dir, log_path, training, task_id)
    monitor_file = _local_path(output.get("monitor_file"), output.get("root_dir"), out_dir)
    monitor_file = monitor_file or out_dir / "monitor.txt"
    monitor_file.write_text(format_monitor_line(task_id, 0.0, PENDING, 0), encoding="utf-8")
    if image:
        return _run_container(
            work,
            image,
            log_path,
            monitor_file,
            timeout=timeout,
            command=docker_run_command(
                work,
                image,
                user=user,
                shm_size=shm_size,
                name=name or container_name(task_id),
                docker=docker,
                gpus=gpus,
            ),
            cancel_at=cancel_at,
        )
    return _run_local(
        work,
        package or package_name(),
        log_path,
        monitor_file,
        timeout,
        cancel_at=cancel_at,
        gpus=gpus,
    )


def _run_local(
    work: Path,
    module: str,
    log_path: Path,
    monitor_file: Path,
    timeout: float | None,
    cancel_at: float | str | None,
    gpus: str | None = None,
) -> RunResult:
    env_file = work / "in" / "env.yaml"
    scratch = Path(tempfile.mkdtemp(prefix="ymir-devkit-run-"))
    cwd = scratch / "cwd"
    cwd.mkdir()
    home = scratch / "nonexistent-home"
    environ = {
        "PATH": os.environ.get("PATH") or os.defpath,
        "LANG": "C.UTF-8",
        "HOME": str(home),
        "YMIR_ENV_FILE": str(env_file),
        "PYTHONPATH": _import_root(module),
    }
    if gpus:
        environ["CUDA_VISIBLE_DEVICES"] = gpus
    in_dir = work / "in"
    before = _fingerprint(in_dir)
    modes = _make_read_only(in_dir)
    # Nothing may be written next to the (nonexistent) home either.
    os.chmod(str(scratch), 0o555)
    started = time.monotonic()
    command = [sys.executable, "-m", module]
    try:
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                command,
                cwd=str(cwd),
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: a timeout kills every child
            )

            def kill() -> bool:
                _kill_group(proc)
                return True

            try:
                returncode, timed_out, cancelled, records = _supervise(
                    proc, monitor_file, started, timeout, cancel_at, kill
                )
            except BaseException:
                _kill_group(proc)
                raise
    finally:
        _restore_modes(modes)
        home_written = home.exists()
        os.chmod(str(scratch), 0o755)
        _remove_tree(scratch)
    return RunResult(
        returncode=returncode,
        log_path=log_path,
        timed_out=timed_out,
        duration=time.monotonic() - started,
        monitor_records=records,
        in_changes=_diff(before, _fingerprint(in_dir)),
        home_written=home_written,
        cancelled=cancelled,
        command=command,
    )


def _run_container(
    work: Path,
    image: str,
    log_path: Path,
    monitor_file: Path,
    timeout: float | None,
    command: list[str],
    cancel_at: float | str | None,
) -> RunResult:
    docker, name = command[0], command[command.index("--name") + 1]
    in_dir, out_dir = work / "in", work / "out"
    # The arbitrary uid reads in/ and the asset cache and writes out/ (mir: chmod -R 777 out).
    _chmod_tree(in_dir, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH, executable_dirs=True)
    for link in (in_dir / "assets", in_dir / "models"):
        if link.is_symlink():
            _chmod_tree(Path(os.path.realpath(str(link))), 0o444, executable_dirs=True)
    _chmod_tree(out_dir, 0o777)
    tensorboard = out_dir / "tensorboard"
    if tensorboard.is_symlink():
        _chmod_tree(Path(os.path.realpath(str(tensorboard))), 0o777)
    before = _fingerprint(in_dir)
    started = time.monotonic()
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # the terminal's Ctrl-C must not reach the client first: the finally below kills
            start_new_session=True,
        )

        def kill() -> bool:
            return docker_kill(name, docker)

        try:
            returncode, timed_out, cancelled, records = _supervise(
                proc, monitor_file, started, timeout, cancel_at, kill
            )
        except BaseException:
            docker_kill(name, docker)
            _kill_group(proc)
            raise
    user = command[command.index("--user") + 1] if "--user" in command else None
    if user and os.geteuid() != 0:
        _hand_back(work, image, user, docker)
    return RunResult(
        returncode=returncode,
        log_path=log_path,
        timed_out=timed_out,
        duration=time.monotonic() - started,
        monitor_records=records,
        in_changes=_diff(before, _fingerprint(in_dir)),
        cancelled=cancelled,
        command=list(command),
        image=image,
    )


def _supervise(
    proc: subprocess.Popen,
    monitor_file: Path,
    started: float,
    timeout: float | None,
    cancel_at: float | str | None,
    kill: Callable[[], bool],
) -> tuple[int, bool, bool, list[str]]:
    """Wait for ``proc`` while sampling the monitor; kill at the deadline or at ``cancel_at``.

    Returns (returncode, timed_out, cancelled, monitor records).
    """
    records: list[str] = []
    deadline = None if timeout is None else started + float(timeout)
    timed_out = cancelled = False
    while True:
        _sample(monitor_file, records)
        try:
            proc.wait(timeout=_POLL_SECONDS)
            break
        except subprocess.TimeoutExpired:
            pass
        if cancel_at is not None and not cancelled and _reached(records, cancel_at):
            # a failed kill (the container does not exist yet) is retried at the next sample
            cancelled = kill()
        if deadline is not None and time.monotonic() > deadline:
            timed_out = True
            # retried: a container that docker is still creating cannot be killed yet
            give_up = time.monotonic() + _KILL_GRACE_SECONDS
            while not kill() and proc.poll() is None and time.monotonic() < give_up:
                time.sleep(_POLL_SECONDS)
            break
    try:
        returncode = proc.wait(timeout=_KILL_GRACE_SECONDS)
    except subprocess.TimeoutExpired:  # a client that hangs after its container was killed
        _kill_group(proc)
        returncode = proc.wait()
    _sample(monitor_file, records)
    return returncode, timed_out, cancelled, records


def _reached(records: Sequence[str], cancel_at: float | str) -> bool:
    if cancel_at == "start":
        return True
    if not records:
        return False
    fields = records[-1].split("\n", 1)[0].split("\t")
    try:
        return int(fields[3]) == RUNNING and float(fields[2]) >= float(cancel_at)
    except (IndexError, ValueError):
        return False


# ----------------------------------------------------------------------------------------------
# container mode


def container_name(task_id: str) -> str:
    """``--name`` as the platform gives it: the master task id (the subtask id with character 1
    replaced by 0), reduced to the characters docker accepts."""
    master = task_id
    if len(task_id) == 30 and task_id.startswith("t"):
        master = task_id[0] + "0" + task_id[2:]
    name = re.sub(r"[^a-zA-Z0-9_.-]", "-", master).lstrip("_.-")
    return name or "ymir-devkit-task"


def docker_run_command(
    work_dir: str | os.PathLike,
    image: str,
    *,
    user: str | None = DEFAULT_USER,
    shm_size: str = DEFAULT_SHM_SIZE,
    name: str,
    docker: str = DEFAULT_DOCKER,
    gpus: str | None = None,
) -> list[str]:
    """The ``docker run`` command line of the platform for ``work_dir``.

    See docs/protocol.md#docker-run.

    ``in/`` read-only at ``/in``, ``out/`` at ``/out``; the real folders behind the symlinks
    ``in/assets``, ``in/models`` and ``out/tensorboard`` at their own absolute paths (``in/`` ones
    read-only), so that the symlinks resolve inside the container too. The host GPUs ``gpus``
    (``--gpus "device=0,1"``, as the platform passes them) or none, no network (the platform
    uses its default network; the devkit never gives the executor one), no command.
    """
    work = Path(work_dir).absolute()
    in_dir, out_dir = work / "in", work / "out"
    mounts = [(in_dir, "/in", True), (out_dir, "/out", False)]
    for link, read_only in (
        (in_dir / "assets", True),
        (in_dir / "models", True),
        (out_dir / "tensorboard", False),
    ):
        if link.is_symlink():
            real = os.path.realpath(str(link))
            mounts.append((Path(real), real, read_only))
    command = [docker, "run", "--rm", "--network", "none"]
    for source, target, read_only in mounts:
        if ":" in str(source) or ":" in str(target):
            raise ValueError(f"docker -v cannot mount a path that contains ':': {source}")
        command += ["-v", f"{source}:{target}" + (":ro" if read_only else "")]
    if user:
        command += ["--user", user]
    if gpus:
        # quoted: docker reads the value as CSV, where "device=0,1" would split at the comma
        command += ["--gpus", f'"device={gpus}"']
    command += ["--shm-size", shm_size, "--name", name, image]
    return command


def _hand_back(work: Path, image: str, user: str, docker: str) -> None:
    """Make what the container's uid wrote under out/ removable by the developer (best effort)."""
    out_dir = work / "out"
    folders = [str(out_dir)]
    command = [docker, "run", "--rm", "--network", "none", "--user", user]
    command += ["-v", f"{out_dir}:{out_dir}"]
    tensorboard = out_dir / "tensorboard"
    if tensorboard.is_symlink():
        real = os.path.realpath(str(tensorboard))
        command += ["-v", f"{real}:{real}"]
        folders.append(real)
    command += ["--entrypoint", "chmod", image, "-R", "a+rwX", *folders]
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=_KILL_GRACE_SECONDS,
        )


def docker_kill(name: str, docker: str = DEFAULT_DOCKER) -> bool:
    """``docker kill <name>`` (SIGKILL, like the platform's cancel); True if it was killed."""
    try:
        completed = subprocess.run(
            [docker, "kill", name],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=_KILL_GRACE_SECONDS,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return completed.returncode == 0


def to_container_paths(work_dir: str | os.PathLike) -> list[Path]:
    """Rewrite ``<work>/in``'s files to name ``/in``, ``/out`` and ``/img-man`` like the platform.

    synth writes host paths (``<work>/in/...``) into env.yaml, config.yaml (model paths) and the
    index files, so that the executor can run without a container. Returns the files changed.
    """
    work = Path(work_dir).absolute()
    mapping = []
    for root in {str(work), os.path.realpath(str(work))}:
        mapping += [(f"{root}/{folder}", f"/{folder}") for folder in _CONTAINER_ROOTS]
    return _rewrite_in_files(work, mapping)


def to_host_paths(work_dir: str | os.PathLike) -> list[Path]:
    """The reverse of :func:`to_container_paths` (``/img-man`` only where ``<work>/img-man`` is)."""
    work = Path(work_dir).absolute()
    mapping = [
        (f"/{folder}", f"{work}/{folder}")
        for folder in _CONTAINER_ROOTS
        if folder != "img-man" or (work / folder).is_dir()
    ]
    return _rewrite_in_files(work, mapping)


def _rewrite_in_files(work: Path, mapping: list[tuple[str, str]]) -> list[Path]:
    changed = []
    for path in sorted((work / "in").iterdir()):
        if path.is_symlink() or not path.is_file():
            continue
        if path.suffix in (".yaml", ".yml"):
            with path.open(encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
            new_data = _map_strings(data, mapping)
            if new_data == data:
                continue
            if path.name == "env.yaml":  # mir's env_config writes it with yaml.safe_dump
                text = yaml.safe_dump(new_data, default_flow_style=False)
            else:  # and config.yaml with yaml.dump(..., allow_unicode=True)
                text = yaml.dump(new_data, allow_unicode=True)
        elif path.suffix == ".tsv":
            old = path.read_text(encoding="utf-8")
            text = "".join(
                "\t".join(_map_path(item, mapping) for item in line.split("\t"))
                for line in old.splitlines(keepends=True)
            )
            if text == old:
                continue
        else:
            continue
        _replace_file(path, text)
        changed.append(path)
    return changed


def _map_strings(value: Any, mapping: list[tuple[str, str]]) -> Any:
    if isinstance(value, str):
        return _map_path(value, mapping)
    if isinstance(value, dict):
        return {key: _map_strings(item, mapping) for key, item in value.items()}
    if isinstance(value, list):
        return [_map_strings(item, mapping) for item in value]
    return value


def _map_path(value: str, mapping: list[tuple[str, str]]) -> str:
    end = len(value.rstrip("\r\n"))
    text, newline = value[:end], value[end:]
    for old, new in mapping:
        if text == old or text.startswith(old + "/"):
            return new + text[len(old) :] + newline
    return value


def _replace_file(path: Path, text: str) -> None:
    # in/ may still be read-only from an interrupted local run: the folder's mode decides
    mode = stat.S_IMODE(path.stat().st_mode)
    tmp = path.with_name(f".{path.name}.devkit-tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(str(tmp), mode)
    os.replace(str(tmp), str(path))


def _names_container_paths(env: dict[str, Any]) -> bool:
    inputs = env.get("input")
    return isinstance(inputs, dict) and inputs.get("root_dir") == "/in"


def _chmod_tree(root: Path, bits: int, executable_dirs: bool = False) -> None:
    """Add ``bits`` to every file and folder under ``root`` (not following symlinks); folders
    also get the matching search bits when ``executable_dirs``."""
    if not root.is_dir():
        return
    search = (bits & 0o444) >> 2
    for dirpath, _dirnames, filenames in os.walk(str(root)):
        with contextlib.suppress(OSError):
            mode = os.stat(dirpath).st_mode
            os.chmod(dirpath, mode | bits | (search if executable_dirs else 0))
        for filename in filenames:
            path = os.path.join(dirpath, filename)
            if os.path.islink(path):
                continue
            with contextlib.suppress(OSError):
                os.chmod(path, os.stat(path).st_mode | bits)


# ----------------------------------------------------------------------------------------------
# registration


@dataclass
class Registration:
    """What YMIR learns from an image when it is added."""

    image: str
    img_man: Path  # the files as the image printed them (the declared ones only)
    object_type: Any = None
    tasks: list[str] = field(default_factory=list)  # training / mining / infer
    problems: list[str] = field(default_factory=list)  # registration would fail or misread

    @property
    def ok(self) -> bool:
        return not self.problems


def register(
    image: str,
    dest: str | os.PathLike,
    docker: str = DEFAULT_DOCKER,
    timeout: float = 300.0,
) -> Registration:
    """``docker run --rm IMAGE cat /img-man/<file>`` per file, as YMIR 2.5's registration does.

    Each file's stdout must be exactly the YAML: anything an entrypoint prints corrupts it. The
    manifest must parse to a mapping with an int (or list) ``object_type``; a template declares
    its task when it parses to a mapping; no template at all fails the registration. The
    declared files are written to ``dest`` (an img-man folder for synth). Unlike the platform the
    container gets no network.
    """
    folder = Path(dest)
    folder.mkdir(parents=True, exist_ok=True)
    result = Registration(image=image, img_man=folder)
    for filename in REGISTRATION_FILES:
        completed = subprocess.run(
            [docker, "run", "--rm", "--network", "none", image, "cat", f"/img-man/{filename}"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )
        if completed.returncode == 125:  # docker itself failed (no such image, no engine)
            message = completed.stderr.decode("utf-8", "replace").strip()
            result.problems.append(f"docker run {image} failed: {message[-500:]}")
            return result
        text = completed.stdout.decode("utf-8", "replace")
        try:
            data = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as error:
            data = None
            result.problems.append(f"/img-man/{filename} is not YAML: {error}")
        if filename == "manifest.yaml":
            if not isinstance(data, dict):
                result.problems.append(
                    "/img-man/manifest.yaml does not print a mapping: the platform then "
                    "assumes object_type 2"
                )
                continue
            result.object_type = data.get("object_type")
            if isinstance(result.object_type, bool) or not isinstance(
                result.object_type, (int, list)
            ):
                result.problems.append(f"invalid object types: {result.object_type!r}")
        elif isinstance(data, dict):
            result.tasks.append(filename.split("-")[0])
        else:
            continue  # not declared: the platform skips it
        (folder / filename).write_text(text, encoding="utf-8")
    if not result.tasks:
        result.problems.append(f"{image} does not match any configuration (no template)")
    return result


# ----------------------------------------------------------------------------------------------
# both modes


def _read_env(work: Path) -> dict[str, Any]:
    env_file = work / "in" / "env.yaml"
    if not env_file.is_file():
        raise FileNotFoundError(f"{env_file} does not exist: run `synth` first")
    with env_file.open(encoding="utf-8") as fh:
        env = yaml.safe_load(fh)
    if not isinstance(env, dict):
        raise ValueError(f"{env_file} is not a mapping")
    return env


def _local_path(value: Any, root: Any, local_root: Path) -> Path | None:
    """An env.yaml path on this machine: container paths under ``root`` move to ``local_root``."""
    if not value:
        return None
    path = Path(str(value))
    if root:
        with contextlib.suppress(ValueError):
            return local_root / path.relative_to(Path(str(root)))
    return path


def _prepare_out(work: Path, out_dir: Path, log_path: Path, training: bool, task_id: str) -> None:
    tensorboard = out_dir / "tensorboard"
    if training:
        # 2.x: out/tensorboard -> <TENSORBOARD_ROOT>/<user>/<task> with executor.log inside; the
        # log is truncated at training start, then the container output is appended.
        log_path.write_bytes(b"")
        if not tensorboard.exists() and not tensorboard.is_symlink():
            target = work / "tensorboard-root" / task_id
            target.mkdir(parents=True, exist_ok=True)
            os.symlink(str(target), str(tensorboard))
        link = tensorboard / "executor.log"
        if not link.is_symlink() and not link.exists():
            os.symlink(str(log_path), str(link))
    else:
        # mining / infer: a plain, unused folder; the log keeps what earlier runs appended
        tensorboard.mkdir(exist_ok=True)
        log_path.touch()


def _import_root(module: str) -> str:
    """The folder to put on PYTHONPATH so that ``module`` imports in the clean environment."""
    top = importlib.import_module(module.split(".")[0])
    origin = getattr(top, "__file__", None)
    if origin is None:  # a namespace package: use its first location
        return str(Path(next(iter(top.__path__))).parent)
    return str(Path(origin).resolve().parent.parent)


def _sample(monitor_file: Path, records: list[str]) -> None:
    try:
        text = monitor_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    if text and (not records or records[-1] != text):
        records.append(text)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


# ----------------------------------------------------------------------------------------------
# in/ protection


def _walk(root: Path):
    """Every path under ``root`` (files, folders, symlinks), not following symlinks."""
    for dirpath, dirnames, filenames in os.walk(str(root)):
        for name in dirnames + filenames:
            yield os.path.join(dirpath, name)


def _make_read_only(root: Path) -> dict[str, int]:
    """``chmod a-w`` on everything under ``root``; returns the original modes to restore."""
    modes: dict[str, int] = {}
    for path in [*_walk(root), str(root)]:
        if os.path.islink(path):
            continue  # chmod would follow it into the asset cache, which is not part of in/
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
            os.chmod(path, mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
            modes[path] = mode
        except OSError:
            pass
    return modes


def _restore_modes(modes: dict[str, int]) -> None:
    # parents first, so that files inside are reachable again
    for path in sorted(modes, key=len):
        with contextlib.suppress(OSError):
            os.chmod(path, modes[path])


def _fingerprint(root: Path) -> dict[str, tuple]:
    prints: dict[str, tuple] = {}
    for path in _walk(root):
        rel = os.path.relpath(path, str(root))
        try:
            if os.path.islink(path):
                prints[rel] = ("link", os.readlink(path))
            else:
                st = os.stat(path)
                kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
                prints[rel] = (kind, st.st_size if kind == "file" else 0, st.st_mtime_ns)
        except OSError:
            continue
    return prints


def _diff(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    changes = []
    for rel in sorted(set(before) | set(after)):
        if rel not in after:
            changes.append(f"removed in/{rel}")
        elif rel not in before:
            changes.append(f"created in/{rel}")
        elif before[rel] != after[rel] and before[rel][0] != "dir":
            changes.append(f"modified in/{rel}")
    return changes


def _remove_tree(root: Path) -> None:
    shutil.rmtree(str(root), ignore_errors=True)
