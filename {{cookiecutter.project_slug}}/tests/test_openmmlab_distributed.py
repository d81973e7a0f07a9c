"""Launching jobs: one process here, or several gloo processes through torchrun on the CPU."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.contract.errors import ErrorCode, ExecutorError
from {{ cookiecutter.package_name }}.frameworks.openmmlab import distributed


def test_shard_covers_every_item_exactly_once() -> None:
    items = list(range(11))
    shards = [distributed.shard(items, rank, 3) for rank in range(3)]
    assert sorted(item for part in shards for item in part) == items
    assert distributed.shard(items) == items  # not distributed: everything


def test_process_count(monkeypatch) -> None:
    monkeypatch.delenv(distributed.CPU_PROCESSES_VARIABLE, raising=False)
    assert distributed.process_count([]) == 1
    assert distributed.process_count([0, 1, 3]) == 3
    monkeypatch.setenv(distributed.CPU_PROCESSES_VARIABLE, "2")
    assert distributed.process_count([]) == 2
    assert distributed.process_count([5]) == 1
    monkeypatch.setenv(distributed.CPU_PROCESSES_VARIABLE, "two")
    with pytest.raises(ExecutorError):
        distributed.process_count([])


def test_visible_devices_follow_an_existing_mapping() -> None:
    assert distributed.visible_devices([0, 1], {}) == "0,1"
    assert distributed.visible_devices([1], {"CUDA_VISIBLE_DEVICES": "4,6"}) == "6"


def test_loader_workers_leave_the_cpu_to_the_model(monkeypatch) -> None:
    import torch

    assert distributed.loader_workers(4, cuda=True) == 4
    assert distributed.loader_workers(-1, cuda=True) == 0
    monkeypatch.setattr(distributed.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert distributed.loader_workers(2, cuda=False) == 0  # every core runs the model
    monkeypatch.setattr(torch, "get_num_threads", lambda: 5)
    assert distributed.loader_workers(2, cuda=False) == 2
    assert distributed.loader_workers(9, cuda=False) == 3


def test_free_port_is_bindable() -> None:
    port = distributed.find_free_port()
    assert 1024 <= port < 65536


def probe(tmp_path: Path, processes: int, **payload) -> list:
    """Launch :func:`distributed.probe_job` with ``payload``; the events rank 0 sent, in order
    (``probe`` events as they are, progress as ``("progress", event)``)."""
    events: list = []
    distributed.launch(
        distributed.probe_job,
        payload,
        gpu_ids=[],
        work_dir=tmp_path,
        handlers={
            "probe": events.append,
            "progress": lambda event: events.append(("progress", event)),
        },
        processes=processes,
    )
    return events


def probes(events: list) -> list:
    return [event for event in events if isinstance(event, dict)]


def test_one_process_runs_here(tmp_path: Path) -> None:
    events = probe(tmp_path, 1, items=5)
    assert probes(events) == [{"world_size": 1, "shards": [[0, 1, 2, 3, 4]]}]


@pytest.mark.slow
def test_two_gloo_processes_shard_and_gather(tmp_path: Path) -> None:
    events = probe(tmp_path, 2, items=7)
    assert probes(events) == [{"world_size": 2, "shards": [[0, 2, 4, 6], [1, 3, 5]]}]
    assert ("progress", {"fraction": 1.0}) in events
    # Job and event files are cleaned up after a successful run.
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_failing_rank_fails_the_launch_with_its_code(tmp_path: Path) -> None:
    with pytest.raises(ExecutorError) as raised:
        probe(tmp_path, 2, items=4, fail_rank=1, error="CUDA out of memory (simulated)")
    assert raised.value.code == ErrorCode.OUT_OF_MEMORY
    with pytest.raises(RuntimeError, match="rank 0 failed: RuntimeError: plain bug"):
        probe(tmp_path, 2, items=4, fail_rank=0, error="plain bug")


@pytest.mark.slow
def test_a_crash_after_the_job_finished_on_every_rank_loses_nothing(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        events = probe(tmp_path, 2, items=5, abort_rank=1, abort_when="exit")
    assert probes(events) == [{"world_size": 2, "shards": [[0, 2, 4], [1, 3]]}]
    assert "one failed while shutting down" in caplog.text


@pytest.mark.slow
def test_a_rank_killed_during_the_job_fails_the_launch(tmp_path: Path) -> None:
    # Rank 0 either sees its peer's connection reset or is stopped with it: a failure either way.
    with pytest.raises(RuntimeError, match="failed"):
        probe(tmp_path, 2, items=5, abort_rank=1, abort_when="job")
