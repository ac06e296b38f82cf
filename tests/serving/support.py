"""Helpers for the serving tests: the service's environment, the service behind its ASGI app, a state folder of
a test's own to publish into."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from models.recommender.versions import VersionStore, read_manifest
from serving.state import copy_serving_state
from tests.conftest import ADMIN_HEADERS

__all__ = ["copy_serving_state"]

# Reloads happen when a test asks for one (POST /reload), not on a background timer in the middle of a test.
RELOAD_INTERVAL = "3600"


@contextmanager
def service_env(state_dir: Path, **extra: str) -> Iterator[None]:
    """The environment the service reads its settings from, for as long as it starts."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RECSYS_STATE_DIR", str(state_dir))
        patch.setenv("RECSYS_RELOAD_INTERVAL_SECONDS", RELOAD_INTERVAL)
        patch.setenv("HF_HUB_OFFLINE", "1")
        for name, value in extra.items():
            patch.setenv(name, value)
        yield


@dataclass
class AsgiService:
    """The service behind its ASGI app (``RecSys.to_asgi()``), started by Starlette's TestClient."""

    client: TestClient
    instance: Any
    """The ``RecSys`` object the app created at startup (to reach its runtime in tests)."""


@contextmanager
def asgi_service(state_dir: Path, metrics: bool = True) -> Iterator[AsgiService]:
    """Start the app on ``state_dir``. Only one app per process may have ``metrics``: BentoML registers its
    Prometheus collectors in the process-wide registry, and a second app's registration fails on duplicates."""
    from _bentoml_sdk.service import get_current_service

    from serving.service import RecSys

    with pytest.MonkeyPatch.context() as patch:
        if not metrics:  # read by to_asgi(), which reloads BentoML's configuration
            name = RecSys.name  # type: ignore[attr-defined]
            patch.setenv("BENTOML_CONFIG_OPTIONS", f"services.{name}.metrics.enabled=false")
        app = RecSys.to_asgi()  # type: ignore[attr-defined]
    client = TestClient(app, raise_server_exceptions=False, headers=ADMIN_HEADERS)  # a server error: a 500
    with service_env(state_dir):
        client.__enter__()  # runs the app's lifespan: the service instance is created here
    try:
        yield AsgiService(client, get_current_service())  # the instance that lifespan just created
    finally:
        client.__exit__(None, None, None)


def publish_copy(versions_dir: Path, sections: list[str] | None = None) -> Path:
    """Publish a new version holding the current one's files, the way the pipeline does (build, check, swap)."""
    store = VersionStore(versions_dir)
    current = store.current()
    if sections is None:
        sections = [name for name in read_manifest(current) if name not in ("version", "created_at", "files")]
    builder = store.start()
    builder.copy_from(current, sections)
    return store.publish(builder)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
