"""The benchmark package measures what it claims: a small ANN section end to end, the report, the CPU accounting."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.ann import AnnConfig, run_ann
from bench.common import summary_ms, timed_calls
from bench.e2e import tree_cpu_seconds
from bench.machine import describe_machine
from bench.report import render


def test_ann_section_reaches_target_recall_and_beats_exact() -> None:
    config = AnnConfig(sizes=(20_000,), tune_queries=60, eval_queries=60, repeats=1, exact_repeats=1)
    result = run_ann(config)["sizes"]["20000"]
    assert result["factory"].startswith("IVF") and result["search_param"] == "nprobe"
    assert result["recall"] >= 0.93  # tuned to 0.95 on the tuning queries; evaluation queries are fresh draws
    assert result["ann"]["cpu"]["p50_ms"] < result["exact"]["cpu"]["p50_ms"]
    assert result["geometry"]["cos_same_cluster_pair_mean"] > result["geometry"]["cos_random_pair_mean"]


def test_report_renders_the_sections_that_ran() -> None:
    config = AnnConfig(sizes=(20_000,), tune_queries=30, eval_queries=30, repeats=1, exact_repeats=1)
    results = {
        "command": "python -m bench.run --only ann", "started_at": "2026-01-01T00:00:00+00:00", "quick": True,
        "plan": {}, "machine": describe_machine(), "sections": {"ann": run_ann(config)},
        "durations": {"ann": {"seconds": 1.0, "status": "ok"}}, "total_seconds": 1.0,
    }  # fmt: skip
    text = render(results)
    assert "## 1. Stage-1 ANN" in text and "N = 20,000" in text
    end_to_end = text.split("## 5. End to end")[1]
    assert end_to_end.split("##")[0].strip().endswith("Skipped.")  # a section that did not run says so


def test_timers_and_cpu_accounting() -> None:
    wall, cpu, raw = timed_calls(lambda seconds: time.sleep(seconds), [0.002] * 5, repeats=2)
    assert wall["p50_ms"] >= 2.0 and cpu["p50_ms"] < 1.0  # sleeping takes wall time, not CPU time
    assert raw["passes"] == 2 and summary_ms([0.001, 0.003])["p50_ms"] == 2.0
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass"])
    try:
        time.sleep(1.2)
        assert tree_cpu_seconds(os.getpid()) >= 0.8  # the busy child counts towards its parent's tree
    finally:
        busy.wait()
