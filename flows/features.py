"""Feature flow: compute serving snapshots → write the offline store → apply the Feast repo → materialise online."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_table_artifact

from feature_repo.definitions import build_definitions
from flows.common import CACHED, IO_RETRIES, code_fingerprint, slug, work_dir, work_key
from flows.runtime import step_processes_share_this_api
from flows.tracking import configure_mlflow, log_dataset
from models.data.tables import load_saved_dataset
from models.features.snapshots import serving_snapshots
from models.features.spec import EVENT_TIMESTAMP, FEATURE_SERVICE, ITEM_NUMERIC, ITEM_VIEW, USER_NUMERIC
from models.features.store import (
    append_snapshots,
    append_user_snapshots,
    feature_data_dir,
    materialize,
    open_store,
)
from models.files import write_json, write_parquet
from models.settings import Settings

SNAPSHOT_FILE = "snapshot.json"


@task(**CACHED)
def compute_serving_snapshots(dataset_dir: str, fingerprint: str, code: str, entity: str, settings: Settings) -> str:
    """User or item features of everyone as of the data's 'now', in a work folder named by the inputs."""
    out = work_dir(settings, "features", work_key(fingerprint, code))
    path = out / f"{entity}_features.parquet"
    if not path.exists():
        frame, at = serving_snapshots(load_saved_dataset(Path(dataset_dir)), entity)
        write_parquet(frame, path)
        write_json({"snapshot_time": at.isoformat()}, out / SNAPSHOT_FILE)
    return str(out)


@task(**IO_RETRIES)
def write_offline_store(snapshot_dir: str, dataset: str, settings: Settings) -> dict[str, int]:
    folder = Path(snapshot_dir)
    return {
        "user_rows": append_user_snapshots(settings, dataset, pd.read_parquet(folder / "user_features.parquet")),
        "item_rows": append_snapshots(settings, dataset, ITEM_VIEW, pd.read_parquet(folder / "item_features.parquet")),
    }


def apply_definitions(dataset: str, settings: Settings) -> None:
    """Register the feature repository's entities, views and services in the dataset's store (idempotent)."""
    open_store(settings, dataset).apply(build_definitions(feature_data_dir(settings, dataset)))


@task(**IO_RETRIES)
def apply_feature_repo(dataset: str, settings: Settings) -> None:
    apply_definitions(dataset, settings)


def snapshot_time(snapshot_dir: str) -> pd.Timestamp:
    return pd.Timestamp(json.loads((Path(snapshot_dir) / SNAPSHOT_FILE).read_text())["snapshot_time"])


def snapshot_freshness(snapshot_dir: str, settings: Settings) -> dict[str, Any]:
    at = snapshot_time(snapshot_dir)
    return {
        "snapshot_time": at.isoformat(),
        "snapshot_age_hours": round((pd.Timestamp.now(tz="UTC") - at).total_seconds() / 3600, 1),
        "online_store": settings.online_store,
    }


def materialize_snapshot(snapshot_dir: str, dataset: str, settings: Settings) -> dict[str, Any]:
    """Load the serving snapshot into the online store. The pipeline calls it once the new version loaded and
    served its smoke test, champion or challenger (user features are data: the champion serves the fresher ones
    too, with the same definitions); a version that does not load never changes the features being served."""
    at = snapshot_time(snapshot_dir)
    store = open_store(settings, dataset)
    earliest = min(pd.read_parquet(Path(snapshot_dir) / name, columns=[EVENT_TIMESTAMP])[EVENT_TIMESTAMP].min()
                   for name in ("user_features.parquet", "item_features.parquet"))  # fmt: skip
    materialize(store, earliest.to_pydatetime(), (at + pd.Timedelta(seconds=1)).to_pydatetime())
    return {**snapshot_freshness(snapshot_dir, settings), "materialized_at": datetime.now(UTC).isoformat()}


@task
def log_feature_stats(snapshot_dir: str, counts: dict[str, int], freshness: dict[str, Any], dataset_dir: str,
                      fingerprint: str, settings: Settings) -> str:  # fmt: skip
    """One MLflow run for the serving snapshot: row counts, per-feature statistics and null shares; the dataset the
    features were computed from is the run's input."""
    dataset = Path(dataset_dir).name
    configure_mlflow(settings.mlflow_dir, f"recsys-{dataset}")
    users = pd.read_parquet(Path(snapshot_dir) / "user_features.parquet")
    items = pd.read_parquet(Path(snapshot_dir) / "item_features.parquet")
    with mlflow.start_run(run_name="features") as run:
        mlflow.set_tags({"stage": "features", "dataset": dataset, "data_fingerprint": fingerprint[:16]})
        log_dataset(dataset_dir, fingerprint, context="features")
        mlflow.log_params({"online_store": settings.online_store, "feature_service": FEATURE_SERVICE,
                           "snapshot_time": freshness["snapshot_time"]})  # fmt: skip
        mlflow.log_metrics({f"offline_{k}": v for k, v in counts.items()})
        mlflow.log_metrics({"serving_users": len(users), "serving_items": len(items)})
        for frame, names in ((users, USER_NUMERIC), (items, ITEM_NUMERIC)):
            stats = frame[list(names)].describe().T
            stats["null_share"] = frame[list(names)].isna().mean()
            mlflow.log_table(stats.reset_index(names="feature"), f"stats_{names[0].split('_')[0]}_features.json")
            mlflow.log_metrics({f"null_share_{n}": float(stats.loc[n, "null_share"]) for n in names})
        return str(run.info.run_id)


@flow(name="features", log_prints=True)
def features_flow(dataset_dir: str, fingerprint: str, settings: Settings) -> dict[str, Any]:
    """Compute the serving snapshot of every user and item and register it with Feast (the online store is loaded
    at publishing, after the new version passed its gate)."""
    dataset = Path(dataset_dir).name
    with step_processes_share_this_api():  # the task runner may start processes (RECSYS_TASK_PROCESSES)
        parts = [compute_serving_snapshots.submit(dataset_dir, fingerprint, code_fingerprint(), entity, settings)
                 for entity in ("user", "item")]  # fmt: skip
        snapshot_dir = [part.result() for part in parts][0]
    apply_feature_repo(dataset, settings)
    counts = write_offline_store(snapshot_dir, dataset, settings)
    freshness = snapshot_freshness(snapshot_dir, settings)
    run_id = log_feature_stats(snapshot_dir, counts, freshness, dataset_dir, fingerprint, settings)
    rows = [{"view": view, "offline_rows": counts[key], "snapshot_time": freshness["snapshot_time"],
             "snapshot_age_hours": freshness["snapshot_age_hours"]}
            for view, key in (("user_features", "user_rows"), ("item_features", "item_rows"))]  # fmt: skip
    create_table_artifact(rows, key=f"features-{slug(dataset)}", description="Feature rows and freshness")
    return {"snapshot_dir": snapshot_dir, "counts": counts, "freshness": freshness, "mlflow_run_id": run_id}
