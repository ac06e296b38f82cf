"""The stage-2 re-ranker: LightGBM LambdaRank trained on stage-1 candidate groups, saved in LightGBM's text format.

Prediction goes through the Booster (not the sklearn wrapper), single-threaded for request-time scoring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from models.files import ArtifactError
from models.settings import Settings

MODEL_FILE = "ranker.txt"


EVAL_AT = 10
"""Early stopping watches NDCG at the list length the protocol reports."""


@dataclass(frozen=True)
class RankerParams:
    num_boost_round: int
    learning_rate: float
    num_leaves: int
    min_data_in_leaf: int
    feature_fraction: float
    bagging_fraction: float
    lambda_l2: float
    early_stopping_rounds: int
    seed: int
    threads: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RankerParams:
        return cls(
            num_boost_round=settings.ranker_rounds,
            learning_rate=settings.ranker_learning_rate,
            num_leaves=settings.ranker_leaves,
            min_data_in_leaf=settings.ranker_min_data_in_leaf,
            feature_fraction=settings.ranker_feature_fraction,
            bagging_fraction=settings.ranker_bagging_fraction,
            lambda_l2=settings.ranker_lambda_l2,
            early_stopping_rounds=settings.ranker_early_stopping,
            seed=settings.seed,
            threads=settings.threads,
        )

    def lightgbm(self) -> dict[str, Any]:
        return {
            "objective": "lambdarank",
            "metric": "ndcg",
            "ndcg_eval_at": [EVAL_AT],
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": 1,
            "lambda_l2": self.lambda_l2,
            "lambdarank_truncation_level": 2 * EVAL_AT,
            "seed": self.seed,
            "num_threads": self.threads,
            "verbosity": -1,
            "deterministic": True,
            "force_row_wise": True,
        }


@dataclass
class RankingData:
    """Rows grouped by request: ``groups[i]`` consecutive rows belong to request ``i``."""

    features: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    group_users: np.ndarray
    relevant: np.ndarray | None = None
    """Per group, how many relevant items the user has in all (retrieved or not): the ideal of a true NDCG."""

    def __post_init__(self) -> None:
        if int(self.groups.sum()) != len(self.features) or len(self.labels) != len(self.features):
            raise ValueError(
                f"groups sum to {int(self.groups.sum())}, features have {len(self.features)} rows, "
                f"labels {len(self.labels)}"
            )
        if len(self.group_users) != len(self.groups):
            raise ValueError("one user id per group is required")

    def group_rows(self, mask: np.ndarray) -> np.ndarray:
        """Row numbers of the groups where ``mask`` is true."""
        return np.flatnonzero(np.repeat(mask, self.groups))

    def select_groups(self, mask: np.ndarray) -> RankingData:
        """The groups where ``mask`` is true, rows kept contiguous."""
        row_group = np.repeat(np.arange(len(self.groups)), self.groups)
        rows = mask[row_group]
        relevant = self.relevant[mask] if self.relevant is not None else None
        return RankingData(self.features[rows], self.labels[rows], self.groups[mask], self.group_users[mask], relevant)

    def truncate(self, k: int) -> RankingData:
        """Each group's first ``k`` rows (groups are in stage-1 order: the candidates a K-sized list would hold)."""
        if k >= self.groups.max(initial=0):
            return self
        starts = np.concatenate([[0], np.cumsum(self.groups)[:-1]])
        sizes = np.minimum(self.groups, k)
        rows = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, sizes, strict=True)])
        return RankingData(self.features[rows], self.labels[rows], sizes, self.group_users, self.relevant)

    def true_ndcg(self, scores: np.ndarray, k: int = 10) -> np.ndarray:
        """Per group, NDCG@k of the rows ordered by ``scores`` with binary gains (label > 0) and the ideal over all
        the user's relevant items (``relevant``): the protocol's NDCG of a re-ranked candidate list."""
        discount = 1.0 / np.log2(np.arange(2, k + 2))
        out = np.zeros(len(self.groups))
        start = 0
        for g, size in enumerate(self.groups.tolist()):
            order = np.argsort(-scores[start : start + size], kind="stable")[:k]
            gains = (self.labels[start : start + size][order] > 0).astype(float)
            relevant = (
                int(self.relevant[g])
                if self.relevant is not None
                else int((self.labels[start : start + size] > 0).sum())
            )
            ideal = discount[: min(k, max(relevant, 1))].sum()
            out[g] = float(gains @ discount[: len(gains)]) / ideal
            start += size
        return out


@dataclass
class Ranker:
    booster: lgb.Booster
    feature_names: list[str]
    categorical: list[str]
    best_iteration: int
    history: dict[str, list[float]] = field(default_factory=dict)
    masked_columns: tuple[int, ...] = ()
    """Columns blanked (NaN) before training and prediction: the ablation of a feature group."""

    def predict(self, features: np.ndarray, threads: int = 1) -> np.ndarray:
        if self.masked_columns:
            features = mask_columns(features, self.masked_columns)
        return np.asarray(self.booster.predict(features, num_iteration=self.best_iteration, num_threads=threads))

    def contributions(self, features: np.ndarray) -> np.ndarray:
        """Per-row SHAP-style contributions (last column is the bias)."""
        return np.asarray(
            self.booster.predict(features, num_iteration=self.best_iteration, pred_contrib=True, num_threads=1)
        )

    def importance(self) -> dict[str, float]:
        gains = self.booster.feature_importance(importance_type="gain", iteration=self.best_iteration)
        return dict(zip(self.feature_names, map(float, gains), strict=True))

    def save(self, folder: Path) -> dict[str, Any]:
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(folder / MODEL_FILE), num_iteration=self.best_iteration)
        return {
            "file": MODEL_FILE,
            "format": "lightgbm-text",
            "best_iteration": self.best_iteration,
            "feature_names": self.feature_names,
            "categorical": self.categorical,
        }

    @classmethod
    def load(cls, folder: Path, section: dict[str, Any], expected_features: Sequence[str] | None = None) -> Ranker:
        path = folder / section["file"]
        if not path.exists():
            raise ArtifactError(f"{path}: ranker model file missing")
        try:
            booster = lgb.Booster(model_file=str(path))
        except lgb.basic.LightGBMError as error:
            raise ArtifactError(f"{path}: not a readable LightGBM model ({error})") from error
        names = list(section["feature_names"])
        if booster.feature_name() != names:
            raise ArtifactError(f"{path}: model features differ from the manifest's feature list")
        if expected_features is not None and list(expected_features) != names:
            raise ArtifactError(f"{path}: model features differ from the feature service's order")
        return cls(booster, names, list(section["categorical"]), int(section["best_iteration"]))


def ranking_dataset(
    data: RankingData, feature_names: Sequence[str], categorical: Sequence[str], params: RankerParams,
    masked_columns: Sequence[int] = (),
) -> lgb.Dataset:  # fmt: skip
    """LightGBM's binned copy of ``data`` (constructed; it keeps no reference to the raw features)."""
    features = mask_columns(data.features, masked_columns) if masked_columns else data.features
    dataset = lgb.Dataset(features, data.labels, group=data.groups, feature_name=list(feature_names),
                          categorical_feature=list(categorical), params=params.lightgbm(),
                          free_raw_data=True)  # fmt: skip
    return dataset.construct()


def fit_ranker(
    train_set: lgb.Dataset, valid_set: lgb.Dataset | None, feature_names: Sequence[str], categorical: Sequence[str],
    params: RankerParams, masked_columns: Sequence[int] = (),
) -> Ranker:  # fmt: skip
    """LambdaRank on prepared datasets; with ``valid_set``, early stopping on its NDCG@10 (else all rounds)."""
    history: dict[str, Any] = {}
    callbacks: list[Any] = [lgb.record_evaluation(history)]
    if valid_set is not None:
        callbacks.append(lgb.early_stopping(params.early_stopping_rounds, verbose=False))
    booster = lgb.train(
        params.lightgbm(),
        train_set,
        num_boost_round=params.num_boost_round,
        valid_sets=[valid_set] if valid_set is not None else [],
        valid_names=["valid"] if valid_set is not None else [],
        callbacks=callbacks,
    )
    best = booster.best_iteration or booster.current_iteration()
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))  # drops the training data
    curves = {f"valid_{k}": list(v) for k, v in history.get("valid", {}).items()}
    return Ranker(booster, list(feature_names), list(categorical), int(best), curves, tuple(masked_columns))


def train_ranker(
    train: RankingData,
    valid: RankingData | None,
    feature_names: Sequence[str],
    categorical: Sequence[str],
    params: RankerParams,
    masked_columns: Sequence[int] = (),
) -> Ranker:
    """LambdaRank; with ``valid``, early stopping on NDCG@10 of those held-out users (else all rounds)."""
    train_set = ranking_dataset(train, feature_names, categorical, params, masked_columns)
    valid_set = None
    if valid is not None:
        features = mask_columns(valid.features, masked_columns) if masked_columns else valid.features
        valid_set = lgb.Dataset(features, valid.labels, group=valid.groups, reference=train_set, free_raw_data=True)
    return fit_ranker(train_set, valid_set, feature_names, categorical, params, masked_columns)


def mask_columns(features: np.ndarray, columns: Sequence[int]) -> np.ndarray:
    masked = np.array(features, dtype=np.float32, copy=True)
    masked[:, list(columns)] = np.nan
    return masked
