"""The Feast repository in throw-away stores: apply, materialise, point-in-time joins, and training/serving parity."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feature_repo.definitions import build_definitions
from models.data import columns as C
from models.data.demo_catalog import generate_demo_catalog
from models.features.assembly import RequestInputs, UserRow, assemble
from models.features.snapshots import FeatureContext, item_snapshots, user_snapshots
from models.features.spec import (
    EVENT_TIMESTAMP,
    ITEM_FEATURES,
    ITEM_VIEW,
    USER_FEATURES,
    USER_HISTORY,
    USER_MODEL_FEATURES,
    USER_NUMERIC,
    USER_VIEW,
    FeatureSpec,
)
from models.features.store import (
    REPO_PATH,
    append_snapshots,
    append_user_snapshots,
    feature_data_dir,
    materialize,
    online_item_features,
    online_user_features,
    open_store,
    point_in_time_join,
)
from models.recommender.item_features import PointInTimeItemFeatures, StaticItemFeatures
from models.settings import Settings

T1 = pd.Timestamp("2026-03-01", tz="UTC")
T2 = pd.Timestamp("2026-05-01", tz="UTC")


@pytest.fixture(scope="module")
def demo():
    return generate_demo_catalog(n_items=300, n_users=80, n_interactions=4000, seed=11)


@pytest.fixture
def store_and_settings(tmp_path: Path):
    settings = Settings(state_dir=tmp_path / "state")
    store = open_store(settings, "t")
    store.apply(build_definitions(feature_data_dir(settings, "t")))
    return store, settings


def snapshots_at(demo, at: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    context = FeatureContext(demo.items, demo.users, demo.interactions)
    users = user_snapshots(context, demo.users[C.USER_ID], [at] * len(demo.users))
    items = item_snapshots(context, demo.items[C.ITEM_ID], [at] * len(demo.items))
    return users, items


def test_repo_applies(store_and_settings):
    store, _ = store_and_settings
    assert {view.name for view in store.list_feature_views()} == {"user_features", "user_history", "item_features"}
    service = store.get_feature_service("ranker_v1")
    names = [f.name for projection in service.feature_view_projections for f in projection.features]
    assert names == [*USER_MODEL_FEATURES, *ITEM_FEATURES]  # no history lists in training frames
    history = store.get_feature_service("user_history_v1")
    assert [f.name for p in history.feature_view_projections for f in p.features] == list(USER_HISTORY)
    assert set(USER_MODEL_FEATURES) | set(USER_HISTORY) == set(USER_FEATURES)


def test_materialisation_round_trip(store_and_settings, demo):
    store, settings = store_and_settings
    users, items = snapshots_at(demo, T2)
    append_user_snapshots(settings, "t", users)
    append_snapshots(settings, "t", "item_features", items)
    materialize(store, T2.to_pydatetime(), (T2 + pd.Timedelta(seconds=1)).to_pydatetime())
    some = users[C.USER_ID].iloc[:5].tolist()
    online = online_user_features(store, some).set_index(C.USER_ID)
    expected = users.set_index(C.USER_ID).loc[some]
    np.testing.assert_allclose(
        online[list(USER_NUMERIC)].to_numpy(float), expected[list(USER_NUMERIC)].to_numpy(float), rtol=1e-6
    )
    for user in some:
        assert list(online.loc[user, "user_recent_items"]) == list(expected.loc[user, "user_recent_items"])
        assert list(online.loc[user, "user_seen_items"]) == list(expected.loc[user, "user_seen_items"])
    online_items = online_item_features(store, items[C.ITEM_ID].tolist())
    assert (online_items["item_category"].to_numpy() == items["item_category"].to_numpy()).all()


def test_a_rewritten_snapshot_at_the_same_time_reaches_the_online_store(store_and_settings, demo):
    """A re-run with new feature code or corrected data writes its snapshot at the same data time: the online store
    must serve the new values (Feast's incremental watermark would not move)."""
    store, settings = store_and_settings
    users, items = snapshots_at(demo, T2)
    window = (T2.to_pydatetime(), (T2 + pd.Timedelta(seconds=1)).to_pydatetime())
    append_user_snapshots(settings, "t", users)
    append_snapshots(settings, "t", "item_features", items)
    materialize(store, *window)
    user = users[C.USER_ID].iloc[0]
    append_user_snapshots(settings, "t", users.assign(user_events_all=12345.0))
    materialize(store, *window)
    assert online_user_features(store, [user])["user_events_all"].iloc[0] == 12345.0


def test_point_in_time_join_keeps_the_value_as_of_the_row(store_and_settings, demo):
    store, settings = store_and_settings
    users_t1, items_t1 = snapshots_at(demo, T1)
    users_t2, items_t2 = snapshots_at(demo, T2)
    for frame in (users_t1, users_t2):
        append_user_snapshots(settings, "t", frame)
    for frame in (items_t1, items_t2):
        append_snapshots(settings, "t", "item_features", frame)
    active = users_t2.loc[users_t2["user_events_all"] > users_t1["user_events_all"].to_numpy(), C.USER_ID].iloc[0]
    item = items_t2.loc[items_t2["item_events_all"] > items_t1["item_events_all"].to_numpy(), C.ITEM_ID].iloc[0]
    times = [T1 + pd.Timedelta(days=10), T2 - pd.Timedelta(seconds=1), T2 + pd.Timedelta(days=1)]
    user_rows = point_in_time_join(store, pd.DataFrame({C.USER_ID: [active] * 3, EVENT_TIMESTAMP: times}), USER_VIEW)
    before = users_t1.set_index(C.USER_ID).loc[active, "user_events_all"]
    after = users_t2.set_index(C.USER_ID).loc[active, "user_events_all"]
    # the feature changed at T2 (after the first two rows' time): those rows keep the old value
    assert user_rows["user_events_all"].tolist() == [before, before, after]
    item_rows = point_in_time_join(store, pd.DataFrame({C.ITEM_ID: [item] * 3, EVENT_TIMESTAMP: times}), ITEM_VIEW)
    assert item_rows["item_events_all"].iloc[1] == items_t1.set_index(C.ITEM_ID).loc[item, "item_events_all"]
    assert item_rows["item_events_all"].iloc[2] == items_t2.set_index(C.ITEM_ID).loc[item, "item_events_all"]


def test_training_features_equal_serving_features(store_and_settings, demo):
    """Same (user, item, time): the training path (Feast's point-in-time join for the user, the point-in-time item
    function) and the serving path (the online store, the published in-memory item table) give identical stored
    features and an identical assembled ranker input."""
    store, settings = store_and_settings
    users, items = snapshots_at(demo, T2)
    append_user_snapshots(settings, "t", users)
    append_snapshots(settings, "t", "item_features", items)
    materialize(store, T2.to_pydatetime(), (T2 + pd.Timedelta(seconds=1)).to_pydatetime())
    user = users.loc[users["user_events_all"] > 0, C.USER_ID].iloc[0]
    frame = point_in_time_join(store, pd.DataFrame({C.USER_ID: [user], EVENT_TIMESTAMP: [T2]}), USER_VIEW)
    online_user = online_user_features(store, [user]).iloc[0].to_dict()
    spec = FeatureSpec.fit(demo.users)
    context = FeatureContext(demo.items, demo.users, demo.interactions)
    rows = np.arange(20)
    as_of = T2.value / 1e9
    table = StaticItemFeatures(items.drop(columns=[EVENT_TIMESTAMP]), items[C.ITEM_ID].to_numpy(), spec)
    inputs = RequestInputs(
        as_of=as_of, candidate_rows=rows, user_text_vector=None, user_collab_vector=None,
        candidate_text_vectors=np.zeros((20, 4), np.float32), candidate_collab_vectors=np.zeros((20, 4), np.float32),
        seen_counts=np.zeros(20, np.float32), provenance_ranks={}, provenance_scores={},
        fused_scores=np.linspace(1, 0, 20).astype(np.float32), item_tags=context.tags, recent_rows=np.array([3, 7]),
    )  # fmt: skip
    training = assemble(UserRow.from_mapping(frame.iloc[0].to_dict(), spec),
                        PointInTimeItemFeatures(context, spec).block(rows, as_of), inputs)  # fmt: skip
    serving = assemble(UserRow.from_mapping(online_user, spec), table.block(rows, as_of), inputs)
    np.testing.assert_array_equal(training, serving)
    assert np.isfinite(training[:, list(spec.names).index("tag_affinity")]).all()


def test_feast_cli_applies_and_materialises(tmp_path: Path, demo):
    """`feast apply` and `feast materialize-incremental` from the repository folder (run on a copy, so the CLI's
    relative paths land in a temporary state folder)."""
    repo = tmp_path / "feature_repo"
    shutil.copytree(REPO_PATH, repo, ignore=shutil.ignore_patterns("__pycache__"))
    state = tmp_path / ".state"
    settings = Settings(state_dir=state)
    now = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(hours=1)
    users, items = snapshots_at(demo, T2)
    append_user_snapshots(settings, "demo", users.assign(**{EVENT_TIMESTAMP: now}))
    append_snapshots(settings, "demo", "item_features", items.assign(**{EVENT_TIMESTAMP: now}))
    env = {**os.environ, "RECSYS_STATE_DIR": str(state)}
    feast = [str(Path(sys.executable).parent / "feast")]  # the venv's CLI
    applied = subprocess.run([*feast, "apply"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert applied.returncode == 0, applied.stderr[-2000:]
    end = (pd.Timestamp.now(tz="UTC") + pd.Timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    done = subprocess.run([*feast, "materialize-incremental", end], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    store = open_store(settings, "demo")
    online = online_user_features(store, [users[C.USER_ID].iloc[0]])
    assert online["user_events_all"].iloc[0] == users["user_events_all"].iloc[0]
