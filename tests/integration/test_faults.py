"""Fault tests, each asserting the expected behaviour: a real Redis online store (and Redis stopped while serving),
a corrupt index file, a missing ranker, an invalid dataset, and a pipeline killed mid-run then re-run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.data import columns as C
from models.data.contract import DataValidationError
from models.features.store import append_snapshots, append_user_snapshots, materialize, online_user_features, open_store
from models.files import ArtifactError
from models.ranking.rules import Filters, RulesConfig
from models.recommender.bundle import load_recommender
from models.recommender.versions import VersionStore, verify_version
from models.settings import Settings
from serving.runtime import Runtime
from tests.serving.support import copy_serving_state

pytestmark = pytest.mark.integration


# ---- Redis -----------------------------------------------------------------------------------------------------
def redis_state(version, tmp_path: Path, redis_url: str) -> Settings:
    """A copy of the published state whose online store is the Redis server, materialised from its snapshots."""
    settings = copy_serving_state(version.settings, tmp_path / "state")
    shutil.copytree(version.settings.feast_dir / version.dataset / "data", settings.feast_dir / version.dataset / "data",
                    dirs_exist_ok=True)  # fmt: skip
    settings = settings.model_copy(update={"online_store": "redis", "redis_url": redis_url})
    store = open_store(settings, version.dataset)
    snapshot = pd.Timestamp(version.manifest["features"]["snapshot_time"])
    store.materialize(start_date=(snapshot - pd.Timedelta(days=3650)).to_pydatetime(),
                      end_date=(snapshot + pd.Timedelta(seconds=1)).to_pydatetime())  # fmt: skip
    return settings


def test_redis_online_store_round_trip(redis_server, tmp_path: Path):
    """Feast's Redis online store serves what was materialised, as SQLite does."""
    from flows.features import apply_definitions
    from models.data.demo_catalog import generate_demo_catalog
    from models.features.snapshots import FeatureContext, item_snapshots, user_snapshots

    url, _ = redis_server
    settings = Settings(state_dir=tmp_path / "state", online_store="redis", redis_url=url)
    demo = generate_demo_catalog(200, 50, 2000, seed=5)
    at = pd.Timestamp("2026-06-01", tz="UTC")
    context = FeatureContext(demo.items, demo.users, demo.interactions)
    users = user_snapshots(context, demo.users[C.USER_ID], [at] * 50)
    store = open_store(settings, "redis-test")
    apply_definitions("redis-test", settings)
    append_user_snapshots(settings, "redis-test", users)
    append_snapshots(
        settings, "redis-test", "item_features", item_snapshots(context, demo.items[C.ITEM_ID], [at] * 200)
    )
    materialize(store, at.to_pydatetime(), (at + pd.Timedelta(seconds=1)).to_pydatetime())
    online = online_user_features(store, users[C.USER_ID].tolist()[:5]).set_index(C.USER_ID)
    expected = users.set_index(C.USER_ID).iloc[:5]
    np.testing.assert_allclose(online["user_events_all"].to_numpy(float), expected["user_events_all"].to_numpy(float))
    assert [list(v) for v in online["user_seen_items"]] == [list(v) for v in expected["user_seen_items"]]


def test_redis_stopped_while_serving_degrades(redis_server, version, known_users, tmp_path: Path):
    url, process = redis_server
    settings = redis_state(version, tmp_path, url)
    runtime = Runtime(settings, store_retry_seconds=0.0)
    runtime.start(load_encoder=False)
    user = next(iter(known_users))
    _, healthy = runtime.recommend(user, 10, Filters(), True, False)
    assert not healthy.degraded and not healthy.fallback and len(healthy.items) == 10
    process.terminate()
    process.wait(timeout=10)
    _, outage = runtime.recommend(user, 10, Filters(), True, True)
    assert outage.degraded and not outage.fallback and len(outage.items) == 10
    assert all(item.explanation and item.explanation["degraded"] for item in outage.items)
    runtime.close()


# ---- artifacts -------------------------------------------------------------------------------------------------
def test_corrupt_index_file_is_named_and_refused(version, tmp_path: Path):
    settings = copy_serving_state(version.settings, tmp_path / "state")
    runtime = Runtime(settings)
    runtime.start(load_encoder=False)
    served = runtime.status()["version"]
    # publish a copy of the version, then damage its semantic index
    from tests.serving.support import publish_copy

    broken = publish_copy(settings.versions_dir)
    index = broken / "stage1" / "semantic.faiss"
    index.write_bytes(index.read_bytes()[:100] + b"\0" * 64)
    with pytest.raises(ArtifactError, match=r"stage1/semantic\.faiss: checksum mismatch"):
        load_recommender(broken, RulesConfig.from_settings(settings))
    status = runtime.reload()
    assert status["version"] == served and "semantic.faiss" in status["last_reload_error"]
    user_result = runtime.recommend("nobody", 5, Filters(), True, False)[1]
    assert len(user_result.items) == 5  # still serving the old version
    runtime.close()


def test_missing_ranker_is_named(version, tmp_path: Path):
    settings = copy_serving_state(version.settings, tmp_path / "state")
    current = VersionStore(settings.versions_dir).current()
    (current / "ranker" / "ranker.txt").unlink()
    with pytest.raises(ArtifactError, match=r"ranker/ranker\.txt: listed in the manifest but missing"):
        load_recommender(current, RulesConfig.from_settings(settings))
    runtime = Runtime(settings)
    with pytest.raises(ArtifactError, match=r"ranker\.txt"):
        runtime.start(load_encoder=False)  # nothing else to serve: the service does not become ready


# ---- pipeline --------------------------------------------------------------------------------------------------
def test_invalid_dataset_stops_the_pipeline_before_writing(published, tmp_path: Path):
    from flows.pipeline import pipeline_flow

    settings, summary = published
    bad = tmp_path / "shop"
    bad.mkdir()
    pd.DataFrame({C.ITEM_ID: ["a", "a"], C.TITLE: ["A", "B"], C.CATEGORY: ["c", "c"], C.CREATED_AT: ["2024-01-01"] * 2}
                 ).to_csv(bad / "items.csv", index=False)  # fmt: skip
    pd.DataFrame({C.USER_ID: ["u"], C.ITEM_ID: ["zz"], C.TIMESTAMP: ["2024-02-01"], C.EVENT_TYPE: ["view"]}).to_csv(
        bad / "interactions.csv", index=False
    )
    state = settings.model_copy(update={"state_dir": tmp_path / "fresh-state"})
    with pytest.raises(DataValidationError, match=r"items\.csv: column 'item_id': 1 duplicate id"):
        pipeline_flow("files", str(bad), state)
    assert not (tmp_path / "fresh-state" / "data" / "shop").exists()
    assert not (tmp_path / "fresh-state" / "versions").exists()
    # and the session's published version is untouched
    assert str(VersionStore(settings.versions_dir).current()) == summary["version"]


def pipeline_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "PREFECT_"))}
    dumped = settings.model_dump(mode="json")
    for name, value in dumped.items():
        if value is not None:
            env[f"RECSYS_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    env["PREFECT_HOME"] = str(settings.state_dir / "prefect")
    return env


def test_killed_pipeline_resumes_from_its_cache_and_leaves_the_served_version(published, tmp_path: Path):
    """Run 2 (a changed ranker setting) is killed while training the re-ranker: the version from run 1 keeps being
    current. Run 3 re-runs run 2: the finished steps come from the cache, and it stores a new version (champion or
    challenger, as it compares with the champion)."""
    settings, _ = published
    state = tmp_path / "state"
    shutil.copytree(settings.state_dir, state, symlinks=True, ignore=shutil.ignore_patterns("prefect"))
    changed = settings.model_copy(update={"state_dir": state, "ranker_rounds": settings.ranker_rounds + 1})
    env = pipeline_env(changed)
    served = VersionStore(changed.versions_dir).current()
    stored = VersionStore(changed.versions_dir).versions()
    command = [sys.executable, "-m", "flows.cli", "pipeline", "--dataset", "demo"]
    log = tmp_path / "killed.log"
    with open(log, "wb") as out:
        run = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and run.poll() is None and b"build_training_set" not in log.read_bytes():
            time.sleep(0.5)
        time.sleep(1.0)
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
    assert b"build_training_set" in log.read_bytes(), log.read_text()[-3000:]
    assert VersionStore(changed.versions_dir).current() == served
    verify_version(served)

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    output = again.stdout + again.stderr
    for step in ("embed_items", "tune_peers", "compute_serving_snapshots"):
        assert any(step in line and "Cached" in line for line in output.splitlines()), f"{step} was redone"
    assert len(VersionStore(changed.versions_dir).versions()) == len(stored) + 1
