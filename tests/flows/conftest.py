"""Flow tests share the session-wide Prefect harness."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _harness(prefect_harness: None) -> None:
    """Every flow test runs against the temporary Prefect server."""
