"""Versioned artifact bundles: build in a staging folder, publish atomically, load with checks.

A version is a folder holding a ``manifest.json`` and the files it lists with their sha256. Publishing renames the
staging folder into place and then swaps the ``current`` symlink with one ``os.replace``: readers see either the old
version or the new one, never a half-written one, and a failed build never touches what is being served.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.files import ArtifactError, sha256_file

MANIFEST = "manifest.json"
CURRENT = "current"
CHALLENGER = "challenger"
"""A version that passed its checks but did not beat the champion (``current``): served only in shadow or split."""
PREVIOUS = "previous"
"""The version ``current`` pointed at before its last move: what ``rollback`` returns to."""
RELEASES = "releases.jsonl"
"""Every pointer move (publish, challenger, promote, rollback) with its time and reason: the namespace's history."""
STAGING_PREFIX = ".staging-"
STATE_MODEL = "recsys-state"
"""The BentoML model a bento carries the published version in (packed by flows/package.py, read by the service)."""


def new_version_id(now: datetime | None = None) -> str:
    """Sortable, unique: ``v20261125T181500Z-1a2b3c``."""
    now = now or datetime.now(UTC)
    return f"v{now.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}"


class VersionBuilder:
    """A version being assembled in a staging folder; components add files and manifest sections."""

    def __init__(self, root: Path, version: str):
        self.root = root
        self.version = version
        self.path = root / f"{STAGING_PREFIX}{version}"
        self.path.mkdir(parents=True)
        self.sections: dict[str, Any] = {}

    def add_section(self, name: str, content: Any) -> None:
        """A manifest section, e.g. ``indexes`` or ``ranker``; must be JSON-serialisable."""
        json.dumps(content)
        self.sections[name] = content

    def copy_from(self, other: Path, names: list[str]) -> None:
        """Carry files (and their sections) over from an existing version, e.g. when only the ranker changes."""
        manifest = read_manifest(other)
        for name in names:
            if name not in manifest:
                raise ArtifactError(f"{other / MANIFEST}: has no section '{name}' to copy")
            self.sections[name] = manifest[name]
        for rel in manifest["files"]:
            section = rel.split("/", 1)[0]
            if section in names:
                target = self.path / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(other / rel, target)


def _checksums(folder: Path) -> dict[str, str]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in files}


class VersionStore:
    """Published versions under one root folder, with a ``current`` pointer."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def start(self) -> VersionBuilder:
        self.root.mkdir(parents=True, exist_ok=True)
        return VersionBuilder(self.root, new_version_id())

    def publish(
        self,
        builder: VersionBuilder,
        extra: dict[str, Any] | None = None,
        check: Callable[[Path], object] | None = None,
        as_champion: bool = True,
        reason: str = "",
    ) -> Path:
        """Write the manifest, verify it (and run ``check`` on the folder, e.g. a load-and-serve smoke test), move
        the version into place and point ``current`` (or, when it is not to be the champion, ``challenger``) at it.
        A failing check leaves every pointer untouched."""
        manifest = {
            "version": builder.version,
            "created_at": datetime.now(UTC).isoformat(),
            **(extra or {}),
            **builder.sections,
            "files": _checksums(builder.path),
        }
        (builder.path / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        verify_version(builder.path)
        if check is not None:
            check(builder.path)
        final = self.root / builder.version
        builder.path.rename(final)
        with self._locked():
            if as_champion:  # the old challenger lost to the old champion: it does not run beside the new one
                self._make_current(builder.version, "publish", reason)
                (self.root / CHALLENGER).unlink(missing_ok=True)
            else:
                self._point(CHALLENGER, builder.version)
                self._record("challenger", builder.version, reason)
        return final

    def promote(self, reason: str = "") -> str:
        """Make the challenger the champion (``current``); the old champion becomes ``previous``."""
        with self._locked():
            challenger = self.pointed(CHALLENGER)
            if challenger is None:
                raise ArtifactError(f"{self.root}: no challenger to promote")
            self._make_current(challenger.name, "promote", reason)
            (self.root / CHALLENGER).unlink(missing_ok=True)
        return challenger.name

    def rollback(self, reason: str = "") -> str:
        """Point ``current`` back at ``previous`` (the version it replaced); a second rollback undoes the first."""
        with self._locked():
            previous = self.pointed(PREVIOUS)
            if previous is None:
                raise ArtifactError(f"{self.root}: no previous version to roll back to")
            self._make_current(previous.name, "rollback", reason)
        return previous.name

    def pointed(self, name: str) -> Path | None:
        """The version folder a pointer (``current``, ``challenger``, ``previous``) names, if it exists."""
        pointer = self.root / name
        return pointer.resolve() if pointer.exists() else None

    def releases(self) -> list[dict[str, Any]]:
        path = self.root / RELEASES
        return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []

    def _make_current(self, version: str, action: str, reason: str) -> None:
        """Called with the lock held."""
        old = self.pointed(CURRENT)
        if old is not None and old.name != version:
            self._point(PREVIOUS, old.name)
        self._point(CURRENT, version)
        self._record(action, version, reason)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Pointer moves one at a time (two workers, or a worker and a pipeline): a sane history, no lost pointer."""
        with (self.root / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _point(self, name: str, version: str) -> None:
        """Swap a pointer with one ``os.replace``: readers see the old target or the new one, never none."""
        pointer = self.root / f".{name}-{uuid.uuid4().hex[:8]}"
        pointer.symlink_to(version)
        os.replace(pointer, self.root / name)

    def _record(self, action: str, version: str, reason: str) -> None:
        entry = {"at": datetime.now(UTC).isoformat(), "action": action, "version": version, "reason": reason}
        with (self.root / RELEASES).open("a") as out:
            out.write(json.dumps(entry) + "\n")

    def discard(self, builder: VersionBuilder) -> None:
        shutil.rmtree(builder.path, ignore_errors=True)

    def current(self) -> Path:
        """The folder of the version being served; raises ArtifactError when nothing is published."""
        pointer = self.root / CURRENT
        if not pointer.exists():
            raise ArtifactError(f"no published version: {pointer} does not exist (run the pipeline first)")
        return pointer.resolve()

    def versions(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and p.name.startswith("v"))

    def clean_staging(self) -> int:
        """Remove staging folders left by failed runs; returns how many were removed."""
        stale = [p for p in self.root.glob(f"{STAGING_PREFIX}*") if p.is_dir()] if self.root.exists() else []
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)
        return len(stale)


def read_manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise ArtifactError(f"{path}: manifest missing")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ArtifactError(f"{path}: manifest is not valid JSON ({error})") from error
    if not isinstance(manifest, dict) or "files" not in manifest or "version" not in manifest:
        raise ArtifactError(f"{path}: manifest lacks 'version' or 'files'")
    return manifest


def verify_version(folder: Path) -> dict[str, Any]:
    """Check every file listed in the manifest exists and matches its sha256; return the manifest."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    for rel, expected in manifest["files"].items():
        path = folder / rel
        if not path.exists():
            raise ArtifactError(f"{path}: listed in the manifest but missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ArtifactError(f"{path}: checksum mismatch (manifest {expected[:12]}…, file {actual[:12]}…)")
    return manifest


def published_namespaces(versions_root: Path) -> list[str]:
    """The namespaces under ``versions_root`` that have a champion."""
    if not versions_root.exists():
        return []
    return sorted(p.name for p in versions_root.iterdir() if (p / CURRENT).exists())


def choose_namespace(versions_root: Path, namespace: str | None) -> str:
    """``namespace`` when given, else the only published one; the error lists what there is to choose from."""
    if namespace:
        return namespace
    names = published_namespaces(versions_root)
    if len(names) == 1:
        return names[0]
    if (versions_root / CURRENT).exists():
        raise ArtifactError(f"{versions_root / CURRENT}: a state folder from before namespaces (one per dataset): "
                            "run the pipeline again to publish under versions/<dataset>/")  # fmt: skip
    found = f"several namespaces ({', '.join(names)})" if names else "no published version (run the pipeline first)"
    raise ArtifactError(f"{versions_root}: {found}: set RECSYS_NAMESPACE")
