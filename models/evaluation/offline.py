"""The offline evaluation under the shared protocol: test is touched once, by the configuration that will be served.

Every method ranks for the same test users (all with a positive, up to ``eval_max_users``) as of their cut time,
excluding items seen in train:
- the single-stage peers, each with its hyperparameters chosen on the validation cut: EASE^R, RP3beta, iALS,
  item-kNN (exact scores over the catalogue), and popularity;
- the stage-1 fused order, and the two-stage system — both through ``Recommender.recommend``, the service's own
  path, with the served candidate-set size K, the served business rules and item features as of the request time.
The headline is two-stage NDCG@10 over the best tuned peer, with a paired bootstrap interval over test users.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.data import columns as C
from models.data.clock import unix_seconds
from models.data.contract import Dataset
from models.data.splits import Split, relevant_items, sample_users
from models.evaluation.metrics import evaluate_rankings, paired_bootstrap_ratio, per_user
from models.evaluation.peers import ials_scorer, item_item_scorer, popularity_scorer, top_k_lists
from models.evaluation.recall import stage1_recall
from models.features.snapshots import FeatureContext, user_snapshots
from models.progress import progress
from models.ranking.rules import RulesConfig
from models.recommender.offline import offline_recommender
from models.recommender.recommender import Recommender
from models.recommender.request import Request
from models.retrieval.indexes import one_search_thread
from models.retrieval.stage1 import Stage1, fit_stage1
from models.settings import Settings
from models.training.steps import ABLATION_GROUPS, ablated_ranker, load_ranker, load_stage1_config

METRICS = ("ndcg", "recall", "map")


@dataclass(frozen=True)
class EvaluationUsers:
    """Test users (with a positive) and, per user, the query time and the user features as of that time."""

    users: list[str]
    as_of: dict[str, float]
    features: dict[str, dict]
    relevant: dict[str, set[str]]
    conversions: dict[str, set[str]]
    """Per user with one, the held-out add-to-carts and purchases (empty for rating data)."""
    total: int
    """Test users with a positive before sampling (the protocol's all)."""


def test_users(split: Split, max_users: int | None, seed: int) -> tuple[list[str], dict[str, set[str]]]:
    """The users evaluated (those with a positive in test, a seeded sample beyond ``max_users``) and every such
    user's positives."""
    relevant = relevant_items(split)
    return sample_users(list(relevant), max_users, seed), relevant


def evaluation_users(
    split: Split, context: FeatureContext, users: list[str], relevant: Mapping[str, set[str]]
) -> EvaluationUsers:
    converted = relevant_items(split, C.CONVERSION_EVENTS)
    cut = split.cut_times().reindex(users)
    frame = user_snapshots(context, users, cut.to_numpy()).set_index(C.USER_ID)
    return EvaluationUsers(
        users=users,
        as_of=dict(zip(users, unix_seconds(cut).tolist(), strict=True)),
        features={u: frame.loc[u].to_dict() for u in users},
        relevant={u: relevant[u] for u in users},
        conversions={u: converted[u] for u in users if u in converted},
        total=len(relevant),
    )


def rank_with_recommenders(
    recommenders: Mapping[str, Recommender], users: EvaluationUsers, k: int = 10
) -> tuple[dict[str, dict[str, list[str]]], list[float]]:  # fmt: skip
    """Top-k lists through the service's path for each named recommender, and the per-request latency (ms) of the
    first one, stage 1 included. They must share stage 1 and K (rankers and rules may differ): each user's
    candidates are retrieved once and ranked by every recommender."""
    first, *_ = recommenders.values()
    rankings: dict[str, dict[str, list[str]]] = {name: {} for name in recommenders}
    latencies = []
    with one_search_thread():  # one query at a time
        for user in progress(users.users, desc=f"evaluation: {', '.join(recommenders)}", unit="user"):
            request = Request(user_id=user, k=k, as_of=users.as_of[user])
            features = users.features[user]
            started = time.perf_counter()
            retrieval = first.retrieve(request, features)
            for position, (name, recommender) in enumerate(recommenders.items()):
                result = recommender.recommend(request, features, retrieval=retrieval)
                if position == 0:
                    latencies.append((time.perf_counter() - started) * 1000.0)
                rankings[name][user] = [item.item_id for item in result.items]
    return rankings, latencies


def peer_rankings(stage1: Stage1, train: pd.DataFrame, users: Sequence[str], k: int = 10) -> dict[str, dict]:
    """Top-k of popularity and of every exact peer fitted with stage 1 (its dense item-item models, its iALS)."""
    item_ids = stage1.item_ids
    user_ids = np.array(sorted(set(train[C.USER_ID]) | set(users)), dtype=str)
    scorers = [
        popularity_scorer(train, item_ids),
        *(item_item_scorer(model) for model in stage1.exact.values()),
        ials_scorer(stage1.ials, user_ids, item_ids),
    ]
    return top_k_lists(scorers, train, users, user_ids, item_ids, k)


def metrics_of(rankings: Mapping[str, Sequence[str]], users: EvaluationUsers, k: int = 10) -> dict[str, float]:
    """NDCG, recall and MAP at ``k`` over all positives, plus NDCG over add-to-carts and purchases alone
    (``conversion_ndcg@k``, over the users who have one) when the data has them."""
    metrics = evaluate_rankings(rankings, users.relevant, metrics=METRICS, ks=(k,))
    if users.conversions:
        metrics[f"conversion_ndcg@{k}"] = evaluate_rankings(rankings, users.conversions, ("ndcg",), (k,))[f"ndcg@{k}"]
    return metrics


def ratio_to(two_stage: Mapping[str, Sequence[str]], peer: Mapping[str, Sequence[str]], users: EvaluationUsers,
             relevant: Mapping[str, set[str]], seed: int) -> dict[str, Any]:  # fmt: skip
    ratio, low, high = paired_bootstrap_ratio(per_user(two_stage, relevant), per_user(peer, relevant), seed=seed)
    return {"ndcg@10_ratio": ratio, "ci95": [low, high]}


def evaluation_step(
    dataset: Dataset, split: Split, vectors: np.ndarray, ranker_dir: Path, training_dir: Path, settings: Settings
) -> dict[str, Any]:  # fmt: skip
    """Fit stage 1 on train with the configuration chosen on the validation cut, then rank every test user with
    every method; the two-stage figure is the served configuration end to end. ``split`` is the protocol's train /
    test split of ``dataset``'s events (whose own event log is not read: a caller may pass ``Dataset.catalog()``)."""
    ranker, spec, section = load_ranker(ranker_dir)
    k_served = int(section["k_candidates"])
    context = FeatureContext(dataset.items, dataset.users, split.history)
    started = time.perf_counter()
    stage1 = fit_stage1(split.history, dataset.items, vectors, load_stage1_config(ranker_dir), keep_exact=True)
    fit_seconds = time.perf_counter() - started
    sampled, relevant = test_users(split, settings.eval_max_users, settings.seed)
    rankings = peer_rankings(stage1, split.history, sampled)
    stage1.exact.clear()  # the dense models are no longer needed: freed before the user features are computed
    users = evaluation_users(split, context, sampled, relevant)
    recall = stage1_recall(stage1, users.users, users.as_of, users.features, users.relevant)
    rules = RulesConfig.from_settings(settings)
    served = offline_recommender(stage1, dataset, context, spec, ranker, rules, k_served, split.history)
    variants = {"two_stage": served, "stage1": replace(served, ranker=None)}
    if settings.ablation and dataset.items[C.PRICE].notna().any():
        name = "two_stage_without_" + "_".join(ABLATION_GROUPS)
        variants[name] = replace(served, ranker=ablated_ranker(training_dir, tuple(ABLATION_GROUPS), section, settings))
    ranked, latencies = rank_with_recommenders(variants, users)
    rankings.update(ranked)
    methods = {name: metrics_of(lists, users) for name, lists in rankings.items()}
    tuned = [name for name in ("ease", "rp3beta", "ials", "item_knn") if name in methods]
    best_peer = max(tuned, key=lambda name: methods[name]["ndcg@10"])
    return {
        "dataset": dataset.name,
        "k_candidates": k_served,
        "served": {"k_candidates": k_served, "rules": rules.to_json()},
        "users": len(users.users),
        "test_users_with_a_positive": users.total,
        "methods": methods,
        "stage1_recall_all_k": recall,
        "two_stage_vs_best_peer": {
            "peer": best_peer,
            **ratio_to(rankings["two_stage"], rankings[best_peer], users, users.relevant, settings.seed),
        },  # fmt: skip
        "k_sweep": {
            "rows": section["k_sweep"],
            "chosen_k": k_served,
            "rule": f"smallest K within {settings.k_standard_errors:g} standard error(s) of the best, paired",
            "measured_on": "validation cut (out-of-fold, users of the training set)",
        },  # fmt: skip
        "validation_ndcg@10": section["validation_ndcg"],
        "two_stage_latency_ms": {
            "p50": float(np.percentile(latencies, 50)),
            "p99": float(np.percentile(latencies, 99)),
        },  # fmt: skip
        "stage1_fit_seconds": round(fit_seconds, 1),
        "stage1_config": stage1.config.to_json(),
    }
