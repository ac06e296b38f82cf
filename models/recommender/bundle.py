"""What a published version holds for serving, and how a ``Recommender`` is rebuilt from it.

A version folder: ``stage1/`` (indexes, vectors, ALS factors, popularity snapshot), ``features/`` (the item
snapshot table served from memory, the catalogue the rules read), ``ranker/`` (LightGBM text model). The manifest
names the chosen candidate-set size, the feature list and order, the data snapshot and the checksum of every file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.data import columns as C
from models.features.snapshots import ItemTags
from models.features.spec import USER_FEATURES, USER_SEEN_ITEMS, FeatureSpec
from models.features.store import online_user_row, user_feature_refs
from models.files import ArtifactError
from models.ranking.ranker import Ranker
from models.ranking.rules import Catalog, RulesConfig
from models.recommender.item_features import StaticItemFeatures
from models.recommender.recommender import Recommender
from models.recommender.request import Request
from models.recommender.versions import verify_version
from models.retrieval.stage1 import load_stage1

ITEM_TABLE = "features/item_features.parquet"
CATALOG_TABLE = "features/catalog.parquet"
CATALOG_COLUMNS = (C.ITEM_ID, C.CATEGORY, C.TAGS, C.PRICE, C.STOCKOUT_AT, C.RESTOCK_AT, C.CREATED_AT)
"""The items table's columns the business rules and the tag features read (stock, category, tags, price, launch)."""


def _aligned(path: Path, item_ids: np.ndarray) -> pd.DataFrame:
    """A per-item table in the indexes' row order; names the file when it covers other items."""
    table = pd.read_parquet(path)
    if len(table) != len(item_ids) or set(table[C.ITEM_ID]) != set(item_ids.tolist()):
        raise ArtifactError(f"{path}: covers {len(table)} items, the indexes {len(item_ids)}")
    return table.set_index(C.ITEM_ID).loc[item_ids].reset_index()


def load_recommender(
    version_dir: Path, rules: RulesConfig, encoder_dim: int | None = None, mapped: bool = True
) -> tuple[Recommender, dict[str, Any]]:
    """Verify the version's checksums, then rebuild every component, checking each against the manifest
    (``mapped``: see ``load_stage1``)."""
    manifest = verify_version(version_dir)
    for section in ("stage1", "features", "ranker", "k_candidates"):
        if section not in manifest:
            raise ArtifactError(f"{version_dir / 'manifest.json'}: no '{section}' section (not a complete version)")
    stage1 = load_stage1(version_dir / "stage1", manifest["stage1"], encoder_dim, mapped)
    spec = FeatureSpec.from_json(manifest["features"]["spec"])
    item_ids = stage1.item_ids
    table = _aligned(version_dir / ITEM_TABLE, item_ids)
    catalog_table = _aligned(version_dir / CATALOG_TABLE, item_ids)
    catalog = Catalog.from_items(catalog_table)
    ranker = Ranker.load(version_dir / "ranker", manifest["ranker"], spec.names)
    popularity = stage1.source("popular_long").popularity  # type: ignore[attr-defined]
    order = np.argsort(-popularity.scores_at(float(manifest["stage1"]["as_of"])), kind="stable")
    recommender = Recommender(
        stage1=stage1,
        catalog=catalog,
        item_features=StaticItemFeatures(table, item_ids, spec),
        spec=spec,
        ranker=ranker,
        rules=rules,
        k_candidates=int(manifest["k_candidates"]),
        popularity_order=order,
        item_tags=ItemTags.from_items(catalog_table),
        version=str(manifest["version"]),
    )
    return recommender, manifest


def smoke_test(version_dir: Path, rules: RulesConfig) -> None:
    """Load a version as the service would, recommend for an unknown user and find similar items; raise if off."""
    recommender, manifest = load_recommender(version_dir, rules)
    as_of = float(manifest["stage1"]["as_of"])
    result = recommender.recommend(Request(user_id=None, k=10, as_of=as_of), None)
    if len(result.items) != min(10, len(recommender.catalog.item_ids)):
        raise ArtifactError(f"{version_dir}: smoke test returned {len(result.items)} items for a fallback request")
    similar = recommender.similar(str(recommender.catalog.item_ids[0]), 5, as_of=as_of)
    if not similar:
        raise ArtifactError(f"{version_dir}: smoke test found no similar items")


def known_user_gate(
    version_dir: Path, rules: RulesConfig, store: Any, snapshot_users: pd.DataFrame, users: int, seed: int
) -> dict[str, Any]:  # fmt: skip
    """Rank real known users through the full serving path — user features from the online store, stage 1, the
    re-ranker, the rules — and compare each list and its scores with the same request built from the offline
    snapshot the store was loaded from. Raises ArtifactError naming the first user whose list is a fallback, is not
    re-ranked, or differs (a stale or mismatched online store, feature definitions that drifted from the ranker's)."""
    recommender, manifest = load_recommender(version_dir, rules)
    as_of = pd.Timestamp(manifest["features"]["snapshot_time"]).value / 1e9
    known = snapshot_users[snapshot_users[USER_SEEN_ITEMS].map(len) > 0]
    chosen = known.sample(n=min(users, len(known)), random_state=seed) if len(known) else known
    refs = user_feature_refs(store)
    spread = []
    for row in chosen.to_dict("records"):
        user = str(row[C.USER_ID])
        request = Request(user_id=user, k=10, as_of=as_of)
        served = recommender.recommend(request, online_user_row(store, user, refs))
        offline = recommender.recommend(request, {name: row[name] for name in (C.USER_ID, *USER_FEATURES)})
        if served.fallback or served.degraded or served.features is None:
            raise ArtifactError(f"{version_dir}: publish gate: known user '{user}' was not re-ranked through the "
                                f"online store (fallback={served.fallback}, degraded={served.degraded})")  # fmt: skip
        got = [(i.item_id, round(i.score, 5)) for i in served.items]
        expected = [(i.item_id, round(i.score, 5)) for i in offline.items]
        if got != expected:
            raise ArtifactError(f"{version_dir}: publish gate: user '{user}' gets {got[:3]}... from the online "
                                f"store but {expected[:3]}... from the offline snapshot")  # fmt: skip
        spread.append(float(np.ptp([i.score for i in served.items])) if served.items else 0.0)
    if spread and max(spread) == 0.0:
        raise ArtifactError(f"{version_dir}: publish gate: the re-ranker gives every candidate the same score")
    return {"users": len(spread), "as_of": as_of}
