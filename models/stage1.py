"""Stage 1 assembled: fit every candidate source on an interaction log, retrieve for a user as of a time, and
measure Recall@K per source and merged under the shared protocol.

The same ``Stage1.candidates`` call serves offline evaluation (as of each test user's cut time) and the online
service (as of now).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models import columns as C
from models.artifacts import ArtifactError
from models.candidates import (
    DAY_SECONDS,
    Candidates,
    CandidateSource,
    CollaborativeSource,
    DecayedPopularity,
    FreshSource,
    ItemItemSource,
    PopularitySnapshot,
    PopularSource,
    SemanticSource,
    SourceResult,
    UserQuery,
    fuse,
)
from models.collaborative import AlsParams, CollaborativeModel, fit_als, mips_item_vectors, mips_query, rp3beta_table
from models.contract import Dataset
from models.indexes import VectorIndex, exact_search
from models.settings import Settings
from models.splits import Split, evaluation_split, is_positive, relevant_items

RECALL_KS = (50, 100, 200, 500, 1000)


DEFAULT_WEIGHTS = {"collaborative": 1.0, "graph": 1.0, "popular": 0.5, "semantic": 0.5, "fresh": 0.3}
DEFAULT_RESERVED = {"fresh": 0.02, "semantic": 0.02}


@dataclass(frozen=True)
class Stage1Config:
    als: AlsParams = AlsParams()
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    """Reciprocal-rank-fusion weight of each source (0: retrieved for provenance, not fused)."""
    reserved: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_RESERVED))
    """Share of the list each source is guaranteed (its best items), before fusion fills the rest."""
    graph_top_m: int = 200
    graph_beta: float = 0.5
    graph_recent: int = 50
    graph_decay: float = 100.0
    availability_grace_days: float = 0.0
    """Items launched more than this after the query time are not recommendable (0: strictly point-in-time)."""
    semantic_half_life_days: float = 30.0
    popular_half_life_days: float = 14.0
    fresh_window_days: float = 30.0
    index_factory: str | None = None
    ann_target_recall: float = 0.95
    serving_k: int = 500
    seed: int = 42


@dataclass(frozen=True)
class History:
    """One user's interactions in time order (unix seconds)."""

    items: np.ndarray
    times: np.ndarray
    positive: np.ndarray

    @property
    def seen(self) -> frozenset[str]:
        return frozenset(self.items.tolist())


def build_histories(interactions: pd.DataFrame) -> dict[str, History]:
    """Per user, items / times / positive flags sorted by time."""
    ordered = interactions.sort_values([C.USER_ID, C.TIMESTAMP], kind="stable")
    users = ordered[C.USER_ID].to_numpy()
    items = ordered[C.ITEM_ID].to_numpy().astype(str)
    seconds = ordered[C.TIMESTAMP].astype("int64").to_numpy() / 1e9
    positive = is_positive(ordered).to_numpy()
    bounds = np.flatnonzero(users[1:] != users[:-1]) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(users)]])
    return {str(users[s]): History(items[s:e], seconds[s:e], positive[s:e]) for s, e in zip(starts, ends, strict=True)}


def make_query(user_id: str | None, history: History | None, as_of: float, exclude_seen: bool = True) -> UserQuery:
    """A query from a user's history: positives drive the text query (all items if none is positive)."""
    if history is None:
        return UserQuery(user_id, as_of)
    before = history.times < as_of
    items, times, positive = history.items[before], history.times[before], history.positive[before]
    if positive.any():
        text_items, text_times = items[positive], times[positive]
    else:
        text_items, text_times = items, times
    return UserQuery(
        user_id=user_id,
        as_of=as_of,
        history_items=text_items.tolist(),
        history_times=text_times.tolist(),
        exclude=frozenset(items.tolist()) if exclude_seen else frozenset(),
    )


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
    created = items[C.CREATED_AT].astype("int64").to_numpy() / 1e9
    sources: list[CandidateSource] = [
        CollaborativeSource(collab_index, als),
        ItemItemSource(graph, item_ids, config.graph_recent, config.graph_decay),
        PopularSource(popularity),
        SemanticSource(text_index, text_vectors, config.semantic_half_life_days),
        FreshSource(item_ids, created, popularity, config.fresh_window_days),
    ]
    return Stage1(sources, config, created, item_ids, als, timings)


def evaluate_stage1(
    stage1: Stage1, split: Split, ks: Sequence[int] = RECALL_KS, max_users: int | None = None, seed: int = 42
) -> dict[str, dict[str, float]]:
    """Recall@K per source and merged (keys: source → str(K)), over test users with a positive, each queried as of
    their cut time."""
    relevant = relevant_items(split)
    users = sorted(relevant)
    if max_users is not None and len(users) > max_users:
        users = sorted(np.random.default_rng(seed).choice(users, size=max_users, replace=False).tolist())
    histories = build_histories(split.history)
    cut_times = (split.cut_times().astype("int64") / 1e9).to_dict()
    k_max = max(ks)
    totals: dict[str, dict[int, float]] = {s.name: dict.fromkeys(ks, 0.0) for s in stage1.sources}
    totals["merged"] = dict.fromkeys(ks, 0.0)
    for user in users:
        query = make_query(user, histories.get(user), cut_times[user])
        results = stage1.retrieve_all(query, k_max)
        wanted = relevant[user]
        for result in results:
            ids = stage1.item_ids[result.rows]
            for k in ks:
                totals[result.source][k] += len(wanted.intersection(ids[:k].tolist())) / len(wanted)
        merged = stage1.fuse(results, k_max).item_ids.tolist()
        for k in ks:
            totals["merged"][k] += len(wanted.intersection(merged[:k])) / len(wanted)
    return {name: {str(k): value / len(users) for k, value in by_k.items()} for name, by_k in totals.items()}


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
        "weights": dict(stage1.config.weights),
        "reserved": dict(stage1.config.reserved),
        "config": {
            "availability_grace_days": stage1.config.availability_grace_days,
            "semantic_half_life_days": stage1.config.semantic_half_life_days,
            "popular_half_life_days": stage1.config.popular_half_life_days,
            "fresh_window_days": stage1.config.fresh_window_days,
            "serving_k": stage1.config.serving_k,
        },
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
    config_section = section["config"]
    config = Stage1Config(
        weights=dict(section["weights"]),
        reserved=dict(section["reserved"]),
        availability_grace_days=config_section["availability_grace_days"],
        semantic_half_life_days=config_section["semantic_half_life_days"],
        popular_half_life_days=config_section["popular_half_life_days"],
        fresh_window_days=config_section["fresh_window_days"],
        serving_k=config_section["serving_k"],
    )
    sources: list[CandidateSource] = [
        CollaborativeSource(collab_index, als),
        ItemItemSource.load(folder, section["graph"], item_ids),
        PopularSource(popularity),
        SemanticSource(semantic_index, np.asarray(text_vectors), config.semantic_half_life_days),
        FreshSource(item_ids, created, popularity, config.fresh_window_days),
    ]
    return Stage1(sources, config, created, item_ids, als)


def config_from_settings(settings: Settings) -> Stage1Config:
    return Stage1Config(
        als=AlsParams(
            factors=settings.als_factors,
            regularization=settings.als_regularization,
            iterations=settings.als_iterations,
            alpha=settings.als_alpha,
            negative_weight=settings.als_negative_weight,
            seed=settings.seed,
        ),
        weights=dict(settings.candidate_weights),
        reserved=dict(settings.candidate_reserved),
        graph_top_m=settings.graph_top_m,
        availability_grace_days=settings.availability_grace_days,
        semantic_half_life_days=settings.semantic_half_life_days,
        popular_half_life_days=settings.popular_half_life_days,
        fresh_window_days=settings.fresh_window_days,
        index_factory=settings.index_factory,
        ann_target_recall=settings.ann_target_recall,
        serving_k=settings.candidates_k,
        seed=settings.seed,
    )


def snapshot_time(interactions: pd.DataFrame) -> float:
    """Start of the day after the last interaction: serving's 'now' for popularity snapshots."""
    last = interactions[C.TIMESTAMP].max().value / 1e9
    return (np.floor(last / DAY_SECONDS) + 1) * DAY_SECONDS


def evaluate_stage1_step(dataset: Dataset, text_vectors: np.ndarray, settings: Settings) -> dict[str, Any]:
    """Fit stage 1 on the protocol's train split and report Recall@K per source and merged on its test split."""
    split = evaluation_split(dataset.interactions, settings.test_fraction)
    stage1 = fit_stage1(split.history, dataset.items, text_vectors, config_from_settings(settings))
    started = time.perf_counter()
    recall = evaluate_stage1(stage1, split, max_users=settings.recall_max_users, seed=settings.seed)
    stage1.timings["evaluate_s"] = time.perf_counter() - started
    return {"recall": recall, **stage1_summary(stage1)}


def build_stage1_step(dataset: Dataset, text_vectors: np.ndarray, settings: Settings, out_dir: Path) -> dict[str, Any]:
    """Fit stage 1 on every interaction and save it for serving; returns the manifest section."""
    stage1 = fit_stage1(dataset.interactions, dataset.items, text_vectors, config_from_settings(settings))
    embedding = {"model": settings.embedding_backend, "dim": int(text_vectors.shape[1])}
    section = save_stage1(stage1, out_dir, dataset.items, snapshot_time(dataset.interactions), embedding)
    section["summary"] = stage1_summary(stage1)
    return section
