"""Training/serving parity, end to end: for the same (user, time), the rows of the re-ranker's training frame equal
the matrix ``recommend()`` feeds the ranker when the user's features come from the Feast online store (the service's
read) — every column, user, item, cross, provenance and fused-score features included, in the same candidate order."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from feature_repo.definitions import build_definitions
from models.data import columns as C
from models.data.demo_catalog import generate_demo_catalog
from models.features.snapshots import FeatureContext, item_snapshots
from models.features.spec import CATEGORICAL_FEATURES, ITEM_VIEW, FeatureSpec
from models.features.store import (
    append_snapshots,
    feature_data_dir,
    materialize,
    online_user_row,
    open_store,
    user_feature_refs,
)
from models.ranking.ranker import Ranker, RankerParams, train_ranker
from models.ranking.rules import RulesConfig
from models.recommender.offline import offline_recommender
from models.recommender.request import Request
from models.retrieval.stage1 import Stage1Config, fit_stage1
from models.settings import Settings
from models.training.steps import validation_cut
from models.training.training_set import build_training_set, choose_training_users


class RecordingRanker:
    """The real ranker, recording every matrix it is asked to score."""

    def __init__(self, ranker: Ranker):
        self.ranker = ranker
        self.inputs: list[np.ndarray] = []

    def predict(self, features: np.ndarray) -> np.ndarray:
        self.inputs.append(features.copy())
        return self.ranker.predict(features)

    def __getattr__(self, name: str):
        return getattr(self.ranker, name)


def test_training_rows_equal_what_recommend_scores(tmp_path: Path):
    settings = Settings(state_dir=tmp_path / "state", candidates_k=60, als_factors=8, als_iterations=4,
                        item_item_neighbours=50, ranker_rounds=5)  # fmt: skip
    dataset = generate_demo_catalog(n_items=300, n_users=80, n_interactions=5000, seed=5)
    split, inner = validation_cut(dataset, settings)
    spec = FeatureSpec.fit(dataset.users)
    context = FeatureContext(dataset.items, dataset.users, inner.history, item_log=split.history)
    vectors = np.random.default_rng(0).normal(size=(len(dataset.items), 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    stage1 = fit_stage1(inner.history, dataset.items, vectors, Stage1Config.from_settings(settings))
    recommender = offline_recommender(stage1, dataset, context, spec, None, RulesConfig.from_settings(settings),
                                      settings.candidates_k, inner.history)  # fmt: skip
    store = open_store(settings, dataset.name)
    store.apply(build_definitions(feature_data_dir(settings, dataset.name)))
    users = choose_training_users(inner, 6, settings.seed)
    training = build_training_set(recommender, context, inner, split.cut_times(), store, settings, dataset.name, users)
    data = training.data
    assert len(data.groups) >= 3

    cuts = inner.cut_times()
    last = pd.Timestamp(cuts.loc[list(data.group_users)].max()).to_pydatetime()
    items = item_snapshots(context, dataset.items[C.ITEM_ID], [last] * len(dataset.items))
    append_snapshots(settings, dataset.name, ITEM_VIEW, items)  # the item view materialises beside the user views
    materialize(store, (pd.Timestamp(last) - pd.Timedelta(days=3650)).to_pydatetime(), last)
    recording = RecordingRanker(train_ranker(data, None, spec.names, CATEGORICAL_FEATURES,
                                             RankerParams.from_settings(settings)))  # fmt: skip
    serving = replace(recommender, ranker=recording)  # type: ignore[arg-type]
    refs = user_feature_refs(store)
    starts = np.concatenate([[0], np.cumsum(data.groups)[:-1]])
    for user, start, size in zip(data.group_users, starts, data.groups, strict=True):
        online = online_user_row(store, str(user), refs)
        assert online[C.USER_ID] == user and online["user_events_all"] is not None
        as_of = pd.Timestamp(cuts.loc[user]).value / 1e9
        serving.recommend(Request(user_id=str(user), k=10, as_of=as_of), online)
        scored = recording.inputs[-1]
        expected = data.features[start : start + size]
        assert scored.shape == expected.shape
        np.testing.assert_array_equal(scored, expected, err_msg=f"user {user}")
    names = list(spec.names)
    provenance = [n for n in names if n.startswith("s1_")]
    cross = ["tag_affinity", "item_since_last_ratio"]
    assert provenance and all(n in names for n in cross)
    columns = [names.index(n) for n in provenance + cross]
    assert np.isfinite(data.features[:, columns]).any(axis=0).all()  # the compared columns carry values
