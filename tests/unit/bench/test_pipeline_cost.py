"""The pipeline section's arithmetic and readers: growth exponents and flags on synthetic curves, the two summary
lines of the pipeline's log, per-task seconds from a Prefect-shaped SQLite file, and the BENCHMARKS.md section."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.pipeline_cost import (
    analyse,
    caps,
    fit_exponent,
    growth,
    item_item_reasons,
    parse_sizes,
    plot,
    task_durations,
)
from bench.report import render
from bench.state import (
    CHEAP_SETTINGS,
    PEAK_MB_LINE,
    SECONDS_LINE,
    Catalogue,
    parse_stage_values,
    pipeline_summary,
    tree_rss_bytes,
    why_not_reusable,
)
from flows.common import code_fingerprint

ITEMS = [20_000, 100_000, 1_000_000]
INTERACTIONS = [15 * n for n in ITEMS]


def test_linear_and_quadratic_curves_give_exponents_one_and_two() -> None:
    linear = [3e-3 * n for n in ITEMS]
    quadratic = [1e-8 * n**2 for n in ITEMS]
    assert fit_exponent(ITEMS, linear) == pytest.approx(1.0, abs=1e-3)
    assert fit_exponent(ITEMS, quadratic) == pytest.approx(2.0, abs=1e-3)
    assert fit_exponent(INTERACTIONS, quadratic) == pytest.approx(2.0, abs=1e-3)  # same factor on both axes
    assert fit_exponent(ITEMS[:1], linear[:1]) is None  # one point: no slope
    assert fit_exponent(ITEMS[:2], [5.0, None]) is None


def test_flags_superlinear_too_short_and_cached() -> None:
    assert growth(ITEMS, INTERACTIONS, [60.0, 300.0, 3000.0])["flags"] == []  # exponent 1
    quadratic = growth(ITEMS, INTERACTIONS, [10.0, 250.0, 25_000.0])
    assert quadratic["flags"] == ["superlinear"] and quadratic["exponent_items"] == pytest.approx(2.0, abs=1e-3)
    assert quadratic["steps_items"] == [pytest.approx(2.0, abs=1e-3)] * 2
    # a fast stage that grows like n² is noise, not a finding
    assert growth(ITEMS, INTERACTIONS, [0.01, 0.25, 1.9])["flags"] == ["too short to fit"]
    slightly = growth(ITEMS[:2], INTERACTIONS[:2], [100.0, 100.0 * 5**1.1])  # 1.1: within the margin
    assert slightly["flags"] == [] and slightly["exponent_items"] == pytest.approx(1.1, abs=1e-3)
    cached = growth(ITEMS, INTERACTIONS, [60.0, 0.01, 3000.0], [False, True, False])
    assert cached["flags"] == ["cached at some size"] and cached["steps_items"][0] is None
    assert cached["exponent_items"] == pytest.approx(1.0, abs=1e-3)  # fitted on the two measured sizes


def test_sizes_scale_users_and_interactions_like_the_demo() -> None:
    assert Catalogue.scaled(20_000) == Catalogue(20_000, 5_000, 300_000)
    assert Catalogue.scaled(1_000_000) == Catalogue(1_000_000, 250_000, 15_000_000)
    assert parse_sizes("100000, 20_000,100000") == (20_000, 100_000)
    with pytest.raises(ValueError):
        parse_sizes("0")


def test_user_caps_come_from_the_cheap_settings() -> None:
    found = caps([5_000, 25_000], {"RECSYS_TRAIN_MAX_USERS": "800"})
    assert "RECSYS_TRAIN_MAX_USERS=800 (CHEAP_SETTINGS)" in found["reranker/train_reranker"]
    assert "RECSYS_EVAL_MAX_USERS=10000 (default from 25,000 users on)" in found["reranker/evaluate_reranker"]
    assert "features" not in found and "data" not in found
    assert not any("EVAL" in r for r in caps([1_250, 5_000], {})["reranker"])  # 10 000 binds at neither size


LOG = """12:00:00 | INFO | Task run 'publish_version-455' - Finished in state Completed()
=== pipeline on 'demo' finished in 993 s ===
per-stage seconds: data 4.6, stage1 363.2, features 4.2, reranker 561.3, serving_stage1 31.4, publish 15.9
per-stage peak memory (MB): data 1728, stage1 2617, features 1689, reranker 4366, serving_stage1 3204, publish 2260
stage-1 recall (merged): @50 0.412, @500 0.701
"""


def test_both_summary_lines_are_read_and_the_last_run_wins(tmp_path: Path) -> None:
    log = tmp_path / "pipeline.log"
    log.write_text("per-stage seconds: data 99.0\nper-stage peak memory (MB): data 1\n" + LOG)
    assert pipeline_summary(log, SECONDS_LINE) == {"data": 4.6, "stage1": 363.2, "features": 4.2, "reranker": 561.3,
                                                   "serving_stage1": 31.4, "publish": 15.9}  # fmt: skip
    assert pipeline_summary(log, PEAK_MB_LINE)["reranker"] == 4366.0
    assert pipeline_summary(log, PEAK_MB_LINE)["data"] == 1728.0
    assert parse_stage_values(" data 3.1, broken, stage1 x") == {"data": 3.1}
    assert pipeline_summary(tmp_path / "missing.log") == {}


# ---- a Prefect database with the real column names --------------------------------------------------------------

SCHEMA = """
CREATE TABLE flow (id CHAR(36) PRIMARY KEY, name VARCHAR NOT NULL);
CREATE TABLE flow_run (id CHAR(36) PRIMARY KEY, created DATETIME NOT NULL, name VARCHAR NOT NULL, state_name VARCHAR,
    start_time DATETIME, end_time DATETIME, total_run_time DATETIME DEFAULT '0' NOT NULL, flow_id CHAR(36) NOT NULL,
    parent_task_run_id CHAR(36));
CREATE TABLE task_run (id CHAR(36) PRIMARY KEY, created DATETIME NOT NULL, name VARCHAR NOT NULL, state_type VARCHAR(9),
    state_name VARCHAR, start_time DATETIME, end_time DATETIME, total_run_time DATETIME DEFAULT '0' NOT NULL,
    flow_run_id CHAR(36));
"""


def _task(db: sqlite3.Connection, flow_run: str, task_id: str, name: str, start: str, end: str, state: str = "Completed") -> None:  # fmt: skip
    seconds = (int(end[:2]) * 60 + float(end[3:])) - (int(start[:2]) * 60 + float(start[3:]))
    minutes, rest = divmod(seconds, 60)
    db.execute(
        "INSERT INTO task_run VALUES (?, ?, ?, 'COMPLETED', ?, ?, ?, ?, ?)",
        (task_id, f"2026-12-02 10:{start}", name, state, f"2026-12-02 10:{start}", f"2026-12-02 10:{end}",
         f"1970-01-01 00:{int(minutes):02d}:{rest:09.6f}", flow_run),
    )  # fmt: skip


def _prefect_db(path: Path) -> Path:
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    db.executemany("INSERT INTO flow VALUES (?, ?)", [("f-p", "pipeline"), ("f-s", "stage1"), ("f-f", "features")])
    # an older pipeline run that must be ignored, then the latest with two subflows
    db.execute("INSERT INTO flow_run VALUES ('old', '2026-12-01 09:00:00', 'old-run', 'Completed', NULL, NULL, '0', "
               "'f-p', NULL)")  # fmt: skip
    _task(db, "old", "t-old", "prepare_dataset-111", "00:00.0", "09:00.0")
    db.execute("INSERT INTO flow_run VALUES ('p', '2026-12-02 10:00:00', 'latest-run', 'Completed', "
               "'2026-12-02 10:00:00', '2026-12-02 10:30:00', '1970-01-01 00:30:00.000000', 'f-p', NULL)")  # fmt: skip
    _task(db, "p", "t1", "prepare_dataset-65b", "00:00.0", "00:04.5")
    _task(db, "p", "t2", "stage1-0", "00:05.0", "10:05.0")  # stands for the subflow below
    _task(db, "p", "t3", "features-0", "10:06.0", "10:20.0")
    _task(db, "p", "t4", "build_serving_stage1-232", "10:21.0", "10:21.003", state="Cached")
    db.execute(
        "INSERT INTO flow_run VALUES ('s', '2026-12-02 10:00:05', 'sub', 'Completed', NULL, NULL, '0', 'f-s', 't2')"
    )
    _task(db, "s", "s1", "embed_items-ad5", "00:05.0", "02:37.0")
    _task(db, "s", "s2", "tune_peers-080", "02:37.0", "10:04.0")
    db.execute(
        "INSERT INTO flow_run VALUES ('f', '2026-12-02 10:10:06', 'sub2', 'Completed', NULL, NULL, '0', 'f-f', 't3')"
    )
    _task(db, "f", "f1", "compute_serving_snapshots-c3c", "10:06.0", "10:16.0")
    _task(db, "f", "f2", "compute_serving_snapshots-ec4", "10:06.0", "10:12.0")
    db.commit()
    db.close()
    return path


def test_task_durations_walk_the_latest_run_and_its_subflows(tmp_path: Path) -> None:
    durations = task_durations(_prefect_db(tmp_path / "prefect.db"))
    assert durations["flow_run"]["name"] == "latest-run" and durations["flow_run"]["seconds"] == 1800.0
    tasks = durations["tasks"]
    assert list(tasks) == ["data/prepare_dataset", "stage1/embed_items", "stage1/tune_peers",
                           "features/compute_serving_snapshots", "serving_stage1/build_serving_stage1"]  # fmt: skip
    assert tasks["data/prepare_dataset"]["seconds"] == pytest.approx(4.5)
    assert tasks["stage1/embed_items"]["seconds"] == pytest.approx(152.0)
    assert tasks["stage1/tune_peers"]["seconds"] == pytest.approx(447.0)
    snapshots = tasks["features/compute_serving_snapshots"]
    assert snapshots["runs"] == 2 and snapshots["seconds"] == pytest.approx(16.0)
    assert snapshots["wall_seconds"] == pytest.approx(10.0)  # the two ran side by side
    assert tasks["serving_stage1/build_serving_stage1"]["cached"] is True
    assert not tasks["stage1/embed_items"]["cached"]


def test_task_durations_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        task_durations(tmp_path / "absent.db")
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).executescript(SCHEMA)
    with pytest.raises(LookupError):
        task_durations(empty)


# ---- the report ---------------------------------------------------------------------------------------------------


def _record(items: int, scale: float, cached_tune: bool = False) -> dict[str, Any]:
    c = Catalogue.scaled(items)
    tune = {"runs": 1, "seconds": 0.01 if cached_tune else 200.0 * scale, "cached": cached_tune}
    return {
        "catalogue": {"items": c.items, "users": c.users, "interactions": c.interactions},
        "state_dir": f"/s/{c.name}", "reused": True, "finished_at": "2026-12-02T14:41:37+00:00",
        "measured_with": {"code_fingerprint": "b71c7f9a0f214c7e", "commit": "01cb90dec137", "dirty": items > 20_000},
        "pipeline_seconds": 1000.0 * scale, "pipeline_peak_mb": 4000.0 * scale,
        "stage_seconds": {"data": 5.0 * scale, "stage1": 360.0 * scale, "reranker": 560.0 * scale**2,
                          "publish": 1.0},
        "stage_peak_mb": {"data": 1700.0, "stage1": 2600.0 * scale, "reranker": 4400.0, "publish": 2200.0},
        "prefect": {"tasks": {"stage1/tune_peers": tune, "reranker/train_reranker":
                              {"runs": 1, "seconds": 150.0 * scale**2, "cached": False}}},
    }  # fmt: skip


def _section(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"sizes": [r["catalogue"] for r in records], "failed_sizes": {"1000000": "RuntimeError: killed (OOM)"},
            "records": records, **analyse(records), "superlinear_above": 1.15, "too_short_seconds": 2.0,
            "settings": {"RECSYS_TRAIN_MAX_USERS": "800"}, "plot": "pipeline_cost.png"}  # fmt: skip


def _results(sections: dict[str, Any]) -> dict[str, Any]:
    machine = {"cpu_model": "cpu", "logical_cpus": 2, "usable_cpus": 2, "ram_gib": 8, "ram_available_gib_at_start": 4,
               "python": "3.11", "load_start": None, "versions": {k: "1" for k in ("faiss-cpu", "lightgbm", "torch",
               "lleaves", "llvmlite", "onnxruntime", "bentoml", "feast", "numpy")}}  # fmt: skip
    return {"command": "python -m bench.run --only pipeline", "started_at": "2026-01-01T00:00:00+00:00",
            "quick": False, "plan": {}, "machine": machine, "sections": sections, "durations": {},
            "total_seconds": 1.0}  # fmt: skip


def _pipeline_text(sections: dict[str, Any]) -> str:
    return render(_results(sections)).split("## 4b. Offline pipeline")[1].split("\n## ")[0]


def test_report_renders_the_cost_table_exponents_flags_and_plot() -> None:
    section = _section([_record(20_000, 1.0), _record(100_000, 5.0, cached_tune=True)])
    assert section["stages"]["reranker"]["flags"] == ["superlinear"]
    text = _pipeline_text({"pipeline": section})
    assert "20,000: reused from 2026-12-02T14:41:37+00:00 (commit 01cb90d, code b71c7f9a0f214c7e)" in text
    assert "100,000: reused from 2026-12-02T14:41:37+00:00 (commit 01cb90d+changes, code b71c7f9a0f214c7e)" in text
    assert "| stage (seconds · peak MB) | 20,000 items | 100,000 items |" in text
    assert "| stage1 | 360.0 s · 2,600 MB | 1,800.0 s · 13,000 MB |" in text
    assert "| **total** (whole process) | **1,000.0 s · 4,000 MB** | **5,000.0 s · 20,000 MB** |" in text
    assert "| reranker | 2.00 | 2.00 | 2.00 | 0.00 | **superlinear** | capped by RECSYS_TRAIN_MAX_USERS=800" in text
    assert "| stage1 | 1.00 | 1.00 | 1.00 | 1.00 | – |" in text
    assert "| **total** | 1.00 | 1.00 | 1.00 | 1.00 | – |  |" in text
    assert "| publish | 0.00 | 0.00 | 0.00 | 0.00 | too short to fit |" in text
    assert "| data | 1.00 | 1.00 | 1.00 | 0.00 | – |  |" in text
    assert "| `stage1/tune_peers` | 200.0 s | cached | – | cached at some size |" in text
    assert "| `reranker/train_reranker` | 150.0 s | 3,750.0 s | 2.00 | **superlinear** |" in text
    assert "**1,000,000 items failed:** `RuntimeError: killed (OOM)`" in text
    assert "![seconds per stage against items, log-log, dashed: slope 1](pipeline_cost.png)" in text


def test_a_bench_state_is_reused_only_when_built_by_this_code_for_these_sizes_and_settings() -> None:
    catalogue = Catalogue.scaled(20_000)
    marker = {"catalogue": {"items": catalogue.items, "users": catalogue.users, "interactions": catalogue.interactions},
              "settings": dict(CHEAP_SETTINGS)}  # fmt: skip
    this_code = {"code_fingerprint": code_fingerprint(), "commit": "0" * 40}
    assert why_not_reusable(marker, catalogue, this_code) is None
    assert "other code (0123456789abcdef" in str(
        why_not_reusable(marker, catalogue, {"code_fingerprint": "0123456789abcdef"})
    )
    assert "other code (None" in str(why_not_reusable(marker, catalogue, None))  # no evaluation report: unknown code
    assert why_not_reusable(None, catalogue, this_code) == "no finished bench run recorded"
    assert "sizes or settings" in str(why_not_reusable(marker, Catalogue.scaled(5_000), this_code))
    cheaper = {**marker, "settings": {**CHEAP_SETTINGS, "RECSYS_EVAL_MAX_USERS": "50"}}
    assert "sizes or settings" in str(why_not_reusable(cheaper, catalogue, this_code))


def test_report_renders_a_failed_or_skipped_pipeline_section() -> None:
    failed = _pipeline_text({"pipeline": {"error": "RuntimeError: no size could be measured"}})
    assert "**Failed:** `RuntimeError: no size could be measured`" in failed and "|" not in failed
    assert _pipeline_text({}).strip().endswith("Skipped.")


def test_plot_is_written(tmp_path: Path) -> None:
    analysis = analyse([_record(20_000, 1.0), _record(100_000, 5.0)])
    path = plot(analysis, tmp_path / "out" / "pipeline_cost.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_tree_rss_counts_a_live_process_and_nothing_for_an_ended_one() -> None:
    script = "import time; print('up', flush=True); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "up\n"  # the interpreter is loaded
        alone = tree_rss_bytes(child.pid)
        assert alone > 1_000_000  # a Python interpreter
        assert tree_rss_bytes(os.getpid()) >= alone  # this process plus its child
    finally:
        child.kill()
        child.wait()
        if child.stdout:
            child.stdout.close()
    assert tree_rss_bytes(child.pid) == 0


def test_item_item_fits_explain_superlinear_steps_until_their_cap():
    below = item_item_reasons([5_000, 10_000], {"RECSYS_ITEM_ITEM_MAX_ITEMS": "12000"})
    assert "stage1/tune_peers" in below and "serving_stage1" in below and "data" not in below
    assert "items^3" in below["stage1/tune_peers"][0] and "binding from" not in below["stage1/tune_peers"][0]
    above = item_item_reasons([20_000, 100_000], {"RECSYS_ITEM_ITEM_MAX_ITEMS": "12000"})
    assert "binding from 20,000 items on" in above["serving_stage1"][0]
