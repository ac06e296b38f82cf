"""Stage 1 assembled: fit every candidate source on an interaction log, retrieve and fuse for a user as of a time,
and save / load what a published version serves.

The sources (names in ``STAGE1_SOURCES``): the strong single-stage models EASE^R, RP3beta, item-kNN (from every
item the user saw) and iALS (FAISS); the same EASE^R, sequences and co-occurrence from the user's last items (the
session); short and long half-life popularity as of the query time; text similarity (FAISS) and fresh items. Their
hyperparameters are the peers' tuned values; their fusion weights are chosen on the validation cut. The same
``Stage1.candidates`` call serves offline evaluation (as of each user's cut time) and the online service (now).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.data import columns as C
from models.data.clock import DAY_SECONDS, data_now, unix_seconds
from models.data.contract import Dataset
from models.files import ArtifactError
from models.heap import release_free_memory
from models.retrieval.als import AlsParams, CollaborativeModel, fit_als, mips_dim, mips_item_vectors, mips_query
from models.retrieval.fusion import Candidates, fuse
from models.retrieval.indexes import VectorIndex, exact_search, faster_of_ivf_and_exact
from models.retrieval.item_item import ItemItemModel, ItemItemSource, fit_item_item, load_table
from models.retrieval.lookup import RowLookup
from models.retrieval.matrices import interaction_matrix
from models.retrieval.popularity import DecayedPopularity, PopularitySnapshot
from models.retrieval.sequences import cooccurrence_table, transition_table
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

STAGE1_SOURCES = C.STAGE1_SOURCES
ITEM_ITEM_SOURCES = ("ease", "rp3beta", "item_knn", "ease_recent", "sequence", "cooc_last", "cooc_recent")


@dataclass(frozen=True)
class Stage1Config:
    """How stage 1 is fitted and fused (from ``Settings`` and the tuned peers; a published version records it)."""

    peer_params: Mapping[str, Mapping[str, float]]
    """Hyperparameters of ease, rp3beta, item_knn, ials (the tuned peers' values)."""
    weights: Mapping[str, float]
    """Reciprocal-rank-fusion weight of each source (0: retrieved for provenance and features, not fused)."""
    reserved: Mapping[str, float]
    """Share of the list each source is guaranteed (its best items), before fusion fills the rest."""
    item_item_max_items: int
    item_item_neighbours: int
    item_item_history: int
    recent_items: int
    sequence_window: int
    availability_grace_days: float
    """Items launched more than this after the query time are not recommendable (0: strictly point-in-time)."""
    semantic_half_life_days: float
    popular_short_half_life_days: float
    popular_long_half_life_days: float
    fresh_window_days: float
    index_factory: str | None
    ann_target_recall: float
    serving_k: int
    seed: int

    @classmethod
    def from_settings(cls, settings: Settings, peer_params: Mapping[str, Mapping[str, float]] | None = None,
                      weights: Mapping[str, float] | None = None) -> Stage1Config:  # fmt: skip
        """The settings' values; ``peer_params`` and ``weights`` (chosen on the validation cut) override theirs."""
        from_settings = {
            "ease": {"l2": settings.ease_l2},
            "rp3beta": {"alpha": settings.rp3beta_alpha, "beta": settings.rp3beta_beta},
            "item_knn": {"shrink": settings.item_knn_shrink, "neighbours": settings.item_knn_neighbours},
            "ials": {"factors": settings.als_factors, "regularization": settings.als_regularization,
                     "alpha": settings.als_alpha, "iterations": settings.als_iterations},
        }  # fmt: skip
        return cls(
            peer_params={**from_settings, **(peer_params or {})},
            weights={**settings.candidate_weights, **(weights or {})},
            reserved=dict(settings.candidate_reserved),
            item_item_max_items=settings.item_item_max_items,
            item_item_neighbours=settings.item_item_neighbours,
            item_item_history=settings.item_item_history,
            recent_items=settings.recent_items,
            sequence_window=settings.sequence_window,
            availability_grace_days=settings.availability_grace_days,
            semantic_half_life_days=settings.semantic_half_life_days,
            popular_short_half_life_days=settings.popular_short_half_life_days,
            popular_long_half_life_days=settings.popular_long_half_life_days,
            fresh_window_days=settings.fresh_window_days,
            index_factory=settings.index_factory,
            ann_target_recall=settings.ann_target_recall,
            serving_k=settings.candidates_k,
            seed=settings.seed,
        )

    def als(self) -> AlsParams:
        return AlsParams.from_params(self.peer_params["ials"], self.seed)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Stage1Config:
        return cls(**data)


@dataclass
class Stage1:
    """The candidate sources and the merge rule; holds everything a published version needs for stage 1."""

    sources: list[CandidateSource]
    config: Stage1Config
    created: np.ndarray
    item_ids: np.ndarray
    ials: CollaborativeModel
    timings: dict[str, float] = field(default_factory=dict)
    exact: dict[str, ItemItemModel] = field(default_factory=dict)
    """The dense item-item models the tables were pruned from (kept only when fitted for evaluation)."""

    def __post_init__(self) -> None:
        self._by_name = {source.name: source for source in self.sources}
        semantic = self._by_name.get("semantic")
        if isinstance(semantic, SemanticSource) and np.array_equal(semantic.index.item_ids, self.item_ids):
            self.row_of = semantic.row_of  # one id → row dict per catalogue (≈ 100 MB per worker at 1 M items)
        else:
            self.row_of = RowLookup(self.item_ids)
        self._available_from = self.created - self.config.availability_grace_days * DAY_SECONDS

    def source(self, name: str) -> CandidateSource:
        return self._by_name[name]

    def available(self, result: SourceResult, as_of: float) -> SourceResult:
        """Drop items not launched yet at the query time (a source may know them from later interactions)."""
        keep = self._available_from[result.rows] <= as_of
        if keep.all():
            return result
        return SourceResult(result.source, result.rows[keep], result.scores[keep])

    def with_rows(self, query: UserQuery) -> UserQuery:
        """The query with the catalogue rows of its excluded (ascending) and seen items filled in."""
        exclude = self.row_of.rows(query.exclude)
        seen = self.row_of.rows(query.seen)
        return replace(query, exclude_rows=np.unique(exclude[exclude >= 0]).astype(np.int64),
                       seen_rows=seen[seen >= 0].astype(np.int64))  # fmt: skip

    def retrieve_all(self, query: UserQuery, k: int) -> list[SourceResult]:
        query = self.with_rows(query)
        return [self.available(source.retrieve(query, k), query.as_of) for source in self.sources]

    def reserved_slots(self, k: int) -> dict[str, int]:
        return {name: int(round(share * k)) for name, share in self.config.reserved.items()}

    def fuse(self, results: Sequence[SourceResult], k: int, weights: Mapping[str, float] | None = None) -> Candidates:
        return fuse(results, k, weights or self.config.weights, self.reserved_slots(k), catalogue=self.item_ids)

    def candidates(self, query: UserQuery, k: int) -> Candidates:
        """Every source's top ``k``, fused into ``k`` unique candidates with provenance."""
        return self.fuse(self.retrieve_all(query, k), k)


def _tuned_index(
    vectors: np.ndarray, queries: np.ndarray, item_ids: np.ndarray, config: Stage1Config, lifted: bool = False
) -> VectorIndex:
    """A FAISS index over ``vectors`` whose search parameter reaches the target recall at the serving K
    (``lifted``: iALS's lifted inner-product vectors, see ``indexes.choose_factory``)."""
    index = VectorIndex.build(vectors, item_ids, config.index_factory, seed=config.seed, lifted=lifted)
    if len(queries):
        index.tune(queries, exact_search(vectors, queries, config.serving_k), config.serving_k,
                   config.ann_target_recall)  # fmt: skip
        if config.index_factory is None:  # a factory set by hand is kept
            index = faster_of_ivf_and_exact(index, vectors, queries, config.serving_k)
    return index


def fit_stage1(
    interactions: pd.DataFrame, items: pd.DataFrame, text_vectors: np.ndarray, config: Stage1Config,
    text_index: VectorIndex | None = None, keep_exact: bool = False, tuning_queries: int = 200,
) -> Stage1:  # fmt: skip
    """Fit every source on ``interactions``, build (or reuse) the FAISS indexes tuned for the serving K.
    ``keep_exact``: also keep the dense item-item models (the exact peers of the evaluation)."""
    timings: dict[str, float] = {}
    item_ids = items[C.ITEM_ID].to_numpy().astype(str)
    rng = np.random.default_rng(config.seed)

    started = time.perf_counter()
    if text_index is None:
        sample = text_vectors[rng.choice(len(item_ids), size=min(tuning_queries, len(item_ids)), replace=False)]
        text_index = _tuned_index(text_vectors, sample, item_ids, config)
    timings["semantic_index_s"] = time.perf_counter() - started

    started = time.perf_counter()
    als = fit_als(interactions, item_ids, config.als())
    lifted, _ = mips_item_vectors(als.item_factors)
    picks = rng.choice(len(als.user_factors), size=min(tuning_queries, len(als.user_factors)), replace=False)
    queries = np.stack([mips_query(u) for u in als.user_factors[picks]]) if len(picks) else np.empty((0, 0))
    ials_index = _tuned_index(lifted, queries, item_ids, config, lifted=True)
    timings["ials_s"] = time.perf_counter() - started

    user_ids = np.array(sorted(interactions[C.USER_ID].unique()), dtype=str)
    matrix = interaction_matrix(interactions, user_ids, item_ids)
    tables: dict[str, sp.csr_matrix] = {}
    exact: dict[str, ItemItemModel] = {}
    for kind in ("ease", "rp3beta", "item_knn"):
        started = time.perf_counter()
        model = fit_item_item(kind, matrix, config.peer_params[kind], config.item_item_max_items)
        tables[kind] = model.table(config.item_item_neighbours)
        if keep_exact:
            exact[kind] = model
        del model
        timings[f"{kind}_s"] = time.perf_counter() - started
    started = time.perf_counter()
    sequence = transition_table(interactions, item_ids, config.sequence_window, config.item_item_neighbours)
    cooccurrence = cooccurrence_table(matrix, config.item_item_neighbours)
    timings["session_tables_s"] = time.perf_counter() - started

    short = DecayedPopularity(interactions, item_ids, config.popular_short_half_life_days)
    long = DecayedPopularity(interactions, item_ids, config.popular_long_half_life_days)
    created = unix_seconds(items[C.CREATED_AT])
    history, recent = config.item_item_history, config.recent_items
    sources: list[CandidateSource] = [
        ItemItemSource("ease", tables["ease"], history, 1.0),
        ItemItemSource("rp3beta", tables["rp3beta"], history, 1.0),
        ItemItemSource("item_knn", tables["item_knn"], history, 1.0),
        CollaborativeSource(ials_index, als),
        ItemItemSource("ease_recent", tables["ease"], recent, 1.0),
        ItemItemSource("sequence", sequence, 2 * recent, SEQUENCE_DECAY),
        ItemItemSource("cooc_last", cooccurrence, 1, 1.0),
        ItemItemSource("cooc_recent", cooccurrence, recent, 1.0),
        PopularSource("popular_short", short),
        PopularSource("popular_long", long),
        SemanticSource(text_index, text_vectors, config.semantic_half_life_days),
        FreshSource(item_ids, created, long, config.fresh_window_days),
    ]
    assert tuple(s.name for s in sources) == STAGE1_SOURCES
    del matrix
    release_free_memory()
    return Stage1(sources, config, created, item_ids, als, timings, exact)


SEQUENCE_DECAY = 0.8
"""The sequence source walks from the last ``2 * recent_items`` items, each step back weighing 0.8 as much."""


def stage1_summary(stage1: Stage1) -> dict[str, Any]:
    """What the manifest and MLflow record about the fitted stage 1."""
    summary: dict[str, Any] = {"weights": dict(stage1.config.weights), "reserved": dict(stage1.config.reserved),
                               "peer_params": {k: dict(v) for k, v in stage1.config.peer_params.items()},
                               "timings": stage1.timings}  # fmt: skip
    for source in stage1.sources:
        index = getattr(source, "index", None)
        if isinstance(index, VectorIndex):
            summary[f"{source.name}_index"] = {"factory": index.factory, **index.params}
    return summary


def save_stage1(
    stage1: Stage1, folder: Path, items: pd.DataFrame, as_of: float, embedding: Mapping[str, Any]
) -> dict[str, Any]:
    """Write indexes, tables, vectors, iALS factors and popularity snapshots as of ``as_of``; return the manifest
    section."""
    folder.mkdir(parents=True, exist_ok=True)
    semantic, ials = stage1.source("semantic"), stage1.source("ials")
    assert isinstance(semantic, SemanticSource) and isinstance(ials, CollaborativeSource)
    np.save(folder / "item_ids.npy", items[C.ITEM_ID].to_numpy().astype(str), allow_pickle=False)
    np.save(folder / "created_at.npy", stage1.created, allow_pickle=False)
    np.save(folder / "text_vectors.npy", semantic.item_vectors, allow_pickle=False)
    tables: dict[str, dict[str, Any]] = {}
    written: dict[int, str] = {}  # a table two sources walk (ease and ease_recent, the two co-occurrence sources)
    for name in ITEM_ITEM_SOURCES:  # is written once: at 1 M items the co-occurrence table is 3.7 GB
        source = stage1.source(name)
        assert isinstance(source, ItemItemSource)
        first = written.setdefault(id(source.table), name)
        tables[name] = source.save(folder) if first == name else source.entry(tables[first]["files"])
    popularity = {}
    for name in ("popular_short", "popular_long"):
        source = stage1.source(name)
        assert isinstance(source, PopularSource) and isinstance(source.popularity, DecayedPopularity)
        popularity[name] = source.popularity.snapshot(as_of).save(folder, name)
    return {
        "embedding": dict(embedding),
        "indexes": {"semantic": semantic.index.save(folder, "semantic"), "ials": ials.index.save(folder, "ials")},
        "ials": ials.model.save(folder / "ials"),
        "tables": tables,
        "popularity": popularity,
        "config": stage1.config.to_json(),
        "items": len(items),
        "as_of": as_of,
    }


def load_stage1(
    folder: Path, section: Mapping[str, Any], encoder_dim: int | None = None, mapped: bool = True
) -> Stage1:  # fmt: skip
    """Rebuild the sources from a published ``stage1`` folder, checking dimensions against the manifest.
    ``mapped``: indexes, item-item tables, factors and text vectors stay in their files (read-only, memory-mapped:
    the processes serving one version share a single copy in the page cache)."""
    item_ids = np.load(folder / "item_ids.npy", allow_pickle=False)
    n_items = len(item_ids)
    dim = int(section["embedding"]["dim"])
    if encoder_dim is not None and dim != encoder_dim:
        raise ArtifactError(f"{folder}: embedding dimension {dim} in the manifest, encoder gives {encoder_dim}")
    semantic_index = VectorIndex.load(folder, section["indexes"]["semantic"], expected_dim=dim, mapped=mapped)
    als = CollaborativeModel.load(folder / "ials", section["ials"], mapped=mapped)
    lifted_dims = (mips_dim(als.dim), als.dim + 1)  # padded; versions published before the padding: factors + 1
    ials_index = VectorIndex.load(folder, section["indexes"]["ials"], expected_dim=lifted_dims, mapped=mapped)
    text_vectors = np.load(folder / "text_vectors.npy", allow_pickle=False, mmap_mode="r" if mapped else None)
    if text_vectors.shape != (n_items, dim):
        raise ArtifactError(f"{folder / 'text_vectors.npy'}: shape {text_vectors.shape}, expected {(n_items, dim)}")
    popularity = {
        name: PopularitySnapshot.load(folder, entry, item_ids) for name, entry in section["popularity"].items()
    }
    created = np.load(folder / "created_at.npy", allow_pickle=False)
    config = Stage1Config.from_json(section["config"])
    tables = load_item_item_sources(folder, section["tables"], n_items, mapped)
    sources: list[CandidateSource] = [
        tables["ease"], tables["rp3beta"], tables["item_knn"], CollaborativeSource(ials_index, als),
        tables["ease_recent"], tables["sequence"], tables["cooc_last"], tables["cooc_recent"],
        PopularSource("popular_short", popularity["popular_short"]),
        PopularSource("popular_long", popularity["popular_long"]),
        SemanticSource(semantic_index, np.asarray(text_vectors), config.semantic_half_life_days),
        FreshSource(item_ids, created, popularity["popular_long"], config.fresh_window_days),
    ]  # fmt: skip
    if tuple(s.name for s in sources) != STAGE1_SOURCES:
        raise ArtifactError(f"{folder}: sources {[s.name for s in sources]} differ from this code's {STAGE1_SOURCES}")
    return Stage1(sources, config, created, item_ids, als)


def load_item_item_sources(
    folder: Path, entries: Mapping[str, Mapping[str, Any]], n_items: int, mapped: bool
) -> dict[str, ItemItemSource]:  # fmt: skip
    """The item-item sources of a saved stage 1; sources saved over the same files share one table."""
    loaded: dict[str, sp.csr_matrix] = {}
    sources = {}
    for name, entry in entries.items():
        key = json.dumps(entry.get("files", entry.get("file")), sort_keys=True)
        if key not in loaded:
            loaded[key] = load_table(folder, entry, n_items, mapped)
        sources[name] = ItemItemSource(name, loaded[key], int(entry["history"]), float(entry["decay"]))
    return sources


def build_stage1_step(
    dataset: Dataset, text_vectors: np.ndarray, config: Stage1Config, embedding_backend: str, out_dir: Path
) -> dict[str, Any]:
    """Fit stage 1 on every interaction and save it for serving; returns the manifest section."""
    stage1 = fit_stage1(dataset.interactions, dataset.items, text_vectors, config)
    embedding = {"model": embedding_backend, "dim": int(text_vectors.shape[1])}
    section = save_stage1(stage1, out_dir, dataset.items, data_now(dataset.interactions), embedding)
    section["summary"] = stage1_summary(stage1)
    return section
