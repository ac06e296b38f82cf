"""The live section's pure parts: the freshness lag rule, the figures' summaries, the log rewind, the report table."""

from __future__ import annotations

import math
import random
from pathlib import Path

from bench.live import (
    Poll,
    compare_load,
    event_batch,
    events_per_second,
    last_seq,
    latency_summary,
    rewind_log,
    settled,
    visibility_lag_ms,
    worker_lag_ms,
)
from bench.machine import describe_machine
from bench.report import render
from models.live.log import EVENT, EventLog


def test_lag_is_the_first_poll_of_the_first_run_of_absent_responses() -> None:
    # a response without the item from the accepting worker, then the other worker still lists it: not yet visible
    answers = [(5.0, True), (20.0, False), (35.0, True), (50.0, False), (65.0, False), (80.0, False), (95.0, False)]
    polls = [Poll(at, present) for at, present in answers]
    assert visibility_lag_ms(polls, confirm=4) == 50.0
    assert visibility_lag_ms(polls, confirm=1) == 20.0
    assert visibility_lag_ms(polls[:6], confirm=4) is None  # only three in a row: unconfirmed
    assert visibility_lag_ms([Poll(3.0, False)] * 4, confirm=4) == 3.0  # gone on the first poll
    assert visibility_lag_ms([], confirm=4) is None


def test_lag_per_worker_and_when_to_stop_polling() -> None:
    accepting, other = 101, 202
    polls = [Poll(10.0, False, accepting), Poll(20.0, True, other), Poll(30.0, False, accepting),
             Poll(40.0, False, accepting), Poll(50.0, False, accepting), Poll(60.0, False, accepting)]  # fmt: skip
    assert worker_lag_ms(polls, accepting) == 10.0
    assert worker_lag_ms(polls, other) is None  # its latest answer still lists the item
    assert not settled(polls, confirm=4, other=other)  # four in a row, all from the accepting worker
    assert settled(polls, confirm=4, other=None)  # workers unknown: the run is all there is to go by
    polls.append(Poll(70.0, False, other))
    assert worker_lag_ms(polls, other) == 70.0 and settled(polls, confirm=4, other=other)
    assert worker_lag_ms([Poll(5.0, False, other)], other) == 5.0  # gone on its first answer
    assert worker_lag_ms(polls, 303) is None  # never answered


def test_summaries_and_ratios() -> None:
    summary = latency_summary([float(v) for v in range(1, 101)])
    assert summary["n"] == 100 and summary["p50_ms"] == 50.5 and summary["max_ms"] == 100.0
    assert 99.0 < summary["p99_ms"] < 100.0
    assert math.isnan(latency_summary([])["p50_ms"])
    assert events_per_second(500, 2.0) == 250.0 and math.isnan(events_per_second(5, 0.0))
    idle = {"latency": {"p50_ms": 10.0, "p99_ms": 20.0}, "rps": 100.0}
    loaded = {"latency": {"p50_ms": 12.0, "p99_ms": 30.0}, "rps": 80.0}
    assert compare_load(idle, loaded) == {"p50": 1.2, "p99": 1.5, "rps": 0.8}


def test_event_batches_are_valid_interactions() -> None:
    batch = event_batch(random.Random(0), ["u1", "u2"], ["i1", "i2", "i3"], 50)
    assert len(batch) == 50
    assert {e["user_id"] for e in batch} <= {"u1", "u2"} and {e["item_id"] for e in batch} <= {"i1", "i2", "i3"}
    assert {e["event_type"] for e in batch} <= {"view", "click", "add_to_cart", "purchase"}


def test_rewind_removes_only_the_records_after_the_mark(tmp_path: Path) -> None:
    path = tmp_path / "live" / "demo.sqlite"
    assert last_seq(path) == 0 and rewind_log(path, 0) == 0  # no log yet: nothing to do, nothing created
    log = EventLog(path)
    log.append(EVENT, [{"user_id": "before", "item_id": "i", "event_type": "view"}] * 3)
    mark = last_seq(path)
    log.append(EVENT, [{"user_id": "bench", "item_id": "i", "event_type": "view"}] * 5)
    assert rewind_log(path, mark) == 5
    assert [r.body["user_id"] for r in log.read_after(0)] == ["before"] * 3
    log.close()


def _section() -> dict[str, object]:
    ingest = {"requests": 10, "requests_per_s": 100.0, "errors": 0, "server_cpu_ms_per_event": 1.0,
              "latency": {"p50_ms": 5.0, "p99_ms": 9.0}}  # fmt: skip
    recommend = {"concurrency": 2, "duration_s": 8.0, "rps": 100.0, "errors": 0, "server_cpu_ms_per_request": 9.0,
                 "latency": {"p50_ms": 10.0, "p99_ms": 20.0}}  # fmt: skip
    background = {"batch": 10, "interval_s": 0.1, "events_per_s": 98.0, "target_events_per_s": 100.0, "errors": 0,
                  "latency": {"p50_ms": 6.0, "p99_ms": 12.0}}  # fmt: skip
    return {
        "workers": 2, "server_ready_seconds": 20.0, "version": "v1", "items": 5000, "tail_interval_s": 0.2,
        "log_records_rewound": 1234,
        "ingest": {"batch_1": {**ingest, "batch": 1, "events_per_s": 100.0},
                   "batch_100": {**ingest, "batch": 100, "events_per_s": 4321.0},
                   "events_per_s_ratio_100_vs_1": 43.2},
        "freshness": {"trials": 10, "confirm_in_a_row": 4, "timeout_s": 5.0, "not_visible": 0,
                      "workers_identified": 2, "lag": {"p50_ms": 123.0, "p99_ms": 234.0, "max_ms": 240.0},
                      "other_worker_lag": {"n": 9, "p50_ms": 111.0, "p99_ms": 199.0, "max_ms": 201.0},
                      "other_worker_measured": 9, "polls_per_trial_median": 12.0, "poll_interval_ms_median": 15.0,
                      "accepting_worker_lag": {"n": 10, "p50_ms": 14.0, "p99_ms": 20.0, "max_ms": 21.0},
                      "within_promise": True},
        "recommend": {"idle": recommend, "with_events": {**recommend, "rps": 80.0, "background_events": background,
                                                          "latency": {"p50_ms": 12.0, "p99_ms": 30.0}},
                      "ratio_loaded_vs_idle": {"p50": 1.2, "p99": 1.5, "rps": 0.8}},
    }  # fmt: skip


def test_report_renders_the_live_section() -> None:
    results = {"command": "python -m bench.run --only live", "started_at": "2026-01-01T00:00:00+00:00",
               "quick": True, "plan": {}, "machine": describe_machine(), "sections": {"live": _section()},
               "durations": {"live": {"seconds": 1.0, "status": "ok"}}, "total_seconds": 1.0}  # fmt: skip
    live = render(results).split("## 6. Live updates")[1].split("\n## ")[0]
    assert "**4,321**" in live and "43.2×" in live  # batch-100 events/s and its ratio to batch 1
    assert "123 / **234** / 240 ms" in live  # freshness p50 / p99 / max, N in a row
    assert "| 9 | 111 / **199** / 201 ms" in live  # on the worker that did not accept the purchase
    assert "**30.00 ms**" in live and "1.5×" in live  # p99 with events, ratio to idle
    assert "1,234 records" in live
    skipped = render({**results, "sections": {}}).split("## 6. Live updates")[1].split("\n## ")[0]
    assert skipped.strip().endswith("Skipped.")
