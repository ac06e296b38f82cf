"""The next pipeline run takes in what the service accepted: logged interactions join the dataset, logged price and
stock changes update its items, and the whole is validated again like any input. The published version records the
last sequence number it contains, so a service replays only what came after it — nothing is lost or counted twice.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from models.data import columns as C
from models.data.contract import Dataset, validate_dataset
from models.files import write_json
from models.live.log import EVENT, ITEM, EventLog, LiveLog, Record, log_path, open_log
from models.settings import Settings

LIVE_MARKER = "live.json"


def read_log(path: Path) -> list[Record]:
    """Every record of a SQLite live log (none when the service never wrote one)."""
    if not path.exists():
        return []
    try:
        return read_all(EventLog(path))
    except sqlite3.DatabaseError as error:
        raise ValueError(f"the live log {path} cannot be read: {error}") from error


def read_live_log(settings: Settings, dataset: str) -> list[Record]:
    """Every record of the dataset's live log, wherever the settings keep it."""
    if settings.online_store == "redis":
        return read_all(open_log(settings, dataset))
    return read_log(log_path(settings.state_dir, settings.deployment(dataset)))


def read_all(log: LiveLog) -> list[Record]:
    try:
        records, last = [], 0
        while batch := log.read_after(last):
            records += batch
            last = batch[-1].seq
        return records
    finally:
        log.close()


def ingest_log(dataset: Dataset, records: Sequence[Record]) -> Dataset:
    """``dataset`` with the logged interactions appended (new users added) and item changes applied."""
    events = [r.body for r in records if r.kind == EVENT]
    changes = [r.body for r in records if r.kind == ITEM]
    if not events and not changes:
        return dataset
    interactions = dataset.interactions
    users = dataset.users
    if events:
        logged = pd.DataFrame(events)
        logged[C.TIMESTAMP] = pd.to_datetime(logged[C.TIMESTAMP].astype(float), unit="s", utc=True)
        rating = logged[C.RATING] if C.RATING in logged else pd.Series(float("nan"), index=logged.index)
        logged[C.RATING] = rating.astype(float)
        logged[C.WEIGHT] = rating.where(rating.notna(), logged[C.EVENT_TYPE].map(C.DEFAULT_EVENT_WEIGHTS)).astype(float)
        interactions = pd.concat([interactions, logged[list(interactions.columns)]], ignore_index=True)
        new_users = sorted(set(logged[C.USER_ID]) - set(users[C.USER_ID]))
        users = pd.concat([users, pd.DataFrame({C.USER_ID: new_users})], ignore_index=True)
    items = apply_changes(dataset.items, changes)
    return validate_dataset(dataset.name, items, interactions, users, {**dataset.sources, "interactions": "live log"})


def apply_changes(items: pd.DataFrame, changes: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Price and stock changes in log order; stock becomes stock-out / restock times (the flag is derived again)."""
    items = items.copy()
    row_of = pd.Index(items[C.ITEM_ID])
    for change in changes:
        row = row_of.get_loc(str(change[C.ITEM_ID]))
        at = pd.Timestamp(float(change[C.TIMESTAMP]), unit="s", tz="UTC")
        if change.get(C.PRICE) is not None:
            items.loc[items.index[row], C.PRICE] = float(change[C.PRICE])
        if change.get(C.IN_STOCK) is False:
            items.loc[items.index[row], [C.STOCKOUT_AT, C.RESTOCK_AT]] = [at, pd.NaT]
        elif change.get(C.IN_STOCK) is True:
            out = items.at[items.index[row], C.STOCKOUT_AT]
            back = items.at[items.index[row], C.RESTOCK_AT]
            if pd.notna(out) and out <= at and not (pd.notna(back) and back <= at):
                items.loc[items.index[row], C.RESTOCK_AT] = at
    return items.drop(columns=[C.IN_STOCK]) if changes else items


def write_live_marker(dataset_dir: Path, records: Sequence[Record]) -> None:
    marker = {
        "ingested_seq": records[-1].seq if records else 0,
        "events": sum(r.kind == EVENT for r in records),
        "item_changes": sum(r.kind == ITEM for r in records),
    }
    write_json(marker, dataset_dir / LIVE_MARKER)


def read_live_marker(dataset_dir: Path) -> dict[str, int]:
    path = dataset_dir / LIVE_MARKER
    return json.loads(path.read_text()) if path.exists() else {"ingested_seq": 0, "events": 0, "item_changes": 0}
