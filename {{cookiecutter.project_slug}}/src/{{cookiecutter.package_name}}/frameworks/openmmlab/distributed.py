"""One process per GPU through torchrun, gloo processes on the CPU, and the rank helpers.

:func:`launch` runs a *job function* ``fn(payload, channel)`` in as many processes as the task
has GPUs (``ctx.gpu_ids``); on the CPU one process, or ``$YMIR_CPU_PROCESSES`` gloo processes
(how the tests exercise the multi-process path without GPUs). One process runs in the
executor's own process; several are started with ``python -m torch.distributed.run`` on a free
local port, each running this module as ``__main__`` with the job file.

Rank 0 talks to the executor process through the *channel*: ``channel.progress(fraction)``
and ``channel.send(kind, **data)`` reach the handlers given to :func:`launch` (e.g. one that
calls ``ctx.results.add_stage``), so that ``ctx`` stays the single writer of ``/out`` files
and ``monitor.txt``. Between processes the channel is a JSON-lines file under the work dir,
read by the executor while the workers run; a failure on any rank is sent as an ``error``
event with its executor code (see :mod:`.failures`) and raised again in the executor.

Every rank sends a ``finished`` event once the job is done on all ranks (after a final
barrier, so rank 0's last events are already in the file). A process that then dies while
shutting down (gloo's threads can abort an exiting interpreter) has lost nothing: the launch
logs it and succeeds. A rank that dies before that point fails the launch.

Inside a job: :func:`rank`, :func:`world_size`, :func:`is_main`, :func:`shard` (a rank's share
of a list, every item exactly once over all ranks) and :func:`gather` (everyone's results on
rank 0) work the same with one process or many.
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import importlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Sequence, TypeVar

from ...contract.errors import ErrorCode, ExecutorError
from . import failures, preflight

if TYPE_CHECKING:
    from ...contract.context import TaskContext

log = logging.getLogger(__name__)

# Test hook: how many gloo processes a CPU task runs (default 1).
CPU_PROCESSES_VARIABLE = "YMIR_CPU_PROCESSES"
# How often the executor reads the workers' events, in seconds.
POLL_SECONDS = 0.5

# Events every rank sends (the others come from rank 0 only).
RANK_EVENTS = ("error", "finished")

Handlers = Dict[str, Callable[[Dict[str, Any]], None]]
T = TypeVar("T")


class Channel:
    """Rank 0's line to the executor process (a no-op on the other ranks)."""

    def send(self, kind: str, **data: Any) -> None:
        """Deliver ``data`` (JSON-serialisable) to the executor's handler for ``kind``."""

    def progress(self, fraction: float) -> None:
        """Report the job's progress, 0..1 (the handler maps it into the task's share)."""
        self.send("progress", fraction=float(fraction))


class LocalChannel(Channel):
    """Calls the handlers directly: the job runs in the executor's own process."""

    def __init__(self, handlers: Handlers) -> None:
        self.handlers = handlers

    def send(self, kind: str, **data: Any) -> None:
        handler = self.handlers.get(kind)
        if handler is not None:
            handler(data)


class FileChannel(Channel):
    """Appends one JSON line per event to the events file; only rank 0 sends, except errors
    and the end of the job, which every rank reports."""

    def __init__(self, path: Path, rank: int) -> None:
        self.path = path
        self.rank = rank

    def send(self, kind: str, **data: Any) -> None:
        if self.rank == 0 or kind in RANK_EVENTS:
            self._write({"kind": kind, "rank": self.rank, **data})

    def _write(self, event: dict) -> None:
        line = json.dumps(event, ensure_ascii=True) + "\n"
        # One write() of a short line in append mode: lines from ranks never interleave.
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(line)
            stream.flush()


# ---------------------------------------------------------------------------------------------
# the executor side


def process_count(gpu_ids: Sequence[int]) -> int:
    """How many processes a task runs: one per GPU; on the CPU ``$YMIR_CPU_PROCESSES`` or 1."""
    if gpu_ids:
        return len(gpu_ids)
    value = os.environ.get(CPU_PROCESSES_VARIABLE, "").strip()
    try:
        return max(1, int(value)) if value else 1
    except ValueError:
        raise ExecutorError(
            ErrorCode.CONFIG, f"{CPU_PROCESSES_VARIABLE} must be an integer, got {value!r}"
        ) from None


def find_free_port() -> int:
    """A TCP port nobody listens on right now (the rendezvous port of torchrun)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(
    fn: Callable[[dict, Channel], Any],
    payload: dict,
    *,
    gpu_ids: Sequence[int],
    work_dir: Path,
    handlers: Handlers,
    processes: int | None = None,
) -> None:
    """Run ``fn(payload, channel)`` on every rank; rank 0's events go to ``handlers``.

    ``fn`` must be a module-level function (the workers import it by name) and ``payload``
    JSON-serialisable. One process (one GPU, or the CPU) runs here, in this process; more run
    under torchrun with one rank per GPU of ``gpu_ids`` (``CUDA_VISIBLE_DEVICES`` restricted to
    them, rank r on ``cuda:r``) or gloo ranks on the CPU.

    Raises:
        ExecutorError: the job's failure with its executor code, when it has one.
        RuntimeError: a worker failed without a recognised cause (details are in the log).
    """
    count = processes or process_count(gpu_ids)
    if gpu_ids and count != len(gpu_ids):
        raise ValueError(f"{count} processes for GPUs {list(gpu_ids)}")
    if count == 1:
        _run_here(fn, payload, gpu_ids, handlers)
        return
    _run_torchrun(fn, payload, gpu_ids, Path(work_dir), handlers, count)


def run_task_job(
    fn: Callable[[dict, Channel], Any],
    payload: dict,
    ctx: TaskContext,
    handlers: Handlers,
    *,
    processes: int | None = None,
    work_dir: Path | None = None,
) -> None:
    """:func:`launch` ``fn`` for a task: on its GPUs, with its failures mapped to codes.

    A GPU asked for but absent (300102) or unusable (300101, also where mmcv has no kernels
    for it: :mod:`.preflight`) fails before any work; out of
    memory (GPU, or the shared memory of loader workers) becomes 300103, and so on (see
    :mod:`.failures`). ``payload["cuda"]`` tells the job whether it runs on GPUs; progress
    events go to ``ctx.progress`` unless ``handlers`` has its own. ``processes`` (CPU only)
    overrides ``$YMIR_CPU_PROCESSES``; with GPUs there is one process per GPU of the task.
    The job's files go to ``work_dir`` (default ``ctx.work_dir``).
    """
    preflight.check_devices(ctx.gpu_ids)
    handlers = {"progress": lambda event: ctx.progress(float(event["fraction"])), **handlers}
    with failures.mapped():
        launch(
            fn,
            dict(payload, cuda=bool(ctx.gpu_ids)),
            gpu_ids=list(ctx.gpu_ids),
            work_dir=ctx.work_dir if work_dir is None else work_dir,
            handlers=handlers,
            processes=None if ctx.gpu_ids else processes,
        )


def _run_here(
    fn: Callable[[dict, Channel], Any], payload: dict, gpu_ids: Sequence[int], handlers: Handlers
) -> None:
    import torch

    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    if gpu_ids:
        torch.cuda.set_device(gpu_ids[0])
        preflight.check_kernels(gpu_ids[0])
    elif not torch.cuda.is_initialized():
        # The CPU was asked for although GPUs may be visible: hide them from mmengine, which
        # picks "cuda" whenever it can.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        fn(payload, LocalChannel(handlers))
    finally:
        if not gpu_ids:
            if saved is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = saved


def _run_torchrun(
    fn: Callable[[dict, Channel], Any],
    payload: dict,
    gpu_ids: Sequence[int],
    work_dir: Path,
    handlers: Handlers,
    count: int,
) -> None:
    work_dir.mkdir(parents=True, exist_ok=True)
    stamp = f"{os.getpid()}-{time.time_ns()}"
    job_file = work_dir / f"job-{stamp}.json"
    events_file = work_dir / f"events-{stamp}.jsonl"
    events_file.write_text("", encoding="utf-8")
    job = {
        "entry": f"{fn.__module__}:{fn.__qualname__}",
        "payload": payload,
        "events": str(events_file),
        "cuda": bool(gpu_ids),
    }
    job_file.write_text(json.dumps(job), encoding="utf-8")

    env = dict(os.environ)
    if gpu_ids:
        env["CUDA_VISIBLE_DEVICES"] = visible_devices(gpu_ids, os.environ)
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""
    # torchrun would force 1 thread per process (with a banner in the log); share the cores.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // count)))
    port = find_free_port()
    command = [*_launcher(count, port), "-m", __name__, str(job_file)]
    log.info("starting %d processes (%s), port %d", count, "GPU" if gpu_ids else "CPU/gloo", port)
    process = subprocess.Popen(command, env=env)
    reader = _EventReader(events_file, handlers)
    try:
        while True:
            try:
                returncode = process.wait(timeout=POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                reader.poll()
        reader.poll()
    except BaseException:
        # A handler failed (or we are interrupted): the workers must not run on unsupervised.
        _stop(process)
        raise
    finally:
        for path in (job_file,):
            with contextlib.suppress(OSError):
                path.unlink()
    if returncode != 0 and reader.error is None and len(reader.finished) == count:
        log.warning(
            "all %d processes finished the job, but one failed while shutting down (torchrun "
            "exit status %d); the results are complete",
            count,
            returncode,
        )
        returncode = 0
    if returncode != 0:
        if reader.error is not None:
            code, message = reader.error
            if code is not None:
                raise ExecutorError(ErrorCode(code), message)
            raise RuntimeError(message)
        raise RuntimeError(
            f"the job's processes failed (torchrun exit status {returncode}); "
            "see the log above for the reason"
        )
    with contextlib.suppress(OSError):
        events_file.unlink()


def _launcher(count: int, port: int) -> list[str]:
    try:
        importlib.import_module("torch.distributed.run")
        module = ["torch.distributed.run"]
    except ImportError:  # torch < 1.9 (the cu111 image): the older launcher, same env vars
        module = ["torch.distributed.launch", "--use_env"]
    return [
        sys.executable,
        "-m",
        *module,
        "--nnodes=1",
        f"--nproc_per_node={count}",
        "--master_addr=127.0.0.1",
        f"--master_port={port}",
    ]


def visible_devices(gpu_ids: Sequence[int], environ: Mapping[str, str]) -> str:
    """``CUDA_VISIBLE_DEVICES`` for in-container indices, honouring one already set."""
    current = [part.strip() for part in environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    current = [part for part in current if part]
    if current:
        return ",".join(current[index] if index < len(current) else str(index) for index in gpu_ids)
    return ",".join(str(index) for index in gpu_ids)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.terminate()  # torchrun forwards SIGTERM to its workers
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class _EventReader:
    """Reads complete new lines of the events file and dispatches them."""

    def __init__(self, path: Path, handlers: Handlers) -> None:
        self.path = path
        self.handlers = handlers
        self.offset = 0
        self.error: tuple[int | None, str] | None = None
        self.finished: set[int] = set()  # the ranks that sent "finished"

    def poll(self) -> None:
        with open(self.path, "rb") as stream:
            stream.seek(self.offset)
            data = stream.read()
        end = data.rfind(b"\n")
        if end < 0:
            return
        self.offset += end + 1
        for raw in data[: end + 1].splitlines():
            if not raw.strip():
                continue
            event = json.loads(raw.decode("utf-8"))
            kind = event.pop("kind")
            rank_ = event.pop("rank", None)
            if kind == "finished":
                self.finished.add(int(rank_))
                continue
            if kind == "error":
                if self.error is None:  # the first failure is the cause, the rest follow it
                    self.error = (event.get("code"), str(event.get("message")))
                continue
            handler = self.handlers.get(kind)
            if handler is not None:
                handler(event)


# ---------------------------------------------------------------------------------------------
# inside a job


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    dist = _dist()
    return dist.get_rank() if dist else int(os.environ.get("RANK", 0))


def world_size() -> int:
    """How many ranks run the job (1 when not distributed)."""
    dist = _dist()
    return dist.get_world_size() if dist else int(os.environ.get("WORLD_SIZE", 1))


def local_rank() -> int:
    """The rank on this machine (= the GPU index after ``CUDA_VISIBLE_DEVICES``)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    """True on rank 0, the one that writes results and reports progress."""
    return rank() == 0


def shard(items: Sequence[T], rank_: int | None = None, world: int | None = None) -> list[T]:
    """This rank's share: items ``rank, rank + world, ...`` (each item on exactly one rank)."""
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    return list(items[rank_::world])


def gather(obj: Any) -> list | None:
    """Every rank's ``obj`` in rank order on rank 0 (``None`` on the others); ``[obj]`` alone."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return [obj]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered if dist.get_rank() == 0 else None


def loader_workers(requested: int, cuda: bool) -> int:
    """How many DataLoader workers an inference rank uses when ``requested`` are asked for.

    On GPUs all of them: they prepare the next batches while the GPU computes. On the CPU
    the model's threads already use every core, and workers beside them slow the whole down
    (measured: rtmdet_tiny on 2 cores, 60% of bare forward with 2 workers, 89% without), so
    workers only get the cores the ranks' torch threads leave free.
    """
    requested = max(0, int(requested))
    if cuda:
        return requested
    import torch

    world = world_size()
    spare = ((os.cpu_count() or 1) - torch.get_num_threads() * world) // world
    return min(requested, max(0, spare))


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    dist = _dist()
    if dist is not None and dist.get_world_size() > 1:
        dist.barrier()


def _dist():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist
    return None


def probe_job(payload: dict, channel: Channel) -> None:
    """A job that only checks the plumbing: sharding, gathering, events, failures.

    Every rank takes its :func:`shard` of ``range(payload["items"])``; rank 0 sends a
    ``probe`` event with the world size and everyone's shard (via :func:`gather`). With
    ``payload["fail_rank"]`` that rank raises ``payload["error"]`` (a message) instead, which
    shows how failures travel; with ``payload["abort_rank"]`` that rank's process is killed by
    SIGABRT, during the job (``payload["abort_when"] == "job"``) or while the interpreter shuts
    down after it (``"exit"``, what a crashing teardown looks like). Used by the tests; also a
    quick check of a multi-GPU setup.
    """
    if payload.get("fail_rank") == rank():
        raise RuntimeError(str(payload.get("error") or "probe failure"))
    if payload.get("abort_rank") == rank():
        if payload.get("abort_when") == "exit":
            atexit.register(os.abort)
        else:
            os.abort()
    mine = shard(list(range(int(payload.get("items", 0)))))
    everyone = gather(mine)
    channel.progress(1.0)
    if everyone is not None:
        channel.send("probe", world_size=world_size(), shards=everyone)


def _worker(job_file: str) -> int:
    """A torchrun worker: set up the process group, run the job, report a failure."""
    job = json.loads(Path(job_file).read_text(encoding="utf-8"))
    rank_ = int(os.environ.get("RANK", 0))
    # A rank killed by a signal (an abort inside gloo or a CUDA library) prints its Python
    # stacks to the log instead of dying silently.
    faulthandler.enable()
    logging.basicConfig(
        level=logging.INFO if rank_ == 0 else logging.WARNING,
        format=f"%(asctime)s %(levelname)s [rank {rank_}] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    channel = FileChannel(Path(job["events"]), rank_)
    import torch
    import torch.distributed as dist

    try:
        if job["cuda"]:
            torch.cuda.set_device(local_rank())
            preflight.check_kernels(local_rank())
        dist.init_process_group("nccl" if job["cuda"] else "gloo", init_method="env://")
        module_name, _, name = job["entry"].partition(":")
        fn = getattr(importlib.import_module(module_name), name)
        fn(job["payload"], channel)
        # Every rank ends together: a rank that tears down its process group while another one
        # still works (rank 0 writing a stage) can make gloo abort the process on exit.
        dist.barrier()
        channel.send("finished")
        return 0
    except BaseException as error:
        traceback.print_exc()
        known = failures.classify(error)
        if known is not None:
            channel.send("error", code=int(known.code), message=known.message)
        else:
            message = " ".join(f"{type(error).__name__}: {error}".split())[:300]
            channel.send("error", code=None, message=f"rank {rank_} failed: {message}")
        return 1
    finally:
        if dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))
