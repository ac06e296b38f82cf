"""``python -m bench.run`` (``make bench``): run the benchmark sections, write BENCHMARKS.md and bench.json.

Sections: ``ann`` (stage-1 FAISS at 100 k and 1 M synthetic vectors), ``features`` (feature assembly for 500
candidates), ``scoring`` (LightGBM vs lleaves), ``embedding`` (text encoder backends), ``pipeline`` (wall time and
peak memory of each offline pipeline stage at 20 k and 100 k items, growth exponents; builds the bench states the
next sections reuse; ``--pipeline-sizes`` adds e.g. 1 M), ``e2e`` (HTTP load test of ``bentoml serve`` on a
100 k-item catalogue), ``memory`` (resident memory of each server worker with the version memory-mapped vs read into
each worker; same catalogue), ``live`` (``POST /events`` throughput, freshness of a purchase on both workers,
``/recommend`` while events arrive; same server and catalogue as ``e2e``). ``--quick`` shrinks every section (ANN at
100 k only, a 5 k-item catalogue, short load runs); ``--skip``/``--only`` pick sections. Output: ``<state>/bench/``
(state from ``RECSYS_STATE_DIR``, default ``.state``), or ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss  # noqa: F401 - FAISS before torch (see STACK.md); torch comes in with the embedding section

from bench.common import load_reading, log
from bench.machine import describe_machine
from bench.pipeline_cost import QUICK_SCALES, SCALES, parse_sizes
from bench.report import render
from bench.state import FULL, QUICK, Catalogue, ensure_state
from models.settings import Settings
from serving.state import champion_pointer

SECTIONS = ("ann", "features", "scoring", "embedding", "pipeline", "e2e", "memory", "live")
ALIASES = {"http": "e2e", "model": "scoring", "embeddings": "embedding", "stage1": "ann", "events": "live",
           "freshness": "live", "mmap": "memory", "rss": "memory",
           "cost": "pipeline", "offline": "pipeline"}  # fmt: skip


@dataclass(frozen=True)
class Plan:
    ann_sizes: tuple[int, ...]
    ann_eval_queries: int
    ann_repeats: int
    fixture_users: int
    embed_texts: int
    embed_queries: int
    e2e_duration: float
    e2e_baseline_duration: float
    e2e_warmup: float
    e2e_in_process_users: int
    live_batch1_requests: int
    live_batch100_requests: int
    live_trials: int
    live_duration: float
    pipeline_sizes: tuple[int, ...] = SCALES


FULL_PLAN = Plan((100_000, 1_000_000), 300, 5, 100, 2000, 100, 45.0, 20.0, 5.0, 300, 200, 50, 30, 20.0)
QUICK_PLAN = Plan((100_000,), 200, 3, 40, 500, 50, 10.0, 5.0, 3.0, 100, 60, 15, 10, 8.0, pipeline_sizes=QUICK_SCALES)


def _sections(values: list[str] | None) -> set[str]:
    chosen: set[str] = set()
    for value in values or []:
        for name in value.split(","):
            name = ALIASES.get(name.strip(), name.strip())
            if not name:
                continue
            if name not in SECTIONS:
                raise SystemExit(f"unknown section '{name}'; sections: {', '.join(SECTIONS)}")
            chosen.add(name)
    return chosen


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and shorter runs (a few minutes)")
    parser.add_argument(
        "--skip", action="append", metavar="SECTIONS", help=f"comma-separated, of {', '.join(SECTIONS)}"
    )
    parser.add_argument("--only", action="append", metavar="SECTIONS", help="run only these sections")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default <state>/bench)")
    parser.add_argument("--version-dir", type=Path, default=None,
                        help="published version for sections 2-3 (default <state>/versions/current, else the bench state's)")  # fmt: skip
    parser.add_argument("--ann-sizes", default=None, help="comma-separated N for section 1, e.g. 100000,1000000")
    parser.add_argument("--pipeline-sizes", default=None,
                        help="comma-separated items for the pipeline section, e.g. 20000,100000,1000000 (users and "
                             "interactions by the demo's ratios; each new size runs the whole pipeline once)")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=2,
                        help="requests in flight in sections 5 and 6 (default 2: one per core and server worker)")  # fmt: skip
    parser.add_argument("--duration", type=float, default=None, help="seconds measured at that concurrency")
    parser.add_argument("--rebuild-state", action="store_true", help="re-run the pipeline for the bench state")
    parser.add_argument("--any-state-code", action="store_true",
                        help="serve a bench state built by other library code instead of rebuilding it (the report "
                             "names the code that built it): for serving-code changes")  # fmt: skip
    parser.add_argument("--serve-items", type=int, default=None,
                        help="catalogue size of the bench state sections 5-7 serve (default 100000, --quick 5000; "
                             "e.g. 1000000 after --pipeline-sizes built it)")  # fmt: skip
    return parser.parse_args(argv)


class Bench:
    def __init__(self, args: argparse.Namespace, argv: list[str]):
        self.args = args
        self.settings = Settings()
        self.plan = QUICK_PLAN if args.quick else FULL_PLAN
        if args.ann_sizes:
            self.plan = replace(self.plan, ann_sizes=tuple(int(v) for v in args.ann_sizes.split(",")))
        if args.pipeline_sizes:
            self.plan = replace(self.plan, pipeline_sizes=parse_sizes(args.pipeline_sizes))
        if args.duration:
            self.plan = replace(self.plan, e2e_duration=args.duration)
        self.out_dir = (args.out or self.settings.state_dir / "bench").resolve()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.started = time.perf_counter()
        self.results: dict[str, Any] = {
            "command": " ".join(["python -m bench.run", *argv]).strip(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "quick": bool(args.quick),
            "plan": dict(self.plan.__dict__),
            "machine": describe_machine(),
            "sections": {},
            "durations": {},
            "total_seconds": 0.0,
        }
        self._state: tuple[Path, dict[str, Any]] | None = None
        self._measured_states: set[str] = set()  # built or checked by the pipeline section: not rebuilt again
        self._fixture: Any = None

    # ---- shared set-up -----------------------------------------------------------------------------------------
    def bench_state(self) -> Path:
        if self._state is None:
            started = time.perf_counter()
            catalogue = QUICK if self.args.quick else FULL
            if self.args.serve_items:
                catalogue = Catalogue.scaled(self.args.serve_items)
            try:
                rebuild = self.args.rebuild_state and catalogue.name not in self._measured_states
                self._state = ensure_state(catalogue, root=self.out_dir, rebuild=rebuild,
                                           any_code=self.args.any_state_code)  # fmt: skip
            finally:
                self.results["durations"]["bench_state"] = {
                    "seconds": round(time.perf_counter() - started, 1),
                    "status": "ok" if self._state else "failed",
                }
            self.results["bench_state"] = self._state[1]
        return self._state[0]

    def fixture(self) -> Any:
        if self._fixture is None:
            from bench.serving import find_version, load_fixture

            version_dir = self.args.version_dir
            source = "--version-dir"
            if version_dir is None:
                version_dir = find_version(self.settings)
                source = f"{version_dir} (the main state folder's champion)"
            if version_dir is None:
                version_dir = champion_pointer(self.bench_state()).resolve()
                source = "the bench state (no version published under the main state folder)"
            started = time.perf_counter()
            self._fixture = load_fixture(Path(version_dir), self.plan.fixture_users)
            self.results["fixture"] = {**self._fixture.describe(), "source": source,
                                       "prepare_seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
        return self._fixture

    # ---- sections ----------------------------------------------------------------------------------------------
    def ann(self) -> dict[str, Any]:
        from bench.ann import AnnConfig, run_ann

        config = AnnConfig(
            sizes=self.plan.ann_sizes, eval_queries=self.plan.ann_eval_queries, repeats=self.plan.ann_repeats
        )
        return run_ann(config)

    def features(self) -> dict[str, Any]:
        from bench.features import run_features

        return run_features(self.fixture())

    def scoring(self) -> dict[str, Any]:
        from bench.scoring import run_scoring

        return run_scoring(self.fixture())

    def embedding(self) -> dict[str, Any]:
        from bench.embedding import run_embedding

        return run_embedding(texts=self.plan.embed_texts, queries=self.plan.embed_queries,
                             cache_dir=self.settings.cache_dir)  # fmt: skip

    def pipeline(self) -> dict[str, Any]:
        from bench.pipeline_cost import run_pipeline_cost

        result = run_pipeline_cost(self.plan.pipeline_sizes, root=self.out_dir, rebuild=self.args.rebuild_state,
                                   out_dir=self.out_dir)  # fmt: skip
        self._measured_states.update(Path(r["state_dir"]).name for r in result["records"])
        return result

    def e2e(self) -> dict[str, Any]:
        from bench.e2e import run_e2e

        state_dir = self.bench_state()
        self._fixture = None  # free the loaded version before the server takes the CPU and memory
        return run_e2e(state_dir, self.out_dir / "e2e", concurrency=self.args.concurrency,
                       duration=self.plan.e2e_duration, baseline_duration=self.plan.e2e_baseline_duration,
                       warmup=self.plan.e2e_warmup, in_process_users=self.plan.e2e_in_process_users)  # fmt: skip

    def memory(self) -> dict[str, Any]:
        from bench.memory import run_memory

        state_dir = self.bench_state()
        self._fixture = None  # free the loaded version: this process is not measured, but it shares the memory
        return run_memory(state_dir, self.out_dir / "memory", workers=os.cpu_count() or 2)

    def live(self) -> dict[str, Any]:
        from bench.live import LivePlan, run_live

        state_dir = self.bench_state()
        self._fixture = None
        plan = LivePlan(batch1_requests=self.plan.live_batch1_requests,
                        batch100_requests=self.plan.live_batch100_requests, trials=self.plan.live_trials,
                        duration=self.plan.live_duration, warmup=self.plan.e2e_warmup,
                        concurrency=self.args.concurrency)  # fmt: skip
        return run_live(state_dir, self.out_dir / "live", plan)

    # ---- driver ------------------------------------------------------------------------------------------------
    def run(self) -> int:
        only, skip = _sections(self.args.only), _sections(self.args.skip)
        chosen = [s for s in SECTIONS if (not only or s in only) and s not in skip]
        m = self.results["machine"]
        log(f"machine: {m['cpu_model']}, {m['usable_cpus']} cores, {m['ram_gib']} GiB, load {m['load_start']}")
        log(f"sections: {', '.join(chosen)}{' (quick)' if self.args.quick else ''}; output {self.out_dir}")
        failures = 0
        for name in chosen:
            runner: Callable[[], dict[str, Any]] = getattr(self, name)
            started = time.perf_counter()
            log(f"=== section {name} ===")
            try:
                self.results["sections"][name] = runner()
                status = "ok"
            except Exception as error:  # noqa: BLE001 - report the failure, keep the other sections
                failures += 1
                traceback.print_exc()
                self.results["sections"][name] = {"error": f"{type(error).__name__}: {str(error)[:2000]}"}
                status = "failed"
            seconds = time.perf_counter() - started
            self.results["durations"][name] = {"seconds": round(seconds, 1), "status": status}
            log(f"=== section {name}: {status} in {seconds:.0f} s ===")
            self.write()
        self.write()
        log(f"done in {self.results['total_seconds']:.0f} s: {self.out_dir / 'BENCHMARKS.md'}")
        return 1 if failures else 0

    def write(self) -> None:
        self.results["total_seconds"] = round(time.perf_counter() - self.started, 1)
        self.results["load_end"] = load_reading()
        (self.out_dir / "bench.json").write_text(json.dumps(_clean(self.results), indent=2) + "\n")
        (self.out_dir / "BENCHMARKS.md").write_text(render(self.results))


def _clean(value: Any) -> Any:
    """JSON without NaN/inf (null instead)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return Bench(parse_args(argv), argv).run()


if __name__ == "__main__":
    raise SystemExit(main())
