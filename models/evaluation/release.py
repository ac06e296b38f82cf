"""Whether a new version may replace the champion: a paired comparison on the validation cut, never on test.

The new re-ranker's NDCG@10 per release-holdout user (validation users no final re-ranker ever trains on: a stable
hash of the id) is set against the champion's re-ranking the same users' same candidates: both out of sample, paired.
The new version is served only when the low end of the paired 95 % interval of the ratio, minus 1, is above
``min_gain`` — a gain the holdout users cannot explain by noise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from models.evaluation.metrics import paired_bootstrap_ratio


@dataclass(frozen=True)
class ReleaseDecision:
    publish: bool
    reason: str
    ratio: float | None = None
    ci95: tuple[float, float] | None = None
    users: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def release_decision(
    new: np.ndarray, champion: np.ndarray | None, min_gain: float, *, has_champion: bool, force: bool = False,
    seed: int = 0,
) -> ReleaseDecision:  # fmt: skip
    """``new``/``champion``: NDCG@10 per holdout user, paired. ``champion`` is None when there is none
    (``has_champion`` false: the first version is published) or when it cannot score these candidates (other
    features: not comparable, so not published unless forced)."""
    if not has_champion:
        return ReleaseDecision(True, "no champion yet: the first version is published")
    if champion is None:
        if force:
            return ReleaseDecision(True, "forced: the champion uses other features, no comparison was possible")
        return ReleaseDecision(False, "the champion uses other features, so the two cannot be compared on the same "
                               "candidates: kept as challenger (publish with --force after checking it)")  # fmt: skip
    if not len(new) or float(champion.mean()) <= 0.0:
        verdict = "forced" if force else "kept as challenger"
        return ReleaseDecision(force, f"no validation users to compare on: {verdict}", users=len(new))
    ratio, low, high = paired_bootstrap_ratio(new, champion, seed=seed)
    figures = (f"holdout NDCG@10 {new.mean():.4f} vs champion {champion.mean():.4f} = {ratio:.3f}x "
               f"[{low:.3f}, {high:.3f}] over {len(new)} users, required low end > {1 + min_gain:.3f}")  # fmt: skip
    if low - 1.0 > min_gain:
        return ReleaseDecision(True, f"beats the champion: {figures}", ratio, (low, high), len(new))
    if force:
        return ReleaseDecision(True, f"forced although it does not beat the champion: {figures}", ratio, (low, high),
                               len(new))  # fmt: skip
    return ReleaseDecision(False, f"does not beat the champion: {figures}; kept as challenger", ratio, (low, high),
                           len(new))  # fmt: skip
