"""Explanations of a served list: which stage-1 sources found each item, which features moved its score most, and
what the business rules did."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from models.ranking.ranker import Ranker
from models.recommender.request import Recommended, Retrieval

TOP_FEATURES = 5


def explain(
    items: list[Recommended], final_rows: np.ndarray, retrieval: Retrieval, features: np.ndarray | None,
    ranker: Ranker | None, feature_names: Sequence[str], applied: dict[str, object], degraded: bool,
) -> None:  # fmt: skip
    """Attach an explanation to every item of the final list (in place)."""
    position = {int(r): i for i, r in enumerate(retrieval.rows)}
    picked = [position.get(int(r), -1) for r in final_rows]
    contributions = None
    if features is not None and ranker is not None:
        valid = [p for p in picked if p >= 0]
        contributions = dict(zip(valid, ranker.contributions(features[valid]), strict=True)) if valid else {}
    for item, p in zip(items, picked, strict=True):
        explanation: dict[str, Any] = {"rules": applied, "fallback": retrieval.fallback, "degraded": degraded}
        if p >= 0:
            explanation["sources"] = retrieval.candidates.provenance(p)
        else:
            explanation["sources"] = {"fill": {"rank": -1, "score": float("nan")}}
        if contributions is not None and p in contributions:
            values = contributions[p][:-1]
            top = np.argsort(-np.abs(values))[:TOP_FEATURES]
            explanation["top_features"] = {feature_names[t]: round(float(values[t]), 4) for t in top}
        item.explanation = explanation
