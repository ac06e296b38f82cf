"""Versions publish atomically and every manifest check names the file it failed on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.files import ArtifactError
from models.recommender.versions import VersionStore, verify_version


def publish_one(store: VersionStore, payload: bytes = b"weights") -> Path:
    builder = store.start()
    (builder.path / "ranker").mkdir()
    (builder.path / "ranker" / "model.txt").write_bytes(payload)
    builder.add_section("ranker", {"file": "ranker/model.txt"})
    return store.publish(builder)


def test_publish_switches_current(tmp_path: Path):
    store = VersionStore(tmp_path / "versions")
    first = publish_one(store, b"one")
    assert store.current() == first
    second = publish_one(store, b"two")
    assert store.current() == second
    assert store.versions() == sorted([first.name, second.name])
    manifest = verify_version(second)
    assert manifest["ranker"] == {"file": "ranker/model.txt"}
    assert set(manifest["files"]) == {"ranker/model.txt"}


def test_failed_build_leaves_current_alone(tmp_path: Path):
    store = VersionStore(tmp_path / "versions")
    served = publish_one(store)
    builder = store.start()
    (builder.path / "half-written.bin").write_bytes(b"x")
    # the run dies here: no publish
    assert store.current() == served
    assert store.clean_staging() == 1
    assert not builder.path.exists()


def test_nothing_published(tmp_path: Path):
    with pytest.raises(ArtifactError, match="no published version"):
        VersionStore(tmp_path / "versions").current()


def test_corrupt_file_is_named(tmp_path: Path):
    version = publish_one(VersionStore(tmp_path / "versions"))
    (version / "ranker" / "model.txt").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match=r"ranker/model\.txt: checksum mismatch"):
        verify_version(version)


def test_missing_file_is_named(tmp_path: Path):
    version = publish_one(VersionStore(tmp_path / "versions"))
    (version / "ranker" / "model.txt").unlink()
    with pytest.raises(ArtifactError, match=r"ranker/model\.txt: listed in the manifest but missing"):
        verify_version(version)


def test_broken_manifest_is_named(tmp_path: Path):
    version = publish_one(VersionStore(tmp_path / "versions"))
    (version / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=r"manifest\.json: manifest is not valid JSON"):
        verify_version(version)
    (version / "manifest.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ArtifactError, match="lacks 'version' or 'files'"):
        verify_version(version)


def test_copy_sections_from_previous_version(tmp_path: Path):
    store = VersionStore(tmp_path / "versions")
    first = publish_one(store, b"keep me")
    builder = store.start()
    builder.copy_from(first, ["ranker"])
    second = store.publish(builder)
    assert (second / "ranker" / "model.txt").read_bytes() == b"keep me"
    assert verify_version(second)["ranker"] == {"file": "ranker/model.txt"}
