"""Stage-1 candidate sources: each answers "which items might this user want, as of this time?" with a ranked list.

- ``semantic``: FAISS over text vectors; the query is a recency-weighted mean of the user's recent positive items
  (or an encoded search text);
- ``ials``: FAISS over iALS item vectors; the query is the user's iALS vector (fold-in for new users);
- item-item sources (``models.retrieval.item_item``): EASE^R, RP3beta, item-kNN from every item the user saw,
  EASE^R from the last few, item-to-item sequences and co-occurrence from the last items;
- ``popular_short`` / ``popular_long``: time-decayed interaction counts as of the query time (trending / steady);
- ``fresh``: the newest items, most popular first.

Every source works on item *rows*: positions in one catalogue order shared by the FAISS indexes, the ALS factors
and the tables, so a request never maps string ids back and forth in the hot path.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from models.data.clock import DAY_SECONDS
from models.retrieval.als import CollaborativeModel, mips_query
from models.retrieval.indexes import VectorIndex
from models.retrieval.lookup import RowLookup
from models.retrieval.popularity import Popularity


@dataclass(frozen=True)
class UserQuery:
    """What stage 1 knows about one request. Times are unix seconds."""

    user_id: str | None
    as_of: float
    history_items: Sequence[str] = ()
    """The user's recent positive items, oldest first (what the text and iALS queries are made of)."""
    history_times: Sequence[float] = ()
    """The times of ``history_items``, or empty when unknown (every item then weighs the same)."""
    seen: Sequence[str] = ()
    """Every item the user interacted with, most recent first (what the item-item sources walk from)."""
    text_vector: np.ndarray | None = None
    exclude: frozenset[str] = frozenset()
    exclude_rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    """The rows of ``exclude``, ascending; sources filter on these (``Stage1`` fills them in)."""
    seen_rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    """The catalogue rows of ``seen``, in its order (``Stage1`` fills them in)."""

    def __post_init__(self) -> None:
        if len(self.history_times) and len(self.history_times) != len(self.history_items):
            raise ValueError(
                f"history_times has {len(self.history_times)} entries for {len(self.history_items)} history_items"
            )


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


def in_sorted(values: np.ndarray, sorted_values: np.ndarray) -> np.ndarray:
    """``np.isin(values, sorted_values)`` for an ascending ``sorted_values``: a binary search per value, without
    the sort of both arrays ``np.isin`` does on every call (the hot path runs it once per source and request)."""
    if not len(sorted_values):
        return np.zeros(len(values), dtype=bool)
    positions = np.minimum(np.searchsorted(sorted_values, values), len(sorted_values) - 1)
    return sorted_values[positions] == values


def drop_excluded(source: str, rows: np.ndarray, scores: np.ndarray, exclude: np.ndarray, k: int) -> SourceResult:
    """The first ``k`` rows that are valid (FAISS pads with -1) and not in ``exclude`` (ascending rows)."""
    keep = rows >= 0
    if len(exclude):
        keep &= ~in_sorted(rows, exclude)
    return SourceResult(source, rows[keep][:k].astype(np.int64), scores[keep][:k])


def recency_weights(times: Sequence[float], as_of: float, half_life_days: float) -> np.ndarray:
    age_days = np.clip((as_of - np.asarray(times, dtype=np.float64)) / DAY_SECONDS, 0.0, None)
    return np.power(0.5, age_days / half_life_days)


class SemanticSource:
    """Nearest items in text-embedding space to the user's recent positives (or to an encoded query text)."""

    name = "semantic"

    def __init__(self, index: VectorIndex, item_vectors: np.ndarray, half_life_days: float, recent: int = 50):
        self.index = index
        self.item_vectors = item_vectors
        self.row_of = RowLookup(index.item_ids)
        self.half_life_days = half_life_days
        self.recent = recent

    def query_vector(self, query: UserQuery) -> np.ndarray | None:
        if query.text_vector is not None:
            return query.text_vector
        if not len(query.history_items):
            return None
        items = list(query.history_items)[-self.recent :]
        times = list(query.history_times)[-self.recent :]
        rows = self.row_of.rows(items)
        known = rows >= 0
        if not known.any():
            return None
        weights = recency_weights(times, query.as_of, self.half_life_days) if times else np.ones(len(items))
        weights = weights[known]
        vector = (self.item_vectors[rows[known]] * weights[:, None]).sum(axis=0)
        norm = np.linalg.norm(vector)
        return (vector / norm).astype(np.float32) if norm > 0 else None

    def retrieve(self, query: UserQuery, k: int) -> SourceResult:
        vector = self.query_vector(query)
        if vector is None:
            return SourceResult.empty(self.name)
        scores, rows = self.index.search_rows(vector, k + len(query.exclude_rows))
        return drop_excluded(self.name, rows[0], scores[0], query.exclude_rows, k)


class CollaborativeSource:
    """iALS retrieval: FAISS over unit-lifted item factors with the user's vector as query."""

    name = "ials"

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
        scores, rows = self.index.search_rows(mips_query(vector, self.index.dim), k + len(query.exclude_rows))
        return drop_excluded(self.name, rows[0], scores[0], query.exclude_rows, k)


class PopularSource:
    """The most popular items as of the query time, by interaction counts decayed with the popularity's half-life
    (short: trending; long: steady favourites)."""

    CACHE_DAYS = 4096
    """Days whose leading rows are kept: an offline evaluation queries users as of many different days."""

    def __init__(self, name: str, popularity: Popularity):
        self.name = name
        self.popularity = popularity
        self._order: OrderedDict[int, tuple[np.ndarray, bool]] = OrderedDict()
        self._cache_days = self.CACHE_DAYS

    def order_on(self, as_of: float, count: int) -> np.ndarray:
        """The ``count`` leading rows by decreasing popularity as of a day (fewer when fewer items have any), ties
        by row; cached per day (least recently used days leave first). Only the leading rows are sorted: sorting
        every score of a million items per query day took 90 % of the fusion search over 2 000 validation users."""
        day = int(np.floor(as_of / DAY_SECONDS))
        cached, complete = self._order.get(day, (np.empty(0, dtype=np.int64), False))
        if len(cached) < count and not complete:
            wanted = max(count, 2 * len(cached))  # a longer request doubles what the day keeps
            cached = leading_rows(self.popularity.scores_at(as_of), wanted)
            self._order[day] = (cached, len(cached) < wanted)
            if len(self._order) > self._cache_days:
                self._order.popitem(last=False)
        if day in self._order:
            self._order.move_to_end(day)
        return cached[:count]

    def retrieve(self, query: UserQuery, k: int) -> SourceResult:
        top = self.order_on(query.as_of, k + len(query.exclude_rows))
        scores = self.popularity.scores_of(query.as_of, top)
        return drop_excluded(self.name, top, scores.astype(np.float32), query.exclude_rows, k)


def leading_rows(scores: np.ndarray, count: int) -> np.ndarray:
    """The rows of the ``count`` largest positive scores, by decreasing score and then by row: the first ``count``
    of a stable sort of every score, from a partition (ties at the cut kept) and a sort of that part alone."""
    rows = np.flatnonzero(scores > 0)
    if count <= 0:
        return rows[:0]
    if len(rows) > count:
        kept = scores[rows]
        cut = np.partition(kept, len(kept) - count)[len(kept) - count]
        rows = rows[kept >= cut]
    return rows[np.argsort(-scores[rows], kind="stable")][:count]


class FreshSource:
    """Items launched within ``window_days`` before the query time, most popular first, then newest."""

    name = "fresh"
    CACHE_DAYS = PopularSource.CACHE_DAYS

    def __init__(self, item_ids: Sequence[str], created_at: np.ndarray, popularity: Popularity, window_days: float):
        self.item_ids = np.asarray(item_ids, dtype=str)
        self.created = np.asarray(created_at, dtype=np.float64)
        self.popularity = popularity
        self.window = window_days * DAY_SECONDS
        self._by_launch = np.argsort(self.created, kind="stable")
        self._launches = self.created[self._by_launch]
        self._order: OrderedDict[int, tuple[np.ndarray, bool]] = OrderedDict()

    def launched_within(self, start: float, end: float) -> np.ndarray:
        """Rows (ascending) of the items launched after ``start`` and at or before ``end``: two binary searches
        over the launch order, so a call costs the window's items, not the catalogue."""
        first = np.searchsorted(self._launches, start, side="right")
        last = np.searchsorted(self._launches, end, side="right")
        return np.sort(self._by_launch[first:last])

    def order_on(self, as_of: float, count: int) -> tuple[np.ndarray, bool]:
        """The leading ``count`` or more rows, by decreasing popularity, then newest, then row, of the items whose
        window holds some time of ``as_of``'s day (popularity changes by the day only), and whether that is all of
        them. Cached per day: finding the window's launches and scoring them took 3.7 ms of a 9 ms retrieval per
        request at 1 M items; a request now filters a short prefix by its own window."""
        day = int(np.floor(as_of / DAY_SECONDS))
        cached, complete = self._order.get(day, (np.empty(0, dtype=np.int64), False))
        if len(cached) < count and not complete:
            wanted = max(count, 2 * len(cached))  # a longer request doubles what the day keeps
            # a second of margin each side: the day's bounds need not round as floor(as_of / DAY_SECONDS) does
            rows = self.launched_within(day * DAY_SECONDS - self.window - 1.0, (day + 1) * DAY_SECONDS + 1.0)
            popularity = self.popularity.scores_of(as_of, rows)
            complete = len(rows) <= wanted
            if not complete:  # sort only the most popular (ties at the cut kept): the window may be large
                cut = np.partition(popularity, len(popularity) - wanted)[len(popularity) - wanted]
                rows, popularity = rows[popularity >= cut], popularity[popularity >= cut]
            cached = rows[np.lexsort((-self.created[rows], -popularity))]
            self._order[day] = (cached, complete)
            if len(self._order) > self.CACHE_DAYS:
                self._order.popitem(last=False)
        self._order.move_to_end(day)
        return cached, complete

    def retrieve(self, query: UserQuery, k: int) -> SourceResult:
        wanted = k + len(query.exclude_rows)
        count = wanted
        while True:
            leading, complete = self.order_on(query.as_of, count)
            launched = self.created[leading]
            rows = leading[(launched > query.as_of - self.window) & (launched <= query.as_of)][:wanted]
            if len(rows) == wanted or complete:
                break
            count = 2 * len(leading)  # the day's order held launches outside this request's window: take more
        if not len(rows):
            return SourceResult.empty(self.name)
        freshness = 1.0 - (query.as_of - self.created[rows]) / self.window
        return drop_excluded(self.name, rows, freshness.astype(np.float32), query.exclude_rows, k)
