"""Ranking metrics of the shared protocol: binary gains, log2 discount, averaged over users with a positive."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


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
