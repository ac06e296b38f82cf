"""The feature contract between training and serving: every feature's name and order, the vocabularies of the
categorical ones, and the names of the Feast views and feature services that store them.

- user features: activity, taste and price profile (``USER_NUMERIC``, ``USER_CATEGORICAL``), plus list features
  (top categories, recent positives, items seen) that feed cross features and stage 1;
- item features: popularity, trend, price tier, stock, launch time (``ITEM_NUMERIC``) and category;
- cross features: computed per request from the user, the item and stage 1 (``CROSS_NUMERIC``, ``PROVENANCE``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from models.data import columns as C

FEATURE_SERVICE = "ranker_v1"
"""The re-ranker's stored features (user profile + item state): training frames and serving take their list from it."""
HISTORY_SERVICE = "user_history_v1"
"""What stage 1 queries with at serving time (recent positives with times, items seen)."""
USER_VIEW = "user_features"
HISTORY_VIEW = "user_history"
ITEM_VIEW = "item_features"

EVENT_TIMESTAMP = "event_timestamp"


UNKNOWN = "unknown"

USER_EVENTS = "user_events_all"
"""The user's activity count: present (not null) exactly when the store knows the user."""
USER_NUMERIC = (
    "user_events_1d", "user_events_7d", "user_events_30d", "user_events_all", "user_positives_all",
    "user_distinct_items", "user_days_since_last", "user_span_days", "user_mean_weight", "user_mean_item_popularity",
    "user_log_price_mean", "user_log_price_std", "user_rel_price_mean", "user_price_sensitivity",
    "user_novelty_days", "global_events_30d",
)  # fmt: skip
"""Activity, taste and price profile; ``global_events_30d`` is how busy the whole system was (same for all users)."""
USER_CATEGORICAL = (C.SEGMENT, C.DEVICE, C.AGE_BAND)
USER_TOP_CATEGORIES = "user_top_categories"
USER_TOP_SHARES = "user_top_category_shares"
USER_TOP_TAGS = "user_top_tags"
USER_TOP_TAG_SHARES = "user_top_tag_shares"
USER_RECENT_ITEMS = "user_recent_items"
USER_RECENT_TIMES = "user_recent_times"
USER_SEEN_ITEMS = "user_seen_items"
USER_LISTS = (
    USER_TOP_CATEGORIES, USER_TOP_SHARES, USER_TOP_TAGS, USER_TOP_TAG_SHARES, USER_RECENT_ITEMS, USER_RECENT_TIMES,
    USER_SEEN_ITEMS,
)  # fmt: skip
"""List-valued user features: taste (top categories and tags with their shares) for cross features, and the history
stage 1 queries with (recent positives, oldest first, with their times; items seen, most recent first)."""

ITEM_NUMERIC = (
    "item_events_1d", "item_events_7d", "item_events_30d", "item_events_365d", "item_events_all",
    "item_share_7d", "item_share_30d", "item_share_365d", "item_positives_30d", "item_positives_all",
    "item_positive_rate", "item_mean_weight", "item_trend", "item_trend_long", "item_days_since_last",
    "item_days_since_first", "item_price", "item_log_price", "item_price_tier", "item_in_stock", "item_created_ts",
)  # fmt: skip
"""Popularity in windows, its share of all activity (which moves with the system's own busyness), trends, first and
last interaction, price, stock and launch time — all as of the snapshot time."""
ITEM_CATEGORY = "item_category"
ITEM_CATEGORICAL = (ITEM_CATEGORY,)
ITEM_MODEL_NUMERIC = tuple(name for name in ITEM_NUMERIC if name != "item_created_ts")
"""Stored item features the ranker sees: the launch time only enters as the item's age at request time, since
an absolute timestamp would let the model memorise periods instead of learning recency."""

CROSS_NUMERIC = (
    "semantic_affinity", "collaborative_score", "category_affinity", "tag_affinity", "tag_affinity_recent",
    "price_gap", "abs_price_gap", "item_age_days", "item_since_last_ratio", "seen_before", "session_affinity",
    "n_sources",
)  # fmt: skip
SOURCES = C.STAGE1_SOURCES
PROVENANCE = (*(f"s1_{s}_{kind}" for s in SOURCES for kind in ("rank", "score")), "s1_fused_rank", "s1_fused_score")
"""Each stage-1 source's rank and score of the candidate (NaN where it did not retrieve it), and the fused ones."""


def user_categorical_name(column: str) -> str:
    return f"user_{column}"


USER_FEATURES = (*USER_NUMERIC, *(user_categorical_name(c) for c in USER_CATEGORICAL), *USER_LISTS)
USER_HISTORY = (USER_RECENT_ITEMS, USER_RECENT_TIMES, USER_SEEN_ITEMS)
USER_MODEL_FEATURES = tuple(name for name in USER_FEATURES if name not in USER_HISTORY)
"""User features the ranker's training frame needs (the history lists only drive stage 1 at serving time)."""
ITEM_FEATURES = (*ITEM_NUMERIC, *ITEM_CATEGORICAL)
MODEL_FEATURES = (
    *USER_NUMERIC,
    *(user_categorical_name(c) for c in USER_CATEGORICAL),
    *ITEM_MODEL_NUMERIC,
    *CROSS_NUMERIC,
    *PROVENANCE,
)
"""The ranker's input columns, in order. The user list features only feed cross features; the item's category
enters through the user's affinity to it, not as a raw code (a categorical of hundreds of values — a shop's
product types — let the trees memorise categories instead of learning the user's taste)."""
CATEGORICAL_FEATURES = tuple(user_categorical_name(c) for c in USER_CATEGORICAL)


@dataclass(frozen=True)
class FeatureSpec:
    """The ranker's feature contract: column order and the vocabularies of categorical features.

    Categorical values become integer codes (LightGBM categorical features); an unseen value becomes NaN (missing).
    """

    names: tuple[str, ...]
    vocabularies: Mapping[str, tuple[str, ...]]

    @classmethod
    def fit(cls, users: pd.DataFrame) -> FeatureSpec:
        """Vocabularies from the users table's attribute columns."""
        vocab: dict[str, tuple[str, ...]] = {}
        for column in USER_CATEGORICAL:
            values = set(users[column].dropna().astype(str)) if column in users.columns else set()
            vocab[user_categorical_name(column)] = tuple(sorted(values | {UNKNOWN}))
        return cls(MODEL_FEATURES, vocab)

    def to_json(self) -> dict[str, object]:
        return {"names": list(self.names), "vocabularies": {k: list(v) for k, v in self.vocabularies.items()},
                "categorical": list(CATEGORICAL_FEATURES), "feature_service": FEATURE_SERVICE}  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureSpec:
        names: tuple[str, ...] = tuple(data["names"])
        if names != MODEL_FEATURES:
            raise ValueError(f"feature list differs from this code's: {sorted(set(names) ^ set(MODEL_FEATURES))}")
        vocab = {k: tuple(v) for k, v in data["vocabularies"].items()}
        return cls(names, vocab)

    def codes(self, name: str, values: Sequence[object] | np.ndarray) -> np.ndarray:
        """Integer codes of categorical values as float32 (NaN for unseen values)."""
        index = pd.Index(self.vocabularies[name])
        positions = index.get_indexer(pd.Index(np.asarray(values, dtype=object).astype(str)))
        return np.where(positions >= 0, positions, np.nan).astype(np.float32)

    def code(self, name: str, value: object) -> float:
        """One value's code (NaN when unseen): a dict lookup, for a request's few user attributes (``codes``
        builds a pandas index per call, ~70 µs)."""
        return self._positions[name].get(str(value), np.nan)

    @cached_property
    def _positions(self) -> dict[str, dict[str, float]]:
        return {name: {value: float(i) for i, value in enumerate(vocab)} for name, vocab in self.vocabularies.items()}
