"""What every flow shares: the cache policy, deterministic work folders, and loading a saved dataset."""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from prefect.cache_policies import INPUTS, TASK_SOURCE

from models.files import ArtifactError
from models.settings import Settings

CACHED: dict[str, Any] = {
    # the settings object carries paths; what a step depends on is passed to it explicitly as other inputs
    "cache_policy": (INPUTS - "settings") + TASK_SOURCE,
    "persist_result": True,
    "result_serializer": "json",
}
"""Tasks whose result depends only on their inputs and code: a re-run with the same inputs skips them."""

DETERMINISTIC_ERRORS = (ValueError, TypeError, KeyError, ArtifactError)
"""Invalid data, a missing or corrupt artifact, a bug: the same input fails the same way on every try."""


def transient_failure(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry condition: retry what a second try may fix (I/O), never a deterministic error."""
    return not isinstance(getattr(state, "data", None), DETERMINISTIC_ERRORS)


IO_RETRIES: dict[str, Any] = {"retries": 2, "retry_delay_seconds": 2, "retry_condition_fn": transient_failure}


def work_key(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts, naming a step's output folder."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


RUNTIME_ONLY = frozenset({
    "state_dir", "dask_address", "threads", "reload_interval_seconds", "online_store", "redis_url", "build_bento",
    "registered_model", "embedding_shard_size", "live_poll_seconds", "impressions_flush_rows",
    "impressions_flush_seconds", "impressions_retention_days", "namespace", "release_min_gain", "release_gate_users",
    "challenger_mode", "challenger_share", "admin_token", "max_body_bytes", "host", "memory_map",
})  # fmt: skip
"""Settings that change where or how fast a step runs, never what it computes."""


def settings_key(settings: Settings) -> dict[str, Any]:
    """Everything a step's result may depend on: the settings (but where and how fast it runs) and the library's
    code fingerprint — Prefect's TASK_SOURCE only sees the task body, not the ``models`` code it calls."""
    dumped = settings.model_dump(mode="json")
    return {**{k: v for k, v in dumped.items() if k not in RUNTIME_ONLY}, "code": code_fingerprint()}


@functools.cache
def code_fingerprint() -> str:
    """sha256 over the library and feature definitions: any change there invalidates cached step outputs."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted([*root.glob("models/**/*.py"), *root.glob("feature_repo/**/*.py")]):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


@functools.cache
def code_version() -> dict[str, Any]:
    """What a report was measured with: the code fingerprint, and the git commit when run from a checkout
    (``dirty`` when the library or feature definitions differ from that commit). Read once per process — the
    pipeline reads it when it starts, so edits made while it runs do not relabel its results."""
    root = Path(__file__).resolve().parents[1]
    version: dict[str, Any] = {"code_fingerprint": code_fingerprint(), "commit": None, "dirty": None}
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()  # fmt: skip
        changes = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "models", "feature_repo"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return version
    return {**version, "commit": commit, "dirty": bool(changes)}


def work_dir(settings: Settings, step: str, key: str) -> Path:
    return settings.work_dir / step / key


def slug(text: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes."""
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def _link_or_copy(source: str, target: str) -> None:
    try:
        Path(target).hardlink_to(source)
    except OSError:
        shutil.copy2(source, target)


def link_tree(source: Path, target: Path) -> None:
    """Hard-link immutable artifacts into a version (instant, no extra space); copy across file systems."""
    shutil.copytree(source, target, copy_function=_link_or_copy)
