"""Section 5: end to end over HTTP against ``bentoml serve`` (scripts/serve.sh) on localhost.

The load comes from a second process (``bench.loadgen``). Measured: fixed concurrency (2 in flight: one per
core and server worker) after a warm-up, then 8 in flight as the saturation point. Baselines in the same run: the same requests one at a time (concurrency 1), and the in-process
``Runtime.recommend`` (online user features + ``Recommender.recommend``) without HTTP, measured before the server
starts so the two never share the CPU. The stage budget comes from the responses' ``timings_ms``; HTTP overhead
is client latency minus the sum of the stages, per request.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import load_reading, log, pct, ratio, timed_calls
from models.settings import PROJECT_ROOT, Settings
from serving.state import champion_pointer

STAGES = ("user_features", "retrieval", "features", "model", "rules")
GOALS = {"p50_ms": 10.0, "p99_ms": 25.0, "rps": 150.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def known_users(state_dir: Path, count: int, seed: int = 5) -> list[str]:
    """Users the published version was trained on (their features are in the online store)."""
    users = np.load(champion_pointer(state_dir) / "stage1" / "ials" / "user_ids.npy", allow_pickle=False)
    rng = np.random.default_rng(seed)
    return [str(u) for u in rng.choice(users, size=min(count, len(users)), replace=False)]


def write_users(state_dir: Path, out_dir: Path, count: int) -> tuple[list[str], Path]:
    """``known_users`` written where the load generator (another process) reads them."""
    ids = known_users(state_dir, count)
    out_dir.mkdir(parents=True, exist_ok=True)
    users_file = out_dir / "loadgen-users.json"
    users_file.write_text(json.dumps(ids))
    return ids, users_file


def in_process_baseline(state_dir: Path, users: list[str], repeats: int = 2) -> dict[str, Any]:
    """``Runtime.recommend`` as the service calls it, one thread, no HTTP."""
    import faiss

    from models.ranking.rules import Filters
    from serving.runtime import Runtime

    faiss.omp_set_num_threads(1)
    runtime = Runtime(Settings(state_dir=state_dir))
    runtime.start(load_encoder=False)
    stage_rows: list[dict[str, float]] = []

    def call(user: str) -> None:
        _, result = runtime.recommend(user, 10, Filters(), True, False)
        stage_rows.append(result.timings_ms)

    for user in users[:20]:
        call(user)
    stage_rows.clear()
    wall, cpu, raw = timed_calls(call, users, repeats)
    runtime.close()
    return {"wall": wall, "cpu": cpu, "raw": raw, "stages_median_ms": _stage_medians(stage_rows)}


def in_process_subprocess(
    state_dir: Path, users_file: Path, out_file: Path, count: int, repeats: int = 2
) -> dict[str, Any]:
    """``in_process_baseline`` in a fresh process (not in the bench's, whose heap and thread pools earlier sections
    have shaped), with the same environment the server gets."""
    command = [sys.executable, "-m", "bench.e2e", "--state", str(state_dir), "--users", str(users_file),
               "--count", str(count), "--repeats", str(repeats), "--out", str(out_file)]  # fmt: skip
    completed = subprocess.run(command, cwd=PROJECT_ROOT, env=server_env(state_dir), capture_output=True, text=True,
                               timeout=1800)  # fmt: skip
    if completed.returncode != 0:
        raise RuntimeError(f"in-process baseline failed:\n{completed.stderr[-3000:]}")
    return dict(json.loads(out_file.read_text()))


ADMIN_TOKEN = secrets.token_urlsafe(16)
"""The admin token of the servers a benchmark starts (``/events``, ``/items`` and ``/reload`` need it)."""
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def server_env(state_dir: Path) -> dict[str, str]:
    """The parent's environment without RECSYS_* / BENTOML_HOME, pointed at ``state_dir``, with this run's token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_") and k != "BENTOML_HOME"}
    env.update({"RECSYS_STATE_DIR": str(state_dir), "BENTOML_HOME": str(state_dir / "bentoml"), "HF_HUB_OFFLINE": "1",
                "RECSYS_ADMIN_TOKEN": ADMIN_TOKEN})  # fmt: skip
    return env


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of the live process ``root`` and all its descendants (the server and its workers;
    BentoML may start workers in other process groups, so the tree is followed by parent id)."""
    parent, cpu = _proc_stats()
    return sum(cpu.get(pid, 0) for pid in _descendants(root, parent)) / os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> set[int]:
    """``root`` and all its live descendants (the server and its worker processes)."""
    return _descendants(root, _proc_stats()[0])


def _proc_stats() -> tuple[dict[int, int], dict[int, int]]:
    """Parent id and user + system CPU ticks of every live process."""
    parent: dict[int, int] = {}
    cpu: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(stat.parent.name)  # fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15
        parent[pid] = int(fields[1])
        cpu[pid] = int(fields[11]) + int(fields[12])
    return parent, cpu


def _descendants(root: int, parent: dict[int, int]) -> set[int]:
    tree, frontier = {root}, [root]
    while frontier:
        children = [pid for pid, ppid in parent.items() if ppid in frontier and pid not in tree]
        tree.update(children)
        frontier = children
    return tree


def _stage_medians(rows: list[dict[str, float]]) -> dict[str, float]:
    medians = {}
    for stage in STAGES:
        values = [r[stage] for r in rows if stage in r]
        medians[stage] = round(float(np.median(values)), 3) if values else float("nan")
    sums = [sum(r.get(s, 0.0) for s in STAGES) for r in rows]
    medians["sum_of_stages"] = round(float(np.median(sums)), 3) if sums else float("nan")
    return medians


class Server:
    """``scripts/serve.sh`` in its own process group (so stopping it stops bentoml's worker processes too)."""

    def __init__(self, state_dir: Path, port: int, log_path: Path, workers: int = 1, env: dict[str, str] | None = None):
        self.state_dir, self.port, self.log_path, self.workers = state_dir, port, log_path, workers
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_seconds = float("nan")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 300.0) -> None:
        env = {**server_env(self.state_dir), "PORT": str(self.port), "RECSYS_SERVE_WORKERS": str(self.workers),
               **self.extra_env}  # fmt: skip
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.log_path, "wb")  # noqa: SIM115 - the server keeps writing after this returns
        started = time.perf_counter()
        self.process = subprocess.Popen(["bash", str(PROJECT_ROOT / "scripts" / "serve.sh")], cwd=PROJECT_ROOT,
                                        env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        while time.perf_counter() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"bentoml serve exited ({self.process.returncode}); see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response:
                    if response.status == 200:
                        self.ready_seconds = time.perf_counter() - started
                        return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"bentoml serve not ready after {timeout:.0f} s; see {self.log_path}")

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.process.pid) if self.process is not None else float("nan")

    def pids(self) -> set[int]:
        """The server's processes (BentoML's arbiter and its workers)."""
        return process_tree(self.process.pid) if self.process is not None else set()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        pgid = os.getpgid(self.process.pid)  # our own child's group (start_new_session)
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.process.wait(timeout=10)


@contextmanager
def running_server(
    state_dir: Path, out_dir: Path, workers: int, label: str, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """A ready ``bentoml serve`` for the ``with`` block, stopped (with its workers) however the block ends."""
    server = Server(state_dir, free_port(), out_dir / "serve.log", workers, env)
    log(f"{label}: starting bentoml serve (scripts/serve.sh, {workers} workers) on {server.url}, state {state_dir}")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        log(f"{label}: server stopped")


def load_run(
    server: Server, users_file: Path, out_file: Path, concurrency: int, warmup: float, duration: float
) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.loadgen", "--url", server.url, "--users", str(users_file),
               "--out", str(out_file), "--concurrency", str(concurrency), "--warmup", str(warmup),
               "--duration", str(duration)]  # fmt: skip
    load_start = load_reading()
    cpu_before = server.cpu_seconds()
    completed = subprocess.run(
        command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=warmup + duration + 120
    )
    server_cpu = server.cpu_seconds() - cpu_before
    if completed.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{completed.stderr[-3000:]}")
    raw = json.loads(out_file.read_text())
    records = raw["records"]
    ok = [r for r in records if r["status"] == 200]
    latency = np.array([r["ms"] for r in ok])
    overhead = np.array([r["ms"] - sum(r["timings"].get(s, 0.0) for s in STAGES) for r in ok])
    return {
        "concurrency": concurrency,
        "duration_s": raw["duration_s"],
        "requests": len(records),
        "errors": len(records) - len(ok),
        "error_samples": raw["errors"][:5],
        "rps": round(len(ok) / raw["duration_s"], 1),
        "latency": {
            "p50_ms": round(pct(latency, 50), 3),
            "p90_ms": round(pct(latency, 90), 3),
            "p99_ms": round(pct(latency, 99), 3),
            "max_ms": round(float(latency.max()), 3) if len(latency) else float("nan"),
        },  # fmt: skip
        "stages_median_ms": _stage_medians([r["timings"] for r in ok]),
        "http_overhead_ms": {"p50_ms": round(pct(overhead, 50), 3), "p99_ms": round(pct(overhead, 99), 3)},
        "fallback_responses": sum(1 for r in ok if r.get("fallback")),
        "degraded_responses": sum(1 for r in ok if r.get("degraded")),
        "client": raw["client"],
        "client_cpu_share": round(raw["client_cpu_s"] / raw["duration_s"], 3),
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_ms_per_request": round(1000 * server_cpu / max(raw["sent_including_warmup"], 1), 3),
        "load_start": load_start,
        "load_end": load_reading(),
    }


def run_e2e(
    state_dir: Path, out_dir: Path, concurrency: int = 2, duration: float = 45.0, baseline_duration: float = 20.0,
    warmup: float = 5.0, users: int = 5000, in_process_users: int = 300, workers: int = os.cpu_count() or 1,
    saturation: int = 8,
) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {
        "goal": f"p50 <= {GOALS['p50_ms']:.0f} ms, p99 <= {GOALS['p99_ms']:.0f} ms, >= {GOALS['rps']:.0f} req/s, 0 errors",
        "state_dir": str(state_dir),
        "version": os.readlink(champion_pointer(state_dir)),
    }
    ids, users_file = write_users(state_dir, out_dir, users)
    out["distinct_users"] = len(ids)

    log(
        f"e2e: in-process Runtime.recommend baseline, {in_process_users} users x 2 passes in a fresh process (no server running)"
    )
    out["in_process"] = in_process_subprocess(state_dir, users_file, out_dir / "in-process.json", in_process_users)

    out["workers"] = workers
    with running_server(state_dir, out_dir, workers, "e2e") as server:
        out["server_ready_seconds"] = round(server.ready_seconds, 1)
        log(f"e2e: concurrency 1 for {baseline_duration:.0f} s after {warmup:.0f} s warm-up")
        out["concurrency_1"] = load_run(server, users_file, out_dir / "loadgen-c1.json", 1, warmup, baseline_duration)
        log(f"e2e: concurrency {concurrency} for {duration:.0f} s after {warmup:.0f} s warm-up")
        out["loaded"] = load_run(server, users_file, out_dir / f"loadgen-c{concurrency}.json", concurrency, warmup,
                                 duration)  # fmt: skip
        if saturation > concurrency:
            log(f"e2e: saturation, concurrency {saturation} for {baseline_duration:.0f} s")
            out["saturated"] = load_run(server, users_file, out_dir / f"loadgen-c{saturation}.json", saturation,
                                        warmup, baseline_duration)  # fmt: skip
    loaded, single = out["loaded"], out["concurrency_1"]
    out["meets_goal"] = bool(
        loaded["latency"]["p50_ms"] <= GOALS["p50_ms"] and loaded["latency"]["p99_ms"] <= GOALS["p99_ms"]
        and loaded["rps"] >= GOALS["rps"] and loaded["errors"] == 0
    )  # fmt: skip
    out["p50_ratio_vs_c1"] = ratio(loaded["latency"]["p50_ms"], single["latency"]["p50_ms"])
    out["rps_ratio_vs_c1"] = ratio(loaded["rps"], single["rps"])
    out["c1_p50_vs_in_process"] = ratio(single["latency"]["p50_ms"], out["in_process"]["wall"]["p50_ms"])
    for name in ("concurrency_1", "loaded"):
        r = out[name]
        log(
            f"e2e: c={r['concurrency']}: {r['rps']} req/s, p50 {r['latency']['p50_ms']:.2f} ms, p99 "
            f"{r['latency']['p99_ms']:.2f} ms, errors {r['errors']}, HTTP overhead p50 {r['http_overhead_ms']['p50_ms']:.2f} ms"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    """The in-process baseline on its own: ``python -m bench.e2e --state DIR --users FILE --count N --out FILE``."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--users", type=Path, required=True)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    users = json.loads(args.users.read_text())[: args.count]
    args.out.write_text(json.dumps(in_process_baseline(args.state, users, args.repeats)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
