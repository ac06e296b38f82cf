"""Stage 1 assembled: fit every candidate source on an interaction log, retrieve and fuse for a user as of a time,
and save / load what a published version serves.

The same ``Stage1.candidates`` call serves offline evaluation (as of each test user's cut time) and the online
service (as of now).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.data import columns as C
from models.data.clock import DAY_SECONDS, data_now, unix_seconds
from models.data.contract import Dataset
from models.files import ArtifactError
from models.retrieval.als import AlsParams, CollaborativeModel, fit_als, mips_item_vectors, mips_query
from models.retrieval.fusion import Candidates, fuse
from models.retrieval.graph import ItemItemSource, rp3beta_table
from models.retrieval.indexes import VectorIndex, exact_search
from models.retrieval.popularity import DecayedPopularity, PopularitySnapshot
from models.retrieval.sources import (
    CandidateSource,
    CollaborativeSource,
    FreshSource,
    PopularSource,
    SemanticSource,
    SourceResult,
    UserQuery,
)
from models.settings import Settings


@dataclass(frozen=True)
class Stage1Config:
    """How stage 1 is fitted and fused (every value comes from ``Settings``; a published version records them)."""

    als: AlsParams
    weights: Mapping[str, float]
    """Reciprocal-rank-fusion weight of each source (0: retrieved for provenance, not fused)."""
    reserved: Mapping[str, float]
    """Share of the list each source is guaranteed (its best items), before fusion fills the rest."""
    graph_top_m: int
    graph_beta: float
    graph_recent: int
    graph_decay: float
    availability_grace_days: float
    """Items launched more than this after the query time are not recommendable (0: strictly point-in-time)."""
    semantic_half_life_days: float
    popular_half_life_days: float
    fresh_window_days: float
    index_factory: str | None
    ann_target_recall: float
    serving_k: int
    seed: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Stage1Config:
        return cls(
            als=AlsParams.from_settings(settings),
            weights=dict(settings.candidate_weights),
            reserved=dict(settings.candidate_reserved),
            graph_top_m=settings.graph_top_m,
            graph_beta=settings.graph_beta,
            graph_recent=settings.graph_recent,
            graph_decay=settings.graph_decay,
            availability_grace_days=settings.availability_grace_days,
            semantic_half_life_days=settings.semantic_half_life_days,
            popular_half_life_days=settings.popular_half_life_days,
            fresh_window_days=settings.fresh_window_days,
            index_factory=settings.index_factory,
            ann_target_recall=settings.ann_target_recall,
            serving_k=settings.candidates_k,
            seed=settings.seed,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Stage1Config:
        return cls(**{**data, "als": AlsParams(**data["als"])})


@dataclass
class Stage1:
    """The candidate sources and the merge rule; holds everything a published version needs for stage 1."""

    sources: list[CandidateSource]
    config: Stage1Config
    created: np.ndarray
    item_ids: np.ndarray
    collaborative: CollaborativeModel | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._row_of = pd.Index(self.item_ids)
        grace = self.config.availability_grace_days * DAY_SECONDS
        self._available_from = self.created - grace

    def source(self, name: str) -> CandidateSource:
        for source in self.sources:
            if source.name == name:
                return source
        raise KeyError(name)

    def available(self, result: SourceResult, as_of: float) -> SourceResult:
        """Drop items not launched yet at the query time (a source may know them from later interactions)."""
        keep = self._available_from[result.rows] <= as_of
        if keep.all():
            return result
        return SourceResult(result.source, result.rows[keep], result.scores[keep])

    def with_exclude_rows(self, query: UserQuery) -> UserQuery:
        if not query.exclude:
            return query
        rows = self._row_of.get_indexer(list(query.exclude))
        return replace(query, exclude_rows=rows[rows >= 0].astype(np.int64))

    def retrieve_all(self, query: UserQuery, k: int) -> list[SourceResult]:
        query = self.with_exclude_rows(query)
        return [self.available(source.retrieve(query, k), query.as_of) for source in self.sources]

    def reserved_slots(self, k: int) -> dict[str, int]:
        return {name: int(round(share * k)) for name, share in self.config.reserved.items()}

    def fuse(self, results: Sequence[SourceResult], k: int) -> Candidates:
        return fuse(results, k, self.config.weights, self.reserved_slots(k), catalogue=self.item_ids)

    def candidates(self, query: UserQuery, k: int) -> Candidates:
        """Every source's top ``k``, fused into ``k`` unique candidates with provenance."""
        return self.fuse(self.retrieve_all(query, k), k)


def fit_stage1(
    interactions: pd.DataFrame,
    items: pd.DataFrame,
    text_vectors: np.ndarray,
    config: Stage1Config,
    text_index: VectorIndex | None = None,
    tuning_queries: int = 200,
) -> Stage1:
    """Fit ALS and popularity on ``interactions``, build (or reuse) the FAISS indexes, tune them for the serving K."""
    timings: dict[str, float] = {}
    item_ids = items[C.ITEM_ID].to_numpy().astype(str)
    rng = np.random.default_rng(config.seed)

    started = time.perf_counter()
    if text_index is None:
        text_index = VectorIndex.build(text_vectors, item_ids, config.index_factory, seed=config.seed)
        sample = text_vectors[rng.choice(len(item_ids), size=min(tuning_queries, len(item_ids)), replace=False)]
        text_index.tune(sample, exact_search(text_vectors, sample, config.serving_k), config.serving_k,
                        config.ann_target_recall)  # fmt: skip
    timings["semantic_index_s"] = time.perf_counter() - started

    started = time.perf_counter()
    als = fit_als(interactions, item_ids, config.als)
    timings["als_fit_s"] = time.perf_counter() - started
    started = time.perf_counter()
    graph = rp3beta_table(interactions, item_ids, beta=config.graph_beta, top_m=config.graph_top_m)
    timings["graph_table_s"] = time.perf_counter() - started

    started = time.perf_counter()
    lifted, _ = mips_item_vectors(als.item_factors)
    collab_index = VectorIndex.build(lifted, item_ids, config.index_factory, seed=config.seed)
    if len(als.user_factors):
        users = als.user_factors[rng.choice(len(als.user_factors), size=min(tuning_queries, len(als.user_factors)),
                                            replace=False)]  # fmt: skip
        queries = np.stack([mips_query(u) for u in users])
        collab_index.tune(queries, exact_search(lifted, queries, config.serving_k), config.serving_k,
                          config.ann_target_recall)  # fmt: skip
    timings["collaborative_index_s"] = time.perf_counter() - started

    popularity = DecayedPopularity(interactions, item_ids, config.popular_half_life_days)
    created = unix_seconds(items[C.CREATED_AT])
    sources: list[CandidateSource] = [
        CollaborativeSource(collab_index, als),
        ItemItemSource(graph, item_ids, config.graph_recent, config.graph_decay),
        PopularSource(popularity),
        SemanticSource(text_index, text_vectors, config.semantic_half_life_days),
        FreshSource(item_ids, created, popularity, config.fresh_window_days),
    ]
    return Stage1(sources, config, created, item_ids, als, timings)


def stage1_summary(stage1: Stage1) -> dict[str, Any]:
    """What the manifest and MLflow record about the fitted stage 1."""
    summary: dict[str, Any] = {"weights": dict(stage1.config.weights), "reserved": dict(stage1.config.reserved),
                               "timings": stage1.timings}  # fmt: skip
    for source in stage1.sources:
        index = getattr(source, "index", None)
        if isinstance(index, VectorIndex):
            summary[f"{source.name}_index"] = {"factory": index.factory, **index.params}
    return summary


def save_stage1(
    stage1: Stage1, folder: Path, items: pd.DataFrame, as_of: float, embedding: Mapping[str, Any]
) -> dict[str, Any]:
    """Write indexes, vectors, ALS factors and a popularity snapshot as of ``as_of``; return the manifest section."""
    folder.mkdir(parents=True, exist_ok=True)
    semantic = stage1.source("semantic")
    collaborative = stage1.source("collaborative")
    popular = stage1.source("popular")
    fresh = stage1.source("fresh")
    graph = stage1.source("graph")
    assert isinstance(semantic, SemanticSource) and isinstance(collaborative, CollaborativeSource)
    assert isinstance(popular, PopularSource) and isinstance(fresh, FreshSource)
    assert isinstance(graph, ItemItemSource)
    np.save(folder / "item_ids.npy", items[C.ITEM_ID].to_numpy().astype(str), allow_pickle=False)
    np.save(folder / "created_at.npy", fresh.created, allow_pickle=False)
    np.save(folder / "text_vectors.npy", semantic.item_vectors, allow_pickle=False)
    popularity = popular.popularity
    snapshot = popularity.snapshot(as_of) if isinstance(popularity, DecayedPopularity) else popularity
    assert isinstance(snapshot, PopularitySnapshot)
    return {
        "embedding": dict(embedding),
        "indexes": {
            "semantic": semantic.index.save(folder, "semantic"),
            "collaborative": collaborative.index.save(folder, "collaborative"),
        },
        "als": collaborative.model.save(folder / "als"),
        "popularity": snapshot.save(folder, "popularity"),
        "graph": graph.save(folder, "graph"),
        "config": stage1.config.to_json(),
        "items": len(items),
        "as_of": as_of,
    }


def load_stage1(folder: Path, section: Mapping[str, Any], encoder_dim: int | None = None) -> Stage1:
    """Rebuild the sources from a published ``stage1`` folder, checking dimensions against the manifest."""
    item_ids = np.load(folder / "item_ids.npy", allow_pickle=False)
    indexes = section["indexes"]
    dim = int(section["embedding"]["dim"])
    if encoder_dim is not None and dim != encoder_dim:
        raise ArtifactError(f"{folder}: embedding dimension {dim} in the manifest, encoder gives {encoder_dim}")
    semantic_index = VectorIndex.load(folder, indexes["semantic"], expected_dim=dim)
    als = CollaborativeModel.load(folder / "als", section["als"])
    collab_index = VectorIndex.load(folder, indexes["collaborative"], expected_dim=als.dim + 1)
    text_vectors = np.load(folder / "text_vectors.npy", allow_pickle=False, mmap_mode="r")
    if text_vectors.shape != (len(item_ids), dim):
        raise ArtifactError(
            f"{folder / 'text_vectors.npy'}: shape {text_vectors.shape}, expected {(len(item_ids), dim)}"
        )
    popularity = PopularitySnapshot.load(folder, section["popularity"], item_ids)
    created = np.load(folder / "created_at.npy", allow_pickle=False)
    config = Stage1Config.from_json(section["config"])
    sources: list[CandidateSource] = [
        CollaborativeSource(collab_index, als),
        ItemItemSource.load(folder, section["graph"], item_ids),
        PopularSource(popularity),
        SemanticSource(semantic_index, np.asarray(text_vectors), config.semantic_half_life_days),
        FreshSource(item_ids, created, popularity, config.fresh_window_days),
    ]
    return Stage1(sources, config, created, item_ids, als)


def build_stage1_step(dataset: Dataset, text_vectors: np.ndarray, settings: Settings, out_dir: Path) -> dict[str, Any]:
    """Fit stage 1 on every interaction and save it for serving; returns the manifest section."""
    stage1 = fit_stage1(dataset.interactions, dataset.items, text_vectors, Stage1Config.from_settings(settings))
    embedding = {"model": settings.embedding_backend, "dim": int(text_vectors.shape[1])}
    section = save_stage1(stage1, out_dir, dataset.items, data_now(dataset.interactions), embedding)
    section["summary"] = stage1_summary(stage1)
    return section
