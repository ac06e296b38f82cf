"""The neighbour-agreement bench's measures: exact neighbours, shared share, own-category share."""

from __future__ import annotations

import numpy as np

from bench.text_neighbours import lines, nearest, overlap, same_category


def test_neighbours_exclude_the_item_and_the_shares_count_what_they_say() -> None:
    vectors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    found = nearest(vectors, 1)
    assert found[:, 0].tolist() == [1, 0, 3, 2]  # the closest other row, never the row itself
    assert overlap(found, found) == 1.0
    assert overlap(found, np.array([[1], [2], [0], [1]])) == 0.25
    assert same_category(found, np.array(["a", "a", "b", "b"])) == 1.0
    assert same_category(found, np.array(["a", "b", "a", "b"])) == 0.0
    table = "\n".join(lines({"texts": 4, "k": 1, "backends": {"static": {
        "texts_per_s": 22400.0, "overlap_with_torch": 0.425, "same_category_at_10": 0.978}}}))  # fmt: skip
    assert "| static | 22,400 | 0.425 | 0.978 |" in table
