"""The peers' top-k lists: batches of users are sized by the catalogue, and the batch size changes no list."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.data import columns as C
from models.evaluation import peers
from models.evaluation.peers import BATCH, fit_peer, popularity_scorer, top_k_lists, users_per_batch
from models.retrieval.matrices import interaction_matrix


def test_a_batch_shrinks_with_the_catalogue_and_never_to_zero():
    assert users_per_batch(20_000) == BATCH
    assert users_per_batch(1_000_000) == 11  # 256 MB of ~24-byte entries over a million items
    assert users_per_batch(10**12) == 1


def test_the_batch_size_changes_no_list(monkeypatch: pytest.MonkeyPatch):
    rng = np.random.default_rng(0)
    train = pd.DataFrame({C.USER_ID: [f"u{u}" for u in rng.integers(0, 40, 600)],
                          C.ITEM_ID: [f"i{i}" for i in rng.zipf(1.5, 600) % 60]})  # fmt: skip
    item_ids = np.array(sorted(set(train[C.ITEM_ID]) | {"never-seen"}), dtype=str)
    users = [f"u{u}" for u in range(40)] + ["cold"]  # a user without history gets the popularity order
    user_ids = np.array(sorted(set(train[C.USER_ID]) | set(users)), dtype=str)
    ease = fit_peer("ease", {"l2": 5.0}, train, user_ids, item_ids, max_items=100, threads=1, seed=0)
    scorers = [ease, popularity_scorer(train, item_ids)]
    whole = top_k_lists(scorers, train, users, user_ids, item_ids)
    monkeypatch.setattr(peers, "SCORING_BYTES", 24 * len(item_ids) * 3)  # three users a batch
    assert users_per_batch(len(item_ids)) == 3
    assert top_k_lists(scorers, train, users, user_ids, item_ids) == whole
    seen = interaction_matrix(train, user_ids, item_ids)
    first = int(np.flatnonzero(user_ids == "u0")[0])
    assert not set(whole["ease"]["u0"]) & set(item_ids[seen[first].indices])  # seen items are never listed
    assert whole["ease"]["cold"] == whole["popularity"]["cold"]


def test_leading_columns_order_as_a_stable_full_sort_does_with_many_ties():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, size=(50, 300)).astype(np.float32)  # counts: most columns tie
    scores[:, 7] = -np.inf  # a seen item
    for k in (1, 10, 299, 300):
        expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(peers.leading_columns(scores, k), expected)
