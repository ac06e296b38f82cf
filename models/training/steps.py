"""The re-ranker's pipeline steps as plain functions: build the training set → train LightGBM LambdaRank.

Each step reads what the previous one wrote (numpy, LightGBM text, JSON) so the flow can cache and resume them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from models.data import columns as C
from models.data.contract import Dataset
from models.data.splits import evaluation_split, label_split
from models.features.snapshots import FeatureContext
from models.features.spec import CATEGORICAL_FEATURES, FeatureSpec
from models.features.store import open_store
from models.files import write_json
from models.ranking.ranker import Ranker, RankerParams, RankingData, train_ranker
from models.recommender.offline import offline_recommender
from models.settings import Settings
from models.training.training_set import build_training_set, choose_training_users

ABLATION_GROUPS: dict[str, tuple[str, ...]] = {
    "price": ("item_price", "item_log_price", "item_price_tier", "price_gap", "abs_price_gap", "user_log_price_mean",
              "user_log_price_std", "user_rel_price_mean", "user_price_sensitivity"),
    "stock": ("item_in_stock",),
    "recency": ("item_age_days", "item_events_1d", "item_events_7d", "item_trend", "user_novelty_days",
                "s1_fresh_rank", "s1_fresh_score"),
}  # fmt: skip
"""Feature groups the demo catalog plants signal in; the ablation retrains without them on the same data."""


TRAINING_FILE = "training_set.npz"


SPEC_FILE = "feature_spec.json"


RANKER_SECTION = "ranker_section.json"


def training_step(dataset: Dataset, vectors: np.ndarray, settings: Settings, out_dir: Path) -> dict[str, Any]:
    """Build the training set inside train (stage 1 fit on the fit window) and save it with the feature spec."""
    split = evaluation_split(dataset.interactions, settings.test_fraction)
    inner = label_split(split.history, settings.label_fraction)
    spec = FeatureSpec.fit(dataset.users, dataset.items[C.CATEGORY])
    context = FeatureContext(dataset.items, dataset.users, split.history)
    recommender = offline_recommender(inner.history, dataset, vectors, context, spec, settings, ranker=None)
    store = open_store(settings, dataset.name)  # the flow applied the feature definitions
    users = choose_training_users(inner, settings.train_max_users, settings.seed)
    training = build_training_set(recommender, context, inner, split.cut_times(), store, settings, dataset.name, users)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = training.data
    np.savez(out_dir / TRAINING_FILE, features=data.features, labels=data.labels, groups=data.groups,
             group_users=data.group_users.astype(str))  # fmt: skip
    write_json(spec.to_json(), out_dir / SPEC_FILE)
    return training.stats


def load_training(folder: Path) -> tuple[RankingData, FeatureSpec]:
    with np.load(folder / TRAINING_FILE, allow_pickle=False) as saved:
        data = RankingData(saved["features"], saved["labels"], saved["groups"], saved["group_users"])
    return data, FeatureSpec.from_json(json.loads((folder / SPEC_FILE).read_text()))


def validation_groups(data: RankingData, settings: Settings) -> np.ndarray:
    """Mask of the training groups (users) held out for early stopping: a seeded share of them."""
    valid = np.random.default_rng(settings.seed).random(len(data.groups)) < settings.ranker_valid_fraction
    if valid.all() or not valid.any():
        raise ValueError(f"cannot hold out users: {len(data.groups)} training groups")
    return valid


def train_step(training_dir: Path, settings: Settings, out_dir: Path) -> dict[str, Any]:
    """LambdaRank with early stopping on held-out training users; saves the text model and its section."""
    data, spec = load_training(training_dir)
    valid = validation_groups(data, settings)
    ranker = train_ranker(data.select_groups(~valid), data.select_groups(valid), spec.names, CATEGORICAL_FEATURES,
                          RankerParams.from_settings(settings))  # fmt: skip
    section = ranker.save(out_dir)
    section["valid_ndcg@10"] = float(ranker.history.get("valid_ndcg@10", [np.nan])[ranker.best_iteration - 1])
    section["importance"] = ranker.importance()
    section["train_groups"] = int((~valid).sum())
    section["valid_groups"] = int(valid.sum())
    (out_dir / SPEC_FILE).write_text((training_dir / SPEC_FILE).read_text())
    write_json(section, out_dir / RANKER_SECTION)
    return section


def load_ranker(folder: Path) -> tuple[Ranker, FeatureSpec, dict[str, Any]]:
    section = json.loads((folder / RANKER_SECTION).read_text())
    spec = FeatureSpec.from_json(json.loads((folder / SPEC_FILE).read_text()))
    return Ranker.load(folder, section, spec.names), spec, section


def ablated_ranker(training_dir: Path, groups: tuple[str, ...], settings: Settings) -> Ranker:
    """The same training as ``train_step`` with the columns of ``groups`` blanked."""
    data, spec = load_training(training_dir)
    valid = validation_groups(data, settings)
    columns = tuple(spec.names.index(name) for group in groups for name in ABLATION_GROUPS[group])
    return train_ranker(data.select_groups(~valid), data.select_groups(valid), spec.names, CATEGORICAL_FEATURES,
                        RankerParams.from_settings(settings), masked_columns=columns)  # fmt: skip
