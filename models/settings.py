"""The one typed settings object; build it at the entry point and pass it down."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    """Runtime configuration; every field can be set from the environment as ``RECSYS_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="RECSYS_", extra="ignore")

    state_dir: Path = Field(
        default=PROJECT_ROOT / ".state",
        description="Folder holding all runtime state: data, feature store, MLflow, Prefect, BentoML, versions.",
    )
    seed: int = Field(default=42, description="Seed for every random choice the pipeline makes.")

    demo_items: int = Field(default=20_000, gt=0)
    demo_users: int = Field(default=5_000, gt=0)
    demo_interactions: int = Field(default=300_000, gt=0)

    test_fraction: float = Field(default=0.2, gt=0, lt=1, description="Share of each user's history held out.")
    label_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="Share of each user's train history used as re-ranker labels."
    )

    @property
    def data_dir(self) -> Path:
        """Validated datasets, one sub-folder per dataset name."""
        return self.state_dir / "data"

    def dataset_dir(self, name: str) -> Path:
        return self.data_dir / name
