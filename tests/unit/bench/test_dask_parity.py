"""The scale-out parity bench's verdict: equal snapshots and vectors within 1e-6 pass, any other difference fails."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.dask_parity import SNAPSHOTS, compare, lines


def _run(folder: Path, users: pd.DataFrame, vectors: np.ndarray) -> dict:
    folder.mkdir(parents=True)
    for name in SNAPSHOTS:
        users.to_parquet(folder / name)
    np.save(folder / "vectors.npy", vectors)
    return {"snapshot_dir": str(folder), "vectors": str(folder / "vectors.npy"),
            "features": {"seconds": 1.0}, "embedding": {"seconds": 2.0}}  # fmt: skip


def test_equal_runs_pass_and_a_changed_value_or_vector_fails(tmp_path: Path) -> None:
    frame = pd.DataFrame({"user_id": ["u1", "u2"], "views_30d": [3.0, 0.5]})
    vectors = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    local = _run(tmp_path / "local", frame, vectors)
    same = compare(local, _run(tmp_path / "same", frame.copy(), vectors + 5e-7))
    assert same["same"] and same["vectors"]["max_abs_difference"] <= 1e-6

    changed = frame.assign(views_30d=[3.0, 0.5000001])
    other = compare(local, _run(tmp_path / "other", changed, vectors))
    assert not other["same"] and not other["snapshots"]["user_features.parquet"]["equal"]
    drifted = compare(local, _run(tmp_path / "drifted", frame, vectors + 2e-6))
    assert not drifted["same"] and not drifted["vectors"]["equal_within_tolerance"]

    result = {"catalogue": {"items": 4, "users": 2, "interactions": 9}, "scheduler": "LocalCluster",
              "embedded_items": 4, "shard_size": 2, "local": local, "dask": local, **drifted}  # fmt: skip
    text = "\n".join(lines(result))
    assert "| features: user_features.parquet (2 rows × 2 columns) | 1.0 s | 1.0 s | equal, every column |" in text
    assert "max abs difference 2e-06 (OVER 1e-06)" in text
