"""Section 3: scoring 500 candidates with the published ranker, one thread.

Baseline: LightGBM ``Booster.predict(num_threads=1)`` through ``Ranker.predict`` (what the service calls).
Candidate: lleaves (the same model file compiled to native code with LLVM), ``predict(X, n_jobs=1)``. lleaves is
only reported as usable if its scores match LightGBM's on every benchmarked request.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench.common import load_reading, log, ratio, timed_calls
from bench.machine import package_version
from bench.serving import CANDIDATES, ServingFixture

GOAL_P99_MS = 3.0
MATCH_TOLERANCE = 1e-6
"""Largest acceptable |lleaves − LightGBM| per score (both sum the same float64 leaf values)."""


def run_scoring(fixture: ServingFixture, repeats: int = 5) -> dict[str, Any]:
    ranker = fixture.recommender.ranker
    assert ranker is not None
    matrices = [p.features for p in fixture.prepared]
    out: dict[str, Any] = {
        "goal": f"p99 <= {GOAL_P99_MS} ms for {CANDIDATES} candidates, one thread",
        "candidates": CANDIDATES,
        "model_file": str(fixture.ranker_file),
        "load_start": load_reading(),
    }

    def lightgbm(x: np.ndarray) -> np.ndarray:
        return ranker.predict(x, threads=1)

    log(f"scoring: LightGBM Booster.predict(num_threads=1), {len(matrices)} requests x {repeats} passes")
    lightgbm(matrices[0])
    wall, cpu, raw = timed_calls(lightgbm, matrices, repeats)
    out["lightgbm"] = {"wall": wall, "cpu": cpu, "raw": raw}

    try:
        import lleaves
    except ImportError as error:  # pragma: no cover - lleaves is in the lock
        out["lleaves"] = {"available": False, "reason": str(error)}
        return out
    from bench.lleaves_compat import patch_lleaves

    patched = patch_lleaves()
    log(
        "scoring: compiling the ranker with lleaves"
        + (" (new-pass-manager shim, see bench/lleaves_compat.py)" if patched else "")
    )
    started = time.perf_counter()
    model = lleaves.Model(model_file=str(fixture.ranker_file))
    model.compile()
    compile_seconds = time.perf_counter() - started
    diffs = [float(np.max(np.abs(model.predict(x, n_jobs=1) - lightgbm(x)))) for x in matrices]
    max_diff = max(diffs)
    matches = bool(max_diff <= MATCH_TOLERANCE)
    section: dict[str, Any] = {
        "available": True,
        "version": package_version("lleaves"),
        "llvmlite": package_version("llvmlite"),
        "patched_for_llvmlite": patched,
        "compile_seconds": round(compile_seconds, 2),
        "max_abs_diff_vs_lightgbm": max_diff,
        "matches": matches,
        "tolerance": MATCH_TOLERANCE,
    }

    def compiled(x: np.ndarray) -> np.ndarray:
        return model.predict(x, n_jobs=1)

    log(f"scoring: lleaves predict(n_jobs=1), {len(matrices)} requests x {repeats} passes (max |diff| {max_diff:.2e})")
    compiled(matrices[0])
    l_wall, l_cpu, l_raw = timed_calls(compiled, matrices, repeats)
    section.update({"wall": l_wall, "cpu": l_cpu, "raw": l_raw})
    section["speedup_p50"] = ratio(wall["p50_ms"], l_wall["p50_ms"], 1)
    section["speedup_p99"] = ratio(wall["p99_ms"], l_wall["p99_ms"], 1)
    section["keep"] = matches
    out["lleaves"] = section
    out["meets_goal_lightgbm"] = bool(wall["p99_ms"] <= GOAL_P99_MS)
    out["meets_goal_lleaves"] = bool(matches and l_wall["p99_ms"] <= GOAL_P99_MS)
    out["load_end"] = load_reading()
    log(
        f"scoring: LightGBM p50 {wall['p50_ms']:.3f} ms p99 {wall['p99_ms']:.3f} ms; lleaves p50 "
        f"{l_wall['p50_ms']:.3f} ms p99 {l_wall['p99_ms']:.3f} ms, compile {compile_seconds:.1f} s, matches {matches}"
    )
    return out
