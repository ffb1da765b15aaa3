"""Tests for specnet/metrics.py against scores worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from specnet.errors import ParameterError
from specnet.metrics import Scores, confusion_matrix, log_loss_sum, score

# 10 clips, 3 classes:
#   true a (0): predicted a, a, a, b      -> 3 right
#   true b (1): predicted b, b, c         -> 2 right
#   true c (2): predicted c, a, c         -> 2 right
TARGETS = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
PREDICTIONS = [0, 0, 0, 1, 1, 1, 2, 2, 0, 2]


def test_confusion_matrix_rows_true_columns_predicted():
    matrix = confusion_matrix(TARGETS, PREDICTIONS, 3)
    np.testing.assert_array_equal(matrix, [[3, 1, 0], [0, 2, 1], [1, 0, 2]])
    assert matrix.dtype == np.int64
    np.testing.assert_array_equal(confusion_matrix([], [], 2), np.zeros((2, 2)))
    # -1 counted as the last class, and a length mismatch was an IndexError from numpy
    for targets, predictions, message in (([0, -1], [0, 1], "targets hold class index -1; the classes are 0 to 1"),
                                          ([0, 1], [0, 2], "predictions hold class index 2; the classes are 0 to 1"),
                                          ([0, 1], [0], r"targets \(2,\) and predictions \(1,\) must be two lists of one length"),
                                          ([0.9, 1.0], [0, 1], "targets must be whole class indices, not values such as 0.9"),
                                          ([[0, 1]], [0, 1], r"targets must be one list of class indices, not an array of shape \(1, 2\)")):
        with pytest.raises(ParameterError, match=message):
            confusion_matrix(targets, predictions, 2)


def test_scores_against_hand_computed_numbers():
    s = score(TARGETS, PREDICTIONS, ["a", "b", "c"])
    assert s.n == 10
    assert s.accuracy == pytest.approx(0.7)
    np.testing.assert_array_equal(s.support, [4, 3, 3])
    # precision = diagonal / column sums (4, 3, 3)
    np.testing.assert_allclose(s.precision, [3 / 4, 2 / 3, 2 / 3])
    # recall = diagonal / row sums (4, 3, 3)
    np.testing.assert_allclose(s.recall, [3 / 4, 2 / 3, 2 / 3])
    np.testing.assert_allclose(s.f1, [0.75, 2 / 3, 2 / 3])
    assert s.macro_f1 == pytest.approx((0.75 + 2 / 3 + 2 / 3) / 3)


def test_precision_and_recall_differ():
    # true: a a b b ; predicted: a a a b
    s = score([0, 0, 1, 1], [0, 0, 0, 1], ["a", "b"])
    np.testing.assert_allclose(s.precision, [2 / 3, 1.0])
    np.testing.assert_allclose(s.recall, [1.0, 0.5])
    np.testing.assert_allclose(s.f1, [0.8, 2 / 3])
    assert s.macro_f1 == pytest.approx((0.8 + 2 / 3) / 2)
    assert s.accuracy == pytest.approx(0.75)


def test_macro_f1_averages_the_classes_in_targets_or_predictions():
    # Class c never occurs in the targets but is predicted once: its F1 is 0 (2 TP + FP + FN = 1),
    # and it counts, as in scikit-learn's f1_score(average="macro").
    s = score([0, 0, 1, 1], [0, 2, 1, 1], ["a", "b", "c"])
    np.testing.assert_array_equal(s.support, [2, 1 + 1, 0])
    np.testing.assert_allclose(s.f1, [2 * 1.0 * 0.5 / 1.5, 1.0, 0.0])
    assert s.macro_f1 == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)
    # A class absent from targets AND predictions does not count.
    t = score([0, 1], [0, 1], ["a", "b", "c"])
    assert t.macro_f1 == 1.0 and t.accuracy == 1.0


def test_no_predictions_for_a_class_gives_zero_precision_not_nan():
    s = score([0, 1, 1], [0, 0, 0], ["a", "b"])
    np.testing.assert_allclose(s.precision, [1 / 3, 0.0])
    np.testing.assert_allclose(s.recall, [1.0, 0.0])
    np.testing.assert_allclose(s.f1, [0.5, 0.0])
    assert s.macro_f1 == pytest.approx(0.25)


def test_empty_scores_are_zero():
    s = Scores(("a", "b"), np.zeros((2, 2), dtype=np.int64))
    assert s.n == 0 and s.accuracy == 0.0 and s.macro_f1 == 0.0


def test_to_dict():
    d = score(TARGETS, PREDICTIONS, ["a", "b", "c"]).to_dict()
    assert d["n"] == 10 and d["classes"] == ["a", "b", "c"]
    assert d["accuracy"] == pytest.approx(0.7)
    assert d["confusion"] == [[3, 1, 0], [0, 2, 1], [1, 0, 2]]
    assert d["per_class"]["a"] == {"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4}
    assert d["per_class"]["b"]["recall"] == pytest.approx(2 / 3)
    assert type(d["per_class"]["b"]["support"]) is int


def test_to_dict_gives_none_for_undefined_scores():
    # "c" never occurs and is never predicted; "b" occurs but is never predicted.
    d = score([0, 0, 1], [0, 0, 0], ["a", "b", "c"]).to_dict()
    assert d["per_class"]["c"] == {"precision": None, "recall": None, "f1": None, "support": 0}
    assert d["per_class"]["b"] == {"precision": None, "recall": 0.0, "f1": 0.0, "support": 1}
    assert d["per_class"]["a"]["precision"] == pytest.approx(2 / 3)
    assert d["macro_f1"] == pytest.approx((0.8 + 0.0) / 2)  # "c" is left out
    # A class predicted but never in the targets: precision and F1 0, recall undefined.
    e = score([0, 0], [0, 1], ["a", "b"]).to_dict()
    assert e["per_class"]["b"] == {"precision": 0.0, "recall": None, "f1": 0.0, "support": 0}
    assert e["macro_f1"] == pytest.approx((2 / 3 + 0.0) / 2)


def test_log_loss_sums_nats_and_clamps_a_zero_probability():
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [1.0, 0.0]])
    assert log_loss_sum(probabilities, [0, 1, 1]) == pytest.approx(-np.log(0.9) - np.log(0.2) - np.log(1e-8))
    np.testing.assert_array_equal(confusion_matrix(np.array([0.0, 1.0]), [1, 1], 2), [[0, 1], [0, 1]])  # whole floats are indices


def test_log_loss_refuses_targets_that_do_not_fit_its_rows():
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2]])
    for targets, message in (([-1, 1], "targets hold class index -1; the classes are 0 to 1"),  # was the last class
                             ([0, 2], "targets hold class index 2; the classes are 0 to 1"),
                             ([0], "2 rows of probabilities and 1 targets: give one target per row"),
                             ([0.5, 1], "targets must be whole class indices")):
        with pytest.raises(ParameterError, match=message):
            log_loss_sum(probabilities, targets)
    with pytest.raises(ParameterError, match=r"probabilities must be \(items, classes\), not an array of shape \(2,\)"):
        log_loss_sum(np.array([0.9, 0.1]), [0, 1])


def test_nan_and_text_are_not_class_indices():
    for targets, shown in (([np.nan], "nan"), ([np.inf], "inf"), (["0"], "'0'"), ([None], "None")):
        with pytest.raises(ParameterError, match=rf"^targets must be whole class indices, not values such as {shown}$"):
            confusion_matrix(targets, [0], 2)
    # Out of range in the values' own type: no wrap-around through int64.
    for targets, shown in ((np.array([2**63], dtype=np.uint64), "9223372036854775808"), ([2**70], str(2**70)), ([1e300], r"1e\+300")):
        with pytest.raises(ParameterError, match=rf"^targets hold class index {shown}; the classes are 0 to 1$"):
            confusion_matrix(targets, [0], 2)


def test_any_kind_of_whole_number_is_a_class_index():
    expected = [[1, 0], [0, 1]]
    for targets in ([0, 1], np.array([0, 1], dtype=object), np.array([0, 1], dtype=np.uint8), [False, True], [0.0, 1.0]):
        np.testing.assert_array_equal(confusion_matrix(targets, [0, 1], 2), expected)
