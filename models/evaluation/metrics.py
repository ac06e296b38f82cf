"""Ranking metrics of the shared protocol: binary gains, log2 discount, averaged over users with a positive."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats


def recall_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Share of the relevant items found in the top ``k``."""
    if not relevant:
        raise ValueError("recall is undefined for a user without relevant items")
    return len(set(ranked[:k]) & relevant) / len(relevant)


def precision_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Share of the top ``k`` slots holding a relevant item (a short list still divides by ``k``)."""
    return sum(1 for item in ranked[:k] if item in relevant) / k


def ndcg_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """NDCG with binary gains; the ideal list puts min(k, |relevant|) hits first."""
    if not relevant:
        raise ValueError("NDCG is undefined for a user without relevant items")
    dcg = sum(1.0 / np.log2(rank + 2) for rank, item in enumerate(ranked[:k]) if item in relevant)
    ideal = sum(1.0 / np.log2(rank + 2) for rank in range(min(k, len(relevant))))
    return float(dcg / ideal)


def average_precision_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """AP@k: mean of precision at each hit's rank, normalised by min(k, |relevant|)."""
    if not relevant:
        raise ValueError("AP is undefined for a user without relevant items")
    hits, total = 0, 0.0
    for rank, item in enumerate(ranked[:k]):
        if item in relevant:
            hits += 1
            total += hits / (rank + 1)
    return total / min(k, len(relevant))


METRICS = {"ndcg": ndcg_at_k, "recall": recall_at_k, "map": average_precision_at_k, "precision": precision_at_k}


def evaluate_rankings(
    rankings: Mapping[str, Sequence[str]],
    relevant: Mapping[str, set[str]],
    metrics: Sequence[str] = ("ndcg", "recall", "map"),
    ks: Sequence[int] = (10,),
) -> dict[str, float]:
    """Mean of each ``metric@k`` over the users in ``relevant``; a user without a ranking scores 0."""
    if not relevant:
        raise ValueError("no users with relevant items to evaluate")
    results: dict[str, float] = {}
    for name in metrics:
        metric = METRICS[name]
        for k in ks:
            values = [metric(rankings.get(user, ()), items, k) for user, items in relevant.items()]
            results[f"{name}@{k}"] = float(np.mean(values))
    return results


def per_user(
    rankings: Mapping[str, Sequence[str]], relevant: Mapping[str, set[str]], metric: str = "ndcg", k: int = 10
) -> np.ndarray:
    """``metric@k`` of every user in ``relevant`` (in its order); a user without a ranking scores 0."""
    return np.array([METRICS[metric](rankings.get(user, ()), items, k) for user, items in relevant.items()])


def paired_bootstrap_ratio(
    treatment: np.ndarray, baseline: np.ndarray, samples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """mean(treatment) / mean(baseline) over the same users, with a 95 % percentile interval from resampling
    users (paired: one resample serves both; ``scipy.stats.bootstrap``). Tells a real gain from the noise of a
    few hundred test users."""
    if treatment.shape != baseline.shape or not len(treatment):
        raise ValueError("paired samples of the same, non-zero length are needed")

    def ratio(t: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        base = b.mean(axis=axis)
        return t.mean(axis=axis) / np.where(base > 0, base, np.nan)

    result = stats.bootstrap((treatment, baseline), ratio, paired=True, vectorized=True, n_resamples=samples,
                             batch=200, method="percentile", confidence_level=0.95, random_state=seed)  # fmt: skip
    low, high = result.confidence_interval
    return float(treatment.mean() / baseline.mean()), float(low), float(high)
