"""Release pointers: a version that did not beat the champion is the challenger (not served); promote and rollback
move ``current`` and keep a history; a service finds its namespace."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.files import ArtifactError
from models.recommender.versions import (
    CHALLENGER,
    CURRENT,
    PREVIOUS,
    VersionStore,
    choose_namespace,
    published_namespaces,
)


def publish(store: VersionStore, payload: bytes, as_champion: bool = True) -> str:
    builder = store.start()
    (builder.path / "ranker").mkdir()
    (builder.path / "ranker" / "model.txt").write_bytes(payload)
    builder.add_section("ranker", {"file": "ranker/model.txt"})
    return store.publish(builder, as_champion=as_champion, reason=f"test {payload!r}").name


def test_a_challenger_is_stored_but_not_served(tmp_path: Path):
    store = VersionStore(tmp_path / "versions" / "demo")
    champion = publish(store, b"one")
    challenger = publish(store, b"two", as_champion=False)
    assert store.current().name == champion
    assert store.pointed(CHALLENGER).name == challenger  # type: ignore[union-attr]
    assert store.pointed(PREVIOUS) is None
    assert [entry["action"] for entry in store.releases()] == ["publish", "challenger"]


def test_promote_then_rollback_then_rollback_again(tmp_path: Path):
    store = VersionStore(tmp_path / "versions" / "demo")
    champion = publish(store, b"one")
    challenger = publish(store, b"two", as_champion=False)
    assert store.promote("looks good") == challenger
    assert store.current().name == challenger and store.pointed(PREVIOUS).name == champion  # type: ignore[union-attr]
    assert store.pointed(CHALLENGER) is None
    assert store.rollback("bad") == champion
    assert store.current().name == champion
    assert store.rollback() == challenger  # a second rollback undoes the first
    history = store.releases()
    assert [e["action"] for e in history] == ["publish", "challenger", "promote", "rollback", "rollback"]
    assert history[2]["reason"] == "looks good" and history[3]["version"] == champion


def test_promote_and_rollback_say_what_is_missing(tmp_path: Path):
    store = VersionStore(tmp_path / "versions" / "demo")
    publish(store, b"one")
    with pytest.raises(ArtifactError, match="no challenger"):
        store.promote()
    with pytest.raises(ArtifactError, match="no previous version"):
        store.rollback()


def test_a_new_champion_makes_the_old_one_previous_and_retires_the_challenger(tmp_path: Path):
    store = VersionStore(tmp_path / "versions" / "demo")
    first = publish(store, b"one")
    publish(store, b"lost", as_champion=False)
    second = publish(store, b"two")
    assert store.current().name == second and store.pointed(PREVIOUS).name == first  # type: ignore[union-attr]
    assert store.pointed(CHALLENGER) is None


def test_namespaces_are_separate(tmp_path: Path):
    root = tmp_path / "versions"
    demo, shop = VersionStore(root / "demo"), VersionStore(root / "shop")
    served = publish(demo, b"demo")
    publish(shop, b"shop")
    assert demo.current().name == served != shop.current().name
    assert published_namespaces(root) == ["demo", "shop"]
    assert choose_namespace(root, "shop") == "shop"
    with pytest.raises(ArtifactError, match=r"several namespaces \(demo, shop\): set RECSYS_NAMESPACE"):
        choose_namespace(root, None)


def test_the_only_namespace_is_chosen_and_none_is_named(tmp_path: Path):
    root = tmp_path / "versions"
    with pytest.raises(ArtifactError, match="no published version"):
        choose_namespace(root, None)
    publish(VersionStore(root / "demo"), b"x")
    assert choose_namespace(root, None) == "demo"


def test_a_state_folder_from_before_namespaces_is_named(tmp_path: Path):
    root = tmp_path / "versions"
    root.mkdir()
    (root / "v1").mkdir()
    (root / CURRENT).symlink_to("v1")
    with pytest.raises(ArtifactError, match="before namespaces"):
        choose_namespace(root, None)
