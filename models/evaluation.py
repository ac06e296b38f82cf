"""Joint offline evaluation under the shared protocol, through ``Recommender.recommend`` — the service's path.

Every method ranks for the same test users as of their cut time, excluding items seen in train: popularity
(train counts), the single-stage collaborative peer (exact ALS scores), the stage-1 merged order, and the
two-stage recommender. Candidate-set sizing sweeps K and keeps the smallest K within a tolerance of the best NDCG.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from models import columns as C
from models.collaborative import CollaborativeModel
from models.metrics import evaluate_rankings
from models.recommend import Recommender, Request
from models.splits import Split, relevant_items

METRICS = ("ndcg", "recall", "map")
K_SWEEP = (50, 100, 200, 300, 500, 1000)


@dataclass(frozen=True)
class EvaluationUsers:
    """Test users (with a positive) and, per user, the query time and the user features as of that time."""

    users: list[str]
    as_of: dict[str, float]
    features: dict[str, dict]
    relevant: dict[str, set[str]]
    seen: dict[str, set[str]]


def evaluation_users(
    split: Split, user_features: Callable[[list[str], pd.Series], pd.DataFrame], max_users: int | None, seed: int
) -> EvaluationUsers:
    relevant = relevant_items(split)
    users = sorted(relevant)
    if max_users is not None and len(users) > max_users:
        users = sorted(np.random.default_rng(seed).choice(users, size=max_users, replace=False).tolist())
    cut = split.cut_times().loc[users]
    frame = user_features(users, cut).set_index(C.USER_ID)
    seen = split.history.groupby(C.USER_ID)[C.ITEM_ID].agg(set).to_dict()
    return EvaluationUsers(
        users=users,
        as_of={u: float(t.value / 1e9) for u, t in cut.items()},
        features={u: frame.loc[u].to_dict() for u in users},
        relevant={u: relevant[u] for u in users},
        seen={u: seen.get(u, set()) for u in users},
    )


def rank_with_recommender(
    recommender: Recommender, users: EvaluationUsers, k: int = 10
) -> tuple[dict[str, list[str]], list[float]]:
    """Top-k lists through the service's path, and the per-request latency (ms) of each call."""
    rankings: dict[str, list[str]] = {}
    latencies = []
    for user in users.users:
        started = time.perf_counter()
        result = recommender.recommend(Request(user_id=user, k=k, as_of=users.as_of[user]), users.features[user])
        latencies.append((time.perf_counter() - started) * 1000.0)
        rankings[user] = [item.item_id for item in result.items]
    return rankings, latencies


def rank_by_scores(
    scores: Callable[[str], np.ndarray], item_ids: np.ndarray, users: EvaluationUsers, k: int = 10
) -> dict[str, list[str]]:
    """Top-k of a full score vector per user, seen items removed."""
    rankings = {}
    for user in users.users:
        values = scores(user).astype(np.float64).copy()
        if users.seen[user]:
            values[np.isin(item_ids, list(users.seen[user]))] = -np.inf
        top = np.argpartition(-values, k)[:k]
        rankings[user] = item_ids[top[np.argsort(-values[top], kind="stable")]].tolist()
    return rankings


def popularity_scores(train: pd.DataFrame, item_ids: np.ndarray) -> np.ndarray:
    counts = train.groupby(C.ITEM_ID).size()
    return counts.reindex(item_ids).fillna(0).to_numpy(dtype=np.float64)


def collaborative_scorer(
    model: CollaborativeModel, item_ids: np.ndarray, history: Mapping[str, Sequence[str]]
) -> Callable[[str], np.ndarray]:
    """Exact ALS scores over the catalogue (the single-stage peer), fold-in for users without a trained vector."""
    rows = pd.Index(model.item_ids).get_indexer(item_ids)

    def scores(user: str) -> np.ndarray:
        vector = model.user_vector(user)
        if vector is None:
            vector = model.fold_in(list(history.get(user, [])))
        values = np.where(rows >= 0, model.item_factors[rows] @ vector, -np.inf)
        return values

    return scores


def metrics_of(rankings: Mapping[str, Sequence[str]], users: EvaluationUsers, k: int = 10) -> dict[str, float]:
    return evaluate_rankings(rankings, users.relevant, metrics=METRICS, ks=(k,))


def sweep_candidate_k(
    recommender: Recommender, users: EvaluationUsers, ks: Sequence[int] = K_SWEEP, tolerance: float = 0.01, k: int = 10
) -> dict[str, object]:
    """NDCG@k and latency per candidate-set size; choose the smallest K whose NDCG is within ``tolerance`` of the best."""
    rows = []
    for candidates in ks:
        variant = replace(recommender, k_candidates=candidates)
        rankings, latencies = rank_with_recommender(variant, users, k)
        scores = metrics_of(rankings, users, k)
        rows.append({"k_candidates": candidates, f"ndcg@{k}": scores[f"ndcg@{k}"],
                     "latency_p50_ms": float(np.percentile(latencies, 50)),
                     "latency_p99_ms": float(np.percentile(latencies, 99))})  # fmt: skip
    best = max(row[f"ndcg@{k}"] for row in rows)
    chosen = min(row["k_candidates"] for row in rows if row[f"ndcg@{k}"] >= (1.0 - tolerance) * best)
    return {"rows": rows, "chosen_k": int(chosen), "best_ndcg": best, "tolerance": tolerance}
