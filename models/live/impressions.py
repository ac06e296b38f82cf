"""The impression log: every served list, item by item, as the next training set needs it.

One row per shown item: the request (id, time, user, version, endpoint), the item's rank, score and the stage-1
sources that found it, and the exact feature row the ranker scored — so a model can later be trained on what was
shown and what happened next (shown and not clicked is a real negative), with no skew between logged and
recomputed features. Rows are buffered in memory and written as Parquet files partitioned by the serving clock's
date (``date=YYYY-MM-DD``) by a background thread when ``due`` (never in a request: no latency spike); partitions
older than the retention are deleted when a file is written. A crash loses
at most the unflushed buffer (impressions are a log for learning, not a record of what a user did: events are).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from models.data.clock import DAY_SECONDS
from models.settings import Settings

PARTITION_PREFIX = "date="
FEATURE_NAMES_KEY = b"feature_names"
SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("served_at", pa.float64()),
        ("as_of", pa.float64()),
        ("user_id", pa.string()),
        ("version", pa.string()),
        ("endpoint", pa.string()),
        ("variant", pa.string()),
        ("latency_ms", pa.float64()),
        ("rank", pa.int32()),
        ("item_id", pa.string()),
        ("score", pa.float64()),
        ("sources", pa.list_(pa.string())),
        ("features", pa.list_(pa.float32())),
    ]
)
"""``features`` is the ranker's input row (names in the file metadata, ``feature_names``); empty when the list was
not re-ranked (unknown user, degraded, or an anonymous search)."""


@dataclass(frozen=True)
class ShownList:
    """One served list, as the service answered it."""

    request_id: str
    as_of: float
    user_id: str | None
    version: str
    endpoint: str
    item_ids: Sequence[str]
    scores: Sequence[float]
    sources: Sequence[Sequence[str]]
    features: np.ndarray | None
    """(len(item_ids) x n_features) or None when the list was not re-ranked."""
    variant: str = "champion"
    """``champion`` or ``challenger`` (the list the user saw), or ``shadow`` (scored beside it, not shown)."""
    latency_ms: float = float("nan")
    """Time the service took to produce this list."""


SHADOW = "shadow"
"""Lists scored in shadow mode are kept apart (``<impressions>/shadow/``): nobody saw them, so they never train."""


def impressions_dir(settings: Settings, dataset: str) -> Path:
    """The namespace's impressions (one namespace per dataset unless named)."""
    return settings.state_dir / "impressions" / settings.deployment(dataset)


class ImpressionLog:
    """Buffers shown lists and writes them as Parquet (one file per flush and process, never rewritten)."""

    def __init__(self, root: Path, feature_names: Sequence[str], flush_rows: int = 5_000, retention_days: float = 30):
        self.root = root
        self.feature_names = list(feature_names)
        self.flush_rows = flush_rows
        self.retention_days = retention_days
        self._lists: list[_Buffered] = []
        self._rows = 0
        self._oldest = 0.0
        self._lock = threading.Lock()

    def record(self, shown: ShownList) -> None:
        """Add one served list to the buffer (cheap: the request does not wait for a write)."""
        now = time.time()
        rows = len(shown.item_ids)
        features = (
            np.asarray(shown.features, dtype=np.float32).reshape(rows, -1)
            if shown.features is not None
            else np.empty((rows, 0), dtype=np.float32)
        )
        with self._lock:
            if not self._lists:
                self._oldest = now
            self._lists.append(_Buffered(shown, now, features))
            self._rows += rows

    def due(self, max_age_seconds: float) -> bool:
        """Time to write: the buffer is full, or its oldest row waited ``max_age_seconds``."""
        with self._lock:
            rows, oldest = self._rows, self._oldest
        return rows >= self.flush_rows or (rows > 0 and time.time() - oldest >= max_age_seconds)

    def flush(self) -> list[Path]:
        """Write what is buffered (one file per date partition); returns the files written.

        The table is built column by column from the buffered lists (numpy and Arrow, not a row of Python objects
        per item): the flush holds the GIL for ~5 ms, not the ~35 ms a row-wise frame of 5 000
        impressions held it, which the requests a worker answered meanwhile waited for (its p99)."""
        with self._lock:
            lists, self._lists, self._rows = self._lists, [], 0
        if not lists:
            return []
        days = _dates(np.array([entry.shown.as_of for entry in lists], dtype=np.float64))
        written = []
        for day in sorted(set(days)):
            table = _table([entry for entry, of in zip(lists, days, strict=True) if of == day])
            folder = self.root / f"{PARTITION_PREFIX}{day}"
            folder.mkdir(parents=True, exist_ok=True)
            # unique across the logs of one process (champion and challenger write to the same folder)
            path = folder / f"{int(time.time() * 1000)}-{os.getpid()}-{uuid.uuid4().hex[:12]}.parquet"
            metadata = {**(table.schema.metadata or {}), FEATURE_NAMES_KEY: "\t".join(self.feature_names).encode()}
            temporary = path.with_suffix(".tmp")
            pq.write_table(table.replace_schema_metadata(metadata), temporary)
            temporary.replace(path)  # readers never see a half-written file
            written.append(path)
        self.rotate(max(entry.shown.as_of for entry in lists))
        return written

    def rotate(self, now: float) -> list[Path]:
        """Delete the date partitions that ended more than ``retention_days`` before ``now``."""
        oldest = _dates(np.array([now - self.retention_days * DAY_SECONDS]))[0]
        removed = []
        for folder in sorted(self.root.glob(f"{PARTITION_PREFIX}*")):
            if folder.name.removeprefix(PARTITION_PREFIX) < oldest:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        return removed


@dataclass(frozen=True)
class _Buffered:
    """One recorded list: what was shown, when, and its feature rows (rows x features; no columns when the list
    was not re-ranked)."""

    shown: ShownList
    served_at: float
    features: np.ndarray


def _per_list(values: Sequence[Any], counts: np.ndarray) -> np.ndarray:
    """One value per list repeated for each of its rows (an object array: strings and None stay as they are)."""
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return np.repeat(column, counts)


def _lists_of(lengths: Sequence[int] | np.ndarray, values: pa.Array) -> pa.ListArray:
    """``values`` cut into consecutive lists of ``lengths``."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _table(lists: Sequence[_Buffered]) -> pa.Table:
    """The buffered lists as one Arrow table of ``SCHEMA``, one row per shown item."""
    shown = [entry.shown for entry in lists]
    counts = np.array([len(s.item_ids) for s in shown], dtype=np.int64)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    sources = [list(row) for s in shown for row in s.sources]
    feature_widths = np.repeat([entry.features.shape[1] for entry in lists], [len(entry.features) for entry in lists])
    flat_features = np.concatenate([entry.features.ravel() for entry in lists]).astype(np.float32, copy=False)
    columns = {
        "request_id": _per_list([s.request_id for s in shown], counts),
        "served_at": np.repeat(np.array([entry.served_at for entry in lists], dtype=np.float64), counts),
        "as_of": np.repeat(np.array([s.as_of for s in shown], dtype=np.float64), counts),
        "user_id": _per_list([s.user_id for s in shown], counts),
        "version": _per_list([s.version for s in shown], counts),
        "endpoint": _per_list([s.endpoint for s in shown], counts),
        "variant": _per_list([s.variant for s in shown], counts),
        "latency_ms": np.repeat(np.array([s.latency_ms for s in shown], dtype=np.float64), counts),
        "rank": (np.arange(int(counts.sum())) - starts).astype(np.int32),
        "item_id": np.array([str(item) for s in shown for item in s.item_ids], dtype=object),
        "score": np.concatenate([np.asarray(s.scores, dtype=np.float64) for s in shown]),
        "sources": _lists_of(
            [len(row) for row in sources], pa.array([name for row in sources for name in row], pa.string())
        ),
        "features": _lists_of(feature_widths, pa.array(flat_features, pa.float32())),
    }
    arrays = [column if isinstance(column, pa.Array) else pa.array(column, type=SCHEMA.field(name).type)
              for name, column in columns.items()]  # fmt: skip
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def read_impressions(root: Path) -> tuple[pd.DataFrame, list[str]]:
    """Every logged impression under ``root`` and the feature names of their rows (files whose feature names
    differ from the newest file's are skipped: their rows do not fit the same model)."""
    files = sorted(root.glob(f"{PARTITION_PREFIX}*/*.parquet"))
    if not files:
        return pd.DataFrame(columns=SCHEMA.names), []
    names_of = {f: _feature_names(f) for f in files}
    newest = names_of[max(files, key=lambda f: f.name)]  # names start with the write time (ms)
    frames = [pq.read_table(f).to_pandas() for f in files if names_of[f] == newest]
    return pd.concat(frames, ignore_index=True), newest


def _feature_names(path: Path) -> list[str]:
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid) as error:
        raise ValueError(f"impression file {path} cannot be read: {error}") from error
    names = metadata.get(FEATURE_NAMES_KEY, b"").decode()
    return names.split("\t") if names else []


def _dates(seconds: np.ndarray) -> list[str]:
    return [datetime.fromtimestamp(float(s), UTC).strftime("%Y-%m-%d") for s in seconds]
