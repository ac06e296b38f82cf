"""Every re-ranker is registered with its release decision as tags; no alias moves here (the pipeline moves them
after publishing, from the namespace's pointers: tests/flows/test_releases.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow import MlflowClient

from flows.reranker import DONE, log_and_register
from models.data import columns as C
from models.features.spec import CATEGORICAL_FEATURES, FeatureSpec
from models.ranking.ranker import RankerParams, RankingData, train_ranker
from models.settings import Settings
from models.training.steps import RANKER_SECTION, SPEC_FILE


def tiny_ranker_dir(folder: Path, spec: FeatureSpec, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    n = len(spec.names)
    features = rng.normal(size=(400, n)).astype(np.float32)
    for column in CATEGORICAL_FEATURES:
        features[:, spec.names.index(column)] = rng.integers(0, 3, size=400)
    labels = (features[:, 0] > 1).astype(int)
    data = RankingData(features, labels, np.full(20, 20), np.array([f"u{i}" for i in range(20)]))
    params = RankerParams.from_settings(
        Settings(ranker_rounds=5, ranker_min_data_in_leaf=5, ranker_early_stopping=5, threads=1)
    )
    ranker = train_ranker(data, data, spec.names, CATEGORICAL_FEATURES, params)
    section = ranker.save(folder)
    section.update({"validation_ndcg": 0.5, "importance": ranker.importance()})
    (folder / RANKER_SECTION).write_text(json.dumps(section))
    (folder / SPEC_FILE).write_text(json.dumps(spec.to_json()))
    return folder


def report() -> dict:
    methods = {
        m: {"ndcg@10": 0.1, "recall@10": 0.1, "map@10": 0.05} for m in ("popularity", "ease", "stage1", "two_stage")
    }
    recall = {"merged": {"50": 0.1, "100": 0.2, "500": 0.4}}
    return {
        "dataset": "demo", "k_candidates": 100, "methods": methods, "stage1_recall_all_k": recall,
        "k_sweep": {"rows": [{"k_candidates": 100, "ndcg@10": 0.1}]}, "two_stage_latency_ms": {"p50": 1.0, "p99": 2.0},
        "two_stage_vs_best_peer": {"peer": "ease", "ndcg@10_ratio": 1.0, "ci95": [0.9, 1.1]},
    }  # fmt: skip


def comparison(new: float, champion: float | None) -> dict:
    publish = champion is None or new > champion
    return {"validation_ndcg@10": new, "holdout_ndcg@10": new, "champion_holdout_ndcg@10": champion,
            "decision": {"publish": publish, "reason": "beats" if publish else "does not beat"}}  # fmt: skip


def test_every_ranker_is_registered_with_its_decision_and_no_alias_moves(tmp_path: Path):
    settings = Settings(state_dir=tmp_path / "state")
    users = pd.DataFrame({C.USER_ID: ["a"], C.SEGMENT: ["s"], C.DEVICE: ["d"], C.AGE_BAND: ["x"]})
    spec = FeatureSpec.fit(users)
    training = tmp_path / "training"
    training.mkdir()
    (training / DONE).write_text(json.dumps({"groups": 20.0}))

    def register(folder: str, new: float, champion: float | None, seed: int) -> dict:
        ranker_dir = str(tiny_ranker_dir(tmp_path / folder, spec, seed))
        return log_and_register.fn(report(), comparison(new, champion), str(training), ranker_dir, "f" * 64, settings)

    first = register("r1", 0.10, None, 1)
    worse = register("r2", 0.08, 0.10, 2)
    assert first["promoted"] and first["version"] == "1"
    assert not worse["promoted"] and worse["version"] == "2"
    client = MlflowClient()
    assert client.get_registered_model("reranker").aliases == {}
    run = client.get_run(worse["run_id"])
    assert run.data.tags["release"] == "challenger" and run.data.tags["release_reason"] == "does not beat"
    assert client.get_run(first["run_id"]).data.tags["release"] == "publish"
