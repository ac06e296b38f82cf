"""Section 1: stage-1 ANN at N vectors, d = 384, k = 500, one thread, one query at a time.

For each N: build with ``VectorIndex.build`` (factory from ``choose_factory``), tune with ``VectorIndex.tune``
against ``exact_search`` on tuning queries, then on separate evaluation queries measure recall@500 and per-query
latency of ``VectorIndex.search_rows`` (what the serving sources call) next to exact ``IndexFlatIP`` search.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import faiss
import numpy as np

from bench.common import load_reading, log, ratio, timed_calls
from bench.synthetic import ClusteredSphere, MixtureSpec, describe_geometry
from models.retrieval.indexes import VectorIndex, ann_recall, choose_factory, exact_search, search_param_name

K = 500
TARGET_RECALL = 0.95
GOAL_P99_MS = 5.0
DIM = 384


@dataclass(frozen=True)
class AnnConfig:
    sizes: tuple[int, ...] = (100_000, 1_000_000)
    tune_queries: int = 200
    eval_queries: int = 300
    repeats: int = 5
    exact_queries: dict[int, int] | None = None
    """Queries timed with exact search per N (default: 100 up to 100 k, 30 above: ~100 ms each at 1 M)."""
    exact_repeats: int = 3
    build_threads: int = 2

    def exact_count(self, n: int) -> int:
        if self.exact_queries and n in self.exact_queries:
            return self.exact_queries[n]
        return 100 if n <= 200_000 else 30


def run_ann(config: AnnConfig, seed: int = 7) -> dict[str, Any]:
    spec = MixtureSpec(dim=DIM)
    results: dict[str, Any] = {
        "k": K,
        "target_recall": TARGET_RECALL,
        "goal": f"at 1M: p99 <= {GOAL_P99_MS} ms at recall@{K} >= {TARGET_RECALL}, one thread, batch 1",
        "generator": spec.describe(),
        "sizes": {},
    }
    for n in config.sizes:
        started = time.perf_counter()
        results["sizes"][str(n)] = _one_size(n, spec, config, seed)
        results["sizes"][str(n)]["section_seconds"] = round(time.perf_counter() - started, 1)
        gc.collect()
    return results


def _one_size(n: int, spec: MixtureSpec, config: AnnConfig, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n": n, "load_start": load_reading()}
    faiss.omp_set_num_threads(config.build_threads)
    log(f"ANN N={n:,}: generating clustered vectors ({spec.clusters_for(n)} clusters)")
    t0 = time.perf_counter()
    mixture = ClusteredSphere(spec.clusters_for(n), spec, seed=seed)
    vectors, clusters = mixture.sample(n, seed=seed + 1)
    queries, _ = mixture.sample(config.tune_queries + config.eval_queries, seed=seed + 2)
    tune_q, eval_q = queries[: config.tune_queries], queries[config.tune_queries :]
    out["generate_seconds"] = round(time.perf_counter() - t0, 1)
    out["clusters"] = mixture.n_clusters
    out["geometry"] = describe_geometry(vectors, clusters, mixture.centres)
    del clusters

    log(f"ANN N={n:,}: exact top-{K} ground truth for {len(queries)} queries")
    t0 = time.perf_counter()
    truth = exact_search(vectors, queries, K)
    out["ground_truth_seconds"] = round(time.perf_counter() - t0, 1)
    truth_tune, truth_eval = truth[: config.tune_queries], truth[config.tune_queries :]

    factory = choose_factory(n, DIM)
    log(f"ANN N={n:,}: building {factory} with VectorIndex.build ({config.build_threads} threads)")
    item_ids = np.arange(n).astype(str)
    index = VectorIndex.build(vectors, item_ids, factory)
    out["factory"] = factory
    out["build_seconds"] = round(index.build_seconds, 2)
    out["index_bytes"] = int(faiss.serialize_index(index.index).nbytes)
    t0 = time.perf_counter()
    tuned_recall = index.tune(tune_q, truth_tune, K, TARGET_RECALL)
    out["tune_seconds"] = round(time.perf_counter() - t0, 1)
    param = search_param_name(index.index)
    out["search_param"] = param
    out["tuned_value"] = index.params.get(param) if param else None
    out["recall_tune_queries"] = round(tuned_recall, 4)

    faiss.omp_set_num_threads(1)
    eval_rows = [np.ascontiguousarray(eval_q[i : i + 1]) for i in range(len(eval_q))]
    found = np.vstack([index.search_rows(q, K)[1] for q in eval_rows])
    out["recall"] = round(ann_recall(found, truth_eval), 4)
    log(
        f"ANN N={n:,}: {param}={out['tuned_value']} recall@{K} {out['recall']:.4f} (eval queries); timing "
        f"{len(eval_rows)} queries x {config.repeats} passes, one thread"
    )
    search = partial(index.search_rows, k=K)
    search(eval_rows[0])  # warm
    wall, cpu, raw = timed_calls(search, eval_rows, config.repeats)
    out["ann"] = {"wall": wall, "cpu": cpu, "raw": raw}

    # a few neighbouring settings of the search parameter: the recall/latency trade-off around the tuned one
    out["sweep"] = _sweep(index, eval_rows, truth_eval, param, out["tuned_value"])
    if param and out["tuned_value"] is not None:
        index.set_search_param(out["tuned_value"])

    del index, search
    gc.collect()
    log(f"ANN N={n:,}: exact IndexFlatIP baseline, {config.exact_count(n)} queries x {config.exact_repeats} passes")
    flat = faiss.IndexFlatIP(DIM)
    flat.add(vectors)
    del vectors
    gc.collect()
    exact_rows = eval_rows[: config.exact_count(n)]
    exact = partial(flat.search, k=K)
    exact(exact_rows[0])
    e_wall, e_cpu, e_raw = timed_calls(exact, exact_rows, config.exact_repeats)
    out["exact"] = {"wall": e_wall, "cpu": e_cpu, "raw": e_raw, "index_bytes": int(flat.ntotal) * DIM * 4}
    del flat, exact
    gc.collect()
    faiss.omp_set_num_threads(config.build_threads)
    out["speedup_p50"] = ratio(e_wall["p50_ms"], wall["p50_ms"], 1)
    out["speedup_p99"] = ratio(e_wall["p99_ms"], wall["p99_ms"], 1)
    out["meets_goal_wall"] = bool(wall["p99_ms"] <= GOAL_P99_MS and out["recall"] >= TARGET_RECALL)
    out["meets_goal_cpu"] = bool(cpu["p99_ms"] <= GOAL_P99_MS and out["recall"] >= TARGET_RECALL)
    out["load_end"] = load_reading()
    log(
        f"ANN N={n:,}: ANN p50 {wall['p50_ms']:.3f} ms p99 {wall['p99_ms']:.3f} ms (cpu p99 {cpu['p99_ms']:.3f}); "
        f"exact p50 {e_wall['p50_ms']:.2f} ms p99 {e_wall['p99_ms']:.2f} ms"
    )
    return out


def _sweep(
    index: VectorIndex, rows: list[np.ndarray], truth: np.ndarray, param: str | None, tuned: int | None
) -> list[dict[str, Any]]:
    if param != "nprobe" or tuned is None:
        return []
    ivf = faiss.extract_index_ivf(index.index)
    values = sorted({max(1, tuned // 2), max(1, round(tuned * 0.75)), tuned, round(tuned * 1.5), tuned * 2})
    values = [v for v in values if v <= ivf.nlist]
    sweep = []
    for value in values:
        index.set_search_param(value)
        found = np.vstack([index.search_rows(q, K)[1] for q in rows])
        wall, cpu, _ = timed_calls(partial(index.search_rows, k=K), rows, 3)
        sweep.append({param: value, "recall": round(ann_recall(found, truth), 4), "wall": wall, "cpu": cpu})
    return sweep
