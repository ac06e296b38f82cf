"""The durable log of what the service accepts between pipeline runs: interactions and item changes.

One SQLite database in WAL mode per dataset under the state folder. A batch is appended in one transaction with
``synchronous=FULL`` before the service answers 200, so an acknowledged record survives a crash and a half-written
batch never appears. Every worker (and replica on shared storage) tails the log by sequence number, so all apply the
same records in the same order; the next pipeline run ingests the log into the dataset.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
