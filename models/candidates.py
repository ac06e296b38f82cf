"""Stage-1 candidate sources and their merge.

Each source answers "which items might this user want, as of this time?" with a ranked list and scores:
- ``semantic``: FAISS over text vectors; the query is a recency-weighted mean of the user's recent positive items
  (or an encoded search text);
- ``collaborative``: FAISS over ALS item vectors; the query is the user's ALS vector (fold-in for new users);
- ``popular``: time-decayed interaction counts as of the query time (trending);
- ``fresh``: the newest items, most popular first.
``fuse`` (and ``merge``) de-duplicate and keep, for every candidate, the rank and score it got from every source
that returned it (provenance), which the re-ranker uses as features.

Every source works on item *rows*: positions in one catalogue order shared by the FAISS indexes, the ALS factors
and the tables, so a request never maps string ids back and forth in the hot path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models import columns as C
from models.collaborative import CollaborativeModel, mips_query
from models.indexes import VectorIndex

DAY_SECONDS = 86_400.0


@dataclass(frozen=True)
class UserQuery:
    """What stage 1 knows about one request. Times are unix seconds."""

    user_id: str | None
    as_of: float
    history_items: Sequence[str] = ()
    history_times: Sequence[float] = ()
    history_weights: Sequence[float] = ()
    text_vector: np.ndarray | None = None
    exclude: frozenset[str] = frozenset()
    exclude_rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    """The rows of ``exclude``; sources filter on these (``Stage1`` fills them in)."""


EMPTY_ROWS = np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class SourceResult:
    """One source's ranked candidates (best first), as catalogue rows."""

    source: str
    rows: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def empty(cls, source: str) -> SourceResult:
        return cls(source, EMPTY_ROWS, np.empty(0, np.float32))


class CandidateSource(Protocol):
    name: str

    def retrieve(self, query: UserQuery, k: int) -> SourceResult: ...


def _drop_excluded(source: str, rows: np.ndarray, scores: np.ndarray, exclude: np.ndarray, k: int) -> SourceResult:
    keep = rows >= 0
    if len(exclude):
        keep &= ~np.isin(rows, exclude)
    return SourceResult(source, rows[keep][:k].astype(np.int64), scores[keep][:k])


def recency_weights(times: Sequence[float], as_of: float, half_life_days: float) -> np.ndarray:
    age_days = np.clip((as_of - np.asarray(times, dtype=np.float64)) / DAY_SECONDS, 0.0, None)
    return np.power(0.5, age_days / half_life_days)


class SemanticSource:
    """Nearest items in text-embedding space to the user's recent positives (or to an encoded query text)."""

    name = "semantic"

    def __init__(self, index: VectorIndex, item_vectors: np.ndarray, half_life_days: float = 30.0, recent: int = 50):
        self.index = index
        self.item_vectors = item_vectors
        self.row_of = pd.Index(index.item_ids)
        self.half_life_days = half_life_days
        self.recent = recent

    def query_vector(self, query: UserQuery) -> np.ndarray | None:
        if query.text_vector is not None:
            return query.text_vector
        if not len(query.history_items):
            return None
        items = list(query.history_items)[-self.recent :]
        times = list(query.history_times)[-self.recent :]
        rows = self.row_of.get_indexer(items)
        known = rows >= 0
        if not known.any():
            return None
        weights = recency_weights(times, query.as_of, self.half_life_days)[known]
        vector = (self.item_vectors[rows[known]] * weights[:, None]).sum(axis=0)
        norm = np.linalg.norm(vector)
        return (vector / norm).astype(np.float32) if norm > 0 else None

    def retrieve(self, query: UserQuery, k: int) -> SourceResult:
        vector = self.query_vector(query)
        if vector is None:
            return SourceResult.empty(self.name)
        scores, rows = self.index.search_rows(vector, k + len(query.exclude_rows))
        return _drop_excluded(self.name, rows[0], scores[0], query.exclude_rows, k)


class CollaborativeSource:
    """ALS retrieval: FAISS over unit-lifted item factors with the user's vector as query."""

    name = "collaborative"

    def __init__(self, index: VectorIndex, model: CollaborativeModel, fold_in_recent: int = 200):
        self.index = index
        self.model = model
        self.fold_in_recent = fold_in_recent

    def user_vector(self, query: UserQuery) -> np.ndarray | None:
        vector = self.model.user_vector(query.user_id) if query.user_id is not None else None
        if vector is None and len(query.history_items):
            vector = self.model.fold_in(list(query.history_items)[-self.fold_in_recent :])
        if vector is None or not np.any(vector):
            return None
        return vector

    def retrieve(self, query: UserQuery, k: int) -> SourceResult:
        vector = self.user_vector(query)
        if vector is None:
            return SourceResult.empty(self.name)
        scores, rows = self.index.search_rows(mips_query(vector), k + len(query.exclude_rows))
        return _drop_excluded(self.name, rows[0], scores[0], query.exclude_rows, k)


class ItemItemSource:
    """Neighbours on the interaction graph: a sparse item × item table (RP3beta random-walk scores) queried with
    the user's recent items, the most recent weighing most (weight exp(−rank / decay), rank 0 = newest)."""

    name = "graph"

    def __init__(self, table: sp.csr_matrix, item_ids: np.ndarray, recent: int = 50, decay: float = 20.0):
        self.table = table.tocsr()
        self.item_ids = np.asarray(item_ids, dtype=str)
        self.row_of = pd.Index(self.item_ids)
        self.recent = recent
        self.decay = decay

    def retrieve(self, query: UserQuery, k: int) -> SourceResult:
        rows = self.row_of.get_indexer(list(query.history_items)[-self.recent :][::-1])
        weights = np.exp(-np.arange(len(rows)) / self.decay)
        known = rows >= 0
        if not known.any():
            return SourceResult.empty(self.name)
        scores = np.asarray(self.table[rows[known]].T @ weights[known]).ravel()
        wanted = min(k + len(query.exclude_rows), int((scores > 0).sum()))
        if wanted <= 0:
            return SourceResult.empty(self.name)
        top = np.argpartition(-scores, wanted - 1)[:wanted]
        top = top[np.argsort(-scores[top], kind="stable")]
        return _drop_excluded(self.name, top, scores[top].astype(np.float32), query.exclude_rows, k)

    def save(self, folder: Path, name: str) -> dict[str, object]:
        sp.save_npz(folder / f"{name}.npz", self.table, compressed=False)
        return {"file": f"{name}.npz", "recent": self.recent, "decay": self.decay, "nnz": int(self.table.nnz)}

    @classmethod
    def load(cls, folder: Path, entry: Mapping[str, Any], item_ids: np.ndarray) -> ItemItemSource:
        table = sp.load_npz(folder / str(entry["file"]))
        if table.shape != (len(item_ids), len(item_ids)):
            raise ValueError(f"{folder / str(entry['file'])}: table shape {table.shape} for {len(item_ids)} items")
        return cls(table, item_ids, int(entry["recent"]), float(entry["decay"]))


class DecayedPopularity:
    """Interaction counts with exponential time decay, evaluated as of any time (whole days, strictly before).

    Scores at day d: Σ over interactions on days < d of weight · 0.5^((d − day) / half_life). Snapshots are
    computed incrementally in time order and cached, so evaluating many users costs one pass over the log.
    """

    def __init__(self, interactions: pd.DataFrame, item_ids: Sequence[str], half_life_days: float = 14.0):
        self.item_ids = np.asarray(item_ids, dtype=str)
        self.half_life_days = half_life_days
        rows = pd.Index(self.item_ids).get_indexer(interactions[C.ITEM_ID])
        seconds = interactions[C.TIMESTAMP].astype("int64").to_numpy() // 10**9
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
        days_after = max(0.0, np.floor(as_of / DAY_SECONDS) - self.day)
        return self.scores * np.power(0.5, days_after / self.half_life_days)

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


class PopularSource:
    """Trending items: highest time-decayed popularity as of the query time."""

    name = "popular"

    def __init__(self, popularity: Popularity):
        self.popularity = popularity
        self._order: dict[int, np.ndarray] = {}

    def order_on(self, as_of: float) -> tuple[np.ndarray, np.ndarray]:
        """(rows by decreasing popularity, scores) as of a day; the sort is cached per day."""
        scores = self.popularity.scores_at(as_of)
        day = int(np.floor(as_of / DAY_SECONDS))
        if day not in self._order:
            if len(self._order) > 64:
                self._order.clear()
            order = np.argsort(-scores, kind="stable")
            self._order[day] = order[scores[order] > 0]
        return self._order[day], scores

    def retrieve(self, query: UserQuery, k: int) -> SourceResult:
        order, scores = self.order_on(query.as_of)
        top = order[: k + len(query.exclude_rows)]
        return _drop_excluded(self.name, top, scores[top].astype(np.float32), query.exclude_rows, k)


class FreshSource:
    """Items launched within ``window_days`` before the query time, most popular first, then newest."""

    name = "fresh"

    def __init__(
        self, item_ids: Sequence[str], created_at: np.ndarray, popularity: Popularity, window_days: float = 30.0
    ):
        self.item_ids = np.asarray(item_ids, dtype=str)
        self.created = np.asarray(created_at, dtype=np.float64)
        self.popularity = popularity
        self.window = window_days * DAY_SECONDS

    def retrieve(self, query: UserQuery, k: int) -> SourceResult:
        eligible = np.flatnonzero((self.created <= query.as_of) & (self.created > query.as_of - self.window))
        if not len(eligible):
            return SourceResult.empty(self.name)
        popularity = self.popularity.scores_at(query.as_of)[eligible]
        order = np.lexsort((-self.created[eligible], -popularity))[: k + len(query.exclude_rows)]
        rows = eligible[order]
        freshness = 1.0 - (query.as_of - self.created[rows]) / self.window
        return _drop_excluded(self.name, rows, freshness.astype(np.float32), query.exclude_rows, k)


@dataclass
class Candidates:
    """Merged stage-1 output: unique item rows with provenance from every source that returned them."""

    rows: np.ndarray
    primary_source: np.ndarray
    ranks: dict[str, np.ndarray] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    catalogue: np.ndarray | None = None
    """Item ids by row, to name the candidates."""

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def item_ids(self) -> np.ndarray:
        if self.catalogue is None:
            raise ValueError("candidates have no catalogue to name their rows")
        return self.catalogue[self.rows]

    def provenance(self, position: int) -> dict[str, dict[str, float]]:
        """{source: {"rank", "score"}} for the candidate at ``position`` (only sources that returned it)."""
        return {
            source: {"rank": int(ranks[position]), "score": float(self.scores[source][position])}
            for source, ranks in self.ranks.items()
            if ranks[position] >= 0
        }


def _with_provenance(
    results: Sequence[SourceResult], rows: np.ndarray, primary: np.ndarray, catalogue: np.ndarray | None
) -> Candidates:
    """Attach each source's rank and score of every chosen row (-1 / NaN where the source did not return it)."""
    sorter = np.argsort(rows, kind="stable")
    sorted_rows = rows[sorter]
    ranks: dict[str, np.ndarray] = {}
    scores: dict[str, np.ndarray] = {}
    for result in results:
        rank = np.full(len(rows), -1, dtype=np.int32)
        score = np.full(len(rows), np.nan, dtype=np.float32)
        if len(rows) and len(result):
            slot = np.searchsorted(sorted_rows, result.rows)
            slot = np.clip(slot, 0, len(rows) - 1)
            hit = sorted_rows[slot] == result.rows
            position = sorter[slot[hit]]
            rank[position] = np.flatnonzero(hit)
            score[position] = result.scores[hit]
        ranks[result.source] = rank
        scores[result.source] = score
    return Candidates(rows, primary, ranks, scores, catalogue)


def merge(
    results: Sequence[SourceResult], quotas: Mapping[str, int], k: int, catalogue: np.ndarray | None = None
) -> Candidates:
    """Take each source's top items up to its quota in the given order, skipping duplicates; if the list is
    still shorter than ``k``, fill it round-robin from what the sources have left."""
    chosen: dict[int, int] = {}
    primary: list[str] = []
    cursors = {r.source: 0 for r in results}

    def take(result: SourceResult, limit: int) -> None:
        taken = 0
        while taken < limit and cursors[result.source] < len(result) and len(chosen) < k:
            row = int(result.rows[cursors[result.source]])
            cursors[result.source] += 1
            if row not in chosen:
                chosen[row] = len(chosen)
                primary.append(result.source)
                taken += 1

    for result in results:
        take(result, quotas.get(result.source, 0))
    while len(chosen) < k and any(cursors[r.source] < len(r) for r in results):
        for result in results:
            take(result, 1)
    return _with_provenance(results, np.array(list(chosen), dtype=np.int64), np.array(primary, dtype=str), catalogue)


def fuse(
    results: Sequence[SourceResult], k: int, weights: Mapping[str, float], reserved: Mapping[str, int] | None = None,
    rrf_k: float = 60.0, catalogue: np.ndarray | None = None,
) -> Candidates:  # fmt: skip
    """Weighted reciprocal-rank fusion: score(i) = Σ_s w_s / (rrf_k + rank_s(i)). Each source first gets its
    ``reserved`` slots (its best items not yet taken), the rest go by fused score; the list is ordered by fused
    score. On MovieLens, fusion beat fixed per-source quotas in Recall@500."""
    present = [r for r in results if len(r)]
    if not present:
        return _with_provenance(results, EMPTY_ROWS, np.empty(0, dtype=str), catalogue)
    all_rows = np.concatenate([r.rows for r in present])
    contribution = np.concatenate(
        [weights.get(r.source, 0.0) / (rrf_k + np.arange(len(r), dtype=np.float64)) for r in present]
    )
    source_of = np.concatenate([np.full(len(r), i) for i, r in enumerate(present)])
    unique, inverse = np.unique(all_rows, return_inverse=True)
    fused = np.bincount(inverse, weights=contribution, minlength=len(unique))
    strongest = np.lexsort((-contribution, inverse))  # per unique row, its largest contribution first
    first = strongest[np.r_[True, inverse[strongest][1:] != inverse[strongest][:-1]]]
    primary_of = np.empty(len(unique), dtype=np.int64)
    primary_of[inverse[first]] = source_of[first]
    chosen = np.zeros(len(unique), dtype=bool)
    offsets = np.cumsum([0] + [len(r) for r in present])
    for i, result in enumerate(present):
        quota = (reserved or {}).get(result.source, 0)
        if quota <= 0:
            continue
        mine = inverse[offsets[i] : offsets[i + 1]]
        fresh = mine[~chosen[mine]]
        chosen[fresh[: max(0, min(quota, k - int(chosen.sum())))]] = True
    by_score = np.lexsort((unique, -fused))
    remaining = by_score[~chosen[by_score]][: max(0, k - int(chosen.sum()))]
    chosen[remaining] = True
    picked = np.flatnonzero(chosen)
    picked = picked[np.lexsort((unique[picked], -fused[picked]))]
    names = np.array([r.source for r in present], dtype=str)
    return _with_provenance(results, unique[picked], names[primary_of[picked]], catalogue)


def scale_quotas(shares: Mapping[str, float], k: int) -> dict[str, int]:
    """Per-source quotas for a list of ``k`` from shares that sum to 1 (largest remainder rounding)."""
    total = sum(shares.values())
    raw = {name: k * share / total for name, share in shares.items()}
    quotas = {name: int(np.floor(value)) for name, value in raw.items()}
    leftover = k - sum(quotas.values())
    for name in sorted(raw, key=lambda n: raw[n] - quotas[n], reverse=True)[:leftover]:
        quotas[name] += 1
    return quotas
