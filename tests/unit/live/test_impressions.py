"""The impression log: what a worker buffers is written as date-partitioned Parquet, read back whole, rotated."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from models.data.clock import DAY_SECONDS
from models.live.impressions import ImpressionLog, ShownList, read_impressions

DAY_ONE = pd.Timestamp("2026-06-01T12:00:00Z").value / 1e9


def shown(request_id: str, as_of: float, features: np.ndarray | None = None) -> ShownList:
    return ShownList(request_id, as_of, "u1", "v1", "recommend", ["a", "b"], [0.9, 0.1], [("ease", "semantic"), ()],
                     features)  # fmt: skip


def test_lists_are_written_per_day_and_read_back_with_their_feature_rows(tmp_path: Path):
    log = ImpressionLog(tmp_path, ["f1", "f2"], flush_rows=1000)
    log.record(shown("r1", DAY_ONE, np.array([[1.0, np.nan], [3.0, 4.0]], np.float32)))
    log.record(shown("r2", DAY_ONE + DAY_SECONDS))
    assert not list(tmp_path.rglob("*.parquet")), "nothing is written before the buffer is flushed"
    files = log.flush()
    assert sorted(f.parent.name for f in files) == ["date=2026-06-01", "date=2026-06-02"]
    frame, names = read_impressions(tmp_path)
    assert names == ["f1", "f2"]
    first = frame[frame.request_id == "r1"].sort_values("rank")
    assert first.item_id.tolist() == ["a", "b"] and first["rank"].tolist() == [0, 1]
    assert list(first.sources.iloc[0]) == ["ease", "semantic"] and list(first.sources.iloc[1]) == []
    assert first.features.iloc[1].tolist() == [3.0, 4.0] and np.isnan(first.features.iloc[0][1])
    assert frame[frame.request_id == "r2"].features.map(len).tolist() == [0, 0], "a list not re-ranked has no rows"


def test_a_full_or_old_buffer_is_due(tmp_path: Path):
    log = ImpressionLog(tmp_path, ["f1"], flush_rows=3)
    assert not log.due(max_age_seconds=0.0), "an empty buffer is never due"
    log.record(shown("r1", DAY_ONE))
    assert not log.due(max_age_seconds=60.0)
    assert log.due(max_age_seconds=0.0)
    log.record(shown("r2", DAY_ONE))
    assert log.due(max_age_seconds=60.0), "four rows fill a buffer of three"
    assert not list(tmp_path.rglob("*.parquet")), "recording never writes: the background thread does"
    log.flush()
    assert len(read_impressions(tmp_path)[0]) == 4 and not log.due(max_age_seconds=0.0)


def test_partitions_older_than_the_retention_are_deleted(tmp_path: Path):
    log = ImpressionLog(tmp_path, ["f1"], retention_days=7)
    log.record(shown("old", DAY_ONE))
    log.flush()
    log.record(shown("new", DAY_ONE + 10 * DAY_SECONDS))
    log.flush()
    frame, _ = read_impressions(tmp_path)
    assert set(frame.request_id) == {"new"}
    assert [p.name for p in tmp_path.iterdir()] == ["date=2026-06-11"]


def test_files_for_another_feature_list_are_skipped(tmp_path: Path):
    old = ImpressionLog(tmp_path, ["old_feature"])
    old.record(shown("r-old", DAY_ONE, np.ones((2, 1), np.float32)))
    old.flush()
    time.sleep(0.01)  # file names start with their write time in ms
    new = ImpressionLog(tmp_path, ["f1", "f2"])
    new.record(shown("r-new", DAY_ONE, np.ones((2, 2), np.float32)))
    new.flush()
    frame, names = read_impressions(tmp_path)
    assert names == ["f1", "f2"] and set(frame.request_id) == {"r-new"}


def test_a_corrupt_file_is_named(tmp_path: Path):
    folder = tmp_path / "date=2026-06-01"
    folder.mkdir()
    (folder / "broken.parquet").write_bytes(b"not parquet")
    try:
        read_impressions(tmp_path)
    except ValueError as error:
        assert "broken.parquet" in str(error)
    else:
        raise AssertionError("a corrupt impression file must be named")


def test_written_files_carry_the_schema(tmp_path: Path):
    log = ImpressionLog(tmp_path, ["f1"])
    log.record(shown("r1", DAY_ONE, np.ones((2, 1), np.float32)))
    (path,) = log.flush()
    schema = pq.read_schema(path)
    assert schema.field("features").type == pa.list_(pa.float32())
    assert not list(tmp_path.rglob("*.tmp"))


def test_lists_of_any_length_keep_their_rows_and_an_anonymous_user_is_null(tmp_path: Path):
    log = ImpressionLog(tmp_path, ["f1"])
    log.record(ShownList("search", DAY_ONE, None, "v1", "search", np.array(["x", "y", "z"]), np.array([3.0, 2.0, 1.0]),
                         [(), ("semantic",), ()], None, latency_ms=4.5))  # fmt: skip
    log.record(shown("r1", DAY_ONE, np.array([[7.0], [8.0]], np.float32)))
    log.flush()
    frame, _ = read_impressions(tmp_path)
    search = frame[frame.request_id == "search"].sort_values("rank")
    assert search.item_id.tolist() == ["x", "y", "z"] and search["rank"].tolist() == [0, 1, 2]
    assert search.user_id.isna().all() and search.latency_ms.tolist() == [4.5] * 3
    assert [list(s) for s in search.sources] == [[], ["semantic"], []]
    listed = frame[frame.request_id == "r1"].sort_values("rank")
    assert listed["rank"].tolist() == [0, 1] and [f.tolist() for f in listed.features] == [[7.0], [8.0]]
    assert listed.score.tolist() == [0.9, 0.1] and (listed.user_id == "u1").all()
