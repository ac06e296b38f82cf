"""A published version loaded as the service loads it, with real requests prepared for sections 2 and 3.

For a sample of users known to the version: their online-store user features (read once), stage 1 at 500
candidates, and the ranker's feature matrix. Timing then isolates one step at a time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import log
from models.features.store import online_user_features, open_store
from models.files import ArtifactError
from models.ranking.rules import RulesConfig
from models.recommender.bundle import load_recommender
from models.recommender.recommender import Recommender
from models.recommender.request import Request, Retrieval
from models.settings import Settings
from serving.state import champion_pointer

CANDIDATES = 500


@dataclass
class Prepared:
    request: Request
    user: dict[str, Any]
    retrieval: Retrieval
    features: np.ndarray


@dataclass
class ServingFixture:
    version_dir: Path
    state_dir: Path
    recommender: Recommender
    manifest: dict[str, Any]
    store: Any
    as_of: float
    prepared: list[Prepared]
    load_seconds: float

    @property
    def ranker_file(self) -> Path:
        return self.version_dir / "ranker" / self.manifest["ranker"]["file"]

    def describe(self) -> dict[str, Any]:
        ranker = self.recommender.ranker
        assert ranker is not None
        dump = ranker.booster.dump_model(num_iteration=ranker.best_iteration)
        trees = dump["tree_info"]
        return {
            "version_dir": str(self.version_dir),
            "version": self.manifest["version"],
            "dataset": self.manifest.get("dataset", {}).get("name"),
            "items": len(self.recommender.catalog.item_ids),
            "published_k_candidates": int(self.manifest["k_candidates"]),
            "benchmarked_candidates": CANDIDATES,
            "requests": len(self.prepared),
            "features": len(self.recommender.spec.names),
            "ranker_trees": len(trees),
            "ranker_max_leaves": max((t["num_leaves"] for t in trees), default=0),
            "load_seconds": round(self.load_seconds, 1),
        }


def load_fixture(version_dir: Path, users: int, seed: int = 11) -> ServingFixture:
    """Load the version under ``<state>/versions/<namespace>/...`` and prepare ``users`` requests with 500
    candidates each."""
    version_dir = version_dir.resolve()
    state_dir = version_dir.parent.parent.parent
    settings = Settings(state_dir=state_dir, namespace=version_dir.parent.name)
    started = time.perf_counter()
    recommender, manifest = load_recommender(version_dir, RulesConfig.from_settings(settings))
    store = open_store(settings, manifest["features"]["store"]["dataset"])
    load_seconds = time.perf_counter() - started
    recommender.k_candidates = CANDIDATES  # the published K is what the sweep chose; the goal is stated at 500
    as_of = pd.Timestamp(manifest["features"]["snapshot_time"]).value / 1e9
    rng = np.random.default_rng(seed)
    candidates = np.asarray(recommender.stage1.ials.user_ids, dtype=str)
    chosen = rng.choice(candidates, size=min(len(candidates), users * 2), replace=False).tolist()
    log(f"fixture: {version_dir.name}, reading {len(chosen)} users from the online store, stage 1 at {CANDIDATES}")
    frame = online_user_features(store, chosen)
    prepared: list[Prepared] = []
    for row in frame.to_dict(orient="records"):
        if len(prepared) >= users:
            break
        request = Request(user_id=str(row["user_id"]), k=10, as_of=as_of)
        retrieval = recommender.retrieve(request, row)
        if retrieval.fallback or len(retrieval.rows) < CANDIDATES:
            continue
        block = recommender.item_features.block(retrieval.rows, as_of)
        features = recommender.feature_matrix(request, retrieval, row, block)
        prepared.append(Prepared(request, row, retrieval, features))
    if not prepared:
        raise RuntimeError(f"{version_dir}: no user got {CANDIDATES} candidates from stage 1")
    return ServingFixture(version_dir, state_dir, recommender, manifest, store, as_of, prepared, load_seconds)


def find_version(settings: Settings) -> Path | None:
    try:
        current = champion_pointer(settings.state_dir, settings.namespace)
    except ArtifactError:
        return None
    return current.resolve() if current.exists() else None
