"""Near-duplicate groups on vectors worked out by hand."""

import numpy as np
import pytest

from imgsearch.duplicates import find_groups, pair_scores


def test_groups_are_connected_components():
    v = np.array([[1, 0, 0], [0.95, 0.31, 0], [0.8, 0.6, 0], [0, 0, 1], [0, 0.1, 1], [0, 1, 0]], np.float32)
    # cos(0,1) = 0.95/0.9993 = 0.9507 and cos(1,2) = 0.946/0.9993 = 0.9467 link; cos(0,2) = 0.8 does not, but 2
    # joins through 1. cos(3,4) = 0.995 links. 5 is alone.
    groups = find_groups(v, threshold=0.9, pixels=[1, 5, 2, 0, 0, 0])
    assert [g.members for g in groups] == [[1, 2, 0], [3, 4]]  # largest image first
    assert groups[0].min_link == pytest.approx(0.9467, abs=1e-4)
    assert find_groups(v, threshold=0.999) == []
    assert pair_scores([["a", "b", "c"]], [["a", "b"], ["c", "d"]]) == {
        "precision": 1 / 3, "recall": 1 / 2, "predicted_pairs": 3, "true_pairs": 2}
