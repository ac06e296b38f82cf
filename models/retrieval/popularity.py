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

    CHECKPOINT_DAYS = 7
    """Scores are kept for every ``CHECKPOINT_DAYS``-th day only (each from the previous checkpoint); any other day
    is computed from the checkpoint before it and not kept, so memory is one catalogue array per checkpoint
    (≈ 52 for a year) instead of one per distinct query day, and a day's scores no longer depend on which days were
    queried before it."""

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
        self._checkpoints: dict[int, np.ndarray] = {}
        self._last: tuple[int, np.ndarray] | None = None
        """The latest day asked for that is not a checkpoint (consecutive users often share a day)."""

    def _advance(self, base: np.ndarray | None, start_day: int | None, day: int) -> np.ndarray:
        """Scores on ``day`` from those on ``start_day`` (None: from nothing) plus the events in between."""
        lo = np.searchsorted(self._days, start_day) if start_day is not None else 0
        hi = np.searchsorted(self._days, day)
        decay = np.power(0.5, 1.0 / self.half_life_days)
        weights = self._weights[lo:hi] * decay ** (day - self._days[lo:hi])
        fresh = np.bincount(self._rows[lo:hi], weights, minlength=len(self.item_ids))
        if base is None or start_day is None:
            return fresh
        return base * decay ** (day - start_day) + fresh

    def _checkpoint(self, day: int) -> tuple[int | None, np.ndarray | None]:
        """The latest checkpoint day at or before ``day`` and its scores (None before the first event's day)."""
        step = self.CHECKPOINT_DAYS
        first = int(self._days[0]) // step * step if len(self._days) else day
        target = day // step * step
        if target < first:
            return None, None
        if target not in self._checkpoints:
            done = [d for d in self._checkpoints if d < target]
            start = max(done) if done else None
            for point in range(start + step if start is not None else first, target + 1, step):
                previous = self._checkpoints.get(point - step)
                self._checkpoints[point] = self._advance(previous, point - step if previous is not None else None,
                                                         point)  # fmt: skip
        return target, self._checkpoints[target]

    def scores_on_day(self, day: int) -> np.ndarray:
        start_day, base = self._checkpoint(day)
        if start_day == day and base is not None:
            return base
        if self._last is not None and self._last[0] == day:
            return self._last[1]
        scores = self._advance(base, start_day, day)
        self._last = (day, scores)
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
