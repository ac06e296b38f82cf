"""The data contract: what items, users and interactions look like, and the validation every dataset passes.

Validation collects every problem across the three tables and raises once, naming the file, the column and the
offending rows, before anything is written. Validated frames have fixed dtypes: string ids, UTC timestamps,
float prices (NaN when unknown) and boolean stock flags (True when unknown).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from models.data import columns as C
from models.data.clock import unix_seconds_or_nan

ITEM_REQUIRED = (C.ITEM_ID, C.TITLE, C.CATEGORY, C.CREATED_AT)
USER_REQUIRED = (C.USER_ID,)
INTERACTION_REQUIRED = (C.USER_ID, C.ITEM_ID, C.TIMESTAMP)
INTERACTION_SIGNAL = (C.EVENT_TYPE, C.RATING, C.WEIGHT)
"""An interactions table needs at least one of these."""

MAX_ROWS_SHOWN = 10


@dataclass(frozen=True)
class ValidationIssue:
    """One problem in one column of one file."""

    source: str
    column: str | None
    problem: str
    rows: tuple[int, ...] = ()
    values: tuple[object, ...] = ()

    def __str__(self) -> str:
        where = f"{self.source}: column '{self.column}'" if self.column else self.source
        text = f"{where}: {self.problem}"
        if self.rows:
            shown = ", ".join(str(r) for r in self.rows[:MAX_ROWS_SHOWN])
            more = f" and {len(self.rows) - MAX_ROWS_SHOWN} more" if len(self.rows) > MAX_ROWS_SHOWN else ""
            text += f" at rows [{shown}]{more}"
        if self.values:
            text += " (values: " + ", ".join(repr(v) for v in self.values[:MAX_ROWS_SHOWN]) + ")"
        return text


class DataValidationError(ValueError):
    """Raised when a dataset breaks the contract; ``issues`` lists every problem found."""

    def __init__(self, issues: Iterable[ValidationIssue]):
        self.issues = list(issues)
        lines = "\n".join(f"  - {issue}" for issue in self.issues)
        super().__init__(f"invalid dataset, {len(self.issues)} problem(s) (rows are 0-based data rows):\n{lines}")


@dataclass(frozen=True)
class Dataset:
    """A validated dataset: the three tables in contract dtypes."""

    name: str
    items: pd.DataFrame
    users: pd.DataFrame
    interactions: pd.DataFrame
    sources: dict[str, str] = field(default_factory=dict)

    def catalog(self) -> Dataset:
        """The items and users without the events: what a step keeps once it holds the events' split, so the whole
        event log is not held beside its two halves (at 1 M items and 15 M events the frame takes 0.7 GB)."""
        return replace(self, interactions=self.interactions.iloc[:0].copy())  # a copy: a view keeps the arrays

    def summary(self) -> dict[str, object]:
        """Counts and ranges a person checks first."""
        inter = self.interactions
        summary: dict[str, object] = {
            "dataset": self.name,
            "items": len(self.items),
            "users": len(self.users),
            "interactions": len(inter),
            "categories": int(self.items[C.CATEGORY].nunique()),
            "first_interaction": str(inter[C.TIMESTAMP].min()) if len(inter) else None,
            "last_interaction": str(inter[C.TIMESTAMP].max()) if len(inter) else None,
            "events": {str(k): int(v) for k, v in inter[C.EVENT_TYPE].value_counts().items()},
            "items_with_price": int(self.items[C.PRICE].notna().sum()),
            "items_in_stock": int(self.items[C.IN_STOCK].sum()),
        }
        if len(self.users) and len(self.items):
            summary["density"] = round(len(inter) / (len(self.users) * len(self.items)), 6)
        return summary


class _Checker:
    """Collects issues for one table; each method checks one rule and returns the cleaned column."""

    def __init__(self, frame: pd.DataFrame, source: str):
        self.frame = frame
        self.source = source
        self.issues: list[ValidationIssue] = []

    def add(self, column: str | None, problem: str, mask: np.ndarray | None = None, values: pd.Series | None = None):
        rows: tuple[int, ...] = ()
        shown: tuple[object, ...] = ()
        if mask is not None:
            positions = np.flatnonzero(mask)
            rows = tuple(int(p) for p in positions)
            if values is not None:
                shown = tuple(values.iloc[positions[:MAX_ROWS_SHOWN]].tolist())
        self.issues.append(ValidationIssue(self.source, column, problem, rows, shown))

    def require_columns(self, required: Iterable[str]) -> bool:
        missing = [c for c in required if c not in self.frame.columns]
        for column in missing:
            self.add(column, "missing required column (found: " + ", ".join(map(str, self.frame.columns)) + ")")
        return not missing

    def key(self, column: str) -> pd.Series:
        raw = self.frame[column]
        null = raw.isna().to_numpy()
        if null.any():
            self.add(column, f"{int(null.sum())} null key(s)", null)
        return raw.map(_key_to_str, na_action="ignore").astype(object)

    def unique(self, column: str, keys: pd.Series) -> None:
        dup = keys.duplicated(keep=False).to_numpy() & keys.notna().to_numpy()
        if dup.any():
            self.add(column, f"{int(keys[dup].nunique())} duplicate id(s)", dup, keys)

    def text(self, column: str, required: bool) -> pd.Series:
        raw = self.frame[column]
        null = raw.isna().to_numpy()
        if required and null.any():
            self.add(column, f"{int(null.sum())} null value(s)", null)
        return raw.map(str, na_action="ignore").astype(object)

    def timestamp(self, column: str, now: pd.Timestamp, required: bool = True) -> pd.Series:
        raw = self.frame[column]
        parsed = _parse_timestamps(raw)
        null = raw.isna().to_numpy()
        if required and null.any():
            self.add(column, f"{int(null.sum())} null timestamp(s)", null)
        bad = parsed.isna().to_numpy() & ~null
        if bad.any():
            self.add(column, f"{int(bad.sum())} unparseable timestamp(s)", bad, raw)
        future = (parsed > now).fillna(False).to_numpy(dtype=bool)
        if future.any():
            self.add(column, f"{int(future.sum())} timestamp(s) in the future (after {now})", future, raw)
        return parsed

    def number(self, column: str, allow_negative: bool = False) -> pd.Series:
        raw = self.frame[column]
        parsed = pd.to_numeric(raw, errors="coerce").astype(float)
        bad = parsed.isna().to_numpy() & raw.notna().to_numpy()
        if bad.any():
            self.add(column, f"{int(bad.sum())} value(s) of the wrong type, expected a number", bad, raw)
        if not allow_negative:
            negative = (parsed < 0).to_numpy()
            if negative.any():
                self.add(column, f"{int(negative.sum())} negative value(s)", negative, raw)
        return parsed

    def boolean(self, column: str) -> pd.Series:
        raw = self.frame[column]
        parsed = raw.map(_to_bool)
        bad = parsed.isna().to_numpy()
        if bad.any():
            self.add(column, f"{int(bad.sum())} value(s) of the wrong type, expected true/false", bad, raw)
        return pd.Series(np.where(bad, True, parsed.to_numpy()), index=raw.index).astype(bool)

    def one_of(self, column: str, values: pd.Series, allowed: Iterable[str]) -> None:
        allowed = set(allowed)
        bad = (~values.isin(allowed)).to_numpy() & values.notna().to_numpy()
        if bad.any():
            self.add(column, f"{int(bad.sum())} unknown value(s), expected one of {sorted(allowed)}", bad, values)


def _key_to_str(value: object) -> str:
    """Ids are strings; integral floats (a CSV column with gaps) lose their '.0'."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def _to_bool(value: object) -> bool | None:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return True  # unknown stock counts as in stock
    if isinstance(value, int | np.integer) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


def _parse_timestamps(raw: pd.Series) -> pd.Series:
    """Datetimes, ISO strings or unix seconds → UTC timestamps to the microsecond (what Parquet and the feature
    store keep: finer times, e.g. float seconds from the live log, would fail their casts); unparseable → NaT."""
    if pd.api.types.is_datetime64_any_dtype(raw):
        parsed = pd.to_datetime(raw, utc=True)
    elif pd.api.types.is_numeric_dtype(raw):
        parsed = _from_unix_seconds(raw)
    else:
        as_text = raw.astype("string")
        numeric = pd.to_numeric(as_text, errors="coerce")
        parsed = pd.to_datetime(as_text, utc=True, errors="coerce", format="mixed")
        parsed = parsed.where(numeric.isna(), _from_unix_seconds(numeric))
    return parsed.astype("datetime64[ns, UTC]").dt.floor("us")


def _from_unix_seconds(numbers: pd.Series) -> pd.Series:
    """Unix seconds → UTC timestamps; missing or out-of-range → NaT. Only present numbers reach ``to_datetime``:
    pandas 2.3 rounds the fraction of float seconds in an array it leaves uninitialised at missing values, and
    whatever memory sits there can overflow (a flaky ``FloatingPointError`` seen on CI)."""
    converted = pd.Series(pd.NaT, index=numbers.index, dtype="datetime64[ns, UTC]")
    present = numbers.notna().to_numpy()
    if present.any():
        values = numbers[present].astype("float64")
        converted[present] = pd.to_datetime(values, unit="s", utc=True, errors="coerce")
    return converted


def _extras(frame: pd.DataFrame, known: Iterable[str]) -> list[str]:
    known = set(known)
    return [c for c in frame.columns if c not in known]


def check_items(raw: pd.DataFrame, source: str, now: pd.Timestamp) -> tuple[pd.DataFrame | None, list[ValidationIssue]]:
    """Validate and type an items table; returns (frame or None, issues)."""
    check = _Checker(raw.reset_index(drop=True), source)
    if not check.require_columns(ITEM_REQUIRED):
        return None, check.issues
    out = pd.DataFrame({C.ITEM_ID: check.key(C.ITEM_ID)})
    check.unique(C.ITEM_ID, out[C.ITEM_ID])
    out[C.TITLE] = check.text(C.TITLE, required=True)
    has_description = C.DESCRIPTION in raw.columns
    out[C.DESCRIPTION] = check.text(C.DESCRIPTION, required=False).fillna("") if has_description else ""
    out[C.CATEGORY] = check.text(C.CATEGORY, required=True)
    out[C.TAGS] = check.text(C.TAGS, required=False).fillna("") if C.TAGS in raw.columns else ""
    out[C.CREATED_AT] = check.timestamp(C.CREATED_AT, now)
    out[C.PRICE] = check.number(C.PRICE) if C.PRICE in raw.columns else np.nan
    out[C.IN_STOCK] = check.boolean(C.IN_STOCK) if C.IN_STOCK in raw.columns else True
    for column in (C.STOCKOUT_AT, C.RESTOCK_AT):
        present = column in raw.columns
        absent = pd.Series(pd.NaT, index=out.index, dtype="datetime64[ns, UTC]")
        out[column] = check.timestamp(column, now, required=False) if present else absent
    early = (out[C.RESTOCK_AT] < out[C.STOCKOUT_AT]).to_numpy()
    if early.any():
        check.add(C.RESTOCK_AT, f"{int(early.sum())} restock time(s) before the stock-out", early, out[C.RESTOCK_AT])
    orphan = (out[C.RESTOCK_AT].notna() & out[C.STOCKOUT_AT].isna()).to_numpy()
    if orphan.any():
        check.add(C.RESTOCK_AT, f"{int(orphan.sum())} restock time(s) without a stock-out", orphan)
    known = (*ITEM_REQUIRED, C.DESCRIPTION, C.TAGS, C.PRICE, C.IN_STOCK, C.STOCKOUT_AT, C.RESTOCK_AT)
    for column in _extras(check.frame, known):
        out[column] = check.frame[column].to_numpy()
    return out, check.issues


def check_users(raw: pd.DataFrame, source: str) -> tuple[pd.DataFrame | None, list[ValidationIssue]]:
    """Validate and type a users table; attribute columns are kept as text."""
    check = _Checker(raw.reset_index(drop=True), source)
    if not check.require_columns(USER_REQUIRED):
        return None, check.issues
    out = pd.DataFrame({C.USER_ID: check.key(C.USER_ID)})
    check.unique(C.USER_ID, out[C.USER_ID])
    for column in _extras(check.frame, USER_REQUIRED):
        out[column] = check.frame[column].to_numpy()
    return out, check.issues


def check_interactions(
    raw: pd.DataFrame, source: str, now: pd.Timestamp
) -> tuple[pd.DataFrame | None, list[ValidationIssue]]:
    """Validate and type an interactions table; a missing weight comes from the event type or the rating."""
    check = _Checker(raw.reset_index(drop=True), source)
    if not check.require_columns(INTERACTION_REQUIRED):
        return None, check.issues
    if not any(c in raw.columns for c in INTERACTION_SIGNAL):
        check.add(None, "needs at least one of the columns " + ", ".join(INTERACTION_SIGNAL))
        return None, check.issues
    out = pd.DataFrame({C.USER_ID: check.key(C.USER_ID), C.ITEM_ID: check.key(C.ITEM_ID)})
    out[C.TIMESTAMP] = check.timestamp(C.TIMESTAMP, now)
    out[C.RATING] = check.number(C.RATING) if C.RATING in raw.columns else np.nan
    if C.EVENT_TYPE in raw.columns:
        out[C.EVENT_TYPE] = check.text(C.EVENT_TYPE, required=True)
        check.one_of(C.EVENT_TYPE, out[C.EVENT_TYPE], C.EVENT_TYPES)
    else:
        out[C.EVENT_TYPE] = np.where(out[C.RATING].notna(), C.RATED, C.VIEW)
    if C.WEIGHT in raw.columns:
        out[C.WEIGHT] = check.number(C.WEIGHT)
    else:
        by_event = out[C.EVENT_TYPE].map(C.DEFAULT_EVENT_WEIGHTS).astype(float)
        out[C.WEIGHT] = out[C.RATING].where(out[C.RATING].notna(), by_event)
    known = (*INTERACTION_REQUIRED, *INTERACTION_SIGNAL)
    for column in _extras(check.frame, known):
        out[column] = check.frame[column].to_numpy()
    return out, check.issues


def _unknown_refs(
    interactions: pd.DataFrame, column: str, known: pd.Series, source: str, target: str
) -> list[ValidationIssue]:
    unknown = (~interactions[column].isin(set(known))).to_numpy() & interactions[column].notna().to_numpy()
    if not unknown.any():
        return []
    values = interactions[column].to_numpy()[unknown]
    distinct = list(dict.fromkeys(values))
    return [
        ValidationIssue(
            source,
            column,
            f"{int(unknown.sum())} interaction(s) reference {len(distinct)} id(s) not in {target}",
            tuple(int(p) for p in np.flatnonzero(unknown)),
            tuple(distinct[:MAX_ROWS_SHOWN]),
        )
    ]


def in_stock_at(stockout: np.ndarray, restock: np.ndarray, at: np.ndarray | float) -> np.ndarray:
    """Whether each item is in stock at unix time(s) ``at``: not within [stock-out, restock) (NaN/inf: none)."""
    stockout = np.nan_to_num(np.asarray(stockout, dtype=np.float64), nan=np.inf)
    restock = np.nan_to_num(np.asarray(restock, dtype=np.float64), nan=np.inf)
    return ~((stockout <= at) & (at < restock))


def _stock_history(
    items: pd.DataFrame, interactions: pd.DataFrame, source: str, has_times: bool, has_flag: bool
) -> list[ValidationIssue]:
    """Make stock a point-in-time fact (in place). With only an ``in_stock`` flag, an item out of stock went out at
    an unknown time: the data's last event is the earliest time it is known to be out (so the past is never filtered
    by today's stock). With stock-out times, the flag must agree with them at the data's end."""
    end = interactions[C.TIMESTAMP].max() if len(interactions) else pd.Timestamp.now(tz="UTC")
    end_seconds = end.value / 1e9
    derived = in_stock_at(
        unix_seconds_or_nan(items[C.STOCKOUT_AT]), unix_seconds_or_nan(items[C.RESTOCK_AT]), end_seconds
    )
    if not has_times:
        unknown = ~items[C.IN_STOCK].to_numpy(dtype=bool)
        items.loc[unknown, C.STOCKOUT_AT] = end
        return []
    if has_flag:
        disagree = derived != items[C.IN_STOCK].to_numpy(dtype=bool)
        if disagree.any():
            positions = np.flatnonzero(disagree)
            return [ValidationIssue(source, C.IN_STOCK, f"{len(positions)} flag(s) disagree with stockout_at / "
                                    f"restock_at at the data's end ({end})", tuple(int(p) for p in positions))]  # fmt: skip
    items[C.IN_STOCK] = derived
    return []


def validate_dataset(
    name: str,
    items: pd.DataFrame,
    interactions: pd.DataFrame,
    users: pd.DataFrame | None = None,
    sources: dict[str, str] | None = None,
    now: pd.Timestamp | None = None,
) -> Dataset:
    """Check all three tables against the contract and return them typed, or raise DataValidationError.

    ``sources`` names where each table came from ("items" → "data/items.csv") so errors point at files.
    Without a users table, users are the distinct user ids of the interactions.
    """
    sources = {"items": "items", "users": "users", "interactions": "interactions", **(sources or {})}
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    items_out, issues = check_items(items, sources["items"], now)
    inter_out, inter_issues = check_interactions(interactions, sources["interactions"], now)
    issues += inter_issues
    if users is None:
        user_ids = inter_out[C.USER_ID].dropna().unique() if inter_out is not None else []
        users_out: pd.DataFrame | None = pd.DataFrame({C.USER_ID: pd.Series(sorted(user_ids), dtype=object)})
    else:
        users_out, user_issues = check_users(users, sources["users"])
        issues += user_issues
    if inter_out is not None and items_out is not None:
        issues += _unknown_refs(inter_out, C.ITEM_ID, items_out[C.ITEM_ID], sources["interactions"], sources["items"])
    if inter_out is not None and users_out is not None and users is not None:
        issues += _unknown_refs(inter_out, C.USER_ID, users_out[C.USER_ID], sources["interactions"], sources["users"])
    if items_out is not None and inter_out is not None:
        issues += _stock_history(items_out, inter_out, sources["items"], "stockout_at" in items, "in_stock" in items)
    if issues:
        raise DataValidationError(issues)
    assert items_out is not None and users_out is not None and inter_out is not None
    inter_out = inter_out.sort_values(C.TIMESTAMP, kind="stable").reset_index(drop=True)  # ties keep file order
    return Dataset(name=name, items=items_out, users=users_out, interactions=inter_out, sources=dict(sources))
