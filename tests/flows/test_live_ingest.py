"""The pipeline's data step takes in the live log, so nothing the service accepted is lost at the next run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from flows.pipeline import prepare_dataset
from models.data import columns as C
from models.live.ingest import LIVE_MARKER
from models.live.log import EVENT, ITEM, EventLog, log_path
from tests.conftest import small_settings


def test_the_next_run_ingests_the_live_log(tmp_path: Path):
    settings = small_settings(tmp_path / "state")
    first = Path(prepare_dataset.fn("demo", None, settings))
    assert json.loads((first / LIVE_MARKER).read_text())["ingested_seq"] == 0
    before = pd.read_parquet(first / "interactions.parquet")
    items = pd.read_parquet(first / "items.parquet")[C.ITEM_ID].tolist()
    end = before[C.TIMESTAMP].max().value / 1e9
    log = EventLog(log_path(settings.state_dir, "demo"))
    log.append(EVENT, [{C.USER_ID: "live-user", C.ITEM_ID: items[5], C.EVENT_TYPE: "purchase", C.TIMESTAMP: end + 1}])
    log.append(ITEM, [{C.ITEM_ID: items[6], C.PRICE: 1.25, C.TIMESTAMP: end + 2}])
    second = Path(prepare_dataset.fn("demo", None, settings))
    after = pd.read_parquet(second / "interactions.parquet")
    assert len(after) == len(before) + 1
    assert after[after[C.USER_ID] == "live-user"][C.ITEM_ID].tolist() == [items[5]]
    assert pd.read_parquet(second / "items.parquet").set_index(C.ITEM_ID).loc[items[6], C.PRICE] == 1.25
    assert json.loads((second / LIVE_MARKER).read_text()) == {"ingested_seq": 2, "events": 1, "item_changes": 1}
