"""The re-ranker's pipeline steps as plain functions, every choice made on the validation cut inside train:

1. ``training_step``: stage 1 fitted on the inner history with the tuned peers' hyperparameters, its fusion weights
   chosen on the validation users, their candidates labelled by the validation window (the training set);
2. ``train_step``: LambdaRank cross-validated over user folds at every candidate-set size K — the served K is the
   smallest whose out-of-fold NDCG@10 is within one standard error of the best, paired over the same users — then
   one model trained on every user at that K.

Each step reads what the previous one wrote (numpy, LightGBM text, JSON) so the flow can cache and resume them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from models.data import columns as C
from models.data.clock import unix_seconds
from models.data.contract import Dataset
from models.data.splits import Split, evaluation_split, label_split, relevant_items, sample_users
from models.features.snapshots import FeatureContext, user_snapshots
from models.features.spec import CATEGORICAL_FEATURES, FeatureSpec
from models.features.store import open_store
from models.files import write_json
from models.heap import release_free_memory
from models.progress import progress
from models.ranking.ranker import Ranker, RankerParams, RankingData, fit_ranker, ranking_dataset
from models.ranking.rules import NEUTRAL_RULES
from models.recommender.offline import offline_recommender
from models.recommender.request import Request
from models.recommender.retrieval import query_for
from models.retrieval.indexes import one_search_thread
from models.retrieval.stage1 import Stage1, Stage1Config, fit_stage1
from models.settings import Settings
from models.training.fusion import tune_fusion_weights, user_candidates
from models.training.impressions import LoggedLists, concat_ranking_data
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
STAGE1_FILE = "stage1_config.json"
RANKER_SECTION = "ranker_section.json"


def validation_cut(dataset: Dataset, settings: Settings) -> tuple[Split, Split]:
    """(the protocol's train / test split, the same cut inside train: inner history / validation window)."""
    split = evaluation_split(dataset.interactions, settings.test_fraction)
    return split, label_split(split.history, settings.label_fraction)


def choose_fusion(
    stage1: Stage1, context: FeatureContext, inner: Split, settings: Settings
) -> tuple[dict[str, float], dict[str, float]]:  # fmt: skip
    """Fusion weights that maximise the merged recall of validation positives at the smallest and largest servable
    K, from the queries the service builds (the users' features as of their validation cut)."""
    if not settings.fusion_tuning:
        return dict(stage1.config.weights), {}
    relevant = relevant_items(inner)
    users = sample_users(list(set(relevant) & set(inner.history[C.USER_ID])), settings.tuning_max_users, settings.seed)
    cut = inner.cut_times().loc[users]
    frame = user_snapshots(context, users, cut.to_numpy()).set_index(C.USER_ID)
    row_of = pd.Index(stage1.item_ids)
    as_of = dict(zip(users, unix_seconds(cut).tolist(), strict=True))
    sources = [source.name for source in stage1.sources]
    candidates = []
    with one_search_thread():  # one query at a time
        for user in progress(users, desc="fusion weights: stage 1", unit="user"):
            query, _ = query_for(Request(user_id=user, as_of=as_of[user]), frame.loc[user].to_dict())
            rows = row_of.get_indexer(sorted(relevant[user]))
            rows = rows[rows >= 0]
            if len(rows):
                candidates.append(user_candidates(stage1.retrieve_all(query, settings.candidates_k), sources, rows))
    ks = [k for k in settings.k_sweep if k <= settings.candidates_k] or [settings.candidates_k]
    weights, tuned, start = tune_fusion_weights(stage1.config.weights, candidates, sources, (min(ks), max(ks)))
    return weights, {"validation_recall_start": start, "validation_recall_tuned": tuned,
                     "users": float(len(candidates))}  # fmt: skip


def training_step(
    dataset: Dataset, split: Split, vectors: np.ndarray, peer_params: Mapping[str, Mapping[str, float]],
    settings: Settings, out_dir: Path, logged: LoggedLists | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Fit stage 1 on the inner history, choose its fusion weights, build the training set; save the set, the
    feature spec and the stage-1 configuration (tuned peers + weights) every later fit uses. With ``logged``, the
    served lists and their outcomes join the set as groups of their own (shown and not clicked: a negative).
    ``split`` is the protocol's train / test split of ``dataset``'s events (whose own event log is not read: a
    caller may pass ``Dataset.catalog()``)."""
    inner = label_split(split.history, settings.label_fraction)
    spec = FeatureSpec.fit(dataset.users)
    context = FeatureContext(dataset.items, dataset.users, inner.history, item_log=split.history)
    config = Stage1Config.from_settings(settings, peer_params=peer_params)
    stage1 = fit_stage1(inner.history, dataset.items, vectors, config)
    weights, fusion = choose_fusion(stage1, context, inner, settings)
    release_free_memory()  # the validation users' candidate matrices were heap-sized: hand their pages back
    stage1 = replace(stage1, config=replace(config, weights=weights))
    recommender = offline_recommender(stage1, dataset, context, spec, None, NEUTRAL_RULES, settings.candidates_k,
                                      inner.history)  # fmt: skip
    store = open_store(settings, dataset.name)  # the flow applied the feature definitions
    users = choose_training_users(inner, settings.train_max_users, settings.seed)
    training = build_training_set(recommender, context, inner, split.cut_times(), store, settings, dataset.name, users)
    relevant = relevant_items(inner)
    data = training.data
    data.relevant = np.array([len(relevant.get(u, ())) for u in data.group_users])
    served = logged.groups(spec.names) if logged is not None else None
    if served is not None:
        data = concat_ranking_data(data, served)
    impression_stats = {"impression_groups": float(len(served.groups)) if served is not None else 0.0}
    assert data.relevant is not None
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / TRAINING_FILE, features=data.features, labels=data.labels, groups=data.groups,
             group_users=data.group_users.astype(str), relevant=data.relevant)  # fmt: skip
    write_json(spec.to_json(), out_dir / SPEC_FILE)
    write_json(stage1.config.to_json(), out_dir / STAGE1_FILE)
    return {**training.stats, **impression_stats, **{f"fusion_{k}": v for k, v in fusion.items()}}


def load_training(folder: Path) -> tuple[RankingData, FeatureSpec]:
    with np.load(folder / TRAINING_FILE, allow_pickle=False) as saved:
        data = RankingData(saved["features"], saved["labels"], saved["groups"], saved["group_users"],
                           saved["relevant"])  # fmt: skip
    return data, FeatureSpec.from_json(json.loads((folder / SPEC_FILE).read_text()))


def load_stage1_config(folder: Path) -> Stage1Config:
    return Stage1Config.from_json(json.loads((folder / STAGE1_FILE).read_text()))


def user_folds(users: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A seeded fold number per group, the same for every group of a user (served lists add groups per user)."""
    unique, of_group = np.unique(users, return_inverse=True)
    return (np.random.default_rng(seed).permutation(len(unique)) % folds)[of_group]


def cross_validate(
    data: RankingData, spec: FeatureSpec, params: RankerParams, ks: list[int], folds: int, seed: int,
    masked_columns: tuple[int, ...] = (),
) -> dict[int, dict[str, Any]]:  # fmt: skip
    """Per K: out-of-fold NDCG@10 of rankers trained on each group's first K candidates (per user, so users can be
    compared across K) and the folds' best iterations. The folds are subsets of one binned dataset per K."""
    fold = user_folds(data.group_users, folds, seed)
    out: dict[int, dict[str, Any]] = {}
    for k in ks:
        truncated = data.truncate(k)
        binned = ranking_dataset(truncated, spec.names, CATEGORICAL_FEATURES, params, masked_columns)
        per_user = np.zeros(len(truncated.groups))
        iterations = []
        for f in range(folds):
            held = fold == f
            train_rows, held_rows = truncated.group_rows(~held).tolist(), truncated.group_rows(held).tolist()
            ranker = fit_ranker(binned.subset(train_rows), binned.subset(held_rows), spec.names, CATEGORICAL_FEATURES,
                                params, masked_columns)  # fmt: skip
            valid = truncated.select_groups(held)
            per_user[held] = valid.true_ndcg(ranker.predict(valid.features, threads=params.threads))
            iterations.append(ranker.best_iteration)
            del valid
        out[k] = {"ndcg@10": float(per_user.mean()), "per_user": per_user, "iterations": iterations}
        del binned, truncated
    return out


def k_deficits(per_user_by_k: Mapping[int, np.ndarray]) -> dict[int, dict[str, float]]:
    """Per K: its mean NDCG deficit to the best K, paired over the same groups, and that mean's standard error."""
    best = max(per_user_by_k, key=lambda k: float(np.mean(per_user_by_k[k])))
    out = {}
    for k, per_user in per_user_by_k.items():
        deficit = per_user_by_k[best] - per_user
        error = float(stats.sem(deficit)) if len(deficit) > 1 and np.ptp(deficit) > 0 else 0.0
        out[k] = {"deficit": float(deficit.mean()), "deficit_se": error}
    return out


def choose_k(per_user_by_k: Mapping[int, np.ndarray], standard_errors: float) -> int:
    """The smallest K not measurably worse than the best: its paired mean deficit within ``standard_errors``
    standard errors (the one-standard-error rule on paired differences). A larger K costs every re-ranked request,
    so a gain within the folds' noise does not buy it."""
    deficits = k_deficits(per_user_by_k)
    return min(k for k, d in deficits.items() if d["deficit"] <= standard_errors * d["deficit_se"])


def release_holdout(users: np.ndarray, share: float) -> np.ndarray:
    """True for the groups of users in the release holdout: a stable hash of the user id, so every run holds out
    the same users and no published re-ranker ever trained on them — the release gate compares a new version with
    the champion there, both out of sample."""
    unique, of_group = np.unique(users.astype(str), return_inverse=True)
    digests = (hashlib.sha256(f"release\0{user}".encode()).digest()[:8] for user in unique)
    held = np.fromiter((int.from_bytes(d, "big") / 2.0**64 < share for d in digests), bool, len(unique))
    return held[of_group]


def final_ranker(
    data: RankingData, spec: FeatureSpec, params: RankerParams, k: int, iterations: list[int],
    masked_columns: tuple[int, ...] = (), holdout: np.ndarray | None = None,
) -> Ranker:  # fmt: skip
    """One model on every user's first K candidates but the ``holdout`` groups', as many rounds as the folds found
    best on average."""
    rounds = max(1, int(round(float(np.mean(iterations)))))
    truncated = data.truncate(k)
    binned = ranking_dataset(truncated, spec.names, CATEGORICAL_FEATURES, params, masked_columns)
    if holdout is not None and holdout.any():
        binned = binned.subset(truncated.group_rows(~holdout).tolist())  # LightGBM's bins: no copy of the rows
    return fit_ranker(binned, None, spec.names, CATEGORICAL_FEATURES, replace(params, num_boost_round=rounds),
                      masked_columns)  # fmt: skip


def train_step(training_dir: Path, settings: Settings, out_dir: Path) -> dict[str, Any]:
    """Cross-validate at every K, choose K, train the final model on every training user at that K."""
    data, spec = load_training(training_dir)
    params = RankerParams.from_settings(settings)
    ks = [k for k in settings.k_sweep if k <= settings.candidates_k] or [settings.candidates_k]
    sweep = cross_validate(data, spec, params, ks, settings.ranker_folds, settings.seed)
    chosen = choose_k({k: v["per_user"] for k, v in sweep.items()}, settings.k_standard_errors)
    deficits = k_deficits({k: v["per_user"] for k, v in sweep.items()})
    grid = {(params.num_leaves, params.min_data_in_leaf): sweep[chosen]}
    for leaves, min_data in settings.ranker_grid:
        if (leaves, min_data) not in grid:
            trial = replace(params, num_leaves=leaves, min_data_in_leaf=min_data)
            grid[(leaves, min_data)] = cross_validate(data, spec, trial, [chosen], settings.ranker_folds,
                                                      settings.seed)[chosen]  # fmt: skip
    leaves, min_data = max(grid, key=lambda key: grid[key]["ndcg@10"])
    best = grid[(leaves, min_data)]
    params = replace(params, num_leaves=leaves, min_data_in_leaf=min_data)
    held = release_holdout(data.group_users, settings.release_holdout_share)
    ranker = final_ranker(data, spec, params, chosen, best["iterations"], holdout=held)
    section = ranker.save(out_dir)
    section.update(
        k_candidates=chosen,
        validation_ndcg=best["ndcg@10"],
        leaves=leaves,
        min_data_in_leaf=min_data,
        grid=[{"leaves": k[0], "min_data_in_leaf": k[1], "ndcg@10": v["ndcg@10"]} for k, v in grid.items()],
        k_sweep=[
            {"k_candidates": k, "ndcg@10": v["ndcg@10"], **deficits[k], "iterations": v["iterations"]}
            for k, v in sweep.items()
        ],
        importance=ranker.importance(),
        train_groups=int(len(data.groups)),
        release_holdout_groups=int(held.sum()),
    )
    np.save(out_dir / "validation_per_user.npy", best["per_user"], allow_pickle=False)
    (out_dir / SPEC_FILE).write_text((training_dir / SPEC_FILE).read_text())
    (out_dir / STAGE1_FILE).write_text((training_dir / STAGE1_FILE).read_text())
    write_json(section, out_dir / RANKER_SECTION)
    return section


def holdout_ndcg(
    training_dir: Path, rankers: Sequence[Ranker | None], k: int, share: float
) -> list[np.ndarray | None]:  # fmt: skip
    """Per release-holdout group, NDCG@10 of each ranker re-ranking the first ``k`` validation candidates (None for
    no ranker, or one whose features differ from this training set's): a new version and the champion on the same
    users, neither trained on them."""
    data, spec = load_training(training_dir)
    held = data.select_groups(release_holdout(data.group_users, share)).truncate(k)
    del data
    return [held.true_ndcg(ranker.predict(held.features, threads=2))
            if ranker is not None and ranker.feature_names == list(spec.names) else None
            for ranker in rankers]  # fmt: skip


def load_ranker(folder: Path) -> tuple[Ranker, FeatureSpec, dict[str, Any]]:
    section = json.loads((folder / RANKER_SECTION).read_text())
    spec = FeatureSpec.from_json(json.loads((folder / SPEC_FILE).read_text()))
    return Ranker.load(folder, section, spec.names), spec, section


def ablated_ranker(
    training_dir: Path, groups: tuple[str, ...], section: Mapping[str, Any], settings: Settings
) -> Ranker:  # fmt: skip
    """The served ranker's training (its K, leaves and rows per leaf) with the columns of ``groups`` blanked;
    rounds from its own cross-validation."""
    data, spec = load_training(training_dir)
    columns = tuple(spec.names.index(name) for group in groups for name in ABLATION_GROUPS[group])
    k = int(section["k_candidates"])
    params = replace(RankerParams.from_settings(settings), num_leaves=int(section["leaves"]),
                     min_data_in_leaf=int(section["min_data_in_leaf"]))  # fmt: skip
    sweep = cross_validate(data, spec, params, [k], settings.ranker_folds, settings.seed, columns)
    held = release_holdout(data.group_users, settings.release_holdout_share)
    return final_ranker(data, spec, params, k, sweep[k]["iterations"], columns, held)
