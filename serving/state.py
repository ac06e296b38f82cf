"""A serving-only copy of a state folder: what a service reads, so a test, benchmark or simulation can serve it and
write its live log and impressions there instead of into the original."""

from __future__ import annotations

import shutil
from pathlib import Path

from models.features.store import store_dir
from models.recommender.versions import CURRENT, VersionStore, choose_namespace
from models.settings import Settings


def copy_serving_state(source: Settings, target: Path) -> Settings:
    """The namespace's champion (and its ``current`` pointer) and its Feast store (registry and online store, not
    the offline snapshots) copied under ``target``; returns the settings that point there."""
    source = source.model_copy(update={"namespace": choose_namespace(source.versions_root, source.namespace)})
    namespace = str(source.namespace)
    current = VersionStore(source.versions_dir).current()
    versions = target / "versions" / namespace
    shutil.copytree(current, versions / current.name)
    (versions / CURRENT).symlink_to(current.name)
    copied = source.model_copy(update={"state_dir": target})
    shutil.copytree(store_dir(source, namespace), store_dir(copied, namespace),
                    ignore=shutil.ignore_patterns("*.parquet"))  # fmt: skip
    return copied


def champion_pointer(state_dir: Path, namespace: str | None = None) -> Path:
    """``<state>/versions/<namespace>/current`` (the namespace: the one given, else the only one published)."""
    versions = Path(state_dir) / "versions"
    return versions / choose_namespace(versions, namespace) / CURRENT
