"""Freed memory goes back to the operating system: glibc's heap and Arrow's pool (which reads every Parquet file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow

from models.heap import release_free_memory


def resident_mb() -> float:
    return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024


def test_release_hands_back_what_reading_parquet_left_in_arrows_pool(tmp_path: Path):
    rows = 2_000_000
    frame = pd.DataFrame({"user_id": [f"u{i % 50_000}" for i in range(rows)],
                          "item_id": [f"i{i % 70_001}" for i in range(rows)], "weight": np.ones(rows)})  # fmt: skip
    frame.to_parquet(tmp_path / "events.parquet", row_group_size=100_000)
    del frame
    read = pd.read_parquet(tmp_path / "events.parquet")
    assert pyarrow.default_memory_pool().max_memory() > 32 * 2**20  # the reader went through Arrow's pool
    release_free_memory()
    before = resident_mb()
    pyarrow.default_memory_pool().release_unused()
    assert resident_mb() > before - 16, "Arrow's pool still held freed pages after release_free_memory()"
    assert len(read) == rows
