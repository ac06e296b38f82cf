"""The Feast feature store in code: configuration from settings, snapshot writes, materialisation, point-in-time
training frames and online reads.

Offline store: parquet snapshot files read by Feast's DuckDB engine (the default file/dask engine collapses entity
rows that share a key and a timestamp, feast #6787). Online store: SQLite under the state folder, or Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from feast import FeatureStore, RepoConfig
from feast.infra.online_stores.redis import RedisOnlineStoreConfig
from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
from feast.repo_config import RegistryConfig

from models.data import columns as C
from models.features.spec import (
    EVENT_TIMESTAMP,
    FEATURE_SERVICE,
    HISTORY_SERVICE,
    HISTORY_VIEW,
    ITEM_FEATURES,
    ITEM_VIEW,
    USER_FEATURES,
    USER_HISTORY,
    USER_MODEL_FEATURES,
    USER_VIEW,
)
from models.files import write_parquet
from models.settings import PROJECT_ROOT, Settings

REPO_PATH = PROJECT_ROOT / "feature_repo"
"""The Feast repository: its definitions are applied by the pipeline (flows), never by this library."""


def store_dir(settings: Settings, dataset: str) -> Path:
    """One Feast store per namespace (default: per dataset): registry, SQLite online store and parquet snapshots."""
    return (settings.feast_dir / settings.deployment(dataset)).resolve()


def feature_data_dir(settings: Settings, dataset: str) -> Path:
    return store_dir(settings, dataset) / "data"


ONLINE_WRITE_BATCH_ROWS = 10_000
"""Rows converted and written to the online store at a time by a materialization. Feast's default converts a whole
view to protobuf objects at once: at 1 M items that held 15 GB (the publish step's peak)."""


def repo_config(settings: Settings, dataset: str) -> RepoConfig:
    """The store configuration for this state folder, dataset and online-store choice."""
    feast_dir = store_dir(settings, dataset)
    if settings.online_store == "redis":
        online: object = RedisOnlineStoreConfig(connection_string=settings.redis_url, skip_dedup=True)
    else:
        online = SqliteOnlineStoreConfig(path=str(feast_dir / "online_store.db"))
    return RepoConfig(
        project=_project_name(settings.deployment(dataset)),  # Redis keys are per project
        provider="local",
        registry=RegistryConfig(path=str(feast_dir / "registry.db"), cache_ttl_seconds=60),
        online_store=online,
        offline_store={"type": "duckdb"},
        materialization={"online_write_batch_size": ONLINE_WRITE_BATCH_ROWS},
        entity_key_serialization_version=3,
        repo_path=REPO_PATH,
    )


def _project_name(dataset: str) -> str:
    """Feast project names allow letters, digits and underscores; Redis keys are namespaced by it."""
    return "recsys_" + "".join(c if c.isalnum() else "_" for c in dataset.lower())


def open_store(settings: Settings, dataset: str) -> FeatureStore:
    feature_data_dir(settings, dataset).mkdir(parents=True, exist_ok=True)
    return FeatureStore(config=repo_config(settings, dataset))


def append_user_snapshots(settings: Settings, dataset: str, snapshots: pd.DataFrame) -> int:
    """Write user snapshots to both user views (profile and history); returns the profile view's row count."""
    keys = [C.USER_ID, EVENT_TIMESTAMP]
    append_snapshots(settings, dataset, HISTORY_VIEW, snapshots[keys + list(USER_HISTORY)])
    return append_snapshots(settings, dataset, USER_VIEW, snapshots[keys + list(USER_MODEL_FEATURES)])


def append_snapshots(settings: Settings, dataset: str, view: str, snapshots: pd.DataFrame) -> int:
    """Add snapshot rows to a view's parquet source; a newer write of the same (key, time) replaces the older.

    Returns the number of rows in the source afterwards.
    """
    key = C.ITEM_ID if view == ITEM_VIEW else C.USER_ID
    path = feature_data_dir(settings, dataset) / f"{view}.parquet"
    frame = snapshots
    if path.exists():
        frame = pd.concat([pd.read_parquet(path), snapshots], ignore_index=True)
    frame = frame.drop_duplicates([key, EVENT_TIMESTAMP], keep="last").sort_values([EVENT_TIMESTAMP, key])
    write_parquet(frame.reset_index(drop=True), path)
    return len(frame)


def materialize(store: FeatureStore, start: datetime, end: datetime) -> None:
    """Load the newest snapshot per entity in [start, end] into the online store, overwriting what is there.

    Always the full window, never Feast's incremental mode: its watermark does not move when a re-run writes a
    snapshot at the same data time (new feature code, corrected data), so the online store would keep serving the
    old values. (Redis is configured without Feast's same-timestamp write skip for the same reason.)
    """
    store.materialize(start_date=start, end_date=end)


def service_features(store: FeatureStore, view: str | None = None, service_name: str = FEATURE_SERVICE) -> list[str]:
    """``view:feature`` references of a feature service, optionally of one view only."""
    service = store.get_feature_service(service_name)
    refs = []
    for projection in service.feature_view_projections:
        if view is None or projection.name == view:
            refs += [f"{projection.name_to_use()}:{feature.name}" for feature in projection.features]
    return refs


def point_in_time_join(store: FeatureStore, entity_rows: pd.DataFrame, view: str) -> pd.DataFrame:
    """The features of one view (as the feature services list them) joined point-in-time onto entity rows
    (its join key and ``event_timestamp``), in row order: each row gets the newest snapshot at or before its time."""
    rows = entity_rows.reset_index(drop=True).copy()
    rows["_row"] = np.arange(len(rows))
    service = FEATURE_SERVICE if view != HISTORY_VIEW else HISTORY_SERVICE
    job = store.get_historical_features(entity_df=rows, features=service_features(store, view, service))
    frame = job.to_df().sort_values("_row").drop(columns="_row").reset_index(drop=True)
    if len(frame) != len(rows):
        raise RuntimeError(f"point-in-time join of {view} returned {len(frame)} rows for {len(rows)} entity rows")
    return frame


def user_feature_refs(store: FeatureStore) -> list[str]:
    """The online user features' references (the ranker's and the history stage 1 queries with). Resolving them
    reads the registry (~2 ms): the service does it once per loaded version, not per request."""
    return service_features(store, USER_VIEW) + service_features(store, None, HISTORY_SERVICE)


def online_user_features(store: FeatureStore, user_ids: Sequence[str], refs: list[str] | None = None) -> pd.DataFrame:
    """User features from the online store, one row per user id in order (missing users get nulls)."""
    response = store.get_online_features(
        features=refs or user_feature_refs(store), entity_rows=[{C.USER_ID: u} for u in user_ids]
    )
    return pd.DataFrame(response.to_dict())[[C.USER_ID, *USER_FEATURES]]


def online_user_row(store: FeatureStore, user_id: str, refs: list[str]) -> dict[str, Any]:
    """One user's features as a dict (the per-request read: no DataFrame)."""
    values = store.get_online_features(features=refs, entity_rows=[{C.USER_ID: user_id}]).to_dict()
    return {name: values[name][0] for name in (C.USER_ID, *USER_FEATURES)}


def online_item_features(store: FeatureStore, item_ids: Sequence[str], chunk: int = 5000) -> pd.DataFrame:
    """Item features from the online store (used to check the in-memory item table equals what was materialised)."""
    refs = service_features(store, ITEM_VIEW)
    parts = []
    for start in range(0, len(item_ids), chunk):
        rows = [{C.ITEM_ID: i} for i in item_ids[start : start + chunk]]
        parts.append(pd.DataFrame(store.get_online_features(features=refs, entity_rows=rows).to_dict()))
    return pd.concat(parts, ignore_index=True)[[C.ITEM_ID, *ITEM_FEATURES]]
