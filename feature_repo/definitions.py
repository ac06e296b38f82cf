"""Feast definitions: entities, parquet sources, feature views and the versioned feature services.

- ``ranker_v1``: the re-ranker's stored features (user profile + item state); training frames and serving both
  take their feature list and order from it.
- ``user_history_v1``: what stage 1 queries with at serving time (recent positives with times, items seen); a
  view of its own so point-in-time training joins never carry these long lists.

``build_definitions`` makes them for any state folder: the pipeline (flows) applies them to each dataset's store,
tests build throw-away stores with it. The module-level objects serve the ``feast`` CLI run in this folder: the
demo dataset's store in the default state folder, as ``feature_store.yaml`` names it.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Float32, Float64, String

from models.data import columns as C
from models.features.spec import (
    EVENT_TIMESTAMP,
    FEATURE_SERVICE,
    HISTORY_SERVICE,
    HISTORY_VIEW,
    ITEM_CATEGORICAL,
    ITEM_NUMERIC,
    ITEM_VIEW,
    USER_CATEGORICAL,
    USER_NUMERIC,
    USER_RECENT_ITEMS,
    USER_RECENT_TIMES,
    USER_SEEN_ITEMS,
    USER_TOP_CATEGORIES,
    USER_TOP_SHARES,
    USER_TOP_TAG_SHARES,
    USER_TOP_TAGS,
    USER_VIEW,
    user_categorical_name,
)

FOREVER = timedelta(0)  # Feast: a ttl of 0 never expires a snapshot


def _source(feature_data_dir: Path, view: str) -> FileSource:
    return FileSource(
        name=f"{view}_snapshots",
        path=str(Path(feature_data_dir).resolve() / f"{view}.parquet"),
        timestamp_field=EVENT_TIMESTAMP,
    )


def build_definitions(feature_data_dir: Path) -> list:
    """Entities, sources, views and feature services over parquet files in ``feature_data_dir``."""
    user = Entity(name="user", join_keys=[C.USER_ID], value_type=ValueType.STRING, description="A shopper / viewer")
    item = Entity(name="item", join_keys=[C.ITEM_ID], value_type=ValueType.STRING, description="A catalogue item")
    sources = {view: _source(feature_data_dir, view) for view in (USER_VIEW, HISTORY_VIEW, ITEM_VIEW)}
    user_view = FeatureView(
        name=USER_VIEW, entities=[user], ttl=FOREVER, source=sources[USER_VIEW], online=True,
        schema=[
            *(Field(name=name, dtype=Float32) for name in USER_NUMERIC),
            *(Field(name=user_categorical_name(name), dtype=String) for name in USER_CATEGORICAL),
            Field(name=USER_TOP_CATEGORIES, dtype=Array(String)),
            Field(name=USER_TOP_SHARES, dtype=Array(Float32)),
            Field(name=USER_TOP_TAGS, dtype=Array(String)),
            Field(name=USER_TOP_TAG_SHARES, dtype=Array(Float32)),
        ],
        description="User activity, taste and price profile as of each snapshot time",
    )  # fmt: skip
    history_view = FeatureView(
        name=HISTORY_VIEW, entities=[user], ttl=FOREVER, source=sources[HISTORY_VIEW], online=True,
        schema=[
            Field(name=USER_RECENT_ITEMS, dtype=Array(String)),
            Field(name=USER_RECENT_TIMES, dtype=Array(Float64)),
            Field(name=USER_SEEN_ITEMS, dtype=Array(String)),
        ],
        description="Recent positive items (oldest first, with times) and items seen, as of each snapshot time",
    )  # fmt: skip
    item_view = FeatureView(
        name=ITEM_VIEW, entities=[item], ttl=FOREVER, source=sources[ITEM_VIEW], online=True,
        schema=[
            *(Field(name=name, dtype=Float32) for name in ITEM_NUMERIC),
            *(Field(name=name, dtype=String) for name in ITEM_CATEGORICAL),
        ],
        description="Item popularity, trend, price tier, stock and category as of each snapshot time",
    )  # fmt: skip
    ranker = FeatureService(
        name=FEATURE_SERVICE,
        features=[user_view, item_view],
        description="Stored features of the LightGBM re-ranker, version 1 (cross features are computed at request time)",
    )
    history = FeatureService(
        name=HISTORY_SERVICE,
        features=[history_view],
        description="What stage 1 queries with at serving time",
    )
    return [user, item, *sources.values(), user_view, history_view, item_view, ranker, history]


CLI_DATA_DIR = Path(__file__).resolve().parents[1] / ".state" / "feast" / "demo" / "data"
"""The demo store's snapshots in the default state folder (the pipeline passes each dataset's own folder)."""
(user, item, user_features_snapshots, user_history_snapshots, item_features_snapshots, user_features, user_history,
 item_features, ranker_v1, user_history_v1) = build_definitions(CLI_DATA_DIR)  # fmt: skip
