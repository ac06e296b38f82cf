"""Stage-1 flow: embed items → fit sources and build FAISS indexes → measure recall → log to MLflow → publish."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from prefect import flow, task, unmapped
from prefect.artifacts import create_table_artifact

from flows.common import CACHED, IO_RETRIES, link_tree, settings_key, slug, work_dir, work_key
from flows.tracking import configure_mlflow, flat_metrics, log_figure, recall_curve_figure
from models.data import columns as C
from models.data.tables import dataset_fingerprint, load_saved_dataset
from models.evaluation.recall import RECALL_KS, evaluate_stage1_step
from models.files import write_json, write_npy
from models.recommender.versions import VersionStore
from models.retrieval.stage1 import build_stage1_step
from models.settings import Settings
from models.text.cache import EmbeddingCache, embed_item_range, embed_items_to_file, read_item_texts, texts_digest
from models.text.encoders import make_encoder
from models.text.model import encoder_name

STAGE1_SETTINGS = (
    "seed", "test_fraction", "als_factors", "als_regularization", "als_iterations", "als_alpha", "als_negative_weight", "candidate_weights", "candidate_reserved", "graph_top_m", "availability_grace_days",
    "popular_half_life_days", "semantic_half_life_days", "fresh_window_days", "index_factory", "ann_target_recall",
    "candidates_k", "recall_max_users",
)  # fmt: skip
SECTION_FILE = "section.json"


@task(**IO_RETRIES)
def fingerprint_dataset(dataset_dir: str) -> str:
    return dataset_fingerprint(Path(dataset_dir))


@task(**IO_RETRIES, **CACHED)
def embed_items(dataset_dir: str, fingerprint: str, backend: str, settings: Settings) -> str:
    encoder = make_encoder(backend, threads=settings.threads, cache_dir=settings.cache_dir)
    cache = EmbeddingCache(settings.cache_dir / "embeddings")
    path, _ = embed_items_to_file(
        Path(dataset_dir) / "items.parquet", encoder, cache, settings.work_dir / "embeddings",
        settings.embedding_batch_size,
    )  # fmt: skip
    return str(path)


@task(**IO_RETRIES, **CACHED)
def embed_item_shard(
    dataset_dir: str, fingerprint: str, backend: str, start: int, stop: int, settings: Settings
) -> str:
    """One shard of the items, embedded on whichever worker runs it (the state folder is shared storage)."""
    encoder = make_encoder(backend, threads=1, cache_dir=settings.cache_dir)
    cache = EmbeddingCache(settings.cache_dir / "embeddings")
    vectors = embed_item_range(Path(dataset_dir) / "items.parquet", start, stop, encoder, cache,
                               settings.embedding_batch_size)  # fmt: skip
    return str(
        write_npy(vectors, settings.work_dir / "embeddings" / "shards" / f"{fingerprint[:16]}-{start}-{stop}.npy")
    )


@task(**IO_RETRIES)
def join_embedding_shards(dataset_dir: str, shard_paths: list[str], backend: str, settings: Settings) -> str:
    texts = read_item_texts(Path(dataset_dir) / "items.parquet")
    path = settings.work_dir / "embeddings" / f"{texts_digest(encoder_name(backend), texts)}.npy"
    if not path.exists():
        write_npy(np.vstack([np.load(p) for p in shard_paths]), path)
    return str(path)


def embed(dataset_dir: str, fingerprint: str, settings: Settings) -> str:
    """All items' text vectors: one task locally; shards mapped over the Dask cluster when one is configured."""
    if not settings.dask_address:
        return embed_items(dataset_dir, fingerprint, settings.embedding_backend, settings)
    count = len(pd.read_parquet(Path(dataset_dir) / "items.parquet", columns=[C.ITEM_ID]))
    size = max(1, settings.embedding_shard_size)
    starts = list(range(0, count, size))
    stops = [min(start + size, count) for start in starts]
    shards = embed_item_shard.map(dataset_dir, fingerprint, settings.embedding_backend, starts, stops,
                                  settings=unmapped(settings))  # fmt: skip
    return join_embedding_shards(
        dataset_dir, [shard.result() for shard in shards], settings.embedding_backend, settings
    )


@task(**CACHED)
def evaluate_stage1(
    dataset_dir: str, fingerprint: str, vectors_path: str, config: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    return evaluate_stage1_step(load_saved_dataset(Path(dataset_dir)), np.load(vectors_path), settings)


@task(**CACHED)
def build_stage1(
    dataset_dir: str, fingerprint: str, vectors_path: str, config: dict[str, Any], settings: Settings
) -> str:
    """Fit on all interactions into a work folder named by the inputs; an existing complete folder is reused."""
    out = work_dir(settings, "stage1", work_key(fingerprint, Path(vectors_path).name, config))
    if not (out / SECTION_FILE).exists():
        shutil.rmtree(out, ignore_errors=True)
        section = build_stage1_step(load_saved_dataset(Path(dataset_dir)), np.load(vectors_path), settings, out)
        write_json(section, out / SECTION_FILE)
    return str(out)


@task
def log_stage1_run(
    evaluation: dict[str, Any], stage1_dir: str, fingerprint: str, settings: Settings, dataset: str
) -> str:
    configure_mlflow(settings.mlflow_dir, f"recsys-{dataset}")
    section = json.loads((Path(stage1_dir) / SECTION_FILE).read_text())
    with mlflow.start_run(run_name="stage1") as run:
        mlflow.set_tags({"stage": "stage1", "dataset": dataset, "data_fingerprint": fingerprint[:16]})
        mlflow.log_params({f"stage1.{k}": v for k, v in settings_key(settings, *STAGE1_SETTINGS).items()})
        mlflow.log_metrics(flat_metrics("recall", evaluation["recall"]))
        for name, entry in section["indexes"].items():
            mlflow.log_params(
                {
                    f"{name}_index.factory": entry["factory"],
                    **{f"{name}_index.{k}": v for k, v in entry["params"].items()},
                }
            )
            mlflow.log_metrics({f"{name}_index_build_s": entry["build_seconds"], f"{name}_index_mb": entry["bytes"] / 2**20,
                                f"{name}_ann_recall_vs_exact": entry["params"].get("recall_vs_exact", 1.0)})  # fmt: skip
        mlflow.log_metrics({f"time_{k}": v for k, v in evaluation["timings"].items()})
        log_figure(recall_curve_figure(evaluation["recall"]), "stage1_recall_at_k.png")
        mlflow.log_dict(section, "stage1_section.json")
        return str(run.info.run_id)


@task
def publish_stage1(stage1_dir: str, fingerprint: str, dataset: str, settings: Settings) -> str:
    store = VersionStore(settings.versions_dir)
    builder = store.start()
    try:
        link_tree(Path(stage1_dir), builder.path / "stage1")
        (builder.path / "stage1" / SECTION_FILE).unlink()
        builder.add_section("stage1", json.loads((Path(stage1_dir) / SECTION_FILE).read_text()))
        return str(store.publish(builder, {"dataset": {"name": dataset, "fingerprint": fingerprint}}))
    except BaseException:
        store.discard(builder)
        raise


def recall_table(recall: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    return [{"source": name, **{f"R@{k}": round(by_k[str(k)], 4) for k in RECALL_KS}} for name, by_k in recall.items()]


@flow(name="stage1", log_prints=True)
def stage1_flow(dataset_dir: str, settings: Settings, publish: bool = True) -> dict[str, Any]:
    """Embed, index, evaluate and (optionally) publish stage 1 for a saved dataset."""
    dataset = Path(dataset_dir).name
    fingerprint = fingerprint_dataset(dataset_dir)
    vectors = embed(dataset_dir, fingerprint, settings)
    config = settings_key(settings, *STAGE1_SETTINGS)
    evaluation = evaluate_stage1(dataset_dir, fingerprint, vectors, config, settings)
    stage1_dir = build_stage1(dataset_dir, fingerprint, vectors, config, settings)
    create_table_artifact(recall_table(evaluation["recall"]), key=f"stage1-recall-{slug(dataset)}",
                          description=f"Stage-1 Recall@K by source on {dataset} (shared protocol)")  # fmt: skip
    run_id = log_stage1_run(evaluation, stage1_dir, fingerprint, settings, dataset)
    version = publish_stage1(stage1_dir, fingerprint, dataset, settings) if publish else None
    for row in recall_table(evaluation["recall"]):
        print(row)
    return {
        "recall": evaluation["recall"],
        "stage1_dir": stage1_dir,
        "vectors": vectors,
        "mlflow_run_id": run_id,
        "version": version,
        "timings": evaluation["timings"],
    }
