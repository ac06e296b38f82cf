"""Point-in-time feature snapshots: user and item features as of given times.

A row stamped ``t`` is computed from two logs:
- the *user log*: the user's own history (for training and evaluation, the history part of the split, which holds
  none of the user's held-out rows) — every event at or before ``t`` counts, so the first items of a basket split
  across the cut are known, as the protocol's train part knows them;
- the *item log*: everybody's events strictly before ``t`` — item popularity, trends, first and last interaction.
Snapshots go to the offline store (Feast joins each training row to the latest snapshot at or before its time) and
the newest ones are materialised to the online store for serving.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp

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
    USER_TOP_TAG_SHARES,
    USER_TOP_TAGS,
    user_categorical_name,
)
from models.sparse import row_entries

WINDOWS_DAYS = (1, 7, 30, 365)
SHARE_WINDOWS_DAYS = (7, 30, 365)
TOP_CATEGORIES = 5
TOP_TAGS = 20
STRONG_WEIGHT = 3.0
"""Events at least this heavy (add-to-cart, purchase; a rating ≥ 3) count as strong intent."""
NO_HISTORY_DAYS = 3650.0
RECENT_ITEMS = 50
SEEN_CAP = 1000


EVENTS = "events"
"""``EventIndex.window_sum``'s name for the number of events."""


class EventIndex:
    """Events grouped by entity and sorted by time, answering "how many / how much before time t" per query.

    Keys are ``entity_row · span + seconds``, so one ``searchsorted`` finds, for a batch of (entity, t) queries,
    the number of that entity's events before ``t``; cumulative sums give windowed sums of any value, and the
    number of events (``EVENTS``) is a difference of positions — no array of its own (15 M events: 120 MB each).
    """

    def __init__(
        self, entity_rows: np.ndarray, seconds: np.ndarray, values: Mapping[str, Callable[[], np.ndarray]]
    ) -> None:
        """``values``: per name, how to compute each event's value (in input order). Each is computed as its
        cumulative sum is, so one of them is in memory at a time: at 15 M events, all ten held 1.2 GB at once."""
        self.origin = int(seconds.min()) if len(seconds) else 0
        self.span = int(seconds.max() - self.origin + 10 * 365 * DAY_SECONDS) if len(seconds) else 1
        keys = entity_rows.astype(np.int64) * self.span + (seconds - self.origin)
        order = np.argsort(keys, kind="stable")
        self.order = order
        self.keys = keys[order]
        self.seconds = seconds[order]
        self.cumulative = {name: self._cumulative(compute()) for name, compute in values.items()}

    def _cumulative(self, values: np.ndarray) -> np.ndarray:
        """[0, v₀, v₀ + v₁, …] over the events in key order."""
        out = np.zeros(len(self.order) + 1)
        np.cumsum(np.asarray(values, dtype=np.float64)[self.order], out=out[1:])
        return out

    def position(self, rows: np.ndarray, seconds: np.ndarray) -> np.ndarray:
        """Index of the first event of ``rows`` at or after ``seconds`` (= events before, plus earlier entities)."""
        offset = np.clip(seconds - self.origin, 0, self.span - 1)
        return np.searchsorted(self.keys, rows.astype(np.int64) * self.span + offset, side="left")

    def first(self, rows: np.ndarray) -> np.ndarray:
        """Index of each entity's first event."""
        return self.position(rows, np.full(len(rows), self.origin, dtype=np.int64))

    def window_sum(self, name: str, rows: np.ndarray, seconds: np.ndarray, days: float | None) -> np.ndarray:
        end = self.position(rows, seconds)
        start = self.position(rows, seconds - int(days * DAY_SECONDS)) if days else self.first(rows)
        if name == EVENTS:
            return (end - start).astype(np.float64)
        return self.cumulative[name][end] - self.cumulative[name][start]


def _relative_price(items: pd.DataFrame) -> pd.Series:
    median = items.groupby(C.CATEGORY)[C.PRICE].transform("median")
    return (items[C.PRICE] / median).astype(float)


def price_tier(items: pd.DataFrame) -> pd.Series:
    """Percentile of the price within the item's category (0 cheapest … 1 dearest); NaN without a price."""
    return items.groupby(C.CATEGORY)[C.PRICE].rank(pct=True).astype(float)


@dataclass
class ItemTags:
    """Each item's labels — its category and its ``tags`` — as a sparse items × tags matrix."""

    names: pd.Index
    matrix: sp.csr_matrix

    @classmethod
    def from_items(cls, items: pd.DataFrame) -> ItemTags:
        categories = items[C.CATEGORY].astype(str).tolist()
        extra = items[C.TAGS].fillna("").astype(str).tolist() if C.TAGS in items.columns else [""] * len(items)
        per_item = [
            sorted({category, *(t for t in tags.split(C.TAG_SEPARATOR) if t)})
            for category, tags in zip(categories, extra, strict=True)
        ]
        names = pd.Index(sorted({tag for tags in per_item for tag in tags}))
        rows = np.repeat(np.arange(len(per_item)), [len(tags) for tags in per_item])
        cols = names.get_indexer([tag for tags in per_item for tag in tags])
        matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(per_item), len(names)))
        return cls(names, matrix)

    def profile(self, tags: Sequence[str], shares: Sequence[float]) -> np.ndarray:
        """A dense tag vector from a user's top tags and their shares (unknown tags dropped)."""
        vector = np.zeros(len(self.names), dtype=np.float32)
        for tag, share in zip(tags, shares, strict=False):
            if (position := self._position.get(tag)) is not None:
                vector[position] = share
        return vector

    def affinity(self, rows: np.ndarray, profile: np.ndarray) -> np.ndarray:
        """Mean of the profile over each item's tags."""
        entries, lengths = row_entries(self.matrix.indptr, rows)
        part = sp.csr_matrix((self.matrix.data[entries], self.matrix.indices[entries],
                              np.concatenate(([0], np.cumsum(lengths)))), shape=(len(rows), len(self.names)))  # fmt: skip
        return (np.asarray(part @ profile).ravel() / np.maximum(lengths, 1)).astype(np.float32)

    def counts(self, rows: np.ndarray) -> np.ndarray:
        """How many of ``rows`` carry each tag (tag-length)."""
        entries, _ = row_entries(self.matrix.indptr, rows)
        counts = np.bincount(self.matrix.indices[entries], weights=self.matrix.data[entries], minlength=len(self.names))
        return counts.astype(np.float32)

    @cached_property
    def _position(self) -> dict[str, int]:
        return {str(name): i for i, name in enumerate(self.names)}


@dataclass
class FeatureContext:
    """What snapshot computation needs, prepared once: the catalogue, the users, and the two logs."""

    items: pd.DataFrame
    users: pd.DataFrame
    user_log: pd.DataFrame
    """The users' own histories (at or before a snapshot time, everything counts)."""
    item_log: pd.DataFrame | None = None
    """Everybody's events for item features (strictly before a snapshot time); default: the user log."""
    tags: ItemTags = field(init=False)

    def __post_init__(self) -> None:
        if self.item_log is None:
            self.item_log = self.user_log
        self.item_index = pd.Index(self.items[C.ITEM_ID])
        self.user_index = pd.Index(self.users[C.USER_ID])
        self.item_category_code, self.categories = pd.factorize(self.items[C.CATEGORY])
        self.item_rel_price = _relative_price(self.items).to_numpy()
        self.item_log_price = np.log1p(self.items[C.PRICE].to_numpy(dtype=float))
        self.item_created = whole_seconds(self.items[C.CREATED_AT])
        self.item_price_tier = price_tier(self.items).to_numpy()
        self.item_price = self.items[C.PRICE].to_numpy(dtype=float)
        self.item_stockout = unix_seconds_or_nan(self.items[C.STOCKOUT_AT])
        self.item_restock = unix_seconds_or_nan(self.items[C.RESTOCK_AT])
        self.item_category_name = self.items[C.CATEGORY].to_numpy().astype(str)
        self.tags = ItemTags.from_items(self.items)

    @cached_property
    def item_events(self) -> EventIndex:
        log = self.item_log
        assert log is not None
        rows = self.item_index.get_indexer(log[C.ITEM_ID])
        known = rows >= 0
        values = {"positives": lambda: is_positive(log).to_numpy()[known].astype(float),
                  "weight": lambda: log[C.WEIGHT].to_numpy(dtype=float)[known]}  # fmt: skip
        return EventIndex(rows[known], whole_seconds(log[C.TIMESTAMP])[known], values)

    @cached_property
    def all_event_seconds(self) -> np.ndarray:
        """Every item-log event's time, sorted: how busy the system was in any window."""
        assert self.item_log is not None
        return np.sort(whole_seconds(self.item_log[C.TIMESTAMP]))

    def events_between(self, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Item-log events in [start, end) per query."""
        seconds = self.all_event_seconds
        return (np.searchsorted(seconds, end, side="left") - np.searchsorted(seconds, start, side="left")).astype(float)

    @cached_property
    def user_events(self) -> tuple[EventIndex, np.ndarray, np.ndarray]:
        """The users' event index, plus each indexed event's item row and positive flag (in input order)."""
        log = self.user_log
        ev_user = self.user_index.get_indexer(log[C.USER_ID])
        ev_item = self.item_index.get_indexer(log[C.ITEM_ID])
        known = (ev_user >= 0) & (ev_item >= 0)
        ev_user, ev_item = ev_user[known], ev_item[known]
        ev_seconds = whole_seconds(log[C.TIMESTAMP])[known]
        ev_positive = is_positive(log).to_numpy()[known].astype(float)
        ev_weight = log[C.WEIGHT].to_numpy(dtype=float)[known]
        ev_strong = ev_weight >= STRONG_WEIGHT
        ev_log_price = self.item_log_price[ev_item]
        ev_rel_price = self.item_rel_price[ev_item]
        has_price = ~np.isnan(ev_rel_price)
        ev_age_days = np.clip((ev_seconds - self.item_created[ev_item]) / DAY_SECONDS, 0, None)
        # how popular each item was when the user met it (item-log events before that moment)
        item_popularity = self.item_events.window_sum(EVENTS, ev_item, ev_seconds, None)
        values: dict[str, Callable[[], np.ndarray]] = {
            "positives": lambda: ev_positive,
            "weight": lambda: ev_weight,
            "log_item_popularity": lambda: np.log1p(item_popularity),
            "priced": lambda: has_price.astype(float),
            "log_price": lambda: np.where(has_price, ev_log_price, 0.0),
            "log_price_sq": lambda: np.where(has_price, ev_log_price**2, 0.0),
            "rel_price": lambda: np.where(has_price, ev_rel_price, 0.0),
            "strong_priced": lambda: (has_price & ev_strong).astype(float),
            "strong_rel_price": lambda: np.where(has_price & ev_strong, ev_rel_price, 0.0),
            "positive_age": lambda: ev_positive * ev_age_days,
        }
        return EventIndex(ev_user, ev_seconds, values), ev_item, ev_positive


def item_feature_matrix(context: FeatureContext, rows: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Numeric item features (columns in ``ITEM_NUMERIC`` order) for item rows at unix times ``at`` (whole seconds),
    from item-log events strictly before ``at``."""
    index = context.item_events
    columns: dict[str, np.ndarray] = {}
    for days in WINDOWS_DAYS:
        columns[f"item_events_{days}d"] = index.window_sum(EVENTS, rows, at, days)
    for days in SHARE_WINDOWS_DAYS:
        everyone = context.events_between(at - int(days * DAY_SECONDS), at)
        columns[f"item_share_{days}d"] = 1000.0 * columns[f"item_events_{days}d"] / np.maximum(everyone, 1.0)
    events_all = index.window_sum(EVENTS, rows, at, None)
    positives_all = index.window_sum("positives", rows, at, None)
    weight_all = index.window_sum("weight", rows, at, None)
    columns["item_events_all"] = events_all
    columns["item_positives_30d"] = index.window_sum("positives", rows, at, 30)
    columns["item_positives_all"] = positives_all
    columns["item_positive_rate"] = (positives_all + 1.0) / (events_all + 4.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        columns["item_mean_weight"] = np.where(events_all > 0, weight_all / np.maximum(events_all, 1), np.nan)
    columns["item_trend"] = (columns["item_events_7d"] / 7.0 + 0.1) / (columns["item_events_30d"] / 30.0 + 0.1)
    columns["item_trend_long"] = (columns["item_events_30d"] + 1.0) / (columns["item_events_365d"] / 12.0 + 1.0)
    end, first = index.position(rows, at), index.first(rows)
    seen = end > first
    last_seconds = index.seconds[np.clip(end - 1, 0, None)] if len(index.seconds) else np.zeros(len(rows))
    first_seconds = index.seconds[np.clip(first, 0, len(index.seconds) - 1)] if len(index.seconds) else last_seconds
    columns["item_days_since_last"] = np.where(seen, (at - last_seconds) / DAY_SECONDS, np.nan)
    columns["item_days_since_first"] = np.where(seen, (at - first_seconds) / DAY_SECONDS, np.nan)
    columns["item_price"] = context.item_price[rows]
    columns["item_log_price"] = context.item_log_price[rows]
    columns["item_price_tier"] = context.item_price_tier[rows]
    columns["item_in_stock"] = in_stock_at(context.item_stockout[rows], context.item_restock[rows], at).astype(float)
    columns["item_created_ts"] = context.item_created[rows].astype(float)
    return np.column_stack([columns[name] for name in ITEM_NUMERIC]).astype(np.float32)


def item_snapshots(context: FeatureContext, item_ids: Sequence[str], times: pd.Series | Sequence) -> pd.DataFrame:
    """Item features for each (item, time) row, from item-log events strictly before that time."""
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
    """User features for each (user, time) row, from the user's own events at or before that time."""
    user_ids = np.asarray(users, dtype=str)
    rows = context.user_index.get_indexer(list(user_ids))
    at = whole_seconds(pd.Series(times))
    through = at + 1  # at or before ``at``: the user log holds only the user's history
    index, ev_item, ev_positive = context.user_events
    safe_rows = np.where(rows >= 0, rows, len(context.user_index) + 1)  # unknown users see no events
    out = pd.DataFrame({C.USER_ID: user_ids, EVENT_TIMESTAMP: pd.to_datetime(at, unit="s", utc=True)})
    for days in (1, 7, 30):
        out[f"user_events_{days}d"] = index.window_sum(EVENTS, safe_rows, through, days)
    events_all = index.window_sum(EVENTS, safe_rows, through, None)
    out[USER_EVENTS] = events_all
    positives = index.window_sum("positives", safe_rows, through, None)
    out["user_positives_all"] = positives
    end, first = index.position(safe_rows, through), index.first(safe_rows)
    has = end > first
    last_seconds = np.where(has, index.seconds[np.clip(end - 1, 0, None)], at - NO_HISTORY_DAYS * DAY_SECONDS)
    first_seconds = np.where(has, index.seconds[np.clip(first, 0, len(index.seconds) - 1)], last_seconds)
    out["user_days_since_last"] = (at - last_seconds) / DAY_SECONDS
    out["user_span_days"] = np.where(has, (last_seconds - first_seconds) / DAY_SECONDS, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["user_mean_weight"] = index.window_sum("weight", safe_rows, through, None) / events_all
        out["user_mean_item_popularity"] = (
            index.window_sum("log_item_popularity", safe_rows, through, None) / events_all
        )
        priced = index.window_sum("priced", safe_rows, through, None)
        mean_log = index.window_sum("log_price", safe_rows, through, None) / priced
        mean_sq = index.window_sum("log_price_sq", safe_rows, through, None) / priced
        out["user_log_price_mean"] = mean_log
        out["user_log_price_std"] = np.sqrt(np.clip(mean_sq - mean_log**2, 0, None))
        rel_all = index.window_sum("rel_price", safe_rows, through, None) / priced
        strong_priced = index.window_sum("strong_priced", safe_rows, through, None)
        rel_strong = index.window_sum("strong_rel_price", safe_rows, through, None) / strong_priced
        out["user_rel_price_mean"] = np.where(strong_priced > 0, rel_strong, rel_all)
        out["user_price_sensitivity"] = rel_all - rel_strong
        out["user_novelty_days"] = index.window_sum("positive_age", safe_rows, through, None) / positives
    out["global_events_30d"] = context.events_between(at - int(30 * DAY_SECONDS), at)
    lists = _history_lists(index, context, ev_item, ev_positive, first, end)
    out["user_distinct_items"] = [float(n) for n in lists.pop("distinct")]
    numeric = list(USER_NUMERIC)
    out[numeric] = out[numeric].astype(np.float32)
    for name in USER_LISTS:
        out[name] = lists[name]
    user_table = context.users.set_index(C.USER_ID)
    for column in USER_CATEGORICAL:
        values_by_user = user_table[column] if column in user_table.columns else pd.Series(dtype=object)
        out[user_categorical_name(column)] = (
            pd.Series(user_ids).map(values_by_user).fillna(UNKNOWN).astype(str).to_numpy()
        )
    return out


def _top_shares(counts: np.ndarray, names: Sequence[str] | pd.Index, top: int, total: float) -> tuple[list, list]:
    best = np.argsort(-counts, kind="stable")[:top]
    best = best[counts[best] > 0]
    return [str(names[b]) for b in best], [float(counts[b] / total) for b in best]


def _history_lists(
    index: EventIndex, context: FeatureContext, ev_item: np.ndarray, ev_positive: np.ndarray,
    first: np.ndarray, end: np.ndarray,
) -> dict[str, list]:  # fmt: skip
    """Per query, the list-valued features over the user's events up to the query time."""
    items_in_order = ev_item[index.order]
    category = context.item_category_code[items_in_order]
    item_ids = context.items[C.ITEM_ID].to_numpy().astype(str)[items_in_order]
    tag_matrix = context.tags.matrix
    positive = ev_positive[index.order] > 0
    seconds = index.seconds.astype(np.float64)
    lists: dict[str, list] = {name: [] for name in (*USER_LISTS, "distinct")}
    for lo, hi in zip(first.tolist(), end.tolist(), strict=True):
        if hi <= lo:
            for name in lists:
                lists[name].append([] if name != "distinct" else 0)
            continue
        counts = np.bincount(category[lo:hi], minlength=len(context.categories))
        top, shares = _top_shares(counts, context.categories, TOP_CATEGORIES, hi - lo)
        lists[USER_TOP_CATEGORIES].append(top)
        lists[USER_TOP_SHARES].append(shares)
        tag_counts = np.asarray(tag_matrix[items_in_order[lo:hi]].sum(axis=0)).ravel()
        top, shares = _top_shares(tag_counts, context.tags.names, TOP_TAGS, tag_counts.sum())
        lists[USER_TOP_TAGS].append(top)
        lists[USER_TOP_TAG_SHARES].append(shares)
        window = np.arange(lo, hi)
        chosen = window[positive[lo:hi]] if positive[lo:hi].any() else window
        chosen = chosen[-RECENT_ITEMS:]
        lists[USER_RECENT_ITEMS].append(item_ids[chosen].tolist())
        lists[USER_RECENT_TIMES].append(seconds[chosen].tolist())
        distinct = list(dict.fromkeys(item_ids[lo:hi][::-1].tolist()))
        lists[USER_SEEN_ITEMS].append(distinct[:SEEN_CAP])
        lists["distinct"].append(len(distinct))
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
