"""What arrived since the served version's data, laid over its stored features and catalogue.

A published version's features are a snapshot; the live overlay adds, per request, the interactions logged after it
(the items become seen, positives join the recent items stage 1 queries with, activity and category shares move)
and applies item changes (price and stock) to the rules' catalogue and the stored item features. It is rebuilt
from the log, so every worker that applied the same records answers the same.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from models.data import columns as C
from models.data.clock import DAY_SECONDS
from models.features.assembly import ItemBlock, as_list
from models.features.snapshots import RECENT_ITEMS, SEEN_CAP, TOP_CATEGORIES
from models.features.spec import (
    ITEM_NUMERIC,
    USER_EVENTS,
    USER_RECENT_ITEMS,
    USER_RECENT_TIMES,
    USER_SEEN_ITEMS,
    USER_TOP_CATEGORIES,
    USER_TOP_SHARES,
)
from models.live.log import EVENT, ITEM, Record
from models.live.new_items import add_items, new_item_texts
from models.recommender.item_features import StaticItemFeatures
from models.recommender.recommender import Recommender
from models.recommender.retrieval import user_is_known

_PRICE_COLUMNS = {name: ITEM_NUMERIC.index(name) for name in ("item_price", "item_log_price", "item_in_stock")}


@dataclass
class LiveEvent:
    item_id: str
    timestamp: float
    event_type: str
    positive: bool
    category: str


def is_positive_event(event_type: str, rating: float | None) -> bool:
    """The protocol's positives: rating ≥ 4 where there is a rating, else a click, add-to-cart or purchase."""
    if rating is not None:
        return rating >= C.POSITIVE_RATING
    return event_type in C.POSITIVE_EVENTS


def merge_user_features(stored: Mapping[str, Any] | None, events: list[LiveEvent], as_of: float) -> dict[str, Any]:
    """The user's stored features with the live events laid over them (an unknown user becomes known)."""
    merged: dict[str, Any] = dict(stored or {})
    base_events: Any = merged.get(USER_EVENTS)
    base = float(base_events) if user_is_known(merged) else 0.0
    latest_first = [e.item_id for e in reversed(events)]
    seen = list(dict.fromkeys([*latest_first, *(str(i) for i in as_list(merged.get(USER_SEEN_ITEMS)))]))
    merged[USER_SEEN_ITEMS] = seen[:SEEN_CAP]
    positives = [e for e in events if e.positive]
    recent = [str(i) for i in as_list(merged.get(USER_RECENT_ITEMS))] + [e.item_id for e in positives]
    times = [float(t) for t in as_list(merged.get(USER_RECENT_TIMES))] + [e.timestamp for e in positives]
    merged[USER_RECENT_ITEMS], merged[USER_RECENT_TIMES] = recent[-RECENT_ITEMS:], times[-RECENT_ITEMS:]
    merged[USER_EVENTS] = base + len(events)
    merged["user_positives_all"] = float(merged.get("user_positives_all") or 0.0) + len(positives)
    merged["user_days_since_last"] = max(0.0, (as_of - events[-1].timestamp) / DAY_SECONDS)
    shares = Counter(
        {str(c): float(s) * base for c, s in zip(as_list(merged.get(USER_TOP_CATEGORIES)),
                                                 as_list(merged.get(USER_TOP_SHARES)), strict=False)}
    )  # fmt: skip
    shares.update(Counter(e.category for e in events))
    total = sum(shares.values())
    top = shares.most_common(TOP_CATEGORIES)
    merged[USER_TOP_CATEGORIES] = [c for c, _ in top]
    merged[USER_TOP_SHARES] = [v / total for _, v in top]
    return merged


@dataclass
class LiveOverlay:
    """Live records applied on top of one loaded version (records up to ``applied_seq``)."""

    recommender: Recommender
    applied_seq: int = 0
    encode: Callable[[list[str]], np.ndarray] | None = None
    """The served version's text encoder (new items are embedded with it); None: new items are refused."""
    users: dict[str, list[LiveEvent]] = field(default_factory=dict)
    item_changes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def apply(self, records: Iterable[Record]) -> None:
        """Apply records in sequence order; records already applied are skipped."""
        records = [r for r in records if r.seq > self.applied_seq]
        if not records:
            return
        events = [r for r in records if r.kind == EVENT]
        items = [r.body for r in records if r.kind == ITEM]
        with self._lock:
            if items:
                self.recommender = self._with_items(self.recommender, items)
                self.item_changes += len(items)
            categories = self.recommender.catalog.categories
            row_of = self.recommender.row_of
            for record in events:
                body = record.body
                row = row_of.row(str(body[C.ITEM_ID]))
                event = LiveEvent(
                    item_id=str(body[C.ITEM_ID]), timestamp=float(body[C.TIMESTAMP]),
                    event_type=str(body[C.EVENT_TYPE]),
                    positive=is_positive_event(str(body[C.EVENT_TYPE]), body.get(C.RATING)),
                    category=str(categories[row]) if row >= 0 else "",
                )  # fmt: skip
                self.users.setdefault(str(body[C.USER_ID]), []).append(event)
            self.applied_seq = records[-1].seq

    def user_features(
        self, user_id: str, stored: dict[str, Any] | None, as_of: float
    ) -> dict[str, Any] | None:  # fmt: skip
        with self._lock:
            events = list(self.users.get(user_id, ()))
        if not events:
            return stored
        return merge_user_features(stored, events, as_of)

    def _with_items(self, recommender: Recommender, items: list[dict[str, Any]]) -> Recommender:
        """New items first (one encoding batch), then every price and stock change in log order."""
        new: dict[str, dict[str, Any]] = {}
        for item in items:
            if recommender.row_of.row(str(item[C.ITEM_ID])) < 0:
                new.setdefault(str(item[C.ITEM_ID]), item)
        if new:
            if self.encode is None:
                raise RuntimeError("new items need the text encoder, which this process has not loaded")
            vectors = self.encode(new_item_texts(list(new.values())))
            recommender = add_items(recommender, list(new.values()), vectors)
        return apply_item_changes(recommender, items)

    def knows_item(self, item_id: str) -> bool:
        return bool(self.recommender.row_of.row(item_id) >= 0)


def apply_item_changes(recommender: Recommender, changes: list[dict[str, Any]]) -> Recommender:
    """A recommender whose catalogue and stored item features carry the price and stock changes (copies: requests
    in flight keep the arrays they started with)."""
    catalog = recommender.catalog
    prices, stockout, restock = catalog.prices.copy(), catalog.stockout.copy(), catalog.restock.copy()
    features = recommender.item_features
    table = features.all.numeric.copy() if isinstance(features, StaticItemFeatures) else None
    rows = recommender.row_of.rows([str(c[C.ITEM_ID]) for c in changes])
    for row, change in zip(rows, changes, strict=True):
        if row < 0:
            raise KeyError(f"item_id '{change[C.ITEM_ID]}' is not in the catalogue")
        if change.get(C.PRICE) is not None:
            prices[row] = float(change[C.PRICE])
            if table is not None:
                table[row, _PRICE_COLUMNS["item_price"]] = prices[row]
                table[row, _PRICE_COLUMNS["item_log_price"]] = np.log1p(prices[row])
        if change.get(C.IN_STOCK) is not None:
            at = float(change[C.TIMESTAMP])
            if not change[C.IN_STOCK]:
                stockout[row], restock[row] = at, np.nan
            elif not np.isnan(stockout[row]) and stockout[row] <= at and not restock[row] <= at:
                restock[row] = at
            if table is not None:
                table[row, _PRICE_COLUMNS["item_in_stock"]] = float(bool(change[C.IN_STOCK]))
    new_catalog = replace(catalog, prices=prices, stockout=stockout, restock=restock)
    if table is not None:
        assert isinstance(features, StaticItemFeatures)
        patched = StaticItemFeatures.from_block(ItemBlock(table, features.all.category_names))
        return replace(recommender, catalog=new_catalog, item_features=patched)
    return replace(recommender, catalog=new_catalog)


def events_frame(records: Iterable[Record]) -> pd.DataFrame:
    """Logged interactions as a contract-shaped table (for ingestion by the next pipeline run)."""
    rows = [r.body for r in records if r.kind == EVENT]
    return pd.DataFrame(rows, columns=[C.USER_ID, C.ITEM_ID, C.TIMESTAMP, C.EVENT_TYPE, C.RATING])
