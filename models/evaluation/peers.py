"""The single-stage peers a practitioner would pick instead of a two-stage system: popularity, EASE^R, RP3beta,
iALS and item-kNN, each scoring the whole catalogue exactly for a user (no ANN, no pruning), seen items removed.

They are evaluated on the same split and users as the two-stage system, with hyperparameters chosen on the
validation cut (``models.evaluation.tuning``); their tuned hyperparameters also configure stage 1's sources.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.data import columns as C
from models.evaluation.metrics import evaluate_rankings
from models.retrieval.als import AlsParams, fit_als
from models.retrieval.item_item import ITEM_ITEM_KINDS, fit_item_item
from models.retrieval.matrices import interaction_matrix

PEERS = ("ease", "rp3beta", "ials", "item_knn")
"""The strong single-stage peers of the evaluation protocol (popularity is reported beside them, untuned)."""
BATCH = 512


@dataclass
class PeerScorer:
    """Scores a batch of users (rows of a users × catalogue history matrix) over the whole catalogue."""

    name: str
    scores: Callable[[np.ndarray, sp.csr_matrix], np.ndarray]
    """(user rows in the fit matrix, their history rows) → users × catalogue scores."""


def fit_peer(
    name: str, params: Mapping[str, float], train: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray,
    max_items: int, threads: int, seed: int,
) -> PeerScorer:  # fmt: skip
    """Fit one peer on ``train`` (users ``user_ids`` × catalogue ``item_ids``)."""
    matrix = interaction_matrix(train, user_ids, item_ids)
    if name == "popularity":
        counts = np.asarray(matrix.sum(axis=0)).ravel().astype(np.float32)
        return PeerScorer(name, lambda rows, history: np.tile(counts, (len(rows), 1)))
    if name in ITEM_ITEM_KINDS:
        model = fit_item_item(name, matrix, params, max_items)
        return PeerScorer(name, lambda rows, history: model.scores(history))
    if name == "ials":
        als = fit_als(train, item_ids, ials_params(params, seed), threads=threads)
        known = pd.Index(als.user_ids).get_indexer(user_ids)

        def ials_scores(rows: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
            vectors = np.stack(
                [als.user_factors[known[r]] if known[r] >= 0 else als.fold_in(item_ids[history[i].indices].tolist())
                 for i, r in enumerate(rows)]
            )  # fmt: skip
            return vectors @ als.item_factors.T

        return PeerScorer(name, ials_scores)
    raise ValueError(f"unknown peer '{name}', expected popularity or one of {', '.join(PEERS)}")


def ials_params(params: Mapping[str, float], seed: int) -> AlsParams:
    """iALS as the peer and stage 1 use it: binary confidence, ``alpha`` scaling, ``factors`` and ``regularization``."""
    return AlsParams(int(params["factors"]), float(params["regularization"]), int(params["iterations"]),
                     float(params["alpha"]), None, seed)  # fmt: skip


def top_k_lists(
    scorer: PeerScorer, train: pd.DataFrame, users: Sequence[str], user_ids: np.ndarray, item_ids: np.ndarray,
    k: int = 10,
) -> dict[str, list[str]]:  # fmt: skip
    """Each user's top ``k`` items by the peer's exact scores, items seen in ``train`` removed."""
    history = interaction_matrix(train, user_ids, item_ids)
    row_of = pd.Index(user_ids).get_indexer(list(users))
    rankings: dict[str, list[str]] = {}
    for start in range(0, len(users), BATCH):
        rows = row_of[start : start + BATCH]
        seen = history[rows]
        scores = scorer.scores(rows, seen).astype(np.float32, copy=False)
        scores[seen.nonzero()] = -np.inf
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        for user, picked in zip(users[start : start + BATCH], top, strict=True):
            rankings[user] = item_ids[picked].tolist()
    return rankings


def peer_ndcg(
    name: str, params: Mapping[str, float], train: pd.DataFrame, relevant: Mapping[str, set[str]],
    item_ids: np.ndarray, max_items: int, threads: int, seed: int,
) -> float:  # fmt: skip
    """NDCG@10 of a peer fitted on ``train`` for the users of ``relevant`` (a tuning trial's objective)."""
    user_ids = np.array(sorted(train[C.USER_ID].unique()), dtype=str)
    scorer = fit_peer(name, params, train, user_ids, item_ids, max_items, threads, seed)
    known = set(user_ids.tolist())
    users = [u for u in relevant if u in known]
    rankings = top_k_lists(scorer, train, users, user_ids, item_ids)
    return evaluate_rankings(rankings, relevant, metrics=("ndcg",), ks=(10,))["ndcg@10"]
