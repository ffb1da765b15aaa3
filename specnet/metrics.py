"""Classification scores from true and predicted class indices, and the log loss of probabilities."""

from __future__ import annotations

import numbers
import operator
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .errors import ParameterError


def _class_indices(name: str, values: Sequence[int], num_classes: int) -> np.ndarray:
    """``values`` as an int64 array (N,) of class indices in ``[0, num_classes)``: integers, bools,
    or whole finite floats; else a ParameterError (-1 would count as the last class, and 1.7 as 1)."""
    indices = np.asarray(values)
    if indices.ndim != 1:
        raise ParameterError(f"{name} must be one list of class indices, not an array of shape {indices.shape}")
    if indices.dtype == object:  # Python objects: ints (of any size) pass, anything else is named
        try:
            indices = np.array([operator.index(v) for v in indices], dtype=object)
        except TypeError:
            raise ParameterError(f"{name} must be whole class indices, not values such as "
                                 f"{next(v for v in indices if not isinstance(v, numbers.Integral))!r}") from None
    elif np.issubdtype(indices.dtype, np.floating):
        fractional = indices[~np.isfinite(indices) | (indices != np.round(indices))]
        if fractional.size:
            raise ParameterError(f"{name} must be whole class indices, not values such as {fractional[0].item()!r}")
    elif indices.size and not (np.issubdtype(indices.dtype, np.integer) or indices.dtype == bool):
        raise ParameterError(f"{name} must be whole class indices, not values such as {indices[0].item()!r}")
    if indices.size and not (0 <= indices.min() and indices.max() < num_classes):  # in the values' own type: no wrap-around
        raise ParameterError(f"{name} hold class index {indices.min() if indices.min() < 0 else indices.max()}; "
                             f"the classes are 0 to {num_classes - 1}")
    return indices.astype(np.int64)


def confusion_matrix(targets: Sequence[int], predictions: Sequence[int], num_classes: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class; ``targets`` and ``predictions``
    are class indices in ``[0, num_classes)``, one of each per item (else a ParameterError)."""
    pairs = _class_indices("targets", targets, num_classes), _class_indices("predictions", predictions, num_classes)
    if pairs[0].shape != pairs[1].shape:
        raise ParameterError(f"targets {pairs[0].shape} and predictions {pairs[1].shape} must be two lists of one length")
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, pairs, 1)
    return matrix


def log_loss_sum(probabilities: np.ndarray, targets: Sequence[int]) -> float:
    """Summed cross-entropy (nats) of ``probabilities`` (N, K) against class indices ``targets`` (N,);
    a probability under 1e-8 counts as 1e-8, so one confident mistake cannot make it infinite."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2:
        raise ParameterError(f"probabilities must be (items, classes), not an array of shape {probabilities.shape}")
    indices = _class_indices("targets", targets, probabilities.shape[1])
    if len(indices) != len(probabilities):
        raise ParameterError(f"{len(probabilities)} rows of probabilities and {len(indices)} targets: give one target per row")
    picked = probabilities[np.arange(len(indices)), indices]
    return float(-np.log(np.maximum(picked, 1e-8)).sum())


@dataclass(frozen=True)
class Scores:
    """Accuracy, macro-F1 and per-class precision/recall/F1 of one evaluation."""

    classes: tuple[str, ...]
    confusion: np.ndarray  # (K, K), rows true, columns predicted

    @property
    def n(self) -> int:
        """Items scored."""
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        """Fraction right, in [0, 1] (0 when nothing was scored)."""
        return float(np.trace(self.confusion) / self.n) if self.n else 0.0

    @property
    def support(self) -> np.ndarray:
        """(K,) items of each true class."""
        return self.confusion.sum(axis=1)

    @property
    def precision(self) -> np.ndarray:
        """(K,) right / predicted as the class: 0 for a class nothing was predicted as."""
        predicted = self.confusion.sum(axis=0)
        return np.divide(np.diag(self.confusion), predicted, out=np.zeros(len(self.classes)), where=predicted > 0)

    @property
    def recall(self) -> np.ndarray:
        """(K,) right / items of the class: 0 for a class with no items."""
        return np.divide(np.diag(self.confusion), self.support, out=np.zeros(len(self.classes)), where=self.support > 0)

    @property
    def f1(self) -> np.ndarray:
        """(K,) 2 TP / (2 TP + FP + FN) per class: 0 for a class predicted but absent from the targets."""
        seen = self.support + self.confusion.sum(axis=0)  # 2 TP + FP + FN
        return np.divide(2 * np.diag(self.confusion), seen, out=np.zeros(len(self.classes)), where=seen > 0)

    @property
    def macro_f1(self) -> float:
        """Mean F1 over the classes in the targets or the predictions (scikit-learn's macro
        average), so that predicting a class absent from the test data costs as a mistake."""
        present = (self.support + self.confusion.sum(axis=0)) > 0
        return float(self.f1[present].mean()) if present.any() else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values for JSON. A score whose denominator is zero is None (JSON null):
        precision of a class nothing was predicted as, recall of a class with no examples, F1
        of a class neither in the targets nor predicted."""
        predicted = self.confusion.sum(axis=0)
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "n": self.n,
            "per_class": {
                name: {
                    "precision": float(self.precision[i]) if predicted[i] else None,
                    "recall": float(self.recall[i]) if self.support[i] else None,
                    "f1": float(self.f1[i]) if self.support[i] or predicted[i] else None,
                    "support": int(self.support[i]),
                }
                for i, name in enumerate(self.classes)
            },
            "classes": list(self.classes),
            "confusion": self.confusion.tolist(),
        }


def score(targets: Sequence[int], predictions: Sequence[int], classes: Sequence[str]) -> Scores:
    """Scores of ``predictions`` against ``targets`` (class indices into ``classes``)."""
    return Scores(tuple(classes), confusion_matrix(targets, predictions, len(classes)))
