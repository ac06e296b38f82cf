"""A ``Recommender`` for offline use: stage 1 fitted on an interaction window, item features computed as of each
request's time, no business rules — what the training set and the offline evaluation rank with."""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.data import columns as C
from models.data.contract import Dataset
from models.features.snapshots import FeatureContext
from models.features.spec import FeatureSpec
from models.ranking.ranker import Ranker
from models.ranking.rules import NEUTRAL_RULES, Catalog
from models.recommender.item_features import PointInTimeItemFeatures
from models.recommender.recommender import Recommender
from models.retrieval.stage1 import Stage1Config, fit_stage1
from models.settings import Settings


def train_popularity(train: pd.DataFrame, item_ids: np.ndarray) -> np.ndarray:
    """Interaction counts per item (the popularity peer, and the order that fills short lists)."""
    counts = train.groupby(C.ITEM_ID).size()
    return counts.reindex(item_ids).fillna(0).to_numpy(dtype=np.float64)


def offline_recommender(
    stage1_interactions: pd.DataFrame, dataset: Dataset, vectors: np.ndarray, context: FeatureContext,
    spec: FeatureSpec, settings: Settings, ranker: Ranker | None,
) -> Recommender:  # fmt: skip
    """Stage 1 fitted on ``stage1_interactions``; item features from ``context`` as of each request."""
    stage1 = fit_stage1(stage1_interactions, dataset.items, vectors, Stage1Config.from_settings(settings))
    catalog = Catalog.from_items(dataset.items)
    order = np.argsort(-train_popularity(stage1_interactions, catalog.item_ids), kind="stable")
    return Recommender(stage1, catalog, PointInTimeItemFeatures(context, spec), spec, ranker, NEUTRAL_RULES,
                       settings.candidates_k, order)  # fmt: skip
