"""Stage-1 flow: embed items → tune the peers (stage 1's models) on the validation cut → log the search to MLflow.
Serving's stage 1 is fitted (``build_serving_stage1``) once the re-ranker flow has chosen the fusion weights."""

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

from flows.common import CACHED, IO_RETRIES, code_fingerprint, settings_key, slug, work_dir, work_key
from flows.runtime import run_step
from flows.tracking import configure_mlflow, log_dataset
from models.data import columns as C
from models.data.tables import dataset_fingerprint, load_saved_dataset
from models.evaluation.tuning import tune_peers as tune_peer_params
from models.files import write_json, write_npy
from models.retrieval.stage1 import Stage1Config, build_stage1_step
from models.settings import Settings
from models.text.cache import EmbeddingCache, embed_item_range, embed_items_to_file, read_item_texts, texts_digest
from models.text.encoders import bundle_encoder, choose_backend, make_encoder
from models.text.model import encoder_name
from models.training.steps import validation_cut

SECTION_FILE = "section.json"


@task(**IO_RETRIES)
def fingerprint_dataset(dataset_dir: str) -> str:
    return dataset_fingerprint(Path(dataset_dir))


@task(**CACHED)
def choose_text_encoder(dataset_dir: str, fingerprint: str, requested: str, check: dict[str, Any],
                        settings: Settings) -> dict[str, Any]:  # fmt: skip
    """The encoder this catalogue is embedded with: ``auto`` checks the int8 one against the reference on a sample
    of its own texts (the check's outcome is kept: a re-run of the same catalogue does not repeat it)."""
    texts = read_item_texts(Path(dataset_dir) / "items.parquet")
    choice = choose_backend(requested, texts, settings.cache_dir, settings.threads, check["texts"],
                            check["min_cosine"], settings.seed)  # fmt: skip
    print(f"text encoder: {choice.backend} ({choice.reason})")
    return choice.to_json()


def resolve_encoder(dataset_dir: str, fingerprint: str, settings: Settings) -> dict[str, Any]:
    check = {"texts": settings.embedding_check_texts, "min_cosine": settings.embedding_min_cosine}
    return choose_text_encoder(dataset_dir, fingerprint, settings.embedding_backend, check, settings)


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
        return run_step(embed_items, dataset_dir, fingerprint, settings.embedding_backend, settings)
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
def tune_peers(dataset_dir: str, fingerprint: str, config: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The peers' hyperparameters searched on the validation cut (Optuna, time and trial budget per peer)."""
    dataset = load_saved_dataset(Path(dataset_dir))
    item_ids = dataset.items[C.ITEM_ID].to_numpy().astype(str)
    inner = validation_cut(dataset, settings)[1]
    del dataset  # the search needs the validation cut alone: the whole event log (0.7 GB at 15 M events) can go
    return tune_peer_params(inner, item_ids, settings).to_json()


@task
def log_tuning_run(tuning: dict[str, Any], dataset_dir: str, fingerprint: str, settings: Settings) -> str:
    """One MLflow run for the search, each trial a child run (params, validation NDCG@10, seconds); the dataset
    searched on (its validation cut) is the run's input."""
    dataset = Path(dataset_dir).name
    configure_mlflow(settings.mlflow_dir, f"recsys-{dataset}")
    with mlflow.start_run(run_name="tuning") as parent:
        mlflow.set_tags({"stage": "tuning", "dataset": dataset, "data_fingerprint": fingerprint[:16]})
        log_dataset(dataset_dir, fingerprint, context="tuning")
        for peer, params in tuning["params"].items():
            mlflow.log_params({f"{peer}.{k}": v for k, v in params.items()})
        mlflow.log_metrics({f"{peer}_validation_ndcg_at_10": v for peer, v in tuning["validation_ndcg@10"].items()})
        mlflow.log_metrics({f"{peer}_tuning_seconds": v for peer, v in tuning["seconds"].items()})
        for trial in tuning["history"]:
            with mlflow.start_run(run_name=f"{trial['peer']}-{trial['trial']}", nested=True):
                mlflow.set_tags({"stage": "tuning-trial", "peer": trial["peer"], "dataset": dataset})
                mlflow.log_params(trial["params"])
                mlflow.log_metrics({"validation_ndcg_at_10": trial["ndcg@10"], "seconds": trial["seconds"]})
        return str(parent.info.run_id)


@task(**CACHED)
def build_serving_stage1(
    dataset_dir: str, fingerprint: str, vectors_path: str, stage1_config: dict[str, Any], settings: Settings
) -> str:
    """Fit stage 1 on every interaction with the configuration chosen on the validation cut, into a work folder
    named by the inputs (an existing complete folder is reused)."""
    out = work_dir(
        settings, "stage1", work_key(fingerprint, Path(vectors_path).name, stage1_config, code_fingerprint())
    )
    if not (out / SECTION_FILE).exists():
        shutil.rmtree(out, ignore_errors=True)
        dataset = load_saved_dataset(Path(dataset_dir))
        config = Stage1Config.from_json(stage1_config)
        section = build_stage1_step(dataset, np.load(vectors_path), config, settings.embedding_backend, out)
        bundle_encoder(settings.embedding_backend, settings.cache_dir, out)  # queries use the vectors' model
        write_json(section, out / SECTION_FILE)
    return str(out)


def tuning_table(tuning: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"peer": peer, "validation_ndcg@10": round(tuning["validation_ndcg@10"][peer], 4),
             "trials": tuning["trials"][peer], "seconds": tuning["seconds"][peer],
             "params": json.dumps(tuning["params"][peer])} for peer in tuning["params"]]  # fmt: skip


@flow(name="stage1", log_prints=True)
def stage1_flow(dataset_dir: str, settings: Settings) -> dict[str, Any]:
    """Choose the text encoder, embed the items and tune the peers (stage 1's models) on the validation cut of a
    saved dataset."""
    dataset = Path(dataset_dir).name
    fingerprint = fingerprint_dataset(dataset_dir)
    encoder = resolve_encoder(dataset_dir, fingerprint, settings)
    settings = settings.model_copy(update={"embedding_backend": encoder["backend"]})
    vectors = embed(dataset_dir, fingerprint, settings)
    tuning = run_step(tune_peers, dataset_dir, fingerprint, settings_key(settings), settings)
    run_id = log_tuning_run(tuning, dataset_dir, fingerprint, settings)
    create_table_artifact(tuning_table(tuning), key=f"tuning-{slug(dataset)}",
                          description=f"Peers tuned on the validation cut of {dataset}")  # fmt: skip
    for row in tuning_table(tuning):
        print(row)
    return {"vectors": vectors, "encoder": encoder, "tuning": tuning, "mlflow_run_id": run_id}
