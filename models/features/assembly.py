"""Assembling the ranker's input matrix for one user's candidates, the same function in training and serving.

Stored user features (one row) × stored item features (one row per candidate) × cross features computed from both
and from stage 1 (vectors, provenance) in one vectorised pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.data.clock import DAY_SECONDS
from models.features.snapshots import ItemTags
from models.features.spec import (
    CROSS_NUMERIC,
    ITEM_CATEGORY,
    ITEM_MODEL_NUMERIC,
    ITEM_NUMERIC,
    SOURCES,
    UNKNOWN,
    USER_CATEGORICAL,
    USER_NUMERIC,
    USER_TOP_CATEGORIES,
    USER_TOP_SHARES,
    USER_TOP_TAG_SHARES,
    USER_TOP_TAGS,
    FeatureSpec,
    user_categorical_name,
)


@dataclass(frozen=True)
class UserRow:
    """One user's stored features, ready for assembly."""

    numeric: np.ndarray
    categorical: np.ndarray
    top_categories: Sequence[str]
    top_shares: Sequence[float]
    top_tags: Sequence[str]
    top_tag_shares: Sequence[float]

    @classmethod
    def from_mapping(cls, features: Mapping[str, object], spec: FeatureSpec) -> UserRow:
        numeric = np.array([_float(features.get(name)) for name in USER_NUMERIC], dtype=np.float32)
        categorical = np.array(
            [spec.code(user_categorical_name(c), features.get(user_categorical_name(c)) or UNKNOWN)
             for c in USER_CATEGORICAL], dtype=np.float32,
        )  # fmt: skip
        return cls(
            numeric, categorical,
            [str(x) for x in as_list(features.get(USER_TOP_CATEGORIES))],
            [float(x) for x in as_list(features.get(USER_TOP_SHARES))],
            [str(x) for x in as_list(features.get(USER_TOP_TAGS))],
            [float(x) for x in as_list(features.get(USER_TOP_TAG_SHARES))],
        )  # fmt: skip


def _float(value: object) -> float:
    if value is None:
        return np.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return np.nan


def as_list(value: object) -> list:
    """A list feature as a list: Feast returns lists, pandas rows may hold arrays, a missing value is None."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return list(value)  # type: ignore[call-overload]


@dataclass(frozen=True)
class ItemBlock:
    """Stored features of a list of candidate items, aligned with the candidates."""

    numeric: np.ndarray
    category_names: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> ItemBlock:
        names = frame[ITEM_CATEGORY].to_numpy().astype(str)
        return cls(frame[list(ITEM_NUMERIC)].to_numpy(dtype=np.float32), names)

    def take(self, rows: np.ndarray) -> ItemBlock:
        return ItemBlock(self.numeric[rows], self.category_names[rows])


_ITEM_COL = {name: i for i, name in enumerate(ITEM_NUMERIC)}


_ITEM_MODEL_COLUMNS = np.array([_ITEM_COL[name] for name in ITEM_MODEL_NUMERIC])


_USER_COL = {name: i for i, name in enumerate(USER_NUMERIC)}


@dataclass(frozen=True)
class RequestInputs:
    """Request-time inputs for one user's candidates (arrays aligned with the candidates)."""

    as_of: float
    candidate_rows: np.ndarray
    user_text_vector: np.ndarray | None
    user_collab_vector: np.ndarray | None
    candidate_text_vectors: np.ndarray
    candidate_collab_vectors: np.ndarray
    seen_counts: np.ndarray
    provenance_ranks: Mapping[str, np.ndarray]
    provenance_scores: Mapping[str, np.ndarray]
    fused_scores: np.ndarray
    item_tags: ItemTags
    recent_rows: np.ndarray
    """Catalogue rows of the user's last few items (the session's taste for ``tag_affinity_recent``)."""
    session_vector: np.ndarray | None = None


def cross_features(user: UserRow, items: ItemBlock, inputs: RequestInputs) -> np.ndarray:
    """The cross-feature block (n × len(CROSS_NUMERIC + PROVENANCE)), in that column order."""
    n = len(items.category_names)
    nan = np.full(n, np.nan, dtype=np.float32)
    share_of = dict(zip(user.top_categories, user.top_shares, strict=False))
    tags = inputs.item_tags
    recent = tags.counts(inputs.recent_rows) if len(inputs.recent_rows) else None
    gap = items.numeric[:, _ITEM_COL["item_log_price"]] - user.numeric[_USER_COL["user_log_price_mean"]]
    user_days_since_last = user.numeric[_USER_COL["user_days_since_last"]]
    columns = {
        "semantic_affinity": inputs.candidate_text_vectors @ inputs.user_text_vector
        if inputs.user_text_vector is not None else nan,
        "collaborative_score": inputs.candidate_collab_vectors @ inputs.user_collab_vector
        if inputs.user_collab_vector is not None else nan,
        "category_affinity": np.array([share_of.get(c, 0.0) for c in items.category_names], dtype=np.float32),
        "tag_affinity": tags.affinity(inputs.candidate_rows, tags.profile(user.top_tags, user.top_tag_shares))
        if user.top_tags else np.zeros(n, np.float32),
        "tag_affinity_recent": tags.affinity(inputs.candidate_rows, recent / max(recent.sum(), 1.0))
        if recent is not None else np.zeros(n, np.float32),
        "price_gap": gap,
        "abs_price_gap": np.abs(gap),
        "item_age_days": (inputs.as_of - items.numeric[:, _ITEM_COL["item_created_ts"]].astype(np.float64))
        / DAY_SECONDS,
        "item_since_last_ratio": items.numeric[:, _ITEM_COL["item_days_since_last"]] / (user_days_since_last + 1.0),
        "seen_before": inputs.seen_counts,
        "session_affinity": inputs.candidate_text_vectors @ inputs.session_vector
        if inputs.session_vector is not None else nan,
    }  # fmt: skip
    present = np.zeros(n, dtype=np.float32)
    provenance = []
    for source in SOURCES:
        rank = inputs.provenance_ranks.get(source)
        score = inputs.provenance_scores.get(source)
        if rank is None or score is None:
            provenance += [nan, nan]
            continue
        found = rank >= 0
        present += found
        provenance += [np.where(found, rank, np.nan), np.where(found, score, np.nan)]
    columns["n_sources"] = present
    provenance += [np.arange(n, dtype=np.float32), inputs.fused_scores]
    assert list(columns) == list(CROSS_NUMERIC)
    return np.column_stack([*columns.values(), *provenance]).astype(np.float32)


def assemble(user: UserRow, items: ItemBlock, inputs: RequestInputs) -> np.ndarray:
    """The ranker's input matrix (n × len(MODEL_FEATURES)) for one user's candidates, training and serving alike."""
    n = len(items.category_names)
    return np.hstack(
        [
            np.broadcast_to(user.numeric, (n, len(user.numeric))),
            np.broadcast_to(user.categorical, (n, len(user.categorical))),
            items.numeric[:, _ITEM_MODEL_COLUMNS],
            cross_features(user, items, inputs),
        ]
    ).astype(np.float32, copy=False)
