"""Feature computation: user and item snapshots as of given times, and cross features at request time.

Snapshots are point-in-time correct by construction: a row stamped ``t`` only uses interactions strictly before
``t``. They are written to the offline store (Feast joins each training row to the latest snapshot at or before
its time) and the newest ones are materialised to the online store for serving. Cross features combine user and
item features with stage-1 vectors and provenance in one vectorised function that training and serving both call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from models import columns as C
from models.splits import is_positive

EVENT_TIMESTAMP = "event_timestamp"
DAY = 86_400.0
WINDOWS_DAYS = (1, 7, 30)
TOP_CATEGORIES = 5
STRONG_WEIGHT = 3.0
"""Events at least this heavy (add-to-cart, purchase; a rating ≥ 3) count as strong intent."""
UNKNOWN = "unknown"
NO_HISTORY_DAYS = 3650.0

USER_NUMERIC = (
    "user_events_1d", "user_events_7d", "user_events_30d", "user_events_all", "user_positives_all",
    "user_days_since_last", "user_mean_weight", "user_log_price_mean", "user_log_price_std",
    "user_rel_price_mean", "user_price_sensitivity", "user_novelty_days",
)  # fmt: skip
USER_CATEGORICAL = (C.SEGMENT, C.DEVICE, C.AGE_BAND)
USER_TOP_CATEGORIES = "user_top_categories"
USER_TOP_SHARES = "user_top_category_shares"
USER_RECENT_ITEMS = "user_recent_items"
USER_RECENT_TIMES = "user_recent_times"
USER_SEEN_ITEMS = "user_seen_items"
USER_LISTS = (USER_TOP_CATEGORIES, USER_TOP_SHARES, USER_RECENT_ITEMS, USER_RECENT_TIMES, USER_SEEN_ITEMS)
"""List-valued user features: taste for cross features, and the history stage 1 queries with (recent positives,
oldest first, with their times) and excludes (items seen before, most recent ``SEEN_CAP``)."""
RECENT_ITEMS = 50
SEEN_CAP = 1000
ITEM_NUMERIC = (
    "item_events_1d", "item_events_7d", "item_events_30d", "item_events_all", "item_positives_30d",
    "item_positives_all", "item_positive_rate", "item_mean_weight", "item_trend", "item_price", "item_log_price",
    "item_price_tier", "item_in_stock", "item_created_ts",
)  # fmt: skip
ITEM_CATEGORICAL = ("item_category",)
ITEM_MODEL_NUMERIC = tuple(name for name in ITEM_NUMERIC if name != "item_created_ts")
"""Stored item features the ranker sees: the launch time only enters as the item's age at request time, since
an absolute timestamp would let the model memorise periods instead of learning recency."""
CROSS_NUMERIC = (
    "semantic_affinity", "collaborative_score", "category_affinity", "price_gap", "abs_price_gap",
    "item_age_days", "seen_before", "session_affinity", "n_sources",
)  # fmt: skip
SOURCES = ("collaborative", "graph", "popular", "semantic", "fresh")
PROVENANCE = tuple(f"s1_{s}_{kind}" for s in SOURCES for kind in ("rank", "score"))


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
    *ITEM_CATEGORICAL,
    *CROSS_NUMERIC,
    *PROVENANCE,
)
"""The ranker's input columns, in order (the user list features only feed cross features)."""
CATEGORICAL_FEATURES = (*(user_categorical_name(c) for c in USER_CATEGORICAL), *ITEM_CATEGORICAL)


def _seconds(times: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    return np.asarray(pd.to_datetime(times, utc=True).astype("int64"), dtype=np.int64) // 10**9


class EventIndex:
    """Events grouped by entity and sorted by time, answering "how many / how much before time t" per query.

    Keys are ``entity_row · span + seconds``, so one ``searchsorted`` finds, for a batch of (entity, t) queries,
    the number of that entity's events before ``t``; cumulative sums give windowed sums of any value.
    """

    def __init__(self, entity_rows: np.ndarray, seconds: np.ndarray, values: Mapping[str, np.ndarray]):
        self.origin = int(seconds.min()) if len(seconds) else 0
        self.span = int(seconds.max() - self.origin + 10 * 365 * DAY) if len(seconds) else 1
        keys = entity_rows.astype(np.int64) * self.span + (seconds - self.origin)
        order = np.argsort(keys, kind="stable")
        self.order = order
        self.keys = keys[order]
        self.seconds = seconds[order]
        self.entity_rows = entity_rows[order]
        self.cumulative = {
            name: np.concatenate([[0.0], np.cumsum(np.asarray(v, dtype=np.float64)[order])])
            for name, v in values.items()
        }

    def position(self, rows: np.ndarray, seconds: np.ndarray) -> np.ndarray:
        """Index of the first event of ``rows`` at or after ``seconds`` (= events before, plus earlier entities)."""
        offset = np.clip(seconds - self.origin, 0, self.span - 1)
        return np.searchsorted(self.keys, rows.astype(np.int64) * self.span + offset, side="left")

    def window_sum(self, name: str, rows: np.ndarray, seconds: np.ndarray, days: float | None) -> np.ndarray:
        end = self.position(rows, seconds)
        start = (
            self.position(rows, seconds - int(days * DAY))
            if days
            else self.position(rows, np.full_like(seconds, self.origin))
        )
        return self.cumulative[name][end] - self.cumulative[name][start]


def _relative_price(items: pd.DataFrame) -> pd.Series:
    median = items.groupby(C.CATEGORY)[C.PRICE].transform("median")
    return (items[C.PRICE] / median).astype(float)


def price_tier(items: pd.DataFrame) -> pd.Series:
    """Percentile of the price within the item's category (0 cheapest … 1 dearest); NaN without a price."""
    return items.groupby(C.CATEGORY)[C.PRICE].rank(pct=True).astype(float)


@dataclass
class FeatureContext:
    """What snapshot computation needs about the catalogue, prepared once."""

    items: pd.DataFrame
    users: pd.DataFrame
    interactions: pd.DataFrame

    def __post_init__(self) -> None:
        self.item_index = pd.Index(self.items[C.ITEM_ID])
        self.user_index = pd.Index(self.users[C.USER_ID])
        inter = self.interactions
        self.event_item = self.item_index.get_indexer(inter[C.ITEM_ID])
        self.event_user = self.user_index.get_indexer(inter[C.USER_ID])
        self.event_seconds = _seconds(inter[C.TIMESTAMP])
        self.event_positive = is_positive(inter).to_numpy().astype(float)
        self.event_weight = inter[C.WEIGHT].to_numpy(dtype=float)
        self.item_category_code, self.categories = pd.factorize(self.items[C.CATEGORY])
        self.item_rel_price = _relative_price(self.items).to_numpy()
        self.item_log_price = np.log1p(self.items[C.PRICE].to_numpy(dtype=float))
        self.item_created = _seconds(self.items[C.CREATED_AT])
        self.item_price_tier = price_tier(self.items).to_numpy()
        self.item_price = self.items[C.PRICE].to_numpy(dtype=float)
        self.item_in_stock = self.items[C.IN_STOCK].to_numpy(dtype=float)
        self.item_category_name = self.items[C.CATEGORY].to_numpy().astype(str)

    @cached_property
    def item_events(self) -> EventIndex:
        known = self.event_item >= 0
        values = {"events": np.ones(int(known.sum())), "positives": self.event_positive[known],
                  "weight": self.event_weight[known]}  # fmt: skip
        return EventIndex(self.event_item[known], self.event_seconds[known], values)

    @cached_property
    def user_events(self) -> tuple[EventIndex, np.ndarray, np.ndarray]:
        """The users' event index, plus each indexed event's item row and positive flag (in input order)."""
        known = (self.event_user >= 0) & (self.event_item >= 0)
        ev_user, ev_item = self.event_user[known], self.event_item[known]
        ev_seconds, ev_positive = self.event_seconds[known], self.event_positive[known]
        ev_weight = self.event_weight[known]
        ev_strong = ev_weight >= STRONG_WEIGHT
        ev_log_price = self.item_log_price[ev_item]
        ev_rel_price = self.item_rel_price[ev_item]
        has_price = ~np.isnan(ev_rel_price)
        ev_age_days = np.clip((ev_seconds - self.item_created[ev_item]) / DAY, 0, None)
        values = {
            "events": np.ones(len(ev_user)),
            "positives": ev_positive,
            "weight": ev_weight,
            "priced": has_price.astype(float),
            "log_price": np.where(has_price, ev_log_price, 0.0),
            "log_price_sq": np.where(has_price, ev_log_price**2, 0.0),
            "rel_price": np.where(has_price, ev_rel_price, 0.0),
            "strong_priced": (has_price & ev_strong).astype(float),
            "strong_rel_price": np.where(has_price & ev_strong, ev_rel_price, 0.0),
            "positive_age": ev_positive * ev_age_days,
        }
        return EventIndex(ev_user, ev_seconds, values), ev_item, ev_positive


def item_feature_matrix(context: FeatureContext, rows: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Numeric item features (columns in ``ITEM_NUMERIC`` order) for item rows at unix times ``at``."""
    index = context.item_events
    columns: dict[str, np.ndarray] = {}
    for days in WINDOWS_DAYS:
        columns[f"item_events_{days}d"] = index.window_sum("events", rows, at, days)
    events_all = index.window_sum("events", rows, at, None)
    positives_all = index.window_sum("positives", rows, at, None)
    weight_all = index.window_sum("weight", rows, at, None)
    columns["item_events_all"] = events_all
    columns["item_positives_30d"] = index.window_sum("positives", rows, at, 30)
    columns["item_positives_all"] = positives_all
    columns["item_positive_rate"] = (positives_all + 1.0) / (events_all + 4.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        columns["item_mean_weight"] = np.where(events_all > 0, weight_all / np.maximum(events_all, 1), np.nan)
    columns["item_trend"] = (columns["item_events_7d"] / 7.0 + 0.1) / (columns["item_events_30d"] / 30.0 + 0.1)
    columns["item_price"] = context.item_price[rows]
    columns["item_log_price"] = context.item_log_price[rows]
    columns["item_price_tier"] = context.item_price_tier[rows]
    columns["item_in_stock"] = context.item_in_stock[rows]
    columns["item_created_ts"] = context.item_created[rows].astype(float)
    return np.column_stack([columns[name] for name in ITEM_NUMERIC]).astype(np.float32)


def item_snapshots(context: FeatureContext, item_ids: Sequence[str], times: pd.Series | Sequence) -> pd.DataFrame:
    """Item features for each (item, time) row, from interactions strictly before that time."""
    rows = context.item_index.get_indexer(list(item_ids))
    if (rows < 0).any():
        raise KeyError(f"unknown item ids: {list(np.asarray(item_ids)[rows < 0][:5])}")
    at = _seconds(pd.Series(times))
    out = pd.DataFrame(item_feature_matrix(context, rows, at), columns=list(ITEM_NUMERIC))
    out.insert(0, EVENT_TIMESTAMP, pd.to_datetime(at, unit="s", utc=True))
    out.insert(0, C.ITEM_ID, np.asarray(item_ids, dtype=str))
    out["item_category"] = context.item_category_name[rows]
    return out


def user_snapshots(context: FeatureContext, users: Sequence[str], times: pd.Series | Sequence) -> pd.DataFrame:
    """User features for each (user, time) row, from interactions strictly before that time."""
    user_ids = np.asarray(users, dtype=str)
    rows = context.user_index.get_indexer(list(user_ids))
    at = _seconds(pd.Series(times))
    index, ev_item, ev_positive = context.user_events
    safe_rows = np.where(rows >= 0, rows, len(context.user_index) + 1)  # unknown users see no events
    out = pd.DataFrame({C.USER_ID: user_ids, EVENT_TIMESTAMP: pd.to_datetime(at, unit="s", utc=True)})
    for days in WINDOWS_DAYS:
        out[f"user_events_{days}d"] = index.window_sum("events", safe_rows, at, days)
    events_all = index.window_sum("events", safe_rows, at, None)
    out["user_events_all"] = events_all
    positives = index.window_sum("positives", safe_rows, at, None)
    out["user_positives_all"] = positives
    end = index.position(safe_rows, at)
    first = index.position(safe_rows, np.full_like(at, index.origin))
    last_seconds = np.where(end > first, index.seconds[np.clip(end - 1, 0, None)], at - NO_HISTORY_DAYS * DAY)
    out["user_days_since_last"] = (at - last_seconds) / DAY
    weight = index.window_sum("weight", safe_rows, at, None)
    out["user_mean_weight"] = np.where(events_all > 0, weight / np.maximum(events_all, 1), np.nan)
    priced = index.window_sum("priced", safe_rows, at, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_log = index.window_sum("log_price", safe_rows, at, None) / priced
        mean_sq = index.window_sum("log_price_sq", safe_rows, at, None) / priced
        out["user_log_price_mean"] = mean_log
        out["user_log_price_std"] = np.sqrt(np.clip(mean_sq - mean_log**2, 0, None))
        rel_all = index.window_sum("rel_price", safe_rows, at, None) / priced
        strong_priced = index.window_sum("strong_priced", safe_rows, at, None)
        rel_strong = index.window_sum("strong_rel_price", safe_rows, at, None) / strong_priced
        out["user_rel_price_mean"] = np.where(strong_priced > 0, rel_strong, rel_all)
        out["user_price_sensitivity"] = rel_all - rel_strong
        out["user_novelty_days"] = index.window_sum("positive_age", safe_rows, at, None) / positives
    numeric = list(USER_NUMERIC)
    out[numeric] = out[numeric].astype(np.float32)
    lists = _history_lists(index, context, ev_item, ev_positive, first, end)
    for name in USER_LISTS:
        out[name] = lists[name]
    user_table = context.users.set_index(C.USER_ID)
    for column in USER_CATEGORICAL:
        values_by_user = user_table[column] if column in user_table.columns else pd.Series(dtype=object)
        out[user_categorical_name(column)] = (
            pd.Series(user_ids).map(values_by_user).fillna(UNKNOWN).astype(str).to_numpy()
        )
    return out


def _history_lists(
    index: EventIndex, context: FeatureContext, ev_item: np.ndarray, ev_positive: np.ndarray,
    first: np.ndarray, end: np.ndarray,
) -> dict[str, list[list]]:  # fmt: skip
    """Per query, the list-valued features over the user's events before the query time."""
    category = context.item_category_code[ev_item][index.order]
    item_ids = context.items[C.ITEM_ID].to_numpy().astype(str)[ev_item][index.order]
    positive = ev_positive[index.order] > 0
    seconds = index.seconds.astype(np.float64)
    lists: dict[str, list[list]] = {name: [] for name in USER_LISTS}
    for lo, hi in zip(first.tolist(), end.tolist(), strict=True):
        if hi <= lo:
            for name in USER_LISTS:
                lists[name].append([])
            continue
        counts = np.bincount(category[lo:hi], minlength=len(context.categories))
        best = np.argsort(-counts, kind="stable")[:TOP_CATEGORIES]
        best = best[counts[best] > 0]
        lists[USER_TOP_CATEGORIES].append([str(context.categories[b]) for b in best])
        lists[USER_TOP_SHARES].append([float(counts[b] / (hi - lo)) for b in best])
        window = np.arange(lo, hi)
        chosen = window[positive[lo:hi]] if positive[lo:hi].any() else window
        chosen = chosen[-RECENT_ITEMS:]
        lists[USER_RECENT_ITEMS].append(item_ids[chosen].tolist())
        lists[USER_RECENT_TIMES].append(seconds[chosen].tolist())
        seen = list(dict.fromkeys(item_ids[lo:hi][::-1].tolist()))[:SEEN_CAP]
        lists[USER_SEEN_ITEMS].append(seen)
    return lists


@dataclass(frozen=True)
class FeatureSpec:
    """The ranker's feature contract: column order and the vocabularies of categorical features.

    Categorical values become integer codes (LightGBM categorical features); an unseen value becomes NaN (missing).
    """

    names: tuple[str, ...]
    vocabularies: Mapping[str, tuple[str, ...]]

    @classmethod
    def fit(cls, users: pd.DataFrame, categories: Sequence[str]) -> FeatureSpec:
        """Vocabularies from the users table's attribute columns and the catalogue's categories."""
        vocab: dict[str, tuple[str, ...]] = {}
        for column in USER_CATEGORICAL:
            values = set(users[column].dropna().astype(str)) if column in users.columns else set()
            vocab[user_categorical_name(column)] = tuple(sorted(values | {UNKNOWN}))
        vocab["item_category"] = tuple(sorted(set(map(str, categories))))
        return cls(MODEL_FEATURES, vocab)

    def to_json(self) -> dict[str, object]:
        return {"names": list(self.names), "vocabularies": {k: list(v) for k, v in self.vocabularies.items()},
                "categorical": list(CATEGORICAL_FEATURES), "feature_service": "ranker_v1"}  # fmt: skip

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


@dataclass(frozen=True)
class UserRow:
    """One user's stored features, ready for assembly."""

    numeric: np.ndarray
    categorical: np.ndarray
    top_categories: Sequence[str]
    top_shares: Sequence[float]

    @classmethod
    def from_mapping(cls, features: Mapping[str, object], spec: FeatureSpec) -> UserRow:
        numeric = np.array([_float(features.get(name)) for name in USER_NUMERIC], dtype=np.float32)
        categorical = np.array(
            [spec.codes(user_categorical_name(c), [features.get(user_categorical_name(c)) or UNKNOWN])[0]
             for c in USER_CATEGORICAL], dtype=np.float32,
        )  # fmt: skip
        return cls(numeric, categorical, [str(x) for x in _as_list(features.get(USER_TOP_CATEGORIES))],
                   [float(x) for x in _as_list(features.get(USER_TOP_SHARES))])  # fmt: skip

    @classmethod
    def empty(cls, spec: FeatureSpec) -> UserRow:
        """Default features for a user the online store does not know (or cannot be reached)."""
        return cls.from_mapping({}, spec)


def _float(value: object) -> float:
    if value is None:
        return np.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return np.nan


def _as_list(value: object) -> list:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return list(value)  # type: ignore[call-overload]


@dataclass(frozen=True)
class ItemBlock:
    """Stored features of a list of candidate items, aligned with the candidates."""

    numeric: np.ndarray
    category: np.ndarray
    category_names: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, spec: FeatureSpec) -> ItemBlock:
        names = frame["item_category"].to_numpy().astype(str)
        return cls(frame[list(ITEM_NUMERIC)].to_numpy(dtype=np.float32), spec.codes("item_category", names), names)

    def take(self, rows: np.ndarray) -> ItemBlock:
        return ItemBlock(self.numeric[rows], self.category[rows], self.category_names[rows])


_ITEM_COL = {name: i for i, name in enumerate(ITEM_NUMERIC)}
_ITEM_MODEL_COLUMNS = np.array([_ITEM_COL[name] for name in ITEM_MODEL_NUMERIC])
_USER_COL = {name: i for i, name in enumerate(USER_NUMERIC)}


@dataclass(frozen=True)
class RequestInputs:
    """Request-time inputs for one user's candidates (arrays aligned with the candidates)."""

    as_of: float
    user_text_vector: np.ndarray | None
    user_collab_vector: np.ndarray | None
    candidate_text_vectors: np.ndarray
    candidate_collab_vectors: np.ndarray
    seen_counts: np.ndarray
    provenance_ranks: Mapping[str, np.ndarray]
    provenance_scores: Mapping[str, np.ndarray]
    session_vector: np.ndarray | None = None


def cross_features(user: UserRow, items: ItemBlock, inputs: RequestInputs) -> np.ndarray:
    """The cross-feature block (n × len(CROSS_NUMERIC + PROVENANCE)), in that column order."""
    n = len(items.category)
    nan = np.full(n, np.nan, dtype=np.float32)
    share_of = dict(zip(user.top_categories, user.top_shares, strict=False))
    category_affinity = (
        np.array([share_of.get(c, 0.0) for c in items.category_names], dtype=np.float32)
        if share_of
        else np.zeros(n, np.float32)
    )
    gap = items.numeric[:, _ITEM_COL["item_log_price"]] - user.numeric[_USER_COL["user_log_price_mean"]]
    columns = [
        inputs.candidate_text_vectors @ inputs.user_text_vector if inputs.user_text_vector is not None else nan,
        inputs.candidate_collab_vectors @ inputs.user_collab_vector if inputs.user_collab_vector is not None else nan,
        category_affinity,
        gap,
        np.abs(gap),
        (inputs.as_of - items.numeric[:, _ITEM_COL["item_created_ts"]].astype(np.float64)) / DAY,
        inputs.seen_counts,
        inputs.candidate_text_vectors @ inputs.session_vector if inputs.session_vector is not None else nan,
    ]
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
    columns.append(present)
    return np.column_stack([*columns, *provenance]).astype(np.float32)


def assemble(user: UserRow, items: ItemBlock, inputs: RequestInputs) -> np.ndarray:
    """The ranker's input matrix (n × len(MODEL_FEATURES)) for one user's candidates, training and serving alike."""
    n = len(items.category)
    return np.hstack(
        [
            np.broadcast_to(user.numeric, (n, len(user.numeric))),
            np.broadcast_to(user.categorical, (n, len(user.categorical))),
            items.numeric[:, _ITEM_MODEL_COLUMNS],
            items.category[:, None],
            cross_features(user, items, inputs),
        ]
    ).astype(np.float32, copy=False)
