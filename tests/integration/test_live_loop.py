"""The live loop through ``bentoml serve`` with two worker processes, on a copy of the published state: an event or
stock change accepted by one worker is visible on fresh connections (either worker) within a second; it survives a
restart; a server killed in the middle of event batches keeps every acknowledged batch whole and no partial one."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from models.live.log import log_path
from tests.conftest import ADMIN_HEADERS
from tests.integration.processes import served
from tests.serving.support import copy_serving_state

pytestmark = pytest.mark.integration

VISIBLE_WITHIN_SECONDS = 1.0


@contextmanager
def serving(state: Path, home: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    with served(state, home, RECSYS_SERVE_WORKERS="2") as started:
        yield started.url, started.process


def fresh_post(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """One request on a new connection (connections stay with the worker that accepted them)."""
    response = httpx.post(url + path, json=body, timeout=30, headers={"Connection": "close", **ADMIN_HEADERS})
    assert response.status_code == 200, response.text
    return response.json()


def items_for(url: str, user: str, k: int = 10) -> list[str]:
    return [i["item_id"] for i in fresh_post(url, "/recommend", {"user_id": user, "k": k})["items"]]


def visible_everywhere(url: str, check, connections: int = 8) -> float:
    """Seconds until ``check`` holds, confirmed on ``connections`` fresh connections in a row (so on both
    workers); inf after 10 s. The time of the first of the confirming checks is returned."""
    started = time.perf_counter()
    held, first = 0, 0.0
    while time.perf_counter() - started < 10.0:
        at = time.perf_counter() - started
        if check():
            held, first = held + 1, first if held else at
            if held >= connections:
                return first
        else:
            held = 0
    return float("inf")


@pytest.fixture(scope="module")
def state(version, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_serving_state(version.settings, tmp_path_factory.mktemp("live-state")).state_dir


def test_events_and_stock_reach_both_workers_and_survive_a_restart(state, version, known_users, tmp_path: Path):
    user = next(iter(known_users))
    with serving(state, tmp_path) as (url, _):
        before = items_for(url, user)
        bought, sold_out = before[0], before[1]
        fresh_post(url, "/events", {"events": [{"user_id": user, "item_id": bought, "event_type": "purchase"}]})
        lag = visible_everywhere(url, lambda: bought not in items_for(url, user))
        assert lag <= VISIBLE_WITHIN_SECONDS, f"the purchase held on 8 fresh connections in a row after {lag:.2f} s"
        fresh_post(url, "/items", {"items": [{"item_id": sold_out, "in_stock": False}]})
        lag = visible_everywhere(url, lambda: sold_out not in items_for(url, user, k=20))
        assert lag <= VISIBLE_WITHIN_SECONDS, f"the stock-out held on 8 fresh connections in a row after {lag:.2f} s"
    with serving(state, tmp_path) as (url, _):  # restarted: the log is replayed
        after = items_for(url, user, k=20)
        assert bought not in after and sold_out not in after


def test_a_killed_server_keeps_every_acknowledged_batch_whole(state, version, items, tmp_path: Path):
    item_ids = [str(i) for i in items.index[:50]]
    acknowledged: list[str] = []
    stop_sending = threading.Event()

    def send(url: str) -> None:
        with httpx.Client(timeout=30, headers=ADMIN_HEADERS) as client:
            n = 0
            while not stop_sending.is_set():
                user = f"kill-test-{threading.get_ident()}-{n}"
                batch = [{"user_id": user, "item_id": i, "event_type": "view"} for i in item_ids]
                try:
                    response = client.post(url + "/events", json={"events": batch})
                except httpx.HTTPError:
                    return
                if response.status_code == 200:
                    acknowledged.append(user)
                n += 1

    with serving(state, tmp_path) as (url, process):
        senders = [threading.Thread(target=send, args=(url,)) for _ in range(3)]
        for sender in senders:
            sender.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = psutil.Process(process.pid).children(recursive=True)  # BentoML starts them in their own sessions
        os.killpg(process.pid, signal.SIGKILL)  # mid-batch: the senders are still posting
        for worker in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()
        stop_sending.set()
        for sender in senders:
            sender.join(timeout=30)
    assert len(acknowledged) >= 20
    with sqlite3.connect(log_path(state, version.dataset)) as connection:
        counts = dict(connection.execute(
            "SELECT json_extract(body, '$.user_id'), COUNT(*) FROM log WHERE kind = 'event' "
            "AND json_extract(body, '$.user_id') LIKE 'kill-test-%' GROUP BY 1"
        ).fetchall())  # fmt: skip
    assert all(counts.get(user) == len(item_ids) for user in acknowledged), "an acknowledged batch is missing"
    assert set(counts.values()) == {len(item_ids)}, "a half-written batch is in the log"
