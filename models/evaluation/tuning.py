"""Per-dataset tuning that needs no human: Optuna searches each peer's few hyperparameters on the validation cut
(fit on the inner history, NDCG@10 on the validation positives), within a time and trial budget.

The chosen values configure both the peer in the evaluation and the matching stage-1 source. Test users are never
looked at. Each trial is reported to an ``on_trial`` callback (the pipeline logs it to MLflow as a child run).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna

from models.data.splits import Split, relevant_items, sample_users
from models.evaluation.peers import PEERS, peer_ndcg
from models.progress import progress
from models.settings import Settings

TrialCallback = Callable[[str, int, Mapping[str, float], float, float], None]
"""(peer, trial number, params, validation NDCG@10, seconds)."""


def with_default(choices: list[int], default: int) -> list[int]:
    """The choices plus the settings' value, which is always the first trial and must be a valid choice."""
    return choices if default in choices else [*choices, default]


def search_space(peer: str, trial: optuna.Trial, settings: Settings) -> dict[str, float]:
    """The hyperparameters that matter for each peer, on scales that hold across datasets."""
    if peer == "ease":
        return {"l2": trial.suggest_float("l2", 1.0, 10_000.0, log=True)}
    if peer == "rp3beta":
        return {"alpha": trial.suggest_float("alpha", 0.2, 1.5), "beta": trial.suggest_float("beta", 0.0, 1.0)}
    if peer == "item_knn":
        return {
            "shrink": trial.suggest_float("shrink", 0.0, 1000.0),
            "neighbours": trial.suggest_categorical(
                "neighbours", with_default([10, 20, 50, 100, 200, 500, 0], settings.item_knn_neighbours)
            ),
        }
    if peer == "ials":
        return {
            "factors": trial.suggest_categorical("factors", with_default([64, 128, 256, 512], settings.als_factors)),
            "regularization": trial.suggest_float("regularization", 0.01, 100.0, log=True),
            "alpha": trial.suggest_float("alpha", 0.1, 50.0, log=True),
            "iterations": settings.als_iterations,
        }
    raise ValueError(f"unknown peer '{peer}'")


def default_params(peer: str, settings: Settings) -> dict[str, float]:
    """The settings' values: the first trial of every search, and what is used when tuning is off."""
    return {
        "ease": {"l2": settings.ease_l2},
        "rp3beta": {"alpha": settings.rp3beta_alpha, "beta": settings.rp3beta_beta},
        "item_knn": {"shrink": settings.item_knn_shrink, "neighbours": settings.item_knn_neighbours},
        "ials": {"factors": settings.als_factors, "regularization": settings.als_regularization,
                 "alpha": settings.als_alpha, "iterations": settings.als_iterations},
    }[peer]  # fmt: skip


@dataclass
class TuningResult:
    params: dict[str, dict[str, float]]
    validation_ndcg: dict[str, float]
    trials: dict[str, int]
    seconds: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"params": self.params, "validation_ndcg@10": self.validation_ndcg, "trials": self.trials,
                "seconds": self.seconds, "history": self.history}  # fmt: skip


def tune_peers(
    inner: Split, item_ids: np.ndarray, settings: Settings, on_trial: TrialCallback | None = None
) -> TuningResult:
    """Search every peer's hyperparameters on the validation cut ``inner`` (history → holdout)."""
    relevant = relevant_items(inner)
    users = sample_users(list(relevant), settings.tuning_max_users, settings.seed)
    relevant = {u: relevant[u] for u in users}
    result = TuningResult({}, {}, {}, {})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for peer in PEERS:
        trials = settings.tuning_trials if settings.tuning else 1
        bar = progress(desc=f"tuning {peer}", total=trials, unit="trial")
        started = time.perf_counter()
        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(n_startup_trials=4, seed=settings.seed)
        )
        study.enqueue_trial(default_params(peer, settings))

        def objective(trial: optuna.Trial, peer: str = peer, bar: Any = bar) -> float:
            trial_started = time.perf_counter()
            params = search_space(peer, trial, settings)
            value = peer_ndcg(peer, params, inner.history, relevant, item_ids, settings.item_item_max_items,
                              settings.threads, settings.seed)  # fmt: skip
            seconds = time.perf_counter() - trial_started
            result.history.append({"peer": peer, "trial": trial.number, "params": params, "ndcg@10": value,
                                   "seconds": round(seconds, 2)})  # fmt: skip
            if on_trial is not None:
                on_trial(peer, trial.number, params, value, seconds)
            bar.update()
            return value

        study.optimize(objective, n_trials=trials, timeout=settings.tuning_seconds_per_peer)
        bar.close()
        best = study.best_trial
        result.params[peer] = {**default_params(peer, settings), **best.params}
        result.validation_ndcg[peer] = float(best.value or 0.0)
        result.trials[peer] = len(study.trials)
        result.seconds[peer] = round(time.perf_counter() - started, 1)
    return result
