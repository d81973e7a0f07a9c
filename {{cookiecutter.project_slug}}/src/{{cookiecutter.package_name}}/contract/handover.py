"""Predictions one task of a run leaves for the next: mining's, for inference.

A platform task may ask for mining and inference together (``run_mining`` and ``run_infer``;
docs/protocol.md#how-ymir-runs). The run (``__main__``) then executes mining, then inference,
in one process, and gives both task contexts the same :class:`PredictionHandover`
(``ctx.handover``; None when inference does not follow mining). A framework whose mining
already predicts every candidate with the inference settings keeps those predictions there
under a key naming what they depend on (model files, thresholds, classes, candidates), and
inference takes them instead of running the model again when its key is the same. The run
discards whatever is left when the task ends, so no prediction outlives its run and no module
keeps state between tasks.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar


class StoredPredictions(Protocol):
    """Predictions kept on disk (e.g. rows files); ``remove()`` deletes them."""

    def remove(self) -> None: ...


Predictions = TypeVar("Predictions", bound=StoredPredictions)


class PredictionHandover(Generic[Predictions]):
    """At most one set of predictions, from mining to the inference of the same run."""

    def __init__(self) -> None:
        self._key: str | None = None
        self._predictions: Predictions | None = None

    def keep(self, key: str, predictions: Predictions) -> None:
        """Keep ``predictions`` for an inference whose key is ``key`` (replacing any kept)."""
        self.discard()
        self._key, self._predictions = key, predictions

    def take(self, key: str) -> Predictions | None:
        """The kept predictions if they were made for ``key``, else None; either way nothing
        is kept afterwards (predictions for another key are deleted). The caller removes what
        it takes."""
        if self._predictions is not None and key == self._key:
            predictions = self._predictions
            self._key, self._predictions = None, None
            return predictions
        self.discard()
        return None

    def discard(self) -> None:
        """Delete whatever is kept."""
        predictions, self._key, self._predictions = self._predictions, None, None
        if predictions is not None:
            predictions.remove()
