"""Choosing stage 1's fusion weights on the validation cut: coordinate ascent over each source's reciprocal-rank
weight, maximising the merged recall of the validation positives at the candidate-set sizes that can be served.

Every source retrieves once per user; each user's candidates become a (candidates × sources) matrix of reciprocal-
rank contributions, so a trial is one matrix-vector product and a partition per user.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from models.retrieval.fusion import RRF_K
from models.retrieval.sources import SourceResult

WEIGHT_STEPS = (0.0, 0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class UserCandidates:
    """One validation user's retrieved candidates: each source's reciprocal-rank contribution, and which are
    relevant (``wanted``: how many relevant items the user has, retrieved or not)."""

    contributions: np.ndarray
    relevant: np.ndarray
    wanted: int


def user_candidates(
    results: Sequence[SourceResult], sources: Sequence[str], relevant_rows: np.ndarray
) -> UserCandidates:
    present = [r for r in results if len(r)]
    rows = np.unique(np.concatenate([r.rows for r in present])) if present else np.empty(0, dtype=np.int64)
    contributions = np.zeros((len(rows), len(sources)), dtype=np.float32)
    column = {name: i for i, name in enumerate(sources)}
    for result in present:
        positions = np.searchsorted(rows, result.rows)
        contributions[positions, column[result.source]] = 1.0 / (RRF_K + np.arange(len(result), dtype=np.float32))
    return UserCandidates(contributions, np.isin(rows, relevant_rows), len(relevant_rows))


def fused_recall(users: Sequence[UserCandidates], weights: np.ndarray, ks: Sequence[int]) -> float:
    """Mean over users and ``ks`` of Recall@K of the candidates ranked by their weighted fused score."""
    total = 0.0
    for user in users:
        fused = user.contributions @ weights
        for k in ks:
            if len(fused) <= k:
                hits = int(user.relevant[fused > 0].sum())
            else:
                threshold = np.partition(fused, len(fused) - k)[len(fused) - k]
                hits = int((user.relevant & (fused >= threshold) & (fused > 0)).sum())
            total += min(hits, k) / user.wanted
    return total / max(len(users) * len(ks), 1)


def tune_fusion_weights(
    start: Mapping[str, float], users: Sequence[UserCandidates], sources: Sequence[str], ks: Sequence[int],
    passes: int = 2,
) -> tuple[dict[str, float], float, float]:  # fmt: skip
    """(weights, recall with them, recall with ``start``); a change must gain 0.1 % to be taken."""
    weights = np.array([float(start.get(name, 0.0)) for name in sources], dtype=np.float32)
    first = best = fused_recall(users, weights, ks)
    for _ in range(passes):
        changed = False
        for i in range(len(sources)):
            for value in WEIGHT_STEPS:
                if value == weights[i]:
                    continue
                trial = weights.copy()
                trial[i] = value
                if not trial.any():
                    continue
                score = fused_recall(users, trial, ks)
                if score > best * 1.001:
                    best, weights, changed = score, trial, True
        if not changed:
            break
    return {name: float(w) for name, w in zip(sources, weights, strict=True)}, best, first
