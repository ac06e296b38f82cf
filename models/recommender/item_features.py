"""Where a request's stored item features come from: the published snapshot in memory (serving), or computed as of
the request time from the interaction log (offline evaluation and training)."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pandas as pd

from models.data import columns as C
from models.features.assembly import ItemBlock
from models.features.snapshots import FeatureContext, item_feature_matrix
from models.features.spec import ITEM_CATEGORY, FeatureSpec


class ItemFeatureSource(Protocol):
    def block(self, rows: np.ndarray, as_of: float) -> ItemBlock: ...


class StaticItemFeatures:
    """Serving: the item snapshot of the published version, held in memory (a per-request store read is too slow)."""

    def __init__(self, table: pd.DataFrame, item_ids: np.ndarray, spec: FeatureSpec):
        aligned = table.set_index(C.ITEM_ID).reindex(item_ids)
        if aligned[ITEM_CATEGORY].isna().any():
            missing = item_ids[aligned[ITEM_CATEGORY].isna().to_numpy()][:5].tolist()
            raise ValueError(f"item feature table lacks items, e.g. {missing}")
        self.all = ItemBlock.from_frame(aligned.reset_index())

    @classmethod
    def from_block(cls, block: ItemBlock) -> StaticItemFeatures:
        """Features already aligned with the catalogue (the live overlay's grown or patched copies)."""
        features = cls.__new__(cls)
        features.all = block
        return features

    def block(self, rows: np.ndarray, as_of: float) -> ItemBlock:
        return self.all.take(rows)


class PointInTimeItemFeatures:
    """Offline: item features computed as of each request's time from the interaction log."""

    def __init__(self, context: FeatureContext, spec: FeatureSpec):
        self.context = context
        self.spec = spec

    def block(self, rows: np.ndarray, as_of: float) -> ItemBlock:
        at = np.full(len(rows), int(as_of), dtype=np.int64)
        names = self.context.item_category_name[rows]
        numeric = item_feature_matrix(self.context, rows, at)
        return ItemBlock(numeric, names)
