"""The explorer's view of one request: what each stage did, in words a person reads (titles, not ids).

``POST /explore`` answers with it and the ``/ui`` page draws it: the user's recent history, stage 1's candidates per
source (rank and score), the re-ranked list with each item's move from its stage-1 rank, its top feature
contributions, what the business rules did, and the time of each stage. It runs the same ``Recommender`` steps as
``/recommend`` on the same user row; only the view is added.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from models.data import columns as C
from models.live.log import ITEM, Record
from models.recommender.bundle import CATALOG_TABLE
from models.recommender.recommender import Recommender
from models.recommender.request import Result, Retrieval

log = logging.getLogger(__name__)

HISTORY_SHOWN = 20
"""The user's most recent items the view lists (newest first; stage 1 queries with the user's recent list)."""


class ItemView(BaseModel):
    item_id: str
    title: str = Field(description="The item's title; its id when the version has none (an item added live).")
    category: str
    price: float | None = Field(description="Current price (live changes included); null when unknown.")
    in_stock: bool


class HistoryItem(ItemView):
    at: str = Field(description="When the user interacted with it (ISO 8601, UTC).")


class Candidate(ItemView):
    rank: int = Field(description="Rank within this source (0 = its best).")
    score: float
    fused_rank: int = Field(description="Rank in the merged stage-1 list the re-ranker scored.")


class Ranked(ItemView):
    rank: int
    score: float = Field(description="Re-ranker score (only the order matters), or minus the stage-1 rank when the "
                         "list was not re-ranked.")  # fmt: skip
    stage1_rank: int | None = Field(description="Rank in the merged stage-1 list; null: added by the rules' fill.")
    movement: int | None = Field(description="stage1_rank - rank: how far re-ranking moved it up (negative: down).")
    sources: dict[str, dict[str, float]] = Field(description="The stage-1 sources that found it, with its rank and "
                                                 "score in each.")  # fmt: skip
    top_features: dict[str, float] = Field(default_factory=dict, description="The features that moved its score "
                                           "most (contribution to the score, signed).")  # fmt: skip


class Stage1View(BaseModel):
    k_candidates: int = Field(description="The candidate-set size the version serves (chosen by cross-validation).")
    retrieved: int = Field(description="Candidates stage 1 returned for this request.")
    sources: dict[str, list[Candidate]] = Field(description="Each source's best candidates, in its own order.")


class Exploration(BaseModel):
    namespace: str
    version: str
    variant: str
    user_id: str
    known_user: bool
    history: list[HistoryItem]
    stage1: Stage1View
    results: list[Ranked]
    rules: dict[str, float] = Field(description="What the business rules did: filtered out, freshness-boosted, "
                                    "category-capped (counts).")  # fmt: skip
    fallback: bool
    degraded: bool
    timings_ms: dict[str, float]


class ExplorerInfo(BaseModel):
    namespace: str
    version: str
    dataset: str
    items: int
    k_candidates: int
    example_users: list[str] = Field(description="Known users from the most to the least active.")
    categories: list[str]


@dataclass(frozen=True)
class Titles:
    """Item titles of a published version (its catalogue table) and of the items added live since, for people;
    the rules never read them."""

    by_item: dict[str, str]

    @classmethod
    def of_version(cls, version_dir: Path) -> Titles:
        """A version published before titles were kept has none: its items are shown by id."""
        path = version_dir / CATALOG_TABLE
        try:
            table = pd.read_parquet(path, columns=[C.ITEM_ID, C.TITLE])
        except (KeyError, ValueError, OSError) as error:  # pyarrow: a missing column is a KeyError or ValueError
            log.warning("%s: no item titles (%s); the explorer shows ids", path, error)
            return cls({})
        return cls(dict(zip(table[C.ITEM_ID].astype(str), table[C.TITLE].astype(str), strict=True)))

    def title(self, item_id: str) -> str:
        return self.by_item.get(item_id, item_id)

    def learn(self, records: Iterable[Record]) -> None:
        """Titles of new items from the live log (the overlay adds the items; a dict assignment is atomic)."""
        for record in records:
            if record.kind == ITEM and record.body.get(C.TITLE):
                self.by_item.setdefault(str(record.body[C.ITEM_ID]), str(record.body[C.TITLE]))


def describe(recommender: Recommender, titles: Titles, rows: Sequence[int], as_of: float) -> list[dict[str, Any]]:
    """Title, category, price and stock of the items at catalogue ``rows`` (live changes included)."""
    catalog = recommender.catalog
    index = np.asarray(rows, dtype=np.int64)
    stock = catalog.in_stock(index, as_of) if len(index) else np.zeros(0, dtype=bool)
    views = []
    for row, in_stock in zip(index.tolist(), stock.tolist(), strict=True):
        item_id = str(catalog.item_ids[row])
        price = float(catalog.prices[row])
        views.append({"item_id": item_id, "title": titles.title(item_id), "category": str(catalog.categories[row]),
                      "price": None if math.isnan(price) else price, "in_stock": bool(in_stock)})  # fmt: skip
    return views


def describe_ids(recommender: Recommender, titles: Titles, item_ids: Sequence[str], as_of: float) -> list[ItemView]:
    """The items named (unknown ids are left out)."""
    rows = recommender.row_of.rows(list(item_ids))
    return [ItemView(**view) for view in describe(recommender, titles, rows[rows >= 0].tolist(), as_of)]


def history_view(
    recommender: Recommender, titles: Titles, retrieval: Retrieval, as_of: float
) -> list[HistoryItem]:  # fmt: skip
    """The user's recent items, newest first, as stage 1 queried with them (session items included)."""
    query = retrieval.query
    pairs = list(zip(query.history_items, query.history_times, strict=True))[::-1][:HISTORY_SHOWN]
    rows = recommender.row_of.rows([item for item, _ in pairs])
    known = [(row, at) for row, (_, at) in zip(rows.tolist(), pairs, strict=True) if row >= 0]
    views = describe(recommender, titles, [row for row, _ in known], as_of)
    return [HistoryItem(**view, at=_iso(at)) for view, (_, at) in zip(views, known, strict=True)]


def stage1_view(
    recommender: Recommender, titles: Titles, retrieval: Retrieval, per_source: int, as_of: float
) -> Stage1View:  # fmt: skip
    """Each source's best ``per_source`` candidates, with where fusion put them."""
    candidates = retrieval.candidates
    sources: dict[str, list[Candidate]] = {}
    for source, ranks in candidates.ranks.items():
        found = np.flatnonzero(ranks >= 0)
        best = found[np.argsort(ranks[found], kind="stable")][:per_source]
        if not len(best):
            continue
        views = describe(recommender, titles, candidates.rows[best].tolist(), as_of)
        sources[source] = [
            Candidate(**view, rank=int(ranks[p]), score=_finite(candidates.scores[source][p]), fused_rank=int(p))
            for view, p in zip(views, best.tolist(), strict=True)
        ]
    return Stage1View(k_candidates=recommender.k_candidates, retrieved=len(candidates), sources=sources)


def results_view(recommender: Recommender, titles: Titles, retrieval: Retrieval, result: Result,
                 as_of: float) -> list[Ranked]:  # fmt: skip
    """The final list, each item with its stage-1 rank, how far re-ranking moved it, and why."""
    fused_rank = {int(row): position for position, row in enumerate(retrieval.rows.tolist())}
    rows = recommender.row_of.rows([item.item_id for item in result.items])
    views = describe(recommender, titles, rows.tolist(), as_of)
    ranked = []
    for rank, (item, view, row) in enumerate(zip(result.items, views, rows.tolist(), strict=True)):
        explanation = item.explanation or {}
        before = fused_rank.get(int(row))
        sources = {name: {"rank": float(v["rank"]), "score": _finite(v["score"])}
                   for name, v in explanation.get("sources", {}).items() if name != "fill"}  # fmt: skip
        ranked.append(Ranked(**view, rank=rank, score=_finite(item.score), stage1_rank=before,
                             movement=None if before is None else before - rank, sources=sources,
                             top_features=explanation.get("top_features", {})))  # fmt: skip
    return ranked


def rules_view(result: Result) -> dict[str, float]:
    explanation = result.items[0].explanation if result.items else None
    applied = (explanation or {}).get("rules", {})
    return {name: float(value) for name, value in applied.items() if isinstance(value, int | float)}


def _finite(value: float) -> float:
    """JSON has no NaN: a missing score is 0 (its rank still says where it stood)."""
    value = float(value)
    return value if math.isfinite(value) else 0.0


def _iso(seconds: float) -> str:
    return pd.Timestamp(seconds, unit="s", tz="UTC").isoformat()
