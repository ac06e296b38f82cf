"""Time-decayed item popularity, as of any time (offline) or frozen on the day a version was published (serving)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from models.data import columns as C
from models.data.clock import DAY_SECONDS, whole_seconds


class DecayedPopularity:
    """Interaction counts with exponential time decay, evaluated as of any time (whole days, strictly before).

    Scores at day d: Σ over interactions on days < d of weight · 0.5^((d − day) / half_life). Snapshots are
    computed incrementally in time order and cached, so evaluating many users costs one pass over the log.
    """

    def __init__(self, interactions: pd.DataFrame, item_ids: Sequence[str], half_life_days: float):
        self.item_ids = np.asarray(item_ids, dtype=str)
        self.half_life_days = half_life_days
        rows = pd.Index(self.item_ids).get_indexer(interactions[C.ITEM_ID])
        seconds = whole_seconds(interactions[C.TIMESTAMP])
        days = np.floor(seconds / DAY_SECONDS).astype(np.int64)
        keep = rows >= 0
        order = np.argsort(days[keep], kind="stable")
        self._days = days[keep][order]
        self._rows = rows[keep][order]
        self._weights = np.ones(len(self._days))
        self._cache: dict[int, np.ndarray] = {}

    def scores_on_day(self, day: int) -> np.ndarray:
        if day in self._cache:
            return self._cache[day]
        earlier = [d for d in self._cache if d < day]
        start_day = max(earlier) if earlier else None
        base = self._cache[start_day] if start_day is not None else np.zeros(len(self.item_ids))
        lo = np.searchsorted(self._days, start_day) if start_day is not None else 0
        hi = np.searchsorted(self._days, day)
        decay = np.power(0.5, 1.0 / self.half_life_days)
        fresh = np.zeros(len(self.item_ids))
        np.add.at(fresh, self._rows[lo:hi], self._weights[lo:hi] * decay ** (day - self._days[lo:hi]))
        scores = base * (decay ** (day - start_day) if start_day is not None else 0.0) + fresh
        self._cache[day] = scores
        return scores

    def scores_at(self, as_of: float) -> np.ndarray:
        return self.scores_on_day(int(np.floor(as_of / DAY_SECONDS)))

    def scores_of(self, as_of: float, rows: np.ndarray) -> np.ndarray:
        return self.scores_at(as_of)[rows]

    def snapshot(self, as_of: float) -> PopularitySnapshot:
        """Frozen scores as of ``as_of``: what a published version serves."""
        day = int(np.floor(as_of / DAY_SECONDS))
        return PopularitySnapshot(self.item_ids, self.scores_on_day(day), day, self.half_life_days)


@dataclass
class PopularitySnapshot:
    """Decayed popularity frozen on one day; later queries see it decayed further (the ranking is unchanged)."""

    item_ids: np.ndarray
    scores: np.ndarray
    day: int
    half_life_days: float

    def scores_at(self, as_of: float) -> np.ndarray:
        return self.scores * self._decay_to(as_of)

    def scores_of(self, as_of: float, rows: np.ndarray) -> np.ndarray:
        """``scores_at(as_of)[rows]`` without touching the rest of the catalogue (a request needs a few rows)."""
        return self.scores[rows] * self._decay_to(as_of)

    def _decay_to(self, as_of: float) -> float:
        days_after = max(0.0, np.floor(as_of / DAY_SECONDS) - self.day)
        return float(np.power(0.5, days_after / self.half_life_days))

    def save(self, folder: Path, name: str) -> dict[str, object]:
        np.save(folder / f"{name}.npy", self.scores.astype(np.float64), allow_pickle=False)
        return {"file": f"{name}.npy", "day": self.day, "half_life_days": self.half_life_days}

    @classmethod
    def load(cls, folder: Path, entry: Mapping[str, Any], item_ids: np.ndarray) -> PopularitySnapshot:
        scores = np.load(folder / str(entry["file"]), allow_pickle=False)
        if len(scores) != len(item_ids):
            raise ValueError(f"{folder / str(entry['file'])}: {len(scores)} scores for {len(item_ids)} items")
        return cls(item_ids, scores, int(entry["day"]), float(entry["half_life_days"]))


class Popularity(Protocol):
    item_ids: np.ndarray

    def scores_at(self, as_of: float) -> np.ndarray: ...

    def scores_of(self, as_of: float, rows: np.ndarray) -> np.ndarray: ...
