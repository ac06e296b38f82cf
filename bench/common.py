"""Small shared helpers: progress printing, percentiles, timers, load readings."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

_T0 = time.perf_counter()


def log(message: str) -> None:
    """Progress line with the elapsed time since the bench started (stdout, flushed)."""
    elapsed = time.perf_counter() - _T0
    print(f"[bench {elapsed:7.1f}s] {message}", file=sys.stdout, flush=True)


def pct(values: Sequence[float] | np.ndarray, q: float) -> float:
    """Percentile ``q`` (0–100) with linear interpolation; NaN for an empty sample."""
    array = np.asarray(values, dtype=np.float64)
    return float(np.percentile(array, q)) if array.size else float("nan")


def summary_ms(seconds: Sequence[float] | np.ndarray) -> dict[str, float]:
    """p50/p90/p99/mean/max in milliseconds of a sample of durations in seconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {
        "n": int(ms.size),
        "p50_ms": round(pct(ms, 50), 4),
        "p90_ms": round(pct(ms, 90), 4),
        "p99_ms": round(pct(ms, 99), 4),
        "mean_ms": round(float(ms.mean()) if ms.size else float("nan"), 4),
        "max_ms": round(float(ms.max()) if ms.size else float("nan"), 4),
    }


def timed_calls(
    call: Callable[[Any], object], arguments: Sequence[Any], repeats: int
) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
    """Time ``call(a)`` for every argument, ``repeats`` passes; per pass p50/p99 of wall-clock and of this thread's
    CPU time (``time.thread_time``); return the medians over passes (wall, cpu) and the raw per-pass figures.

    Wall-clock minus CPU time is time spent waiting: other jobs on the CPU, page faults, I/O.
    """
    passes: list[dict[str, float]] = []
    for _ in range(repeats):
        wall = np.empty(len(arguments))
        cpu = np.empty(len(arguments))
        for i, argument in enumerate(arguments):
            c0 = time.thread_time()
            t0 = time.perf_counter()
            call(argument)
            wall[i] = time.perf_counter() - t0
            cpu[i] = time.thread_time() - c0
        passes.append(
            {
                "wall_p50_ms": pct(wall, 50) * 1000,
                "wall_p99_ms": pct(wall, 99) * 1000,
                "cpu_p50_ms": pct(cpu, 50) * 1000,
                "cpu_p99_ms": pct(cpu, 99) * 1000,
                "wall_mean_ms": float(wall.mean()) * 1000,
            }
        )
    med = {k: round(float(np.median([p[k] for p in passes])), 4) for k in passes[0]}
    wall_summary = {"p50_ms": med["wall_p50_ms"], "p99_ms": med["wall_p99_ms"], "mean_ms": med["wall_mean_ms"]}
    cpu_summary = {"p50_ms": med["cpu_p50_ms"], "p99_ms": med["cpu_p99_ms"]}
    raw = {
        "calls_per_pass": len(arguments),
        "passes": repeats,
        "per_pass": [{k: round(v, 4) for k, v in p.items()} for p in passes],
    }
    return wall_summary, cpu_summary, raw


def load_reading() -> dict[str, Any]:
    """1/5/15-minute load averages and, where the kernel offers it, CPU pressure (PSI: share of time some task
    waited for a CPU over the last 10 s)."""
    one, five, fifteen = os.getloadavg()
    reading: dict[str, Any] = {"loadavg": [round(one, 2), round(five, 2), round(fifteen, 2)]}
    psi = Path("/proc/pressure/cpu")
    try:
        line = psi.read_text().splitlines()[0]  # "some avg10=1.23 avg60=... avg300=... total=..."
        fields = dict(part.split("=") for part in line.split()[1:])
        reading["cpu_pressure_some_avg10"] = float(fields["avg10"])
    except (OSError, KeyError, ValueError, IndexError):
        pass
    return reading


def ratio(numerator: float, denominator: float, digits: int = 2) -> float:
    if not denominator or np.isnan(denominator) or np.isnan(numerator):
        return float("nan")
    return round(numerator / denominator, digits)


def rounded(values: Iterable[float], digits: int = 4) -> list[float]:
    return [round(float(v), digits) for v in values]
