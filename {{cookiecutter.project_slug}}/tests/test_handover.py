"""The handover of mining's predictions to the inference of the same run."""

from __future__ import annotations

from {{ cookiecutter.package_name }}.contract.handover import PredictionHandover


class Rows:
    """Stands in for rows files: records whether they were deleted."""

    def __init__(self) -> None:
        self.removed = False

    def remove(self) -> None:
        self.removed = True


def test_inference_takes_what_mining_kept_for_it():
    handover: PredictionHandover[Rows] = PredictionHandover()
    rows = Rows()
    handover.keep("model+thresholds+candidates", rows)
    assert handover.take("model+thresholds+candidates") is rows
    assert not rows.removed  # the taker reads, then removes them
    assert handover.take("model+thresholds+candidates") is None  # taken once


def test_predictions_for_other_settings_are_deleted_not_used():
    handover: PredictionHandover[Rows] = PredictionHandover()
    rows = Rows()
    handover.keep("threshold 0.3", rows)
    assert handover.take("threshold 0.5") is None
    assert rows.removed


def test_one_set_at_a_time():
    handover: PredictionHandover[Rows] = PredictionHandover()
    first, second = Rows(), Rows()
    handover.keep("a", first)
    handover.keep("b", second)
    assert first.removed and not second.removed
    assert handover.take("a") is None and second.removed


def test_discard_deletes_what_is_left():
    handover: PredictionHandover[Rows] = PredictionHandover()
    rows = Rows()
    handover.keep("a", rows)
    handover.discard()
    assert rows.removed and handover.take("a") is None
    handover.discard()  # nothing kept: nothing to do
