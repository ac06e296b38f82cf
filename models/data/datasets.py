"""The dataset kinds the platform loads by name: the generated demo catalog, MovieLens, or files in the contract
layout."""

from __future__ import annotations

from pathlib import Path

from models.data.contract import Dataset
from models.data.demo_catalog import generate_demo_catalog
from models.data.movielens import load_movielens
from models.data.tables import load_files
from models.settings import Settings

DATASET_KINDS = ("demo", "movielens", "files")


def load_dataset(kind: str, settings: Settings, data_dir: Path | None) -> Dataset:
    """The dataset named by ``kind``; raises ValueError when a kind needs a folder and none is given."""
    if kind == "demo":
        return generate_demo_catalog(
            n_items=settings.demo_items,
            n_users=settings.demo_users,
            n_interactions=settings.demo_interactions,
            seed=settings.seed,
        )
    if kind not in DATASET_KINDS:
        raise ValueError(f"unknown dataset kind '{kind}', expected one of {', '.join(DATASET_KINDS)}")
    if data_dir is None:
        raise ValueError(f"--data-dir is required for --dataset {kind}")
    if kind == "movielens":
        return load_movielens(data_dir)
    return load_files(data_dir)
