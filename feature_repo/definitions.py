"""Feast definitions: entities, parquet sources, feature views and the versioned ``ranker_v1`` feature service.

``build_definitions`` makes them for any state folder (tests build throw-away stores with it); the module-level
objects serve the ``feast`` CLI run in this folder: the demo dataset's store in the default state folder.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Float32, Float64, String

from models import columns as C
from models.features import (
    EVENT_TIMESTAMP,
    ITEM_CATEGORICAL,
    ITEM_NUMERIC,
    USER_CATEGORICAL,
    USER_NUMERIC,
    USER_RECENT_ITEMS,
    USER_RECENT_TIMES,
    USER_SEEN_ITEMS,
    USER_TOP_CATEGORIES,
    USER_TOP_SHARES,
    user_categorical_name,
)
from models.settings import Settings

FEATURE_SERVICE = "ranker_v1"
USER_VIEW = "user_features"
ITEM_VIEW = "item_features"


def build_definitions(feature_data_dir: Path) -> list:
    """Entities, sources, views and the feature service over parquet files in ``feature_data_dir``."""
    user = Entity(name="user", join_keys=[C.USER_ID], value_type=ValueType.STRING, description="A shopper / viewer")
    item = Entity(name="item", join_keys=[C.ITEM_ID], value_type=ValueType.STRING, description="A catalogue item")
    user_source = FileSource(
        name="user_snapshots",
        path=str(Path(feature_data_dir).resolve() / "user_features.parquet"),
        timestamp_field=EVENT_TIMESTAMP,
    )
    item_source = FileSource(
        name="item_snapshots",
        path=str(Path(feature_data_dir).resolve() / "item_features.parquet"),
        timestamp_field=EVENT_TIMESTAMP,
    )
    user_schema = [
        *(Field(name=name, dtype=Float32) for name in USER_NUMERIC),
        *(Field(name=user_categorical_name(name), dtype=String) for name in USER_CATEGORICAL),
        Field(name=USER_TOP_CATEGORIES, dtype=Array(String)),
        Field(name=USER_TOP_SHARES, dtype=Array(Float32)),
        Field(name=USER_RECENT_ITEMS, dtype=Array(String)),
        Field(name=USER_RECENT_TIMES, dtype=Array(Float64)),
        Field(name=USER_SEEN_ITEMS, dtype=Array(String)),
    ]
    item_schema = [
        *(Field(name=name, dtype=Float32) for name in ITEM_NUMERIC),
        *(Field(name=name, dtype=String) for name in ITEM_CATEGORICAL),
    ]
    user_view = FeatureView(
        name=USER_VIEW, entities=[user], ttl=timedelta(0), schema=user_schema, source=user_source, online=True,
        description="User activity, taste and price profile as of each snapshot time",
    )  # fmt: skip
    item_view = FeatureView(
        name=ITEM_VIEW, entities=[item], ttl=timedelta(0), schema=item_schema, source=item_source, online=True,
        description="Item popularity, trend, price tier, stock and category as of each snapshot time",
    )  # fmt: skip
    service = FeatureService(
        name=FEATURE_SERVICE,
        features=[user_view, item_view],
        description="Stored features of the LightGBM re-ranker, version 1 (cross features are computed at request time)",
    )
    return [user, item, user_source, item_source, user_view, item_view, service]


user, item, user_snapshots_source, item_snapshots_source, user_features, item_features, ranker_v1 = build_definitions(
    Settings().feast_dir / "demo" / "data"
)
