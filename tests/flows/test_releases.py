"""Releases end to end on a copy of the session's published state: a deliberately worse re-ranker (one boosting
round) does not beat the champion, so it is stored as the challenger and the service keeps the champion; the
challenger then runs in shadow (champion lists unchanged, both logged) and in a split (a user stays on one arm);
a forced publish and a rollback move what is served, and the registry's champion alias follows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from flows.cli import main
from flows.pipeline import pipeline_flow
from flows.reranker import registered_model_name
from flows.tracking import tracking_uri
from flows.variants import compare_variants, load_variant_logs
from models.live.impressions import SHADOW, impressions_dir, read_impressions
from models.ranking.rules import Filters
from models.recommender.versions import CHALLENGER, PREVIOUS, VersionStore
from models.settings import Settings
from serving.runtime import Loaded, Runtime, split_share


@pytest.fixture(scope="module")
def with_challenger(published, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict[str, Any], str]:
    """(settings of the copy, the worse run's summary, the champion's version folder name)."""
    settings, _ = published
    state = tmp_path_factory.mktemp("releases") / "state"
    shutil.copytree(settings.state_dir, state, symlinks=True)  # the pointers stay pointers
    copy = settings.model_copy(update={"state_dir": state})
    champion = VersionStore(copy.versions_dir).current().name
    worse = copy.model_copy(update={"ranker_rounds": 1, "ranker_grid": ()})
    return copy, pipeline_flow("demo", None, worse), champion


def aliases(settings: Settings) -> dict[str, str]:
    mlflow.set_tracking_uri(tracking_uri(settings.mlflow_dir))
    model = MlflowClient().get_registered_model(registered_model_name(settings, "demo"))
    return {alias: str(version) for alias, version in model.aliases.items()}


@pytest.fixture(scope="module")
def known_users(with_challenger) -> list[str]:
    """Users with a history in the published dataset (the online store knows them)."""
    settings, _, _ = with_challenger
    interactions = pd.read_parquet(settings.dataset_dir("demo") / "interactions.parquet", columns=["user_id"])
    return sorted(interactions["user_id"].astype(str).unique())[:60]


def test_a_worse_challenger_is_not_published_and_the_service_keeps_the_champion(with_challenger):
    settings, summary, champion = with_challenger
    release = summary["release"]
    assert release["publish"] is False and "does not beat the champion" in release["reason"]
    assert release["users"] > 0 and release["ci95"][0] <= 1.0  # compared on the holdout, and no sure gain
    store = VersionStore(settings.versions_dir)
    assert store.current().name == champion
    assert store.pointed(CHALLENGER).name == Path(summary["version"]).name  # type: ignore[union-attr]
    assert json.loads((Path(summary["version"]) / "manifest.json").read_text())["release"]["publish"] is False
    runtime = Runtime(settings)
    runtime.start(load_encoder=False)
    assert runtime.status()["version"] == champion and runtime.challenger is None  # mode off: not even loaded
    found = aliases(settings)
    assert found["champion"] != found["challenger"] == summary["registration"]["version"]


def test_shadow_answers_the_champions_lists_and_logs_both(with_challenger, known_users, monkeypatch):
    settings, summary, champion = with_challenger
    monkeypatch.setattr(Loaded, "as_of", lambda self: self.snapshot_seconds + 60.0)  # one clock for both runtimes
    plain = Runtime(settings)
    plain.start(load_encoder=False)
    shadow = Runtime(settings.model_copy(update={"challenger_mode": "shadow"}))
    shadow.start(load_encoder=False)
    assert shadow.status()["challenger"]["version"] == Path(summary["version"]).name
    users = list(known_users)[:25]
    answered = set()
    for user in users:
        _, expected = plain.recommend(user, 10, Filters(), True, False)
        loaded, got = shadow.recommend(user, 10, Filters(), True, False)
        assert loaded.version == champion and loaded.role == "champion"
        assert [(i.item_id, i.score) for i in got.items] == [(i.item_id, i.score) for i in expected.items]
        answered.add(got.request_id)
    shadow.drain_shadow()
    shadow.flush_impressions()
    root = impressions_dir(settings, "demo")
    served, _ = read_impressions(root)
    scored, _ = read_impressions(root / SHADOW)
    assert answered <= set(served["request_id"]) and answered <= set(scored["request_id"])
    assert set(scored["variant"]) == {SHADOW} and set(scored["version"]) == {Path(summary["version"]).name}
    report = compare_variants(*load_variant_logs(settings, "demo"), window_seconds=3600.0)
    assert report["shadow_agreement"]["pairs"] >= len(users)
    assert 0.0 <= report["shadow_agreement"]["overlap"] < 1.0, "a one-round ranker orders differently"
    plain.close()
    shadow.close()


def test_the_split_keeps_a_user_on_one_variant(with_challenger, known_users):
    settings, summary, champion = with_challenger
    split = Runtime(settings.model_copy(update={"challenger_mode": "split", "challenger_share": 0.5}))
    split.start(load_encoder=False)
    arms: dict[str, set[str]] = {"champion": set(), "challenger": set()}
    for user in list(known_users)[:40]:
        seen = {split.recommend(user, 5, Filters(), True, False)[0].role for _ in range(3)}
        assert len(seen) == 1, f"{user} moved between arms: {seen}"
        role = seen.pop()
        arms[role].add(user)
        assert role == ("challenger" if split_share("demo", user) < 0.5 else "champion")
    assert arms["champion"] and arms["challenger"], arms
    split.close()


def test_a_forced_publish_then_a_rollback_move_what_is_served(with_challenger, monkeypatch, capsys):
    settings, summary, champion = with_challenger
    worse = settings.model_copy(update={"ranker_rounds": 1, "ranker_grid": ()})
    forced = pipeline_flow("demo", None, worse, force=True)
    assert forced["release"]["publish"] and forced["release"]["reason"].startswith("forced although")
    store = VersionStore(settings.versions_dir)
    assert store.current().name == Path(forced["version"]).name
    assert store.pointed(PREVIOUS).name == champion  # type: ignore[union-attr]
    assert store.pointed(CHALLENGER) is None, "the old challenger lost to the old champion: retired"
    assert aliases(settings) == {"champion": forced["registration"]["version"]}

    monkeypatch.setenv("RECSYS_STATE_DIR", str(settings.state_dir))
    assert main(["rollback", "--reason", "test"]) == 0
    assert store.current().name == champion
    assert "now serving" in capsys.readouterr().out
    assert aliases(settings)["champion"] != forced["registration"]["version"]
    assert main(["releases"]) == 0
    history = json.loads(capsys.readouterr().out)
    assert history["current"] == champion and history["history"][-1]["action"] == "rollback"
    for command in (["releases"], ["promote"], ["rollback"], ["variants"]):  # a typo is an error, not an empty story
        assert main([*command, "--namespace", "demoo"]) == 2
        assert "no namespace 'demoo' (published: demo)" in capsys.readouterr().err
    assert store.current().name == champion


def test_a_first_look_is_replaced_by_a_full_run_whatever_the_gate_says(published, tmp_path):
    """A quick-profile champion (a first look) is a stand-in: a full run replaces it even when the comparison would
    keep the full run as challenger; another quick run faces the gate as any challenger does."""
    settings, _ = published
    state = tmp_path / "state"
    shutil.copytree(settings.state_dir, state, symlinks=True)
    copy = settings.model_copy(update={"state_dir": state})
    good = copy.model_copy(update={"ranker_rounds": 60})
    worse = copy.model_copy(update={"ranker_rounds": 1, "ranker_grid": ()})
    first_look = pipeline_flow("demo", None, good, force=True, profile="quick")["version"]
    assert json.loads((Path(first_look) / "manifest.json").read_text())["build"]["profile"] == "quick"

    again = pipeline_flow("demo", None, worse, profile="quick")["release"]  # quick against quick: the gate decides
    assert again["publish"] is False and "does not beat the champion" in again["reason"]

    full = pipeline_flow("demo", None, worse)  # worse, yet it replaces the first look
    assert full["release"]["publish"] is True
    assert full["release"]["reason"].startswith(f"replaces the first look {Path(first_look).name} (--profile quick")
    assert "does not beat the champion" in full["release"]["reason"]  # the comparison is still made and reported
    assert VersionStore(copy.versions_dir).current().name == Path(full["version"]).name
