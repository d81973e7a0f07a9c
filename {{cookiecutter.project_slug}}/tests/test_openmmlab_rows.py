"""Rows files: what a prediction job's ranks hand to the executor, read back in candidate order."""

from __future__ import annotations

from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.frameworks.openmmlab.rows import RowFiles


def write_shards(rows: RowFiles, count: int, world: int, order=None) -> None:
    """``world`` ranks' rows of ``count`` candidates, each rank its ``[rank::world]`` shard."""
    for rank in range(world):
        indices = list(range(rank, count, world))
        with rows.writer(rank) as writer:
            for index in order(indices) if order else indices:
                writer.write(index, {"score": index / 10, "name": f"image-{index}"})


@pytest.mark.parametrize("world", [1, 2, 3])
def test_ranks_rows_come_back_in_candidate_order(tmp_path: Path, world: int) -> None:
    rows = RowFiles.create(tmp_path, "predictions")
    write_shards(rows, 11, world)
    merged = list(rows.merged(11))
    assert [index for index, _ in merged] == list(range(11))
    assert [row["name"] for _, row in merged] == [f"image-{index}" for index in range(11)]


def test_a_rank_writing_out_of_order_is_put_in_order(tmp_path: Path) -> None:
    # A loader that batches images of equal size predicts them out of candidate order.
    rows = RowFiles.create(tmp_path, "segmentation")
    write_shards(rows, 20, 2, order=lambda indices: indices[1::2] + indices[::2])
    assert [index for index, _ in rows.merged(20)] == list(range(20))
    assert sorted(path.name for path in rows.directory.iterdir()) == [
        "rank-0000.jsonl",
        "rank-0001.jsonl",
    ]


@pytest.mark.parametrize(
    "indices, message",
    [([0, 1, 1, 2], "candidate 1 came twice"), ([0, 2, 3], "candidate 1 came not at all")],
)
def test_a_candidate_twice_or_never_fails_loudly(tmp_path: Path, indices, message) -> None:
    rows = RowFiles.create(tmp_path, "predictions")
    with rows.writer(0) as writer:
        for index in indices:
            writer.write(index, {})
    with pytest.raises(RuntimeError, match=message):
        list(rows.merged(4))


def test_the_last_candidate_missing_fails_loudly(tmp_path: Path) -> None:
    rows = RowFiles.create(tmp_path, "predictions")
    write_shards(rows, 3, 1)
    with pytest.raises(RuntimeError, match="candidate 3 came not at all"):
        list(rows.merged(4))


def test_remove_deletes_the_folder(tmp_path: Path) -> None:
    rows = RowFiles.create(tmp_path, "mining")
    write_shards(rows, 4, 2)
    rows.remove()
    assert list(tmp_path.iterdir()) == []
