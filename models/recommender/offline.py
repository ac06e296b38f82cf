"""A ``Recommender`` for offline use — the re-ranker's training set and the offline evaluation: a stage 1 fitted
on an interaction window, item features computed as of each request's time, the given business rules and K."""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.data import columns as C
from models.data.contract import Dataset
from models.features.snapshots import FeatureContext
from models.features.spec import FeatureSpec
from models.ranking.ranker import Ranker
from models.ranking.rules import Catalog, RulesConfig
from models.recommender.item_features import PointInTimeItemFeatures
from models.recommender.recommender import Recommender
from models.retrieval.stage1 import Stage1


def train_popularity(train: pd.DataFrame, item_ids: np.ndarray) -> np.ndarray:
    """Interaction counts per item (the popularity peer, and the order that fills short lists)."""
    counts = train.groupby(C.ITEM_ID).size()
    return counts.reindex(item_ids).fillna(0).to_numpy(dtype=np.float64)


def offline_recommender(
    stage1: Stage1, dataset: Dataset, context: FeatureContext, spec: FeatureSpec, ranker: Ranker | None,
    rules: RulesConfig, k_candidates: int, fit_log: pd.DataFrame,
) -> Recommender:  # fmt: skip
    """The recommend path over ``stage1`` (fitted on ``fit_log``), item features from ``context`` as of each
    request; short lists are filled in ``fit_log``'s popularity order."""
    catalog = Catalog.from_items(dataset.items)
    order = np.argsort(-train_popularity(fit_log, catalog.item_ids), kind="stable")
    return Recommender(stage1, catalog, PointInTimeItemFeatures(context, spec), spec, ranker, rules, k_candidates,
                       order, context.tags)  # fmt: skip
