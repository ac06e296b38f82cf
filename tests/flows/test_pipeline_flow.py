"""The whole pipeline on a small demo catalog: every stage runs, the evaluation report has the documented shape,
the re-ranker is registered, and the published version loads and serves."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from flows.common import code_fingerprint
from flows.tracking import tracking_uri
from models.ranking.rules import RulesConfig
from models.recommender.bundle import load_recommender
from models.recommender.request import Request
from models.recommender.versions import VersionStore, verify_version
from models.retrieval.stage1 import STAGE1_SOURCES


def test_report_has_the_documented_shape(published):
    settings, summary = published
    report = json.loads(Path(summary["report_path"]).read_text())
    assert report["dataset"] == "demo"
    assert report["k_candidates"] in settings.k_sweep
    assert report["served"] == {"k_candidates": report["k_candidates"],
                                "rules": RulesConfig.from_settings(settings).to_json()}  # fmt: skip
    peers = {"popularity", "ease", "rp3beta", "ials", "item_knn"}
    assert peers | {"stage1", "two_stage", "two_stage_without_price_stock_recency"} == set(report["methods"])
    for values in report["methods"].values():
        assert set(values) == {"ndcg@10", "recall@10", "map@10", "conversion_ndcg@10"}  # demo: carts + purchases
        assert all(0.0 <= v <= 1.0 for v in values.values())
    assert set(report["stage1_recall"]) == {*STAGE1_SOURCES, "merged"}
    assert set(report["stage1_recall"]["merged"]) == {"100", "500"}
    assert Path(summary["report_path"]).is_relative_to(settings.reports_dir)
    details = report["details"]
    assert details["users"] == min(details["test_users_with_a_positive"], settings.eval_max_users)
    gain = details["two_stage_vs_best_peer"]
    assert gain["peer"] == max(("ease", "rp3beta", "ials", "item_knn"), key=lambda p: report["methods"][p]["ndcg@10"])
    assert gain["ndcg@10_ratio"] == pytest.approx(report["methods"]["two_stage"]["ndcg@10"]
                                                  / report["methods"][gain["peer"]]["ndcg@10"])  # fmt: skip
    assert gain["ci95"][0] <= gain["ndcg@10_ratio"] <= gain["ci95"][1]
    sweep = details["k_sweep"]
    assert [row["k_candidates"] for row in sweep["rows"]] == list(settings.k_sweep)
    best = max(sweep["rows"], key=lambda row: row["ndcg@10"])
    assert best["deficit"] == 0.0
    within = [r["k_candidates"] for r in sweep["rows"] if r["deficit"] <= settings.k_standard_errors * r["deficit_se"]]
    assert min(within) == report["k_candidates"]
    assert set(details["tuning"]["params"]) == {"ease", "rp3beta", "ials", "item_knn"}
    assert details["stage1_config"]["peer_params"]["ease"] == details["tuning"]["params"]["ease"]
    assert details["measured_with"]["code_fingerprint"] == code_fingerprint()


def test_quality_floor_on_the_planted_demo_signal(published):
    """The demo catalog plants style/brand taste, price sensitivity and trends: the two stages, as served, must beat
    popularity and the stage-1 order by a clear margin, and the best tuned peer. Not with the interval above 1: on
    this catalogue's 200 test users it spans 0.8-2.0x, and where it falls moves with the CPU's floating-point
    rounding (the same code put its low end above 1 on an Intel Xeon and at 0.82 on an AMD EPYC, ratio 1.23x); the
    README's full-size runs (4 000+ test users) carry the interval."""
    _, summary = published
    report = json.loads(Path(summary["report_path"]).read_text())
    ndcg = {method: values["ndcg@10"] for method, values in report["methods"].items()}
    assert ndcg["two_stage"] >= 3.0 * ndcg["popularity"]
    assert ndcg["two_stage"] >= 1.2 * ndcg["stage1"]
    assert report["details"]["two_stage_vs_best_peer"]["ndcg@10_ratio"] > 1.1


def test_published_version_is_complete_and_serves(published):
    settings, summary = published
    current = VersionStore(settings.versions_dir).current()
    assert str(current) == summary["version"]
    manifest = verify_version(current)
    assert manifest["k_candidates"] == summary["k_candidates"]
    assert manifest["features"]["feature_service"] == "ranker_v1"
    assert manifest["live"] == {"ingested_seq": 0, "events": 0, "item_changes": 0}  # nothing was logged yet
    assert manifest["ranker"]["feature_names"] == manifest["features"]["spec"]["names"]
    recommender, _ = load_recommender(current, RulesConfig.from_settings(settings))
    assert recommender.stage1.config.serving_k == manifest["k_candidates"]  # served indexes tuned at the chosen K
    user = str(recommender.stage1.ials.user_ids[0])
    result = recommender.recommend(Request(user_id=user, k=10, as_of=manifest["stage1"]["as_of"]), None)
    assert len(result.items) == 10 and result.fallback


def test_model_registered_with_champion_alias(published):
    settings, summary = published
    mlflow.set_tracking_uri(tracking_uri(settings.mlflow_dir))
    registration = summary["registration"]
    assert registration["model"] == "reranker"
    version = MlflowClient().get_model_version_by_alias("reranker", "champion")
    assert str(version.version) == registration["version"] and registration["promoted"]
    run = mlflow.get_run(registration["run_id"])
    assert run.data.metrics["two_stage_ndcg_at_10"] == summary["methods"]["two_stage"]["ndcg@10"]
    gain = summary["two_stage_vs_best_peer"]
    assert run.data.metrics["two_stage_vs_peer_ndcg_ratio"] == pytest.approx(gain["ndcg@10_ratio"])
    artifacts = {a.path for a in MlflowClient().list_artifacts(registration["run_id"])}
    assert {"feature_importance.png", "ndcg_by_k.png", "evaluation.json", "evaluation_table.json"} <= artifacts
