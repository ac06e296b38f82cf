"""Row lookups of ids, as pandas' get_indexer gives them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.recommender.recommender import positions_in
from models.retrieval.lookup import RowLookup


def test_rows_are_get_indexers_for_known_and_unknown_ids():
    ids = np.array([f"i{r:03d}" for r in np.random.default_rng(0).permutation(500)])
    lookup = RowLookup(ids)
    wanted = [ids[7], "missing", ids[499], ids[7], np.str_(ids[3])]
    np.testing.assert_array_equal(lookup.rows(wanted), pd.Index(ids).get_indexer(wanted))
    assert lookup.row(ids[42]) == 42 and lookup.row("missing") == -1
    assert lookup.rows([]).dtype == np.int64 and len(lookup.rows([])) == 0


def test_repeated_ids_are_refused():
    with pytest.raises(ValueError, match="1 repeated"):
        RowLookup(["a", "b", "a"])


def test_positions_of_shown_rows_among_the_candidates():
    candidates = np.array([40, 7, 19, 3])
    np.testing.assert_array_equal(positions_in(candidates, np.array([3, 40, 99, 19])), [3, 0, -1, 2])
    np.testing.assert_array_equal(positions_in(np.array([], dtype=np.int64), np.array([5])), [-1])
