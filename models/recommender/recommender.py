"""``Recommender.recommend``: the one path from a user to a ranked list, used by offline evaluation, the re-ranker's
training set and the service.

user features → stage-1 candidates (merged, with provenance) → feature matrix (user × item × cross) → LightGBM
score → business rules → top k, with explanations on request. Fallbacks: an unknown user gets popular and fresh
items (``fallback``); when user features cannot be read the list is the stage-1 order (``degraded``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from models.features.assembly import ItemBlock, RequestInputs, UserRow, assemble
from models.features.snapshots import ItemTags
from models.features.spec import FeatureSpec
from models.ranking.ranker import Ranker
from models.ranking.rules import Catalog, Filters, RulesConfig, apply_rules
from models.recommender.explain import explain
from models.recommender.item_features import ItemFeatureSource
from models.recommender.request import NO_FILTERS, Recommended, Request, Result, Retrieval
from models.recommender.retrieval import query_for, retrieve, user_is_known
from models.recommender.similar import similar_items
from models.retrieval.fusion import Candidates
from models.retrieval.lookup import RowLookup
from models.retrieval.sources import CollaborativeSource, SemanticSource, UserQuery, in_sorted
from models.retrieval.stage1 import Stage1


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
    item_tags: ItemTags
    version: str = ""

    def __post_init__(self) -> None:
        same_catalogue = np.array_equal(self.stage1.item_ids, self.catalog.item_ids)
        self.row_of = self.stage1.row_of if same_catalogue else RowLookup(self.catalog.item_ids)
        semantic = self.stage1.source("semantic")
        collaborative = self.stage1.source("ials")
        assert isinstance(semantic, SemanticSource) and isinstance(collaborative, CollaborativeSource)
        self.semantic = semantic
        self.collaborative = collaborative
        self.text_vectors = semantic.item_vectors
        self.collab_rows = pd.Index(collaborative.model.item_ids).get_indexer(self.catalog.item_ids)

    def query_for(self, request: Request, user: Mapping[str, Any] | None) -> tuple[UserQuery, frozenset[str]]:
        return query_for(request, user)

    def retrieve(self, request: Request, user: Mapping[str, Any] | None, degraded: bool = False) -> Retrieval:
        return retrieve(self.stage1, request, user, self.k_candidates, degraded)

    def recommend(
        self, request: Request, user: Mapping[str, Any] | None, degraded: bool = False,
        retrieval: Retrieval | None = None,
    ) -> Result:  # fmt: skip
        """The ranked list for ``request``; ``retrieval``: stage 1's answer for this same request and user, already
        computed (another ranker on the same candidates, or a page that shows both stages), else retrieved here."""
        timings: dict[str, float] = {}
        started = time.perf_counter()
        if retrieval is None:
            retrieval = self.retrieve(request, user, degraded)
        timings["retrieval"] = _ms(started)
        anonymous_search = request.query_vector is not None and not user_is_known(user)
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
        positions = positions_in(retrieval.rows, ruled.rows)
        found_by = retrieval.candidates.sources_of(positions)
        items = [
            Recommended(str(self.catalog.item_ids[r]), float(s), sources=found)
            for r, s, found in zip(ruled.rows, ruled.scores, found_by, strict=True)
        ]
        if request.explain:
            explain(items, ruled.rows, retrieval, features, self.ranker, self.spec.names, ruled.applied, degraded)
        return Result(items, fallback=retrieval.fallback, degraded=degraded, candidates=len(retrieval.rows),
                      timings_ms=timings, features=_shown_rows(features, positions))  # fmt: skip

    def feature_matrix(
        self, request: Request, retrieval: Retrieval, user: Mapping[str, Any], block: ItemBlock
    ) -> np.ndarray:
        """The ranker's input for the retrieved candidates; ``block`` holds their stored item features."""
        query, rows = retrieval.query, retrieval.rows
        collab_rows = self.collab_rows[rows]
        collab_items = np.where(collab_rows[:, None] >= 0, self.collaborative.model.item_factors[collab_rows], np.nan)
        seen = retrieval.seen
        recent = self.row_of.rows(query.seen[: self.stage1.config.recent_items])
        inputs = RequestInputs(
            as_of=request.as_of,
            candidate_rows=rows,
            user_text_vector=self.semantic.query_vector(
                UserQuery(query.user_id, query.as_of, query.history_items, query.history_times)
            ),
            user_collab_vector=self.collaborative.user_vector(query),
            candidate_text_vectors=self.text_vectors[rows],
            candidate_collab_vectors=collab_items,
            seen_counts=in_sorted(rows, self._rows_of(seen)).astype(np.float32),
            provenance_ranks=retrieval.candidates.ranks,
            provenance_scores=retrieval.candidates.scores,
            fused_scores=_fused_scores(retrieval.candidates),
            item_tags=self.item_tags,
            recent_rows=recent[recent >= 0],
            session_vector=self._session_vector(query.history_items[-self.stage1.config.recent_items :]),
        )
        return assemble(UserRow.from_mapping(user, self.spec), block, inputs)

    def _rows_of(self, item_ids: frozenset[str]) -> np.ndarray:
        """The catalogue rows of ``item_ids``, ascending (unknown items left out)."""
        if not item_ids:
            return np.empty(0, dtype=np.int64)
        rows = self.row_of.rows(item_ids)
        return np.unique(rows[rows >= 0])

    def _session_vector(self, item_ids: Sequence[str]) -> np.ndarray | None:
        """The session's taste: the mean text vector of the user's last items (the request's session items last)."""
        rows = self.row_of.rows(item_ids)
        rows = rows[rows >= 0]
        if not len(rows):
            return None
        vector = self.text_vectors[rows].mean(axis=0)
        norm = np.linalg.norm(vector)
        return (vector / norm).astype(np.float32) if norm > 0 else None

    def similar(self, item_id: str, k: int, filters: Filters = NO_FILTERS, as_of: float = 0.0) -> list[Recommended]:
        """Items close to ``item_id`` in text and collaborative space; raises KeyError for an unknown item."""
        row = self.row_of.row(item_id)
        if row < 0:
            raise KeyError(item_id)
        return similar_items(self.semantic, self.collaborative, self.catalog, self.collab_rows, int(row), k, filters,
                             as_of, self.rules.in_stock_only)  # fmt: skip


def positions_in(rows: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Where each of ``wanted`` sits in ``rows`` (unique), -1 where absent (a popular item the rules filled in)."""
    if not len(rows):
        return np.full(len(wanted), -1, dtype=np.int64)
    by_row = np.argsort(rows, kind="stable")
    slot = np.minimum(np.searchsorted(rows, wanted, sorter=by_row), len(rows) - 1)
    return np.where(rows[by_row[slot]] == wanted, by_row[slot], -1)


def _shown_rows(features: np.ndarray | None, positions: np.ndarray) -> np.ndarray | None:
    """The feature rows of the shown items (NaN for items the rules filled in from outside the candidates)."""
    if features is None:
        return None
    shown = features[np.maximum(positions, 0)].copy()
    shown[positions < 0] = np.nan
    return shown


def _fused_scores(candidates: Candidates) -> np.ndarray:
    if candidates.fused_scores is None:
        return np.full(len(candidates), np.nan, dtype=np.float32)
    return candidates.fused_scores


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
