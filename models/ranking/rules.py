"""Business rules applied after scoring: hard filters (stock, seen, request filters), a freshness boost and a
per-category cap, then a fill step so the list is never shorter than ``k`` while eligible items exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from models.data import columns as C
from models.data.clock import DAY_SECONDS, unix_seconds, unix_seconds_or_nan
from models.data.contract import in_stock_at
from models.settings import Settings


@dataclass(frozen=True)
class RulesConfig:
    in_stock_only: bool
    freshness_weight: float
    """Boost, in standard deviations of the list's scores, for a brand-new item (halves every half-life)."""
    freshness_half_life_days: float
    max_per_category: float
    """Cap on items of one category: a share of k (≤ 1) or an absolute count (> 1); 0 switches it off."""

    def to_json(self) -> dict[str, float | bool]:
        return {"in_stock_only": self.in_stock_only, "freshness_weight": self.freshness_weight,
                "freshness_half_life_days": self.freshness_half_life_days,
                "max_per_category": self.max_per_category}  # fmt: skip

    @classmethod
    def from_settings(cls, settings: Settings) -> RulesConfig:
        return cls(settings.rules_in_stock_only, settings.rules_freshness_weight,
                   settings.rules_freshness_half_life_days, settings.rules_max_per_category)  # fmt: skip

    def category_cap(self, k: int) -> int:
        if self.max_per_category <= 0:
            return k
        if self.max_per_category <= 1:
            return max(1, int(np.ceil(self.max_per_category * k)))
        return int(self.max_per_category)


NEUTRAL_RULES = RulesConfig(in_stock_only=False, freshness_weight=0.0, freshness_half_life_days=1.0, max_per_category=0)
"""No boost, no cap, no stock filter: pure ranking quality, as the offline protocol measures it."""


@dataclass(frozen=True)
class Filters:
    categories: tuple[str, ...] | None = None
    max_price: float | None = None
    in_stock_only: bool | None = None
    """None: the service's configured rule."""


@dataclass
class Catalog:
    """Per-item attributes the rules look at, aligned with the item rows used everywhere else."""

    item_ids: np.ndarray
    categories: np.ndarray
    prices: np.ndarray
    stockout: np.ndarray
    restock: np.ndarray
    """Stock-out and restock times per item (unix seconds, NaN: none): stock is known as of any time."""
    created: np.ndarray

    @classmethod
    def from_items(cls, items: pd.DataFrame) -> Catalog:
        """From an items table in the data contract's columns (a dataset's, or a published version's catalogue)."""
        return cls(
            item_ids=items[C.ITEM_ID].to_numpy().astype(str),
            categories=items[C.CATEGORY].to_numpy().astype(str),
            prices=items[C.PRICE].to_numpy(dtype=float),
            stockout=unix_seconds_or_nan(items[C.STOCKOUT_AT]),
            restock=unix_seconds_or_nan(items[C.RESTOCK_AT]),
            created=unix_seconds(items[C.CREATED_AT]),
        )

    def in_stock(self, rows: np.ndarray, as_of: float) -> np.ndarray:
        return in_stock_at(self.stockout[rows], self.restock[rows], as_of)

    def eligible(
        self, rows: np.ndarray, filters: Filters, rules: RulesConfig, exclude: frozenset[str], as_of: float
    ) -> np.ndarray:
        """Mask over ``rows`` of items that pass every hard filter at time ``as_of``."""
        mask = np.ones(len(rows), dtype=bool)
        stock_only = rules.in_stock_only if filters.in_stock_only is None else filters.in_stock_only
        if stock_only:
            mask &= self.in_stock(rows, as_of)
        if filters.categories:
            mask &= np.isin(self.categories[rows], list(filters.categories))
        if filters.max_price is not None:
            prices = self.prices[rows]
            mask &= ~(prices > filters.max_price)  # an unknown price passes
        if exclude:
            mask &= ~np.isin(self.item_ids[rows], list(exclude))
        return mask


@dataclass
class RuledList:
    rows: np.ndarray
    scores: np.ndarray
    applied: dict[str, object] = field(default_factory=dict)


def apply_rules(
    catalog: Catalog,
    rows: np.ndarray,
    scores: np.ndarray,
    k: int,
    as_of: float,
    rules: RulesConfig,
    filters: Filters,
    exclude: frozenset[str],
    fill_order: Sequence[int] | np.ndarray = (),
) -> RuledList:
    """Filter, boost, cap and fill; returns the final rows (best first), their scores and what each rule did."""
    applied: dict[str, object] = {}
    keep = catalog.eligible(rows, filters, rules, exclude, as_of)
    applied["filtered_out"] = int((~keep).sum())
    rows, scores = rows[keep], scores[keep].astype(np.float64)
    if rules.freshness_weight > 0 and len(rows):
        spread = float(np.std(scores)) or 1.0
        age_days = np.clip((as_of - catalog.created[rows]) / DAY_SECONDS, 0.0, None)
        boost = rules.freshness_weight * spread * np.power(0.5, age_days / rules.freshness_half_life_days)
        scores = scores + boost
        applied["freshness_boosted"] = int((boost > 0.01 * spread * rules.freshness_weight).sum())
    order = np.argsort(-scores, kind="stable")
    rows, scores = rows[order], scores[order]
    chosen, skipped = _cap_categories(catalog.categories[rows], k, rules.category_cap(k))
    applied["category_capped"] = len(skipped)
    final_rows = list(rows[chosen])
    final_scores = list(scores[chosen])
    if len(final_rows) < k and skipped:  # the cap is soft: relax it before the list comes up short
        extra = skipped[: k - len(final_rows)]
        final_rows += list(rows[extra])
        final_scores += list(scores[extra])
    if len(final_rows) < k and len(fill_order):
        filled = _fill(catalog, np.asarray(fill_order), k - len(final_rows), filters, rules,
                       exclude | frozenset(catalog.item_ids[final_rows].tolist()), as_of)  # fmt: skip
        applied["filled"] = len(filled)
        low = (min(final_scores) if final_scores else 0.0) - 1.0
        final_rows += filled
        final_scores += [low - i * 1e-3 for i in range(len(filled))]
    return RuledList(np.asarray(final_rows, dtype=np.int64), np.asarray(final_scores), applied)


def _cap_categories(categories: np.ndarray, k: int, cap: int) -> tuple[list[int], list[int]]:
    counts: dict[str, int] = {}
    chosen: list[int] = []
    skipped: list[int] = []
    for position, category in enumerate(categories.tolist()):
        if len(chosen) == k:
            break
        if counts.get(category, 0) < cap:
            counts[category] = counts.get(category, 0) + 1
            chosen.append(position)
        else:
            skipped.append(position)
    return chosen, skipped


def _fill(catalog: Catalog, order: np.ndarray, needed: int, filters: Filters, rules: RulesConfig,
          exclude: frozenset[str], as_of: float) -> list[int]:  # fmt: skip
    """The first ``needed`` eligible items of a fallback order (e.g. popularity)."""
    filled: list[int] = []
    for start in range(0, len(order), 4096):
        block = order[start : start + 4096]
        good = block[catalog.eligible(block, filters, rules, exclude, as_of)]
        filled += good[: needed - len(filled)].tolist()
        if len(filled) >= needed:
            break
    return filled
