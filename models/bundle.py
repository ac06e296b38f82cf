"""What a published version holds for serving, and how a ``Recommender`` is rebuilt from it.

A version folder: ``stage1/`` (indexes, vectors, ALS factors, popularity snapshot), ``features/`` (the item
snapshot table served from memory, the feature spec), ``ranker/`` (LightGBM text model). The manifest names the
chosen candidate-set size, the feature list and order, the data snapshot and the checksum of every file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models import columns as C
from models.artifacts import ArtifactError, verify_version
from models.contract import Dataset
from models.features import EVENT_TIMESTAMP, FeatureContext, FeatureSpec, item_snapshots, user_snapshots
from models.ranker import Ranker
from models.recommend import Recommender, Request, StaticItemFeatures
from models.rules import Catalog, RulesConfig
from models.stage1 import load_stage1, snapshot_time

ITEM_TABLE = "item_features.parquet"


def serving_snapshot(dataset: Dataset, entity: str) -> tuple[pd.DataFrame, pd.Timestamp]:
    """Features of every user (``entity="user"``) or item as of the data's 'now' (the day after the last event)."""
    at = pd.Timestamp(snapshot_time(dataset.interactions), unit="s", tz="UTC")
    context = FeatureContext(dataset.items, dataset.users, dataset.interactions)
    if entity == "user":
        return user_snapshots(context, dataset.users[C.USER_ID].to_numpy(), [at] * len(dataset.users)), at
    if entity == "item":
        return item_snapshots(context, dataset.items[C.ITEM_ID].to_numpy(), [at] * len(dataset.items)), at
    raise ValueError(f"entity must be 'user' or 'item', got {entity!r}")


def catalog_from_item_table(table: pd.DataFrame) -> Catalog:
    """Rules need category, price, stock and launch time: all are item features of the snapshot."""
    return Catalog(
        item_ids=table[C.ITEM_ID].to_numpy().astype(str),
        categories=table["item_category"].to_numpy().astype(str),
        prices=table["item_price"].to_numpy(dtype=float),
        in_stock=table["item_in_stock"].to_numpy(dtype=float) > 0.5,
        created=table["item_created_ts"].to_numpy(dtype=float),
    )


def load_recommender(
    version_dir: Path, rules: RulesConfig, encoder_dim: int | None = None
) -> tuple[Recommender, dict[str, Any]]:
    """Verify the version's checksums, then rebuild every component, checking each against the manifest."""
    manifest = verify_version(version_dir)
    for section in ("stage1", "features", "ranker", "k_candidates"):
        if section not in manifest:
            raise ArtifactError(f"{version_dir / 'manifest.json'}: no '{section}' section (not a complete version)")
    stage1 = load_stage1(version_dir / "stage1", manifest["stage1"], encoder_dim)
    features = manifest["features"]
    spec = FeatureSpec.from_json(features["spec"])
    table_path = version_dir / "features" / ITEM_TABLE
    table = pd.read_parquet(table_path)
    item_ids = np.load(version_dir / "stage1" / "item_ids.npy", allow_pickle=False)
    if len(table) != len(item_ids) or set(table[C.ITEM_ID]) != set(item_ids.tolist()):
        raise ArtifactError(f"{table_path}: item table covers {len(table)} items, the indexes {len(item_ids)}")
    table = table.set_index(C.ITEM_ID).loc[item_ids].reset_index()
    ranker = Ranker.load(version_dir / "ranker", manifest["ranker"], spec.names)
    popularity = stage1.source("popular").popularity  # type: ignore[attr-defined]
    order = np.argsort(-popularity.scores_at(float(manifest["stage1"]["as_of"])), kind="stable")
    recommender = Recommender(
        stage1=stage1,
        catalog=catalog_from_item_table(table),
        item_features=StaticItemFeatures(table, item_ids, spec),
        spec=spec,
        ranker=ranker,
        rules=rules,
        k_candidates=int(manifest["k_candidates"]),
        popularity_order=order,
        version=str(manifest["version"]),
    )
    return recommender, manifest


def write_item_table(items: pd.DataFrame, spec: FeatureSpec, out_dir: Path, at: pd.Timestamp) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    items.drop(columns=[EVENT_TIMESTAMP]).to_parquet(out_dir / ITEM_TABLE, index=False)
    return {"item_table": f"features/{ITEM_TABLE}", "spec": spec.to_json(), "snapshot_time": at.isoformat(),
            "items": len(items)}  # fmt: skip


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def smoke_test(version_dir: Path) -> None:
    """Load a version as the service would and recommend for one trained user; raise if anything is off."""
    recommender, manifest = load_recommender(version_dir, RulesConfig())
    assert recommender.stage1.collaborative is not None
    user = str(recommender.stage1.collaborative.user_ids[0])
    as_of = float(manifest["stage1"]["as_of"])
    result = recommender.recommend(Request(user_id=None, k=10, as_of=as_of), None)
    if len(result.items) != min(10, len(recommender.catalog.item_ids)):
        raise ArtifactError(f"{version_dir}: smoke test returned {len(result.items)} items for a fallback request")
    similar = recommender.similar(str(recommender.catalog.item_ids[0]), 5, as_of=as_of)
    if not similar:
        raise ArtifactError(f"{version_dir}: smoke test found no similar items (user {user})")
