"""Joint offline evaluation under the shared protocol, through ``Recommender.recommend`` — the service's path.

Every method ranks for the same test users as of their cut time, excluding items seen in train: popularity
(train counts), the single-stage collaborative peer (exact ALS scores), the stage-1 merged order, and the
two-stage recommender. Candidate-set sizing sweeps K and keeps the smallest K within a tolerance of the best NDCG.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models import columns as C
from models.collaborative import CollaborativeModel
from models.metrics import evaluate_rankings
from models.ranker import Ranker
from models.recommend import Recommender, Request, Retrieval
from models.rules import apply_rules
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
    conversions: dict[str, set[str]]
    """Per user with one, the held-out add-to-carts and purchases (empty for rating data)."""


def evaluation_users(
    split: Split, user_features: Callable[[list[str], pd.Series], pd.DataFrame], max_users: int | None, seed: int
) -> EvaluationUsers:
    relevant = relevant_items(split)
    converted = relevant_items(split, C.CONVERSION_EVENTS)
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
        conversions={u: converted[u] for u in users if u in converted},
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
    """NDCG, recall and MAP at ``k`` over all positives, plus NDCG over add-to-carts and purchases alone
    (``conversion_ndcg@k``, over the users who have one) when the data has them."""
    metrics = evaluate_rankings(rankings, users.relevant, metrics=METRICS, ks=(k,))
    if users.conversions:
        metrics[f"conversion_ndcg@{k}"] = evaluate_rankings(rankings, users.conversions, ("ndcg",), (k,))[f"ndcg@{k}"]
    return metrics


@dataclass
class Variants:
    """Top-k lists per (method, candidate-set size), and the re-ranking time (features + model) per size."""

    rankings: dict[tuple[str, int], dict[str, list[str]]]
    rerank_ms: dict[int, list[float]]


def rank_variants(
    recommender: Recommender,
    users: EvaluationUsers,
    rankers: Mapping[str, Ranker | None],
    ks: Sequence[int],
    k: int = 10,
) -> Variants:
    """Every ranker at every candidate-set size, each size retrieved, featurised and ranked the way
    ``Recommender.recommend`` does (``None``: the stage-1 order); the rankers share that work. Equivalence with
    ``recommend`` is tested (ties make a truncated larger retrieval differ, so each size retrieves on its own)."""
    rankings: dict[tuple[str, int], dict[str, list[str]]] = {(name, size): {} for name in rankers for size in ks}
    rerank_ms: dict[int, list[float]] = {size: [] for size in ks}
    stage1, catalog = recommender.stage1, recommender.catalog
    for user in users.users:
        request = Request(user_id=user, k=k, as_of=users.as_of[user])
        features = users.features[user]
        query, seen = recommender.query_for(request, features)
        for size in ks:
            candidates = stage1.candidates(query, size)
            retrieval = Retrieval(query, candidates, candidates.rows, seen, fallback=False)
            started = time.perf_counter()
            block = recommender.item_features.block(candidates.rows, request.as_of)
            matrix = recommender.feature_matrix(request, retrieval, features, block)
            for name, ranker in rankers.items():
                if ranker is None:
                    scores = -np.arange(len(candidates), dtype=np.float64)
                else:
                    scores = ranker.predict(matrix)
                    if name == "two_stage":
                        rerank_ms[size].append((time.perf_counter() - started) * 1000.0)
                ruled = apply_rules(catalog, candidates.rows, scores, k, request.as_of, recommender.rules,
                                    request.filters, query.exclude, recommender.popularity_order)  # fmt: skip
                rankings[(name, size)][user] = catalog.item_ids[ruled.rows].tolist()
    return Variants(rankings, rerank_ms)


def choose_k(ndcg_by_k: Mapping[int, float], tolerance: float) -> int:
    """The smallest K whose NDCG is within ``tolerance`` (a share) of the best."""
    best = max(ndcg_by_k.values())
    return min(size for size, value in ndcg_by_k.items() if value >= (1.0 - tolerance) * best)


def sweep_candidate_k(
    variants: Variants, users: EvaluationUsers, tolerance: float = 0.01, k: int = 10
) -> dict[str, object]:
    """Two-stage NDCG@k and re-ranking latency per candidate-set size, and the chosen (smallest sufficient) K."""
    sizes = sorted({size for _, size in variants.rankings})
    rows = []
    for size in sizes:
        scores = metrics_of(variants.rankings[("two_stage", size)], users, k)
        latencies = variants.rerank_ms[size]
        rows.append({"k_candidates": size, f"ndcg@{k}": scores[f"ndcg@{k}"], f"recall@{k}": scores[f"recall@{k}"],
                     "rerank_p50_ms": float(np.percentile(latencies, 50)),
                     "rerank_p99_ms": float(np.percentile(latencies, 99))})  # fmt: skip
    chosen = choose_k({int(row["k_candidates"]): row[f"ndcg@{k}"] for row in rows}, tolerance)
    best = max(row[f"ndcg@{k}"] for row in rows)
    return {"rows": rows, "chosen_k": int(chosen), "best_ndcg": best, "tolerance": tolerance}
