"""A re-run whose every step was reused publishes nothing: the version it would build is the champion (or the
challenger) already, so it is named as such instead of being stored again as a copy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flows.pipeline import build_inputs, pipeline_flow, version_built_from
from models.recommender.versions import MANIFEST, VersionStore, read_manifest
from models.settings import Settings


def publish(store: VersionStore, build: dict[str, str], as_champion: bool) -> Path:
    builder = store.start()
    (builder.path / "ranker.txt").write_text("a model")
    builder.add_section("build", build)
    return store.publish(builder, as_champion=as_champion)


def test_the_version_built_from_the_same_folders_is_found(tmp_path: Path):
    settings = Settings(state_dir=tmp_path).for_dataset("demo")
    build = build_inputs("data-1", "/w/stage1/s1", "/w/features/f1", "/w/ranker/r1", settings)
    assert version_built_from(build, settings) is None  # nothing published yet
    store = VersionStore(settings.versions_dir)
    champion = publish(store, build, as_champion=True)
    assert version_built_from(build, settings) == ("champion", champion)
    for changed in ({"ranker": "r2"}, {"stage1": "s2"}, {"features": "f2"}, {"dataset": "data-2"}):
        assert version_built_from({**build, **changed}, settings) is None, changed
    redis = build_inputs("data-1", "/w/stage1/s1", "/w/features/f1", "/w/ranker/r1",
                         settings.model_copy(update={"online_store": "redis"}))  # fmt: skip
    assert version_built_from(redis, settings) is None, "publishing to another online store is not a re-run"
    other = {**build, "ranker": "r2"}
    challenger = publish(store, other, as_champion=False)
    assert version_built_from(other, settings) == ("challenger", challenger)


def test_a_first_look_is_never_the_same_build_as_a_full_run(tmp_path: Path):
    settings = Settings(state_dir=tmp_path).for_dataset("demo")
    full = build_inputs("data-1", "s1", "f1", "r1", settings)
    quick = build_inputs("data-1", "s1", "f1", "r1", settings, profile="quick")
    first_look = publish(VersionStore(settings.versions_dir), quick, as_champion=True)
    assert version_built_from(quick, settings) == ("champion", first_look)
    assert version_built_from(full, settings) is None  # so a full run publishes, and replaces it


def test_a_version_recorded_before_profiles_was_built_by_a_full_run(tmp_path: Path):
    settings = Settings(state_dir=tmp_path).for_dataset("demo")
    full = build_inputs("data-1", "s1", "f1", "r1", settings)
    older = publish(VersionStore(settings.versions_dir), {k: v for k, v in full.items() if k != "profile"}, True)
    assert version_built_from(full, settings) == ("champion", older)
    assert version_built_from({**full, "profile": "quick"}, settings) is None


def test_an_unreadable_champion_is_not_this_build(tmp_path: Path):
    settings = Settings(state_dir=tmp_path).for_dataset("demo")
    build = build_inputs("data-1", "s1", "f1", "r1", settings)
    champion = publish(VersionStore(settings.versions_dir), build, as_champion=True)
    (champion / MANIFEST).write_text("{not json")
    assert version_built_from(build, settings) is None


@pytest.fixture(scope="module")
def rerun(published, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the session's published state, and the pipeline run again on it with the same settings."""
    settings, _ = published
    state = tmp_path_factory.mktemp("rerun") / "state"
    shutil.copytree(settings.state_dir, state, symlinks=True)  # the pointers stay pointers
    copy = settings.model_copy(update={"state_dir": state})
    store = VersionStore(copy.versions_dir)
    before = (store.current().name, store.versions())
    return copy, before, pipeline_flow("demo", None, copy)


def test_a_rerun_with_every_step_reused_publishes_nothing(rerun):
    settings, (champion, versions), summary = rerun
    release = summary["release"]
    assert release["unchanged"] is True and release["publish"] is True, release
    assert f"unchanged: the champion {champion}" in release["reason"]
    assert Path(summary["version"]).name == champion
    store = VersionStore(settings.versions_dir)
    assert store.versions() == versions and store.current().name == champion and store.pointed("challenger") is None
    assert (
        read_manifest(store.current())["build"]["dataset"] == read_manifest(store.current())["dataset"]["fingerprint"]
    )
