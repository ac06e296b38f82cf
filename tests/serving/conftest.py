"""Serving fixtures, all on the version the session's pipeline run published (the ``published`` fixture).

The service reads its settings from the environment (``RECSYS_*``) when it starts, so every fixture that starts one
sets the environment only while it starts and restores it right after: nothing leaks into other tests. Tests that
publish versions work on a copy of the serving state, never on the shared one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from models.features.store import online_user_features, open_store
from models.recommender.bundle import ITEM_TABLE
from models.recommender.versions import VersionStore, verify_version
from models.settings import Settings
from tests.serving.support import AsgiService, asgi_service, service_env


@dataclass(frozen=True)
class Published:
    settings: Settings
    version_dir: Path
    manifest: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def dataset(self) -> str:
        return str(self.manifest["features"]["store"]["dataset"])


@pytest.fixture(scope="session")
def version(published: tuple[Settings, dict[str, Any]]) -> Published:
    settings, _ = published
    current = VersionStore(settings.versions_dir).current()
    return Published(settings, current, verify_version(current))


@pytest.fixture(scope="session")
def items(version: Published) -> pd.DataFrame:
    """The version's item table (category, price, stock), indexed by item id."""
    return pd.read_parquet(version.version_dir / ITEM_TABLE).set_index("item_id")


def seen_list(value: Any) -> list[Any]:
    return [] if value is None else list(value)


@pytest.fixture(scope="session")
def known_users(version: Published) -> dict[str, list[str]]:
    """Users the version was trained on that have online features: user id → their seen items (online store)."""
    ids = np.load(version.version_dir / "stage1" / "ials" / "user_ids.npy", allow_pickle=False).astype(str)[:40]
    frame = online_user_features(open_store(version.settings, version.dataset), ids.tolist())
    frame = frame[frame["user_events_all"].notna()]
    users = {str(row.user_id): [str(i) for i in seen_list(row.user_seen_items)] for row in frame.itertuples()}
    assert len(users) >= 10, f"only {len(users)} of the first 40 trained users have online features"
    return users


@pytest.fixture(scope="session")
def service(version: Published) -> Any:
    """``RecSys`` in-process: calling the BentoML service object runs the inner class's ``__init__``."""
    from serving.service import RecSys

    with service_env(version.settings.state_dir):
        return RecSys()


@pytest.fixture(scope="session")
def api(version: Published) -> Iterator[AsgiService]:
    """The service's ASGI app on the published state (shared: tests must not change what it serves)."""
    with asgi_service(version.settings.state_dir) as started:
        yield started
