"""``Recommender.recommend``: the one path from a user to a ranked list, used by offline evaluation and the service.

user features → stage-1 candidates (merged, with provenance) → feature matrix (user × item × cross) → LightGBM
score → business rules → top k, with explanations on request. Fallbacks: an unknown user gets popular and fresh
items (``fallback``); when user features cannot be read the list is the stage-1 order (``degraded``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from models.candidates import (
    Candidates,
    CollaborativeSource,
    SemanticSource,
    SourceResult,
    UserQuery,
    merge,
    scale_quotas,
)
from models.collaborative import mips_query
from models.features import (
    USER_RECENT_ITEMS,
    USER_RECENT_TIMES,
    USER_SEEN_ITEMS,
    FeatureContext,
    FeatureSpec,
    ItemBlock,
    RequestInputs,
    UserRow,
    assemble,
    item_feature_matrix,
)
from models.ranker import Ranker
from models.rules import Catalog, Filters, RulesConfig, apply_rules
from models.stage1 import Stage1

RRF_K = 60.0

FALLBACK_SHARES = {"popular": 0.7, "fresh": 0.3}
NO_FILTERS = Filters()


class ItemFeatureSource(Protocol):
    def block(self, rows: np.ndarray, as_of: float) -> ItemBlock: ...


class StaticItemFeatures:
    """Serving: the item snapshot of the published version, held in memory (a per-request store read is too slow)."""

    def __init__(self, table: pd.DataFrame, item_ids: np.ndarray, spec: FeatureSpec):
        aligned = table.set_index("item_id").reindex(item_ids)
        if aligned["item_category"].isna().any():
            missing = item_ids[aligned["item_category"].isna().to_numpy()][:5].tolist()
            raise ValueError(f"item feature table lacks items, e.g. {missing}")
        self.all = ItemBlock.from_frame(aligned.reset_index(), spec)

    def block(self, rows: np.ndarray, as_of: float) -> ItemBlock:
        return self.all.take(rows)


class PointInTimeItemFeatures:
    """Offline evaluation: item features computed as of each request's time from the interaction log."""

    def __init__(self, context: FeatureContext, spec: FeatureSpec):
        self.context = context
        self.spec = spec
        self.item_ids = context.items["item_id"].to_numpy().astype(str)

    def block(self, rows: np.ndarray, as_of: float) -> ItemBlock:
        at = np.full(len(rows), int(as_of), dtype=np.int64)
        names = self.context.item_category_name[rows]
        numeric = item_feature_matrix(self.context, rows, at)
        return ItemBlock(numeric, self.spec.codes("item_category", names), names)


@dataclass(frozen=True)
class Request:
    user_id: str | None
    k: int = 10
    as_of: float = 0.0
    filters: Filters = NO_FILTERS
    exclude_seen: bool = True
    explain: bool = False
    session_item_ids: tuple[str, ...] = ()
    query_vector: np.ndarray | None = None
    """Search: the encoded query text; candidates then come from semantic retrieval only."""


@dataclass(frozen=True)
class Retrieval:
    query: UserQuery
    candidates: Candidates
    rows: np.ndarray
    seen: frozenset[str]
    fallback: bool


@dataclass
class Recommended:
    item_id: str
    score: float
    explanation: dict[str, Any] | None = None


@dataclass
class Result:
    items: list[Recommended]
    fallback: bool = False
    degraded: bool = False
    candidates: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)


def _as_list(value: object) -> list:
    """Feast returns lists, pandas rows may hold arrays, a missing user None."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return list(value)  # type: ignore[call-overload]


def _user_is_known(user: Mapping[str, Any] | None) -> bool:
    if user is None:
        return False
    events = user.get("user_events_all")
    return events is not None and not (isinstance(events, float) and np.isnan(events))


@dataclass
class Recommender:
    stage1: Stage1
    catalog: Catalog
    item_features: ItemFeatureSource
    spec: FeatureSpec
    ranker: Ranker | None
    rules: RulesConfig
    k_candidates: int
    popularity_order: np.ndarray
    version: str = ""

    def __post_init__(self) -> None:
        self.row_of = pd.Index(self.catalog.item_ids)
        semantic = self.stage1.source("semantic")
        collaborative = self.stage1.source("collaborative")
        assert isinstance(semantic, SemanticSource) and isinstance(collaborative, CollaborativeSource)
        self.semantic = semantic
        self.collaborative = collaborative
        self.text_vectors = semantic.item_vectors
        self.collab_rows = pd.Index(collaborative.model.item_ids).get_indexer(self.catalog.item_ids)

    # ---- the main path -------------------------------------------------------------------------------------
    def query_for(self, request: Request, user: Mapping[str, Any] | None) -> tuple[UserQuery, frozenset[str]]:
        """The stage-1 query from the user's features (recent positives, items seen), and the seen items."""
        features = user if _user_is_known(user) and user is not None else {}
        seen = frozenset(_as_list(features.get(USER_SEEN_ITEMS)))
        query = UserQuery(
            user_id=request.user_id,
            as_of=request.as_of,
            history_items=[str(i) for i in _as_list(features.get(USER_RECENT_ITEMS))],
            history_times=[float(t) for t in _as_list(features.get(USER_RECENT_TIMES))],
            text_vector=request.query_vector,
            exclude=seen if request.exclude_seen else frozenset(),
        )
        return query, seen

    def retrieve(self, request: Request, user: Mapping[str, Any] | None, degraded: bool = False) -> Retrieval:
        """Stage 1 for a request: the query built from the user's features, and the merged candidates."""
        query, seen = self.query_for(request, user)
        known = _user_is_known(user)
        fallback = not known and not degraded and request.query_vector is None and not request.session_item_ids
        candidates = self._candidates(query, fallback)
        return Retrieval(query, candidates, candidates.rows, seen, fallback)

    def recommend(self, request: Request, user: Mapping[str, Any] | None, degraded: bool = False) -> Result:
        timings: dict[str, float] = {}
        started = time.perf_counter()
        retrieval = self.retrieve(request, user, degraded)
        timings["retrieval"] = _ms(started)
        anonymous_search = request.query_vector is not None and not _user_is_known(user)
        use_ranker = (
            self.ranker is not None and not retrieval.fallback and not degraded and not anonymous_search
            and len(retrieval.rows) > 0
        )  # fmt: skip
        features = None
        if use_ranker:
            assert self.ranker is not None
            started = time.perf_counter()
            block = self.item_features.block(retrieval.rows, request.as_of)
            features = self.feature_matrix(request, retrieval, user or {}, block)
            timings["features"] = _ms(started)
            started = time.perf_counter()
            scores = self.ranker.predict(features)
            timings["model"] = _ms(started)
        else:
            scores = -np.arange(len(retrieval.rows), dtype=np.float64)  # stage-1 order (semantic order for search)
        started = time.perf_counter()
        ruled = apply_rules(self.catalog, retrieval.rows, scores, request.k, request.as_of, self.rules,
                            request.filters, retrieval.query.exclude, self.popularity_order)  # fmt: skip
        timings["rules"] = _ms(started)
        items = [
            Recommended(str(self.catalog.item_ids[r]), float(s)) for r, s in zip(ruled.rows, ruled.scores, strict=True)
        ]
        if request.explain:
            self._explain(items, ruled.rows, retrieval, features, ruled.applied, degraded)
        return Result(items, fallback=retrieval.fallback, degraded=degraded, candidates=len(retrieval.rows),
                      timings_ms=timings)  # fmt: skip

    def _candidates(self, query: UserQuery, fallback: bool) -> Candidates:
        catalogue = self.catalog.item_ids
        if query.text_vector is not None:  # search: semantic retrieval only
            query = self.stage1.with_exclude_rows(query)
            result = self.stage1.available(self.semantic.retrieve(query, self.k_candidates), query.as_of)
            return merge([result], {result.source: self.k_candidates}, self.k_candidates, catalogue)
        if fallback:
            quotas = scale_quotas(FALLBACK_SHARES, self.k_candidates)
            results = [self.stage1.available(self.stage1.source(name).retrieve(query, quotas[name] * 2), query.as_of)
                       for name in FALLBACK_SHARES]  # fmt: skip
            return merge(results, quotas, self.k_candidates, catalogue)
        return self.stage1.candidates(query, self.k_candidates)

    def feature_matrix(
        self, request: Request, retrieval: Retrieval, user: Mapping[str, Any], block: ItemBlock
    ) -> np.ndarray:
        """The ranker's input for the retrieved candidates; ``block`` holds their stored item features."""
        query, rows = retrieval.query, retrieval.rows
        collab_rows = self.collab_rows[rows]
        collab_items = np.where(collab_rows[:, None] >= 0, self.collaborative.model.item_factors[collab_rows], np.nan)
        seen = retrieval.seen
        inputs = RequestInputs(
            as_of=request.as_of,
            user_text_vector=self.semantic.query_vector(
                UserQuery(query.user_id, query.as_of, query.history_items, query.history_times)
            ),
            user_collab_vector=self.collaborative.user_vector(query),
            candidate_text_vectors=self.text_vectors[rows],
            candidate_collab_vectors=collab_items,
            seen_counts=np.isin(retrieval.candidates.item_ids, list(seen)).astype(np.float32)
            if seen
            else np.zeros(len(rows), np.float32),
            provenance_ranks=retrieval.candidates.ranks,
            provenance_scores=retrieval.candidates.scores,
            session_vector=self._session_vector(request.session_item_ids),
        )
        return assemble(UserRow.from_mapping(user, self.spec), block, inputs)

    def _session_vector(self, item_ids: tuple[str, ...]) -> np.ndarray | None:
        rows = self.row_of.get_indexer(list(item_ids))
        rows = rows[rows >= 0]
        if not len(rows):
            return None
        vector = self.text_vectors[rows].mean(axis=0)
        norm = np.linalg.norm(vector)
        return (vector / norm).astype(np.float32) if norm > 0 else None

    def _explain(
        self, items: list[Recommended], final_rows: np.ndarray, retrieval: Retrieval, features: np.ndarray | None,
        applied: dict[str, object], degraded: bool,
    ) -> None:  # fmt: skip
        candidates, fallback = retrieval.candidates, retrieval.fallback
        position = {int(r): i for i, r in enumerate(retrieval.rows)}
        contributions = None
        picked = [position.get(int(r), -1) for r in final_rows]
        if features is not None and self.ranker is not None:
            valid = [p for p in picked if p >= 0]
            contributions = dict(zip(valid, self.ranker.contributions(features[valid]), strict=True)) if valid else {}
        for item, p in zip(items, picked, strict=True):
            explanation: dict[str, Any] = {"rules": applied, "fallback": fallback, "degraded": degraded}
            if p >= 0:
                explanation["sources"] = candidates.provenance(p)
            else:
                explanation["sources"] = {"fill": {"rank": -1, "score": float("nan")}}
            if contributions is not None and p in contributions:
                values = contributions[p][:-1]
                top = np.argsort(-np.abs(values))[:5]
                explanation["top_features"] = {self.spec.names[t]: round(float(values[t]), 4) for t in top}
            item.explanation = explanation

    # ---- item to item ---------------------------------------------------------------------------------------
    def similar(self, item_id: str, k: int, filters: Filters = NO_FILTERS, as_of: float = 0.0) -> list[Recommended]:
        """Items close to ``item_id`` in text space and in collaborative space, ordered by reciprocal-rank fusion
        of the two neighbour lists (an item near the top of both comes first)."""
        row = self.row_of.get_indexer([item_id])[0]
        if row < 0:
            raise KeyError(item_id)
        exclude = frozenset({item_id})
        fetch = max(4 * k, 50)
        query = UserQuery(None, as_of, text_vector=self.text_vectors[row], exclude=exclude,
                          exclude_rows=np.array([row], dtype=np.int64))  # fmt: skip
        results = [self.semantic.retrieve(query, fetch)]
        collab_row = self.collab_rows[row]
        if collab_row >= 0:  # neighbours by ALS inner product (the MIPS query of the item's own factors)
            scores, found = self.collaborative.index.search_rows(
                mips_query(self.collaborative.model.item_factors[collab_row]), fetch + 1
            )
            keep = (found[0] != row) & (found[0] >= 0)
            results.insert(0, SourceResult("collaborative", found[0][keep][:fetch], scores[0][keep][:fetch]))
        merged = merge(results, scale_quotas({r.source: 1.0 for r in results}, fetch), fetch, self.catalog.item_ids)
        rows = merged.rows
        # reciprocal-rank fusion of the two neighbour lists (first in both: 2/60), as stage 1 fuses its sources
        fused = np.zeros(len(rows), dtype=np.float64)
        for ranks in merged.ranks.values():
            fused += np.where(ranks >= 0, 1.0 / (RRF_K + np.maximum(ranks, 0)), 0.0)
        order = np.argsort(-fused, kind="stable")
        rows, fused = rows[order], fused[order]
        ruled = apply_rules(self.catalog, rows, fused, k, as_of,
                            RulesConfig(freshness_weight=0.0, max_per_category=0, in_stock_only=self.rules.in_stock_only),
                            filters, exclude)  # fmt: skip
        return [
            Recommended(str(self.catalog.item_ids[r]), float(s)) for r, s in zip(ruled.rows, ruled.scores, strict=True)
        ]


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
