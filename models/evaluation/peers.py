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
from models.retrieval.als import AlsParams, CollaborativeModel, fit_als
from models.retrieval.item_item import ITEM_ITEM_KINDS, ItemItemModel, fit_item_item
from models.retrieval.matrices import interaction_matrix

PEERS = ("ease", "rp3beta", "ials", "item_knn")
"""The strong single-stage peers of the evaluation protocol (popularity is reported beside them, untuned)."""
BATCH = 512
SCORING_BYTES = 256 * 2**20
"""What one batch's dense users × catalogue arrays may take: the scores, their negation and argpartition's int64
indices, ~24 bytes an entry. At 1 M items the evaluation's 200 users in one batch took 3.6 GB on top of the step's
other memory, its peak; now a batch is 11 users there."""


def users_per_batch(n_items: int) -> int:
    """Users scored at once: ``BATCH``, fewer when the catalogue is large (``SCORING_BYTES``)."""
    return int(np.clip(SCORING_BYTES // (24 * max(n_items, 1)), 1, BATCH))


@dataclass
class PeerScorer:
    """Scores a batch of users over the whole catalogue."""

    name: str
    scores: Callable[[np.ndarray, sp.csr_matrix], np.ndarray]
    """(the users' rows in the history matrix, their history rows) → users × catalogue scores."""


def item_item_scorer(model: ItemItemModel) -> PeerScorer:
    return PeerScorer(model.kind, lambda rows, history: model.scores(history))


def ials_scorer(als: CollaborativeModel, user_ids: np.ndarray, item_ids: np.ndarray) -> PeerScorer:
    """iALS inner products; a user the model was not trained on gets a fold-in vector from their history."""
    trained = pd.Index(als.user_ids).get_indexer(user_ids)
    items = pd.Index(als.item_ids).get_indexer(item_ids)
    factors = np.where(items[:, None] >= 0, als.item_factors[np.maximum(items, 0)], 0.0).astype(np.float32)

    def scores(rows: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        vectors = [als.user_factors[trained[r]] if trained[r] >= 0 else als.fold_in(item_ids[history[i].indices].tolist())
                   for i, r in enumerate(rows)]  # fmt: skip
        return np.stack(vectors) @ factors.T

    return PeerScorer("ials", scores)


def popularity_scorer(train: pd.DataFrame, item_ids: np.ndarray) -> PeerScorer:
    counts = train.groupby(C.ITEM_ID).size().reindex(item_ids).fillna(0).to_numpy(dtype=np.float32)
    return PeerScorer("popularity", lambda rows, history: np.tile(counts, (len(rows), 1)))


def fit_peer(
    name: str, params: Mapping[str, float], train: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray,
    max_items: int, threads: int, seed: int,
) -> PeerScorer:  # fmt: skip
    """Fit one peer on ``train`` (users ``user_ids`` × catalogue ``item_ids``)."""
    if name in ITEM_ITEM_KINDS:
        return item_item_scorer(fit_item_item(name, interaction_matrix(train, user_ids, item_ids), params, max_items))
    if name == "ials":
        return ials_scorer(
            fit_als(train, item_ids, AlsParams.from_params(params, seed), threads=threads), user_ids, item_ids
        )
    raise ValueError(f"unknown peer '{name}', expected one of {', '.join(PEERS)}")


def top_k_lists(
    scorers: Sequence[PeerScorer], train: pd.DataFrame, users: Sequence[str], user_ids: np.ndarray,
    item_ids: np.ndarray, k: int = 10,
) -> dict[str, dict[str, list[str]]]:  # fmt: skip
    """Per scorer, each user's top ``k`` items, items seen in ``train`` removed; a user without any history gets
    the popularity order (every peer alike)."""
    history = interaction_matrix(train, user_ids, item_ids)
    popularity = popularity_scorer(train, item_ids).scores(np.zeros(1, dtype=np.int64), history[:1])[0]
    row_of = pd.Index(user_ids).get_indexer(list(users))
    if (row_of < 0).any():
        raise KeyError(f"users missing from user_ids, e.g. {list(np.asarray(users)[row_of < 0][:3])}")
    rankings: dict[str, dict[str, list[str]]] = {scorer.name: {} for scorer in scorers}
    batch = users_per_batch(len(item_ids))
    for start in range(0, len(users), batch):
        rows = row_of[start : start + batch]
        seen = history[rows]
        empty = np.diff(seen.indptr) == 0
        for scorer in scorers:
            scores = np.asarray(scorer.scores(rows, seen), dtype=np.float32)
            scores[empty] = popularity
            scores[seen.nonzero()] = -np.inf
            top = leading_columns(scores, k)
            for user, picked in zip(users[start : start + batch], top, strict=True):
                rankings[scorer.name][user] = item_ids[picked].tolist()
    return rankings


def leading_columns(scores: np.ndarray, k: int) -> np.ndarray:
    """Each row's ``k`` highest-scoring columns, best first, equal scores by column: the order of a stable full sort.
    ``np.argpartition`` alone orders ties as its algorithm (and the CPU's build of it) happens to, and counts tie
    often (the popularity peer on MovieLens moved between two machines of one kind)."""
    k = min(k, scores.shape[1])
    top = np.sort(np.argpartition(-scores, k - 1, axis=1)[:, :k], axis=1)
    cut = np.take_along_axis(scores, top, axis=1).min(axis=1)
    for row in np.flatnonzero((scores >= cut[:, None]).sum(axis=1) > k):  # more columns tie at the cut than fit
        tied = np.flatnonzero(scores[row] == cut[row])
        above = top[row][scores[row, top[row]] > cut[row]]
        top[row] = np.sort(np.concatenate([above, tied[: k - len(above)]]))
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def peer_ndcg(
    name: str, params: Mapping[str, float], train: pd.DataFrame, relevant: Mapping[str, set[str]],
    item_ids: np.ndarray, max_items: int, threads: int, seed: int,
) -> float:  # fmt: skip
    """NDCG@10 of a peer fitted on ``train`` for the users of ``relevant`` (a tuning trial's objective)."""
    users = sorted(relevant)
    user_ids = np.array(sorted(set(train[C.USER_ID]) | set(users)), dtype=str)
    scorer = fit_peer(name, params, train, user_ids, item_ids, max_items, threads, seed)
    rankings = top_k_lists([scorer], train, users, user_ids, item_ids)[name]
    return evaluate_rankings(rankings, relevant, metrics=("ndcg",), ks=(10,))["ndcg@10"]
