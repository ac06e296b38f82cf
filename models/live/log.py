"""The durable log of what the service accepts between pipeline runs: interactions and item changes.

By default one SQLite database in WAL mode per dataset under the state folder: a batch is appended in one
transaction with ``synchronous=FULL`` before the service answers 200, so an acknowledged record survives a crash and
a half-written batch never appears. When Redis is configured (``online_store=redis``), a Redis stream per dataset
instead, so replicas on different machines share it: a batch is appended by one Lua script (atomic), and survives
a Redis crash as far as Redis persists it (``appendonly yes`` with ``appendfsync always`` for the same guarantee;
a warning is logged otherwise). Every worker and replica tails the log by sequence number, so all apply the same
records in the same order; the next pipeline run ingests the log into the dataset.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from models.settings import Settings

log = logging.getLogger(__name__)

EVENT = "event"
ITEM = "item"
KINDS = (EVENT, ITEM)

SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('event', 'item')),
    body TEXT NOT NULL,
    received_at REAL NOT NULL
)
"""


@dataclass(frozen=True)
class Record:
    seq: int
    kind: str
    body: dict[str, Any]
    received_at: float


class EventLog:
    """Append-only, ordered, shared by every process that opens the same file."""

    def __init__(self, path: Path, busy_timeout_seconds: float = 10.0):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(path, timeout=busy_timeout_seconds, check_same_thread=False,
                                           isolation_level=None)  # fmt: skip
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=FULL")
        self._connection.execute(SCHEMA)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield self._connection
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")

    def append(self, kind: str, bodies: Sequence[dict[str, Any]]) -> list[int]:
        """Append a batch atomically; returns the sequence numbers it got, in order."""
        if kind not in KINDS:
            raise ValueError(f"unknown log record kind '{kind}' (expected one of {KINDS})")
        now = time.time()
        with self._transaction() as connection:
            seqs = []
            for body in bodies:
                cursor = connection.execute(
                    "INSERT INTO log (kind, body, received_at) VALUES (?, ?, ?)",
                    (kind, json.dumps(body, separators=(",", ":")), now),
                )
                seqs.append(int(cursor.lastrowid or 0))
        return seqs

    def read_after(self, seq: int, limit: int = 10_000) -> list[Record]:
        """Records with a sequence number above ``seq``, oldest first."""
        with self._lock:
            rows = self._connection.execute(
                "SELECT seq, kind, body, received_at FROM log WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
            ).fetchall()
        return [Record(int(s), str(k), json.loads(b), float(t)) for s, k, b, t in rows]

    def last_seq(self) -> int:
        with self._lock:
            row = self._connection.execute("SELECT COALESCE(MAX(seq), 0) FROM log").fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._connection.close()


def log_path(state_dir: Path, dataset: str) -> Path:
    return state_dir / "live" / f"{dataset}.sqlite"


class LiveLog(Protocol):
    """What the service and the pipeline need of a live log, whichever store holds it."""

    def append(self, kind: str, bodies: Sequence[dict[str, Any]]) -> list[int]: ...

    def read_after(self, seq: int, limit: int = 10_000) -> list[Record]: ...

    def last_seq(self) -> int: ...

    def close(self) -> None: ...


APPEND_SCRIPT = """
local seqs = {}
for i = 2, #ARGV, 2 do
    local seq = redis.call('INCR', KEYS[2])
    redis.call('XADD', KEYS[1], seq .. '-0', 'kind', ARGV[i], 'body', ARGV[i + 1], 'received_at', ARGV[1])
    seqs[#seqs + 1] = seq
end
return seqs
"""
"""One batch, atomically: each record takes the next sequence number, which is also its stream entry id."""


class RedisStreamLog:
    """The live log as a Redis stream (``recsys:<dataset>:live``), for replicas that share no disk."""

    def __init__(self, url: str, dataset: str):
        import redis

        host, _, port = url.partition(":")
        self.client = redis.Redis(host=host or "localhost", port=int(port or 6379), decode_responses=True)
        self.stream, self.counter = f"recsys:{dataset}:live", f"recsys:{dataset}:live:seq"
        self._append = self.client.register_script(APPEND_SCRIPT)
        self._warn_if_not_durable()

    def _warn_if_not_durable(self) -> None:
        try:
            config: dict[str, Any] = {**self.client.config_get("appendonly"), **self.client.config_get("appendfsync")}  # type: ignore[dict-item]
        except Exception:  # managed Redis may refuse CONFIG: nothing to check then
            return
        if config.get("appendonly") != "yes" or config.get("appendfsync") != "always":
            log.warning("Redis persists the live log with appendonly=%s, appendfsync=%s: a Redis crash can lose "
                        "acknowledged records (set appendonly yes, appendfsync always)",
                        config.get("appendonly"), config.get("appendfsync"))  # fmt: skip

    def append(self, kind: str, bodies: Sequence[dict[str, Any]]) -> list[int]:
        if kind not in KINDS:
            raise ValueError(f"unknown log record kind '{kind}' (expected one of {KINDS})")
        arguments: list[Any] = [time.time()]
        for body in bodies:
            arguments += [kind, json.dumps(body, separators=(",", ":"))]
        seqs: Any = self._append(keys=[self.stream, self.counter], args=arguments)
        return [int(seq) for seq in seqs]

    def read_after(self, seq: int, limit: int = 10_000) -> list[Record]:
        entries: Any = self.client.xrange(self.stream, min=f"{seq + 1}-0", max="+", count=limit)
        return [
            Record(
                int(entry_id.split("-")[0]), fields["kind"], json.loads(fields["body"]), float(fields["received_at"])
            )
            for entry_id, fields in entries
        ]

    def last_seq(self) -> int:
        value: Any = self.client.get(self.counter)
        return int(value or 0)

    def close(self) -> None:
        self.client.close()


def open_log(settings: Settings, dataset: str) -> LiveLog:
    """The dataset's live log: a Redis stream when Redis is configured, else the SQLite file in the state folder."""
    if settings.online_store == "redis":
        return RedisStreamLog(settings.redis_url, settings.deployment(dataset))
    return EventLog(log_path(settings.state_dir, settings.deployment(dataset)))
