"""The next pipeline run takes in the live log: events join the dataset (new users too), price and stock changes
update the items as point-in-time facts, and the result passes the contract's validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.data import columns as C
from models.data.contract import DataValidationError, in_stock_at
from models.data.demo_catalog import generate_demo_catalog
from models.live.ingest import ingest_log, read_live_marker, read_log, write_live_marker
from models.live.log import EVENT, ITEM, EventLog
from models.live.overlay import LiveEvent, merge_user_features


@pytest.fixture(scope="module")
def demo():
    return generate_demo_catalog(n_items=100, n_users=30, n_interactions=800, seed=1)


def test_logged_events_and_item_changes_enter_the_dataset(demo, tmp_path: Path):
    end = demo.interactions[C.TIMESTAMP].max().value / 1e9
    items = demo.items[C.ITEM_ID].tolist()
    log = EventLog(tmp_path / "live.sqlite")
    log.append(EVENT, [
        {C.USER_ID: "newcomer", C.ITEM_ID: items[0], C.EVENT_TYPE: "purchase", C.TIMESTAMP: end + 10},
        {C.USER_ID: demo.users[C.USER_ID][0], C.ITEM_ID: items[1], C.EVENT_TYPE: "rating", C.RATING: 4.5,
         C.TIMESTAMP: end + 20},
    ])  # fmt: skip
    log.append(ITEM, [{C.ITEM_ID: items[2], C.IN_STOCK: False, C.TIMESTAMP: end + 30},
                      {C.ITEM_ID: items[3], C.PRICE: 9.5, C.TIMESTAMP: end + 30}])  # fmt: skip
    records = read_log(tmp_path / "live.sqlite")
    out = ingest_log(demo, records)
    assert len(out.interactions) == len(demo.interactions) + 2
    assert "newcomer" in set(out.users[C.USER_ID])
    added = out.interactions.tail(2).reset_index(drop=True)
    assert added[C.WEIGHT].tolist() == [C.DEFAULT_EVENT_WEIGHTS["purchase"], 4.5]
    row = out.items.set_index(C.ITEM_ID)
    assert row.loc[items[3], C.PRICE] == 9.5
    stockout = row.loc[[items[2]], C.STOCKOUT_AT].map(lambda t: t.value / 1e9).to_numpy()
    assert (
        in_stock_at(stockout, np.array([np.nan]), end + 29).all()
        and not in_stock_at(stockout, np.array([np.nan]), end + 31).any()
    )
    write_live_marker(tmp_path, records)
    assert read_live_marker(tmp_path) == {"ingested_seq": 4, "events": 2, "item_changes": 2}
    assert read_live_marker(tmp_path / "elsewhere") == {"ingested_seq": 0, "events": 0, "item_changes": 0}


def test_an_invalid_logged_event_stops_ingestion(demo, tmp_path: Path):
    log = EventLog(tmp_path / "live.sqlite")
    log.append(EVENT, [{C.USER_ID: "u", C.ITEM_ID: "no-such-item", C.EVENT_TYPE: "click", C.TIMESTAMP: 1e9}])
    with pytest.raises(DataValidationError, match="no-such-item|unknown"):
        ingest_log(demo, read_log(tmp_path / "live.sqlite"))


def test_live_events_move_the_user_features():
    stored = {"user_events_all": 4.0, "user_seen_items": ["a", "b"], "user_recent_items": ["a"],
              "user_recent_times": [100.0], "user_top_categories": ["shoes"], "user_top_category_shares": [1.0]}  # fmt: skip
    events = [LiveEvent("c", 200.0, "view", False, "hats"), LiveEvent("d", 300.0, "purchase", True, "hats")]
    merged = merge_user_features(stored, events, as_of=400.0)
    assert merged["user_seen_items"] == ["d", "c", "a", "b"]
    assert merged["user_recent_items"] == ["a", "d"] and merged["user_recent_times"] == [100.0, 300.0]
    assert merged["user_events_all"] == 6.0
    assert merged["user_top_categories"] == ["shoes", "hats"]
    assert merged["user_top_category_shares"] == pytest.approx([4 / 6, 2 / 6])
    unknown = merge_user_features(None, events[:1], as_of=400.0)
    assert unknown["user_events_all"] == 1.0 and unknown["user_seen_items"] == ["c"]
