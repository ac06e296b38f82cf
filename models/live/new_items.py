"""New items between pipeline runs: a loaded version grows by the new rows without a rebuild.

The new items get catalogue rows after the existing ones. Their text vectors join a copy of the semantic FAISS
index (so search, similar items and the user's text query find them), the fresh source sees their launch time, the
popularity sources and item-item tables get empty rows (nothing is known about them yet), and the stored item
features get a row of what is known at launch: price, stock, launch time, no activity. Collaborative factors come
with the next pipeline run. Requests in flight keep the arrays they started with: everything is a copy.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.data import columns as C
from models.data.clock import DAY_SECONDS, unix_seconds
from models.features.assembly import ItemBlock
from models.features.snapshots import ItemTags
from models.features.spec import ITEM_NUMERIC
from models.ranking.rules import Catalog
from models.recommender.item_features import StaticItemFeatures
from models.recommender.recommender import Recommender
from models.retrieval.indexes import VectorIndex
from models.retrieval.item_item import ItemItemSource
from models.retrieval.popularity import PopularitySnapshot
from models.retrieval.sources import CandidateSource, FreshSource, PopularSource, SemanticSource
from models.retrieval.stage1 import Stage1
from models.text.model import item_texts

NEW_ITEM_FIELDS = (C.ITEM_ID, C.TITLE, C.CATEGORY)
"""What a new item must carry (the data contract's required item columns; the launch time defaults to now)."""


def new_item_texts(items: list[dict[str, Any]]) -> list[str]:
    """The texts new items are encoded from: exactly what the pipeline embeds for an item."""
    frame = pd.DataFrame(items)
    return item_texts(frame.assign(**{C.DESCRIPTION: frame.get(C.DESCRIPTION, pd.Series("", index=frame.index))}))


def add_items(recommender: Recommender, items: list[dict[str, Any]], vectors: np.ndarray) -> Recommender:
    """A recommender whose catalogue, stage 1, item features and tags include ``items`` (with their L2-normalised
    text ``vectors``, one row each)."""
    frame = pd.DataFrame(items)
    n_old, n_new = len(recommender.catalog.item_ids), len(frame)
    vectors = np.asarray(vectors, dtype=np.float32)
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    created = unix_seconds(pd.to_datetime(frame[C.CREATED_AT].astype(float), unit="s", utc=True))
    prices = frame[C.PRICE].astype(float).to_numpy() if C.PRICE in frame else np.full(n_new, np.nan)
    in_stock = frame[C.IN_STOCK].fillna(True).astype(bool).to_numpy() if C.IN_STOCK in frame else np.ones(n_new, bool)
    ids = frame[C.ITEM_ID].astype(str).to_numpy()
    catalog = recommender.catalog
    grown = Catalog(
        item_ids=np.concatenate([catalog.item_ids, ids]),
        categories=np.concatenate([catalog.categories, frame[C.CATEGORY].astype(str).to_numpy()]),
        prices=np.concatenate([catalog.prices, prices]),
        stockout=np.concatenate([catalog.stockout, np.where(in_stock, np.nan, created)]),
        restock=np.concatenate([catalog.restock, np.full(n_new, np.nan)]),
        created=np.concatenate([catalog.created, created]),
    )
    stage1 = grow_stage1(recommender.stage1, grown.item_ids, grown.created, vectors, n_old)
    return replace(
        recommender,
        stage1=stage1,
        catalog=grown,
        item_features=grow_item_features(recommender.item_features, frame, prices, in_stock, created),
        item_tags=grow_tags(recommender.item_tags, frame),
        popularity_order=np.concatenate([recommender.popularity_order, np.arange(n_old, n_old + n_new)]),
    )


def grow_stage1(stage1: Stage1, item_ids: np.ndarray, created: np.ndarray, vectors: np.ndarray, n_old: int) -> Stage1:
    sources = [grow_source(source, item_ids, created, vectors, n_old) for source in stage1.sources]
    return replace(stage1, sources=sources, item_ids=item_ids, created=created)


def grow_source(
    source: CandidateSource, item_ids: np.ndarray, created: np.ndarray, vectors: np.ndarray, n_old: int
) -> CandidateSource:  # fmt: skip
    """The same source over the grown catalogue (sources that do not index rows are returned as they are)."""
    n = len(item_ids)
    if isinstance(source, SemanticSource):
        index = source.index.in_memory_copy()
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        grown_index = VectorIndex(index, item_ids, source.index.factory, dict(source.index.params))
        item_vectors = np.vstack([source.item_vectors, vectors.astype(source.item_vectors.dtype)])
        return SemanticSource(grown_index, item_vectors, source.half_life_days, source.recent)
    if isinstance(source, ItemItemSource):
        table = source.table.copy()
        table.resize((n, n))
        return ItemItemSource(source.name, sp.csr_matrix(table), source.history, source.decay)
    if isinstance(source, PopularSource):
        return PopularSource(source.name, grow_popularity(source.popularity, item_ids, n_old))
    if isinstance(source, FreshSource):
        popularity = grow_popularity(source.popularity, item_ids, n_old)
        return FreshSource(item_ids.tolist(), created, popularity, source.window / DAY_SECONDS)
    return source  # iALS: new items get factors at the next pipeline run


def grow_popularity(popularity: Any, item_ids: np.ndarray, n_old: int) -> Any:
    if not isinstance(popularity, PopularitySnapshot):
        raise TypeError(f"a served version's popularity is a snapshot, got {type(popularity).__name__}")
    scores = np.concatenate([popularity.scores, np.zeros(len(item_ids) - n_old)])
    return PopularitySnapshot(item_ids, scores, popularity.day, popularity.half_life_days)


def grow_item_features(
    features: Any, frame: pd.DataFrame, prices: np.ndarray, in_stock: np.ndarray, created: np.ndarray
) -> StaticItemFeatures:  # fmt: skip
    """The stored item features plus a launch-time row per new item: no activity, its price, stock and launch."""
    if not isinstance(features, StaticItemFeatures):
        raise TypeError("new items are added to a served version (in-memory item table)")
    numeric = np.zeros((len(frame), len(ITEM_NUMERIC)), dtype=np.float32)
    column = {name: i for i, name in enumerate(ITEM_NUMERIC)}
    numeric[:, column["item_days_since_last"]] = np.nan
    numeric[:, column["item_days_since_first"]] = np.nan
    numeric[:, column["item_positive_rate"]] = np.nan
    numeric[:, column["item_mean_weight"]] = np.nan
    numeric[:, column["item_price"]] = prices
    numeric[:, column["item_log_price"]] = np.log1p(prices)
    numeric[:, column["item_price_tier"]] = np.nan
    numeric[:, column["item_in_stock"]] = in_stock.astype(np.float32)
    numeric[:, column["item_created_ts"]] = created
    return StaticItemFeatures.from_block(
        ItemBlock(
            np.vstack([features.all.numeric, numeric]),
            np.concatenate([features.all.category_names, frame[C.CATEGORY].astype(str).to_numpy()]),
        )
    )


def grow_tags(tags: ItemTags, frame: pd.DataFrame) -> ItemTags:
    """The new items' rows of the tag matrix (tags the version has never seen carry no affinity yet)."""
    new = ItemTags.from_items(frame.assign(**{C.TAGS: frame.get(C.TAGS, pd.Series("", index=frame.index))}))
    columns = tags.names.get_indexer(new.names)
    coo = new.matrix.tocoo()
    known = columns[coo.col] >= 0
    rows = sp.csr_matrix((coo.data[known], (coo.row[known], columns[coo.col[known]])),
                         shape=(len(frame), len(tags.names)))  # fmt: skip
    return ItemTags(tags.names, sp.vstack([tags.matrix, rows]).tocsr())
