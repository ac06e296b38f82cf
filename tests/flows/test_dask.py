"""Scale-out: with a Dask scheduler configured, embedding shards and feature snapshots run on the cluster
(prefect-dask's task runner) and give the same results as the local thread pool."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prefect import flow

from flows.features import features_flow
from flows.runtime import task_runner
from flows.stage1 import embed, fingerprint_dataset
from models.settings import Settings

distributed = pytest.importorskip("distributed")


@flow
def embedding_flow(dataset_dir: str, settings: Settings) -> str:
    return embed(dataset_dir, fingerprint_dataset(dataset_dir), settings)


@pytest.fixture(scope="module")
def cluster():
    # in-process workers share the test's Prefect settings; real deployments point at a remote scheduler
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as local:
        yield local


def test_embedding_shards_run_on_dask(small_state, cluster, tmp_path: Path):
    settings, dataset_dir = small_state
    # the reference encoder: its vectors do not depend on the batch a text is encoded in. The int8 encoder's do
    # (onnxruntime quantises activations per batch), so shards agree with a local run only to cosine ~0.999 there.
    settings = settings.model_copy(update={"embedding_backend": "torch"})
    local = embedding_flow.with_options(task_runner=task_runner(settings))(str(dataset_dir), settings)
    dask_settings = settings.model_copy(
        update={
            "dask_address": cluster.scheduler_address,
            "embedding_shard_size": 600,
            "state_dir": tmp_path / "dask-state",
        }
    )
    runner = task_runner(dask_settings)
    assert type(runner).__name__ == "DaskTaskRunner"
    sharded = embedding_flow.with_options(task_runner=runner)(str(dataset_dir), dask_settings)
    shards = sorted((tmp_path / "dask-state" / "work" / "embeddings" / "shards").glob("*.npy"))
    assert len(shards) == 3  # 1500 items in shards of 600
    np.testing.assert_allclose(np.load(sharded), np.load(local), atol=1e-5)
    assert Path(sharded).name == Path(local).name  # the same content key


def test_feature_snapshots_run_on_dask(small_state, cluster, tmp_path: Path):
    settings, dataset_dir = small_state
    dask_settings: Settings = settings.model_copy(
        update={"dask_address": cluster.scheduler_address, "state_dir": tmp_path / "dask-state"}
    )
    fingerprint = "f" * 64
    result = features_flow.with_options(task_runner=task_runner(dask_settings))(
        str(dataset_dir), fingerprint, dask_settings
    )
    users = pd.read_parquet(Path(result["snapshot_dir"]) / "user_features.parquet")
    items = pd.read_parquet(Path(result["snapshot_dir"]) / "item_features.parquet")
    assert len(users) == settings.demo_users and len(items) == settings.demo_items
    assert result["counts"] == {"user_rows": settings.demo_users, "item_rows": settings.demo_items}
