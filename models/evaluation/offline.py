"""Joint offline evaluation under the shared protocol, through ``Recommender.recommend`` — the service's path.

Every method ranks for the same test users as of their cut time, excluding items seen in train: popularity
(train counts), the single-stage collaborative peer (exact ALS scores), the stage-1 merged order, and the
two-stage recommender. Candidate-set sizing sweeps K and keeps the smallest K within a tolerance of the best NDCG.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.data import columns as C
from models.data.clock import unix_seconds
from models.data.contract import Dataset
from models.data.splits import Split, evaluation_split, relevant_items, sample_users
from models.evaluation.metrics import evaluate_rankings, paired_bootstrap_ratio, per_user
from models.features.snapshots import FeatureContext, user_snapshots
from models.ranking.ranker import Ranker
from models.ranking.rules import apply_rules
from models.recommender.offline import offline_recommender, train_popularity
from models.recommender.recommender import Recommender
from models.recommender.request import Request, Retrieval
from models.recommender.retrieval import query_for
from models.retrieval.als import CollaborativeModel
from models.settings import Settings
from models.training.steps import ABLATION_GROUPS, ablated_ranker, load_ranker

METRICS = ("ndcg", "recall", "map")
K_SWEEP = (50, 100, 200, 300, 500, 1000)


@dataclass(frozen=True)
class EvaluationUsers:
    """Test users (with a positive) and, per user, the query time and the user features as of that time."""

    users: list[str]
    as_of: dict[str, float]
    features: dict[str, dict]
    relevant: dict[str, set[str]]
    seen: dict[str, set[str]]
    conversions: dict[str, set[str]]
    """Per user with one, the held-out add-to-carts and purchases (empty for rating data)."""


def evaluation_users(
    split: Split, user_features: Callable[[list[str], pd.Series], pd.DataFrame], max_users: int | None, seed: int
) -> EvaluationUsers:
    relevant = relevant_items(split)
    converted = relevant_items(split, C.CONVERSION_EVENTS)
    users = sample_users(list(relevant), max_users, seed)
    cut = split.cut_times().loc[users]
    frame = user_features(users, cut).set_index(C.USER_ID)
    seen = split.history.groupby(C.USER_ID)[C.ITEM_ID].agg(set).to_dict()
    return EvaluationUsers(
        users=users,
        as_of=dict(zip(users, unix_seconds(cut).tolist(), strict=True)),
        features={u: frame.loc[u].to_dict() for u in users},
        relevant={u: relevant[u] for u in users},
        seen={u: seen.get(u, set()) for u in users},
        conversions={u: converted[u] for u in users if u in converted},
    )


def rank_with_recommender(
    recommender: Recommender, users: EvaluationUsers, k: int = 10
) -> tuple[dict[str, list[str]], list[float]]:
    """Top-k lists through the service's path, and the per-request latency (ms) of each call."""
    rankings: dict[str, list[str]] = {}
    latencies = []
    for user in users.users:
        started = time.perf_counter()
        result = recommender.recommend(Request(user_id=user, k=k, as_of=users.as_of[user]), users.features[user])
        latencies.append((time.perf_counter() - started) * 1000.0)
        rankings[user] = [item.item_id for item in result.items]
    return rankings, latencies


def rank_by_scores(
    scores: Callable[[str], np.ndarray], item_ids: np.ndarray, users: EvaluationUsers, k: int = 10
) -> dict[str, list[str]]:
    """Top-k of a full score vector per user, seen items removed."""
    rankings = {}
    for user in users.users:
        values = scores(user).astype(np.float64).copy()
        if users.seen[user]:
            values[np.isin(item_ids, list(users.seen[user]))] = -np.inf
        top = np.argpartition(-values, k)[:k]
        rankings[user] = item_ids[top[np.argsort(-values[top], kind="stable")]].tolist()
    return rankings


def collaborative_scorer(
    model: CollaborativeModel, item_ids: np.ndarray, history: Mapping[str, Sequence[str]]
) -> Callable[[str], np.ndarray]:
    """Exact ALS scores over the catalogue (the single-stage peer), fold-in for users without a trained vector."""
    rows = pd.Index(model.item_ids).get_indexer(item_ids)

    def scores(user: str) -> np.ndarray:
        vector = model.user_vector(user)
        if vector is None:
            vector = model.fold_in(list(history.get(user, [])))
        values = np.where(rows >= 0, model.item_factors[rows] @ vector, -np.inf)
        return values

    return scores


def metrics_of(rankings: Mapping[str, Sequence[str]], users: EvaluationUsers, k: int = 10) -> dict[str, float]:
    """NDCG, recall and MAP at ``k`` over all positives, plus NDCG over add-to-carts and purchases alone
    (``conversion_ndcg@k``, over the users who have one) when the data has them."""
    metrics = evaluate_rankings(rankings, users.relevant, metrics=METRICS, ks=(k,))
    if users.conversions:
        metrics[f"conversion_ndcg@{k}"] = evaluate_rankings(rankings, users.conversions, ("ndcg",), (k,))[f"ndcg@{k}"]
    return metrics


@dataclass
class Variants:
    """Top-k lists per (method, candidate-set size), and the re-ranking time (features + model) per size."""

    rankings: dict[tuple[str, int], dict[str, list[str]]]
    rerank_ms: dict[int, list[float]]


def rank_variants(
    recommender: Recommender,
    users: EvaluationUsers,
    rankers: Mapping[str, Ranker | None],
    ks: Sequence[int],
    k: int = 10,
) -> Variants:
    """Every ranker at every candidate-set size, each size retrieved, featurised and ranked the way
    ``Recommender.recommend`` does (``None``: the stage-1 order); the rankers share that work. Equivalence with
    ``recommend`` is tested (ties make a truncated larger retrieval differ, so each size retrieves on its own)."""
    rankings: dict[tuple[str, int], dict[str, list[str]]] = {(name, size): {} for name in rankers for size in ks}
    rerank_ms: dict[int, list[float]] = {size: [] for size in ks}
    stage1, catalog = recommender.stage1, recommender.catalog
    for user in users.users:
        request = Request(user_id=user, k=k, as_of=users.as_of[user])
        features = users.features[user]
        query, seen = query_for(request, features)
        for size in ks:
            candidates = stage1.candidates(query, size)
            retrieval = Retrieval(query, candidates, candidates.rows, seen, fallback=False)
            started = time.perf_counter()
            block = recommender.item_features.block(candidates.rows, request.as_of)
            matrix = recommender.feature_matrix(request, retrieval, features, block)
            for name, ranker in rankers.items():
                if ranker is None:
                    scores = -np.arange(len(candidates), dtype=np.float64)
                else:
                    scores = ranker.predict(matrix)
                    if name == "two_stage":
                        rerank_ms[size].append((time.perf_counter() - started) * 1000.0)
                ruled = apply_rules(catalog, candidates.rows, scores, k, request.as_of, recommender.rules,
                                    request.filters, query.exclude, recommender.popularity_order)  # fmt: skip
                rankings[(name, size)][user] = catalog.item_ids[ruled.rows].tolist()
    return Variants(rankings, rerank_ms)


def choose_k(ndcg_by_k: Mapping[int, float], tolerance: float) -> int:
    """The smallest K whose NDCG is within ``tolerance`` (a share) of the best."""
    best = max(ndcg_by_k.values())
    return min(size for size, value in ndcg_by_k.items() if value >= (1.0 - tolerance) * best)


def sweep_candidate_k(
    variants: Variants, users: EvaluationUsers, tolerance: float = 0.01, k: int = 10
) -> dict[str, object]:
    """Two-stage NDCG@k and re-ranking latency per candidate-set size, and the chosen (smallest sufficient) K."""
    sizes = sorted({size for _, size in variants.rankings})
    rows = []
    for size in sizes:
        scores = metrics_of(variants.rankings[("two_stage", size)], users, k)
        latencies = variants.rerank_ms[size]
        rows.append({"k_candidates": size, f"ndcg@{k}": scores[f"ndcg@{k}"], f"recall@{k}": scores[f"recall@{k}"],
                     "rerank_p50_ms": float(np.percentile(latencies, 50)),
                     "rerank_p99_ms": float(np.percentile(latencies, 99))})  # fmt: skip
    chosen = choose_k({int(row["k_candidates"]): row[f"ndcg@{k}"] for row in rows}, tolerance)
    best = max(row[f"ndcg@{k}"] for row in rows)
    return {"rows": rows, "chosen_k": int(chosen), "best_ndcg": best, "tolerance": tolerance}


def evaluation_step(
    dataset: Dataset, vectors: np.ndarray, ranker_dir: Path, settings: Settings, champion: Ranker | None = None,
    training_dir: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Every method on the same test users, K sweep, the champion's NDCG, and (for datasets with prices) the
    ablation of the price, stock and recency features."""
    ranker, spec, _ = load_ranker(ranker_dir)
    split = evaluation_split(dataset.interactions, settings.test_fraction)
    context = FeatureContext(dataset.items, dataset.users, split.history)
    recommender = offline_recommender(split.history, dataset, vectors, context, spec, settings, ranker)
    users = evaluation_users(split, lambda u, cut: user_snapshots(context, u, cut.to_numpy()), settings.eval_max_users,
                             settings.seed)  # fmt: skip
    catalog = recommender.catalog
    history = split.history.groupby(C.USER_ID)[C.ITEM_ID].agg(list).to_dict()
    assert recommender.stage1.collaborative is not None
    popular = train_popularity(split.history, catalog.item_ids)
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
