"""Stage-2 pipeline steps as plain functions: training set → LightGBM LambdaRank → joint evaluation and K sizing.

Each step reads what the previous one wrote (numpy, LightGBM text, JSON) so the flow can cache and resume them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models import columns as C
from models.contract import Dataset
from models.evaluation import (
    K_SWEEP,
    collaborative_scorer,
    evaluation_users,
    metrics_of,
    popularity_scores,
    rank_by_scores,
    rank_variants,
    rank_with_recommender,
    sweep_candidate_k,
)
from models.feature_store import apply_definitions, open_store
from models.features import CATEGORICAL_FEATURES, FeatureContext, FeatureSpec, user_snapshots
from models.metrics import paired_bootstrap_ratio, per_user
from models.ranker import Ranker, RankerParams, RankingData, train_ranker
from models.recommend import PointInTimeItemFeatures, Recommender
from models.rules import NEUTRAL_RULES, Catalog
from models.settings import Settings
from models.splits import evaluation_split, label_split
from models.stage1 import config_from_settings, fit_stage1
from models.training_set import build_training_set, choose_training_users

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


def catalog_from_items(items: pd.DataFrame) -> Catalog:
    return Catalog(
        item_ids=items[C.ITEM_ID].to_numpy().astype(str),
        categories=items[C.CATEGORY].to_numpy().astype(str),
        prices=items[C.PRICE].to_numpy(dtype=float),
        in_stock=items[C.IN_STOCK].to_numpy(dtype=bool),
        created=items[C.CREATED_AT].astype("int64").to_numpy() / 1e9,
    )


def ranker_params(settings: Settings) -> RankerParams:
    return RankerParams(
        num_boost_round=settings.ranker_rounds,
        learning_rate=settings.ranker_learning_rate,
        num_leaves=settings.ranker_leaves,
        min_data_in_leaf=settings.ranker_min_data_in_leaf,
        early_stopping_rounds=settings.ranker_early_stopping,
        seed=settings.seed,
        threads=settings.threads,
    )


def _offline_recommender(stage1_interactions: pd.DataFrame, dataset: Dataset, vectors: np.ndarray,
                         context: FeatureContext, spec: FeatureSpec, settings: Settings,
                         ranker: Ranker | None) -> Recommender:  # fmt: skip
    stage1 = fit_stage1(stage1_interactions, dataset.items, vectors, config_from_settings(settings))
    catalog = catalog_from_items(dataset.items)
    order = np.argsort(-popularity_scores(stage1_interactions, catalog.item_ids), kind="stable")
    return Recommender(stage1, catalog, PointInTimeItemFeatures(context, spec), spec, ranker, NEUTRAL_RULES,
                       settings.candidates_k, order)  # fmt: skip


def training_step(dataset: Dataset, vectors: np.ndarray, settings: Settings, out_dir: Path) -> dict[str, Any]:
    """Build the training set inside train (stage 1 fit on the fit window) and save it with the feature spec."""
    split = evaluation_split(dataset.interactions, settings.test_fraction)
    inner = label_split(split.history, settings.label_fraction)
    spec = FeatureSpec.fit(dataset.users, dataset.items[C.CATEGORY])
    context = FeatureContext(dataset.items, dataset.users, split.history)
    recommender = _offline_recommender(inner.history, dataset, vectors, context, spec, settings, ranker=None)
    store = open_store(settings, dataset.name)
    apply_definitions(store, settings, dataset.name)
    users = choose_training_users(inner, settings.train_max_users, settings.seed)
    training = build_training_set(recommender, context, inner, split.cut_times(), store, settings, dataset.name, users)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = training.data
    np.savez(out_dir / TRAINING_FILE, features=data.features, labels=data.labels, groups=data.groups,
             group_users=data.group_users.astype(str))  # fmt: skip
    (out_dir / SPEC_FILE).write_text(json.dumps(spec.to_json(), indent=2))
    return training.stats


def load_training(folder: Path) -> tuple[RankingData, FeatureSpec]:
    with np.load(folder / TRAINING_FILE, allow_pickle=False) as saved:
        data = RankingData(saved["features"], saved["labels"], saved["groups"], saved["group_users"])
    return data, FeatureSpec.from_json(json.loads((folder / SPEC_FILE).read_text()))


def train_step(training_dir: Path, settings: Settings, out_dir: Path) -> dict[str, Any]:
    """LambdaRank with early stopping on held-out training users; saves the text model and its section."""
    data, spec = load_training(training_dir)
    valid = np.random.default_rng(settings.seed).random(len(data.groups)) < settings.ranker_valid_fraction
    if valid.all() or not valid.any():
        raise ValueError(f"cannot hold out users: {len(data.groups)} training groups")
    ranker = train_ranker(data.select_groups(~valid), data.select_groups(valid), spec.names, CATEGORICAL_FEATURES,
                          ranker_params(settings))  # fmt: skip
    section = ranker.save(out_dir)
    section["valid_ndcg@10"] = float(ranker.history.get("valid_ndcg@10", [np.nan])[ranker.best_iteration - 1])
    section["importance"] = ranker.importance()
    section["train_groups"] = int((~valid).sum())
    section["valid_groups"] = int(valid.sum())
    (out_dir / SPEC_FILE).write_text((training_dir / SPEC_FILE).read_text())
    (out_dir / RANKER_SECTION).write_text(json.dumps(section, indent=2))
    return section


def load_ranker(folder: Path) -> tuple[Ranker, FeatureSpec, dict[str, Any]]:
    section = json.loads((folder / RANKER_SECTION).read_text())
    spec = FeatureSpec.from_json(json.loads((folder / SPEC_FILE).read_text()))
    return Ranker.load(folder, section, spec.names), spec, section


def ablated_ranker(training_dir: Path, groups: tuple[str, ...], settings: Settings) -> Ranker:
    """The same training as ``train_step`` with the columns of ``groups`` blanked."""
    data, spec = load_training(training_dir)
    valid = np.random.default_rng(settings.seed).random(len(data.groups)) < settings.ranker_valid_fraction
    columns = tuple(spec.names.index(name) for group in groups for name in ABLATION_GROUPS[group])
    return train_ranker(data.select_groups(~valid), data.select_groups(valid), spec.names, CATEGORICAL_FEATURES,
                        ranker_params(settings), masked_columns=columns)  # fmt: skip


def evaluation_step(
    dataset: Dataset, vectors: np.ndarray, ranker_dir: Path, settings: Settings, champion: Ranker | None = None,
    training_dir: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Every method on the same test users, K sweep, the champion's NDCG, and (for datasets with prices) the
    ablation of the price, stock and recency features."""
    ranker, spec, _ = load_ranker(ranker_dir)
    split = evaluation_split(dataset.interactions, settings.test_fraction)
    context = FeatureContext(dataset.items, dataset.users, split.history)
    recommender = _offline_recommender(split.history, dataset, vectors, context, spec, settings, ranker)
    users = evaluation_users(split, lambda u, cut: user_snapshots(context, u, cut.to_numpy()), settings.eval_max_users,
                             settings.seed)  # fmt: skip
    catalog = recommender.catalog
    history = split.history.groupby(C.USER_ID)[C.ITEM_ID].agg(list).to_dict()
    assert recommender.stage1.collaborative is not None
    popular = popularity_scores(split.history, catalog.item_ids)
    als = collaborative_scorer(recommender.stage1.collaborative, catalog.item_ids, history)
    peer_rankings = {
        "popularity": rank_by_scores(lambda _user: popular, catalog.item_ids, users),
        "als": rank_by_scores(als, catalog.item_ids, users),
    }
    methods: dict[str, dict[str, float]] = {name: metrics_of(r, users) for name, r in peer_rankings.items()}
    two_stage, latencies = rank_with_recommender(recommender, users)  # the service's own path, at the default K
    methods["two_stage"] = metrics_of(two_stage, users)
    best_peer = max(peer_rankings, key=lambda name: methods[name]["ndcg@10"])
    ratio, low, high = paired_bootstrap_ratio(
        per_user(two_stage, users.relevant), per_user(peer_rankings[best_peer], users.relevant), seed=settings.seed
    )
    rankers: dict[str, Ranker | None] = {"stage1": None, "two_stage": ranker}
    ablation_name = "two_stage_without_" + "_".join(ABLATION_GROUPS)
    if training_dir is not None and settings.ablation and dataset.items[C.PRICE].notna().any():
        rankers[ablation_name] = ablated_ranker(training_dir, tuple(ABLATION_GROUPS), settings)
    if champion is not None:
        rankers["champion"] = champion
    sizes = sorted({*K_SWEEP, settings.candidates_k})
    variants = rank_variants(recommender, users, rankers, sizes)
    methods["stage1"] = metrics_of(variants.rankings[("stage1", settings.candidates_k)], users)
    same = [variants.rankings[("two_stage", settings.candidates_k)][u] == two_stage[u] for u in users.users]
    ablation = {}
    if ablation_name in rankers:
        ablation[ablation_name] = metrics_of(variants.rankings[(ablation_name, settings.candidates_k)], users)
    sizing = sweep_candidate_k(variants, users, tolerance=settings.k_tolerance)
    report: dict[str, Any] = {
        "dataset": dataset.name,
        "k_candidates": sizing["chosen_k"],
        "evaluated_with_k_candidates": settings.candidates_k,
        "users": len(users.users),
        "methods": methods,
        "shared_retrieval_agreement": float(np.mean(same)),
        "two_stage_vs_best_peer": {"peer": best_peer, "ndcg@10_ratio": ratio, "ci95": [low, high]},
        "k_sweep": sizing,
        "ablation": ablation,
        "two_stage_latency_ms": {
            "p50": float(np.percentile(latencies, 50)),
            "p99": float(np.percentile(latencies, 99)),
        },
    }
    if champion is not None:
        report["champion_ndcg@10"] = metrics_of(variants.rankings[("champion", settings.candidates_k)], users)[
            "ndcg@10"
        ]
    return report
