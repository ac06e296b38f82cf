"""Section 6: live updates through ``bentoml serve`` with two workers, on the bench state section 5 serves.

Measured: (1) ``POST /events`` from one sequential keep-alive client, at batch 1 (the baseline) and batch 100:
events accepted per second and request latency; (2) freshness: a purchase of an item in the user's current
``/recommend`` list, then ``/recommend`` polled on a new connection per request (a connection stays with the
worker that accepted it, so fresh ones reach both) until the item is gone in ``confirm`` responses in a row; lag
from the 200 of ``/events`` to the first of those responses. The worker behind each connection is read from
``/proc`` (the server is our child on localhost), so the lag on the worker that did *not* accept the purchase (the
one that must tail the log) is measured too; (3) ``/recommend`` under the load generator of
section 5, idle (the baseline) and while a background thread posts batches of 10 events every 0.1 s.

Everything the section posts goes to the bench state's durable live log; the log is rewound to where it was once the
server has stopped, so later runs (and section 5) serve the state the pipeline built.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from bench.common import load_reading, log, pct, ratio
from bench.e2e import ADMIN_HEADERS, Server, load_run, running_server, write_users
from models.live.log import log_path
from models.settings import Settings
from serving.state import champion_pointer

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase")
EVENT_WEIGHTS = (0.70, 0.20, 0.07, 0.03)
VISIBLE_WITHIN_S = 1.0  # the service's promise (POST /events: "visible ... on every worker within a second")


@dataclass(frozen=True)
class LivePlan:
    batch1_requests: int = 200
    batch100_requests: int = 50
    trials: int = 30
    confirm: int = 4
    trial_timeout_s: float = 5.0
    duration: float = 20.0
    warmup: float = 5.0
    concurrency: int = 2
    background_batch: int = 10
    background_interval_s: float = 0.1
    workers: int = 2


# ---- pure helpers ------------------------------------------------------------------------------------------------
def latency_summary(ms: Sequence[float]) -> dict[str, float]:
    """p50/p99/max of latencies already in milliseconds (``summary_ms`` takes seconds)."""
    values = np.asarray(ms, dtype=np.float64)
    return {"n": int(values.size), "p50_ms": round(pct(values, 50), 3), "p99_ms": round(pct(values, 99), 3),
            "max_ms": round(float(values.max()), 3) if values.size else float("nan")}  # fmt: skip


@dataclass(frozen=True)
class Poll:
    at_ms: float
    """Arrival of the response, in ms since the 200 of ``/events``."""
    present: bool
    """The bought item was still in the list."""
    worker: int | None = None
    """Process id of the worker that answered, when it could be told."""


def visibility_lag_ms(polls: Sequence[Poll], confirm: int) -> float | None:
    """Lag to the first poll of the first run of ``confirm`` polls in a row without the item; None if no such run.
    Without knowing the worker, one response without the item proves nothing about the other worker; a run of them
    over fresh connections makes it likely that both answered."""
    run = 0
    for index, poll in enumerate(polls):
        run = 0 if poll.present else run + 1
        if run >= confirm:
            return polls[index - confirm + 1].at_ms
    return None


def worker_lag_ms(polls: Sequence[Poll], worker: int) -> float | None:
    """Lag on one worker: its first response without the item after its last one with it; None while its latest
    response still lists the item (or it has not answered)."""
    mine = [p for p in polls if p.worker == worker]
    if not mine or mine[-1].present:
        return None
    last_present = max((i for i, p in enumerate(mine) if p.present), default=-1)
    return mine[last_present + 1].at_ms


def events_per_second(events: int, seconds: float) -> float:
    return round(events / seconds, 1) if seconds > 0 else float("nan")


# ---- HTTP --------------------------------------------------------------------------------------------------------
def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def post(connection: http.client.HTTPConnection, path: str, body: Any) -> tuple[int, bytes]:
    """One JSON POST on ``connection`` (reconnects by itself if the server closed it)."""
    connection.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json", **ADMIN_HEADERS})
    response = connection.getresponse()
    return response.status, response.read()


@dataclass(frozen=True)
class Answer:
    status: int
    payload: bytes
    worker: int | None
    """Process id of the worker that accepted the connection (None if not asked for or it cannot be told)."""
    arrived: float
    """``time.perf_counter()`` when the response was read (before the worker was looked up)."""


def post_fresh(url: str, path: str, body: Any, pids: Collection[int] = ()) -> Answer:
    """One JSON POST on a new connection, closed after the answer: the kernel picks the worker that accepts it;
    with ``pids`` (the server's processes), which one it was is looked up."""
    connection = http.client.HTTPConnection(*_address(url), timeout=30)
    try:
        status, payload = post(connection, path, body)
        arrived = time.perf_counter()
        worker = connection_worker(connection, pids) if pids and connection.sock is not None else None
        return Answer(status, payload, worker, arrived)
    finally:
        connection.close()  # the client closes: the server end stays open until the worker is identified


def connection_worker(connection: http.client.HTTPConnection, pids: Collection[int]) -> int | None:
    """Which of ``pids`` holds the server end of this open localhost connection: /proc/net/tcp gives its socket
    inode, the processes' fd tables the owner."""
    client_port = connection.sock.getsockname()[1]
    inode = _server_socket_inode(client_port, connection.port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(fd.path) == target:
                        return pid
    return None


def _server_socket_inode(client_port: int, server_port: int) -> str | None:
    """The inode of the socket with local port ``server_port`` and peer port ``client_port`` (IPv4 localhost)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode != "0" and int(local[-4:], 16) == server_port and int(remote[-4:], 16) == client_port:
                return inode
    return None


def recommended(url: str, user: str, pids: Collection[int] = ()) -> tuple[list[str], Answer]:
    """The user's list over a fresh connection, and the answer it came in (worker, arrival time)."""
    answer = post_fresh(url, "/recommend", {"user_id": user, "k": 10}, pids)
    if answer.status != 200:
        raise RuntimeError(f"/recommend answered {answer.status}: {answer.payload[:300]!r}")
    return [item["item_id"] for item in json.loads(answer.payload)["items"]], answer


def event_batch(rng: random.Random, users: Sequence[str], items: Sequence[str], size: int) -> list[dict[str, Any]]:
    """``size`` interactions of known users with catalogue items, mostly views (timestamp: the serving clock)."""
    types = rng.choices(EVENT_TYPES, EVENT_WEIGHTS, k=size)
    return [{"user_id": rng.choice(users), "item_id": rng.choice(items), "event_type": t} for t in types]


def warm_up(server: Server, users: Sequence[str], workers: int, each: int = 10, timeout: float = 180.0) -> set[int]:
    """Fresh-connection requests until every worker answered ``each`` in a row (20 in a row when workers cannot be
    told): ``/readyz`` answered by one worker says nothing about the other, which may still be loading the version
    (fresh connections then all go to the first), and each worker's first requests pay for lazy loading."""
    pids, deadline = server.pids(), time.monotonic() + timeout
    good: Counter[int | None] = Counter()
    n = 0
    while not _warm(good, workers, each):
        if time.monotonic() > deadline:
            raise RuntimeError(f"not every worker answered /recommend within {timeout:.0f} s: {dict(good)}")
        try:
            answer = post_fresh(server.url, "/recommend", {"user_id": users[n % len(users)], "k": 10}, pids)
            good = good + Counter({answer.worker: 1}) if answer.status == 200 else Counter()
        except OSError:
            good = Counter()
        n += 1
    return {w for w in good if w is not None}


def _warm(good: Counter[int | None], workers: int, each: int) -> bool:
    known = [count for worker, count in good.items() if worker is not None]
    if not known:
        return good[None] >= 2 * each
    return len(known) >= workers and min(known) >= each


# ---- 1. ingest throughput ----------------------------------------------------------------------------------------
def ingest(
    url: str, batch: int, requests: int, users: Sequence[str], items: Sequence[str], cpu: Callable[[], float],
    seed: int = 1, warmup_requests: int = 5,
) -> dict[str, Any]:  # fmt: skip
    """Sequential ``POST /events`` of ``batch`` events on one keep-alive connection, as a producer would send them."""
    rng = random.Random(seed)
    bodies = [{"events": event_batch(rng, users, items, batch)} for _ in range(warmup_requests + requests)]
    connection = http.client.HTTPConnection(*_address(url), timeout=60)
    latencies: list[float] = []
    errors: list[str] = []
    try:
        for body in bodies[:warmup_requests]:
            post(connection, "/events", body)
        cpu_before, started = cpu(), time.perf_counter()
        for body in bodies[warmup_requests:]:
            t0 = time.perf_counter()
            status, payload = post(connection, "/events", body)
            latencies.append((time.perf_counter() - t0) * 1000)
            if status != 200:
                errors.append(f"{status}: {payload[:200]!r}")
        seconds, server_cpu = time.perf_counter() - started, cpu() - cpu_before
    finally:
        connection.close()
    accepted = batch * (requests - len(errors))
    return {"batch": batch, "requests": requests, "events": accepted, "errors": len(errors), "error_samples": errors[:5],
            "seconds": round(seconds, 3), "events_per_s": events_per_second(accepted, seconds),
            "requests_per_s": events_per_second(requests, seconds), "latency": latency_summary(latencies),
            "server_cpu_ms_per_event": round(1000 * server_cpu / max(accepted, 1), 4)}  # fmt: skip


# ---- 2. freshness ------------------------------------------------------------------------------------------------
def settled(polls: Sequence[Poll], confirm: int, other: int | None) -> bool:
    """Stop polling: the last ``confirm`` responses lack the item and, when the worker that did not accept the
    purchase is known, that worker has answered without it."""
    run_ok = visibility_lag_ms(polls[-confirm:], confirm) is not None
    return run_ok and (other is None or worker_lag_ms(polls, other) is not None)


def freshness_trial(url: str, user: str, workers: set[int], plan: LivePlan) -> dict[str, Any]:
    """Buy the first item of the user's list, then poll the list on fresh connections until ``settled`` (or
    ``plan.trial_timeout_s`` passes)."""
    item = recommended(url, user, workers)[0][0]
    body = {"events": [{"user_id": user, "item_id": item, "event_type": "purchase"}]}
    answer = post_fresh(url, "/events", body, workers)
    if answer.status != 200:
        raise RuntimeError(f"/events answered {answer.status}: {answer.payload[:300]!r}")
    acknowledged, accepting = answer.arrived, answer.worker
    others = sorted(workers - {accepting}) if accepting is not None else []
    other = others[0] if len(others) == 1 else None
    polls: list[Poll] = []
    while time.perf_counter() - acknowledged < plan.trial_timeout_s and not settled(polls, plan.confirm, other):
        items, poll = recommended(url, user, workers)
        polls.append(Poll((poll.arrived - acknowledged) * 1000, item in items, poll.worker))
    gaps = np.diff([0.0] + [p.at_ms for p in polls])
    return {"lag_ms": visibility_lag_ms(polls, plan.confirm), "polls": len(polls),
            "other_worker_lag_ms": worker_lag_ms(polls, other) if other is not None else None,
            "accepting_worker_lag_ms": worker_lag_ms(polls, accepting) if accepting is not None else None,
            "polls_on_other_worker": sum(p.worker == other for p in polls) if other is not None else None,
            "poll_interval_ms": float(np.median(gaps)) if len(gaps) else float("nan")}  # fmt: skip


def freshness(url: str, users: Sequence[str], workers: set[int], plan: LivePlan) -> dict[str, Any]:
    """``plan.trials`` trials, one user each (a purchase changes that user's list for good)."""
    trials = [freshness_trial(url, user, workers, plan) for user in users[: plan.trials]]
    lags = _present([t["lag_ms"] for t in trials])
    other = _present([t["other_worker_lag_ms"] for t in trials])
    return {"trials": len(trials), "confirm_in_a_row": plan.confirm, "timeout_s": plan.trial_timeout_s,
            "workers_identified": len(workers), "not_visible": len(trials) - len(lags), "lag": latency_summary(lags),
            "other_worker_lag": latency_summary(other), "other_worker_measured": len(other),
            "accepting_worker_lag": latency_summary(_present([t["accepting_worker_lag_ms"] for t in trials])),
            "polls_per_trial_median": float(np.median([t["polls"] for t in trials])),
            "poll_interval_ms_median": round(float(np.median([t["poll_interval_ms"] for t in trials])), 3),
            "within_promise": len(lags) == len(trials) > 0 and max([*lags, *other]) <= VISIBLE_WITHIN_S * 1000,
            "trial_details": trials}  # fmt: skip


def _present(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None]


# ---- 3. /recommend idle vs under a stream of events --------------------------------------------------------------
@dataclass
class EventFeeder:
    """Posts ``batch`` events every ``interval_s`` from a background thread, so ``/recommend`` can be measured while
    events arrive at a steady rate: on a fixed schedule, a late post followed at once by the next (up to
    ``max_backlog_s`` behind), so the rate holds as long as the server keeps up on average."""

    url: str
    users: Sequence[str]
    items: Sequence[str]
    batch: int
    interval_s: float
    max_backlog_s: float = 1.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="event-feeder", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        sent = len(self.latencies_ms)
        return {"batch": self.batch, "interval_s": self.interval_s, "batches": sent, "errors": self.errors,
                "events_per_s": events_per_second(self.batch * (sent - self.errors), self.seconds),
                "target_events_per_s": round(self.batch / self.interval_s, 1),
                "latency": latency_summary(self.latencies_ms)}  # fmt: skip

    def _loop(self) -> None:
        rng = random.Random(7)
        connection = http.client.HTTPConnection(*_address(self.url), timeout=30)
        started = next_at = time.perf_counter()
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    status, _ = post(connection, "/events", {"events": event_batch(rng, self.users, self.items,
                                                                                    self.batch)})  # fmt: skip
                except (OSError, http.client.HTTPException):
                    status = -1
                    connection.close()
                self.latencies_ms.append((time.perf_counter() - t0) * 1000)
                self.errors += status != 200
                next_at = max(next_at + self.interval_s, time.perf_counter() - self.max_backlog_s)
                self._stop.wait(max(0.0, next_at - time.perf_counter()))
        finally:
            self.seconds = time.perf_counter() - started
            connection.close()


def recommend_load(
    server: Server, users_file: Path, out_file: Path, plan: LivePlan, feeder: EventFeeder | None
) -> dict[str, Any]:
    """Section 5's load run (same generator, concurrency and duration), with ``feeder`` posting meanwhile."""
    if feeder is not None:
        feeder.start()
    try:
        result = load_run(server, users_file, out_file, plan.concurrency, plan.warmup, plan.duration)
    finally:
        events = feeder.stop() if feeder is not None else None
    return {**result, "background_events": events}


def compare_load(idle: dict[str, Any], loaded: dict[str, Any]) -> dict[str, float]:
    """Loaded / idle ratios of the /recommend figures (idle is the baseline)."""
    return {"p50": ratio(loaded["latency"]["p50_ms"], idle["latency"]["p50_ms"]),
            "p99": ratio(loaded["latency"]["p99_ms"], idle["latency"]["p99_ms"]),
            "rps": ratio(loaded["rps"], idle["rps"])}  # fmt: skip


# ---- the live log ------------------------------------------------------------------------------------------------
def last_seq(path: Path) -> int:
    """The log's last sequence number (0 when it does not exist yet)."""
    if not path.exists():
        return 0
    with sqlite3.connect(path, timeout=30) as connection:
        return int(connection.execute("SELECT COALESCE(MAX(seq), 0) FROM log").fetchone()[0])


def rewind_log(path: Path, seq: int) -> int:
    """Delete the records after ``seq`` (the bench's own), so the bench state stays as the pipeline built it; call
    only with no server running. Returns how many records went."""
    if not path.exists():
        return 0
    connection = sqlite3.connect(path, timeout=30)
    try:
        with connection:
            deleted = connection.execute("DELETE FROM log WHERE seq > ?", (seq,)).rowcount
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    return int(deleted)


def catalogue_items(state_dir: Path) -> list[str]:
    """Item ids of the published version's catalogue (what ``/events`` accepts)."""
    ids = np.load(champion_pointer(state_dir) / "stage1" / "item_ids.npy", allow_pickle=False)
    return [str(i) for i in ids]


def live_log(state_dir: Path) -> Path:
    manifest = json.loads((champion_pointer(state_dir) / "manifest.json").read_text())
    store = manifest["features"]["store"]
    return log_path(state_dir, store.get("namespace") or store["dataset"])


# ---- the section -------------------------------------------------------------------------------------------------
def run_live(state_dir: Path, out_dir: Path, plan: LivePlan, users: int = 5000) -> dict[str, Any]:
    """Start two workers on the bench state, measure ingest, freshness and /recommend under events; rewind the log."""
    poll_s = Settings.model_fields["live_poll_seconds"].default
    ids, users_file = write_users(state_dir, out_dir, users)
    items, path = catalogue_items(state_dir), live_log(state_dir)
    seq = last_seq(path)
    out: dict[str, Any] = {"plan": dict(plan.__dict__), "state_dir": str(state_dir), "workers": plan.workers,
                           "version": os.readlink(champion_pointer(state_dir)), "tail_interval_s": poll_s,
                           "distinct_users": len(ids), "items": len(items), "log_seq_before": seq}  # fmt: skip
    env = {"RECSYS_LIVE_POLL_SECONDS": str(poll_s)}
    try:
        with running_server(state_dir, out_dir, plan.workers, "live", env) as server:
            out["server_ready_seconds"] = round(server.ready_seconds, 1)
            workers = warm_up(server, ids, plan.workers)
            out["worker_pids"] = sorted(workers)
            out.update(_measure(server, ids, items, users_file, out_dir, plan, workers))
    finally:
        out["log_records_rewound"] = rewind_log(path, seq)
        log(f"live: rewound the live log to seq {seq} ({out['log_records_rewound']} bench records removed)")
    _print(out)
    return out


def _measure(
    server: Server, ids: list[str], items: list[str], users_file: Path, out_dir: Path, plan: LivePlan,
    workers: set[int],
) -> dict[str, Any]:  # fmt: skip
    """The three measurements in order: ingest, freshness, then /recommend idle and loaded back to back."""
    out: dict[str, Any] = {"load_start": load_reading()}
    log(f"live: POST /events, batch 1 x {plan.batch1_requests}, batch 100 x {plan.batch100_requests}")
    b1 = ingest(server.url, 1, plan.batch1_requests, ids, items, server.cpu_seconds)
    b100 = ingest(server.url, 100, plan.batch100_requests, ids, items, server.cpu_seconds, seed=2)
    out["ingest"] = {"batch_1": b1, "batch_100": b100,
                     "events_per_s_ratio_100_vs_1": ratio(b100["events_per_s"], b1["events_per_s"], 1)}  # fmt: skip
    log(f"live: freshness, {plan.trials} purchases, polled until gone {plan.confirm} times in a row")
    out["freshness"] = freshness(server.url, ids, workers, plan)
    log(f"live: /recommend idle, concurrency {plan.concurrency} for {plan.duration:.0f} s")
    idle = recommend_load(server, users_file, out_dir / "loadgen-idle.json", plan, None)
    rate = plan.background_batch / plan.background_interval_s
    log(f"live: /recommend while {rate:.0f} events/s arrive, concurrency {plan.concurrency} for {plan.duration:.0f} s")
    feeder = EventFeeder(server.url, ids, items, plan.background_batch, plan.background_interval_s)
    loaded = recommend_load(server, users_file, out_dir / "loadgen-events.json", plan, feeder)
    out["recommend"] = {"idle": idle, "with_events": loaded, "ratio_loaded_vs_idle": compare_load(idle, loaded)}
    out["load_end"] = load_reading()
    return out


def _print(out: dict[str, Any]) -> None:
    if "ingest" not in out:
        return
    for name in ("batch_1", "batch_100"):
        r = out["ingest"][name]
        log(f"live: /events batch {r['batch']}: {r['events_per_s']:.0f} events/s ({r['requests_per_s']:.0f} req/s), "
            f"p50 {r['latency']['p50_ms']:.2f} ms, p99 {r['latency']['p99_ms']:.2f} ms, errors {r['errors']}")  # fmt: skip
    log(f"live: batch 100 vs batch 1, events/s: {out['ingest']['events_per_s_ratio_100_vs_1']}x")
    fr = out["freshness"]
    log(f"live: freshness over {fr['trials']} purchases ({fr['confirm_in_a_row']} in a row): p50 "
        f"{fr['lag']['p50_ms']:.0f} ms, p99 {fr['lag']['p99_ms']:.0f} ms, max {fr['lag']['max_ms']:.0f} ms, not "
        f"visible {fr['not_visible']} (tail every {out['tail_interval_s']} s, one poll every "
        f"{fr['poll_interval_ms_median']:.1f} ms)")  # fmt: skip
    ow = fr["other_worker_lag"]
    log(f"live: freshness on the worker that did not accept the purchase ({fr['other_worker_measured']} trials): "
        f"p50 {ow['p50_ms']:.0f} ms, p99 {ow['p99_ms']:.0f} ms, max {ow['max_ms']:.0f} ms; on the accepting worker "
        f"p50 {fr['accepting_worker_lag']['p50_ms']:.0f} ms")  # fmt: skip
    rec = out["recommend"]
    for name in ("idle", "with_events"):
        r = rec[name]
        log(f"live: /recommend {name}: {r['rps']} req/s, p50 {r['latency']['p50_ms']:.2f} ms, p99 "
            f"{r['latency']['p99_ms']:.2f} ms, errors {r['errors']}")  # fmt: skip
    bg = rec["with_events"]["background_events"]
    log(f"live: background events {bg['events_per_s']}/s (target {bg['target_events_per_s']}), /events p50 "
        f"{bg['latency']['p50_ms']:.2f} ms p99 {bg['latency']['p99_ms']:.2f} ms; loaded/idle: "
        f"{rec['ratio_loaded_vs_idle']}")  # fmt: skip
