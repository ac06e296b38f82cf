"""Shared fixtures: paths to the shared MovieLens data (tests skip when it is absent) and a throw-away state folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from models.settings import PROJECT_ROOT, Settings

MOVIELENS_SMALL = Path(
    os.environ.get("RECSYS_MOVIELENS_DIR", PROJECT_ROOT.parent / "shared" / "data" / "ml-latest-small")
)


@pytest.fixture
def movielens_small() -> Path:
    if not (MOVIELENS_SMALL / "ratings.csv").exists():
        pytest.skip(f"MovieLens ml-latest-small not found at {MOVIELENS_SMALL}")
    return MOVIELENS_SMALL


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose state folder is a fresh temporary directory."""
    return Settings(state_dir=tmp_path / "state")
