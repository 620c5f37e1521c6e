"""Retrieval metrics, checked on 4-vector cases worked out by hand (the comments give the arithmetic)."""

import numpy as np
import pytest

from imgsearch.evaluation import labelled_metrics, near_dup_recall
from imgsearch.vectors import overlap_recall, top_k, unit


# unit directions: a0 = (1, 0), a1 ~ (0.994, 0.110), b0 ~ (0.0995, 0.995), b1 = (0.707, 0.707)
VECS = np.array([[1, 0], [0.9, 0.1], [0.1, 1], [0.5, 0.5]], np.float32)


def test_labelled_metrics_by_hand():
    # cosines: a0-a1 .994, a0-b1 .707, a0-b0 .100, a1-b1 .781, a1-b0 .209, b0-b1 .774
    # rankings: a0 -> a1 b1 b0 (AP 1); a1 -> a0 b1 b0 (AP 1); b0 -> b1 a1 a0 (AP 1); b1 -> a1 b0 a0 (AP 1/2)
    m = labelled_metrics(VECS, ["A", "A", "B", "B"], ks=(1, 2))
    assert m["mAP"] == pytest.approx((1 + 1 + 1 + 0.5) / 4)
    assert m["P@1"] == pytest.approx(0.75) and m["recall@1"] == pytest.approx(0.75)
    assert m["recall@2"] == pytest.approx(1.0) and m["queries"] == 4 and m["queries_without_a_match"] == 0


def test_near_dup_recall_by_hand():
    # q0 ~ (0.999, 0.050): nearest a0 (.999) then a1 (.998) -> its target a0 is first.
    # q1 ~ (0.737, 0.676): b1 .999, a1 .807, b0 .746 -> its target b0 is third.
    q = np.array([[1, 0.05], [0.6, 0.55]], np.float32)
    m = near_dup_recall(q, np.array([0, 2]), VECS, ks=(1, 2, 3))
    assert m == {"recall@1": 0.5, "recall@2": 0.5, "recall@3": 1.0}


def test_overlap_recall_by_hand():
    assert overlap_recall([["a", "b", "c"], ["x", "y", "z"]], [["a", "c", "d"], ["x", "y", "z"]], 3) == pytest.approx(
        (2 / 3 + 1) / 2)


def test_exact_top_k_and_leave_one_out_by_hand():
    # cosines to a0: a1 .994, b1 .707, b0 .100; to b0: b1 .774, a1 .209, a0 .100
    assert top_k(VECS[[0, 2]], VECS, 3).tolist() == [[0, 1, 3], [2, 3, 1]]
    assert top_k(VECS[[0, 2]], VECS, 2, exclude=np.array([0, 2])).tolist() == [[1, 3], [3, 1]]
    u = unit(np.array([[3, 4], [0, 0]], np.float32))
    assert u.tolist() == [[0.6000000238418579, 0.800000011920929], [0, 0]]
