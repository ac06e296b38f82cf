"""Section 2: assembling the ranker's feature matrix for 500 candidates, model excluded.

Measured: what ``Recommender.recommend`` times as ``features`` — the item block from the in-memory snapshot table
(``StaticItemFeatures.block``) plus ``Recommender.feature_matrix`` (user row, cross features, provenance).
Baseline: the same, with the 500 items' stored features read per request from the Feast online store
(``online_item_features``) instead of the in-memory table. Both get the same user row and stage-1 output.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.common import load_reading, log, ratio, timed_calls
from bench.serving import CANDIDATES, Prepared, ServingFixture
from models.features.assembly import ItemBlock
from models.features.store import online_item_features

GOAL_P99_MS = 2.0


def run_features(fixture: ServingFixture, repeats: int = 5, store_repeats: int = 2) -> dict[str, Any]:
    recommender = fixture.recommender
    requests = fixture.prepared
    out: dict[str, Any] = {
        "goal": f"p99 <= {GOAL_P99_MS} ms for {CANDIDATES} candidates, excluding the model",
        "candidates": CANDIDATES,
        "load_start": load_reading(),
    }

    def in_memory(p: Prepared) -> np.ndarray:
        block = recommender.item_features.block(p.retrieval.rows, p.request.as_of)
        return recommender.feature_matrix(p.request, p.retrieval, p.user, block)

    def store_block(p: Prepared) -> ItemBlock:
        frame = online_item_features(fixture.store, p.retrieval.candidates.item_ids.tolist())
        return ItemBlock.from_frame(frame)

    def from_store(p: Prepared) -> np.ndarray:
        return recommender.feature_matrix(p.request, p.retrieval, p.user, store_block(p))

    # the two paths must build the same matrix (the online store holds the snapshot the table was written from)
    diffs = []
    for p in requests[:10]:
        a, b = in_memory(p), from_store(p)
        same_nan = np.array_equal(np.isnan(a), np.isnan(b))
        diffs.append(float(np.nanmax(np.abs(a - b))) if same_nan else float("inf"))
    out["max_abs_diff_memory_vs_store"] = max(diffs)

    log(f"features: in-memory table, {len(requests)} requests x {repeats} passes")
    in_memory(requests[0])
    wall, cpu, raw = timed_calls(in_memory, requests, repeats)
    out["in_memory"] = {"wall": wall, "cpu": cpu, "raw": raw}

    log(f"features: Feast online store read per request, {len(requests)} requests x {store_repeats} passes")
    from_store(requests[0])
    s_wall, s_cpu, s_raw = timed_calls(from_store, requests, store_repeats)
    out["store"] = {"wall": s_wall, "cpu": s_cpu, "raw": s_raw}
    r_wall, r_cpu, _ = timed_calls(store_block, requests[: max(20, len(requests) // 2)], 1)
    out["store_read_only"] = {"wall": r_wall, "cpu": r_cpu}

    out["speedup_p50"] = ratio(s_wall["p50_ms"], wall["p50_ms"], 1)
    out["speedup_p99"] = ratio(s_wall["p99_ms"], wall["p99_ms"], 1)
    out["meets_goal_wall"] = bool(wall["p99_ms"] <= GOAL_P99_MS)
    out["meets_goal_cpu"] = bool(cpu["p99_ms"] <= GOAL_P99_MS)
    out["load_end"] = load_reading()
    log(
        f"features: in-memory p50 {wall['p50_ms']:.3f} ms p99 {wall['p99_ms']:.3f} ms; "
        f"store p50 {s_wall['p50_ms']:.2f} ms p99 {s_wall['p99_ms']:.2f} ms"
    )
    return out
