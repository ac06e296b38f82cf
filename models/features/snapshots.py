"""Point-in-time feature snapshots: user and item features as of given times, from interactions strictly before.

Snapshots are point-in-time correct by construction: a row stamped ``t`` only uses interactions strictly before
``t``. They are written to the offline store (Feast joins each training row to the latest snapshot at or before
its time) and the newest ones are materialised to the online store for serving.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from models.data import columns as C
from models.data.clock import DAY_SECONDS, data_now, unix_seconds_or_nan, whole_seconds
from models.data.contract import Dataset, in_stock_at
from models.data.splits import is_positive
from models.features.spec import (
    EVENT_TIMESTAMP,
    ITEM_CATEGORY,
    ITEM_NUMERIC,
    UNKNOWN,
    USER_CATEGORICAL,
    USER_EVENTS,
    USER_LISTS,
    USER_NUMERIC,
    USER_RECENT_ITEMS,
    USER_RECENT_TIMES,
    USER_SEEN_ITEMS,
    USER_TOP_CATEGORIES,
    USER_TOP_SHARES,
    user_categorical_name,
)

WINDOWS_DAYS = (1, 7, 30)


TOP_CATEGORIES = 5


STRONG_WEIGHT = 3.0
"""Events at least this heavy (add-to-cart, purchase; a rating ≥ 3) count as strong intent."""


NO_HISTORY_DAYS = 3650.0


RECENT_ITEMS = 50


SEEN_CAP = 1000


class EventIndex:
    """Events grouped by entity and sorted by time, answering "how many / how much before time t" per query.

    Keys are ``entity_row · span + seconds``, so one ``searchsorted`` finds, for a batch of (entity, t) queries,
    the number of that entity's events before ``t``; cumulative sums give windowed sums of any value.
    """

    def __init__(self, entity_rows: np.ndarray, seconds: np.ndarray, values: Mapping[str, np.ndarray]):
        self.origin = int(seconds.min()) if len(seconds) else 0
        self.span = int(seconds.max() - self.origin + 10 * 365 * DAY_SECONDS) if len(seconds) else 1
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
            self.position(rows, seconds - int(days * DAY_SECONDS))
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
        self.event_seconds = whole_seconds(inter[C.TIMESTAMP])
        self.event_positive = is_positive(inter).to_numpy().astype(float)
        self.event_weight = inter[C.WEIGHT].to_numpy(dtype=float)
        self.item_category_code, self.categories = pd.factorize(self.items[C.CATEGORY])
        self.item_rel_price = _relative_price(self.items).to_numpy()
        self.item_log_price = np.log1p(self.items[C.PRICE].to_numpy(dtype=float))
        self.item_created = whole_seconds(self.items[C.CREATED_AT])
        self.item_price_tier = price_tier(self.items).to_numpy()
        self.item_price = self.items[C.PRICE].to_numpy(dtype=float)
        self.item_stockout = unix_seconds_or_nan(self.items[C.STOCKOUT_AT])
        self.item_restock = unix_seconds_or_nan(self.items[C.RESTOCK_AT])
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
        ev_age_days = np.clip((ev_seconds - self.item_created[ev_item]) / DAY_SECONDS, 0, None)
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
    columns["item_in_stock"] = in_stock_at(context.item_stockout[rows], context.item_restock[rows], at).astype(float)
    columns["item_created_ts"] = context.item_created[rows].astype(float)
    return np.column_stack([columns[name] for name in ITEM_NUMERIC]).astype(np.float32)


def item_snapshots(context: FeatureContext, item_ids: Sequence[str], times: pd.Series | Sequence) -> pd.DataFrame:
    """Item features for each (item, time) row, from interactions strictly before that time."""
    rows = context.item_index.get_indexer(list(item_ids))
    if (rows < 0).any():
        raise KeyError(f"unknown item ids: {list(np.asarray(item_ids)[rows < 0][:5])}")
    at = whole_seconds(pd.Series(times))
    out = pd.DataFrame(item_feature_matrix(context, rows, at), columns=list(ITEM_NUMERIC))
    out.insert(0, EVENT_TIMESTAMP, pd.to_datetime(at, unit="s", utc=True))
    out.insert(0, C.ITEM_ID, np.asarray(item_ids, dtype=str))
    out[ITEM_CATEGORY] = context.item_category_name[rows]
    return out


def user_snapshots(context: FeatureContext, users: Sequence[str], times: pd.Series | Sequence) -> pd.DataFrame:
    """User features for each (user, time) row, from interactions strictly before that time."""
    user_ids = np.asarray(users, dtype=str)
    rows = context.user_index.get_indexer(list(user_ids))
    at = whole_seconds(pd.Series(times))
    index, ev_item, ev_positive = context.user_events
    safe_rows = np.where(rows >= 0, rows, len(context.user_index) + 1)  # unknown users see no events
    out = pd.DataFrame({C.USER_ID: user_ids, EVENT_TIMESTAMP: pd.to_datetime(at, unit="s", utc=True)})
    for days in WINDOWS_DAYS:
        out[f"user_events_{days}d"] = index.window_sum("events", safe_rows, at, days)
    events_all = index.window_sum("events", safe_rows, at, None)
    out[USER_EVENTS] = events_all
    positives = index.window_sum("positives", safe_rows, at, None)
    out["user_positives_all"] = positives
    end = index.position(safe_rows, at)
    first = index.position(safe_rows, np.full_like(at, index.origin))
    last_seconds = np.where(end > first, index.seconds[np.clip(end - 1, 0, None)], at - NO_HISTORY_DAYS * DAY_SECONDS)
    out["user_days_since_last"] = (at - last_seconds) / DAY_SECONDS
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


def serving_snapshots(dataset: Dataset, entity: str) -> tuple[pd.DataFrame, pd.Timestamp]:
    """Features of every user (``entity="user"``) or item as of the data's 'now' (the day after the last event)."""
    at = pd.Timestamp(data_now(dataset.interactions), unit="s", tz="UTC")
    context = FeatureContext(dataset.items, dataset.users, dataset.interactions)
    if entity == "user":
        return user_snapshots(context, dataset.users[C.USER_ID].to_numpy(), [at] * len(dataset.users)), at
    if entity == "item":
        return item_snapshots(context, dataset.items[C.ITEM_ID].to_numpy(), [at] * len(dataset.items)), at
    raise ValueError(f"entity must be 'user' or 'item', got {entity!r}")
