"""What the service holds at run time: the loaded version, the online feature store, the query encoder, and the
hot swap to a newly published version. Plain Python, so it can be tested without a server.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.data import columns as C
from models.features.spec import FEATURE_SERVICE, HISTORY_SERVICE
from models.features.store import online_user_row, open_store, user_feature_refs
from models.files import ArtifactError
from models.live.impressions import ImpressionLog, ShownList, impressions_dir
from models.live.log import EVENT, ITEM, LiveLog, open_log
from models.live.overlay import LiveOverlay
from models.ranking.rules import Filters, RulesConfig
from models.recommender.bundle import load_recommender
from models.recommender.recommender import Recommender
from models.recommender.request import Request, Result
from models.recommender.versions import VersionStore
from models.settings import Settings
from models.text.encoders import make_encoder
from models.text.model import TextEncoder

log = logging.getLogger(__name__)


class RequestError(ValueError):
    """The request names something the served version does not have (answered 422, not 500)."""


@dataclass
class Loaded:
    """One published version, fully loaded and checked."""

    path: Path
    live: LiveOverlay
    """The version's recommender with the live log's records applied on top."""
    manifest: dict[str, Any]
    store: Any
    snapshot_seconds: float
    published_seconds: float
    user_refs: list[str]
    log: LiveLog
    impressions: ImpressionLog
    """Every list this process serves from this version (flushed in the background and when swapped out)."""

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def recommender(self) -> Recommender:
        return self.live.recommender

    @property
    def dataset(self) -> str:
        return str(self.manifest["features"]["store"]["dataset"])

    def as_of(self) -> float:
        """The serving clock: the data's 'now' advanced by the wall-clock time since publishing. A live system
        publishes right after its data ends (so this is now); the demo's fixed data keeps a consistent clock."""
        return self.snapshot_seconds + max(0.0, time.time() - self.published_seconds)


def load_version(path: Path, settings: Settings, rules: RulesConfig, encoder: TextEncoder | None) -> Loaded:
    recommender, manifest = load_recommender(path, rules, encoder.dim if encoder is not None else None)
    dataset = manifest["features"]["store"]["dataset"]
    store = open_store(settings, dataset)
    for service in (FEATURE_SERVICE, HISTORY_SERVICE):  # a registry that lacks them would degrade every request
        store.get_feature_service(service)
    snapshot = pd.Timestamp(manifest["features"]["snapshot_time"]).value / 1e9
    published = pd.Timestamp(manifest["created_at"]).value / 1e9
    event_log = shared_log(settings, dataset)
    encode = (lambda texts: encoder.encode(texts)) if encoder is not None else None
    live = LiveOverlay(recommender, applied_seq=int(manifest.get("live", {}).get("ingested_seq", 0)), encode=encode)
    catch_up(live, event_log)  # a restarted service replays what arrived after its version's data
    impressions = ImpressionLog(impressions_dir(settings.state_dir, dataset), recommender.spec.names,
                                settings.impressions_flush_rows, settings.impressions_retention_days)  # fmt: skip
    return Loaded(path, live, manifest, store, snapshot, published, user_feature_refs(store), event_log, impressions)


def _log_and_apply(loaded: Loaded, kind: str, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """Append durably (the caller answers 200 only after this), then apply here at once; others tail the log."""
    seqs = loaded.log.append(kind, bodies)
    catch_up(loaded.live, loaded.log)
    return {"accepted": len(seqs), "last_seq": seqs[-1] if seqs else loaded.live.applied_seq}


_LOGS: dict[tuple[str, str, str], LiveLog] = {}
_LOGS_LOCK = threading.Lock()


def shared_log(settings: Settings, dataset: str) -> LiveLog:
    """One connection per live log and process, kept across version swaps (requests in flight may still write)."""
    key = (settings.online_store, str(settings.state_dir) if settings.online_store == "sqlite" else settings.redis_url,
           dataset)  # fmt: skip
    with _LOGS_LOCK:
        if key not in _LOGS:
            _LOGS[key] = open_log(settings, dataset)
        return _LOGS[key]


def catch_up(live: LiveOverlay, event_log: LiveLog) -> int:
    """Apply every logged record the overlay has not seen yet; returns how many."""
    applied = 0
    while records := event_log.read_after(live.applied_seq):
        live.apply(records)
        applied += len(records)
    return applied


@dataclass
class Runtime:
    """Holds the current version and swaps in a new one only after it loaded and passed its checks."""

    settings: Settings
    rules: RulesConfig = field(init=False)
    """Business rules of served lists, from the settings."""
    encoder: TextEncoder | None = None
    loaded: Loaded | None = None
    last_reload_error: str | None = None
    store_retry_seconds: float = 5.0
    """After an online-store failure, serve degraded without trying the store for this long (no per-request
    timeouts piling up during an outage)."""
    _store_down_until: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.rules = RulesConfig.from_settings(self.settings)

    def start(self, load_encoder: bool = True) -> None:
        if load_encoder and self.encoder is None:
            backend = self.published_backend() or self.settings.embedding_backend
            self.encoder = make_encoder(backend, threads=1, cache_dir=self.settings.cache_dir)
        self.reload()
        if self.loaded is None:
            raise ArtifactError(self.last_reload_error or "no version could be loaded")

    def published_backend(self) -> str | None:
        """The text encoder the current version's item vectors were made with: queries must use the same one."""
        try:
            manifest = json.loads((VersionStore(self.settings.versions_dir).current() / "manifest.json").read_text())
            return str(manifest["stage1"]["embedding"]["model"])
        except (ArtifactError, OSError, ValueError, KeyError, TypeError):
            return None  # no readable version yet: reload() reports why

    @property
    def ready(self) -> bool:
        return self.loaded is not None

    def reload(self) -> dict[str, Any]:
        """Load ``current`` if it changed; on failure keep serving the old version and report why."""
        with self._lock:
            try:
                target = VersionStore(self.settings.versions_dir).current()
            except ArtifactError as error:
                self.last_reload_error = str(error)
                return self.status()
            if self.loaded is not None and target == self.loaded.path:
                return self.status()
            try:
                previous, self.loaded = self.loaded, load_version(target, self.settings, self.rules, self.encoder)
                self.last_reload_error = None
                if previous is not None:
                    previous.impressions.flush()
                log.info("serving version %s", self.loaded.version)
            except Exception as error:  # a bad version must never take the service down
                self.last_reload_error = f"refused {target.name}: {error}"
                log.error("refused version %s: %s", target.name, error)
            return self.status()

    def status(self) -> dict[str, Any]:
        return {"version": self.loaded.version if self.loaded else None, "last_reload_error": self.last_reload_error}

    def watch(self, interval_seconds: float) -> threading.Thread:
        """Poll for newly published versions in the background."""

        def loop() -> None:
            while not self._stop.wait(interval_seconds):
                self.reload()

        thread = threading.Thread(target=loop, name="version-watcher", daemon=True)
        thread.start()
        return thread

    def tail(self, interval_seconds: float) -> threading.Thread:
        """Apply what other workers and replicas append to the live log, every ``interval_seconds``; write the
        buffered impressions every ``impressions_flush_seconds``."""

        def loop() -> None:
            while not self._stop.wait(interval_seconds):
                loaded = self.loaded
                if loaded is None:
                    continue
                try:
                    catch_up(loaded.live, loaded.log)
                except Exception as error:  # a locked or unreadable log must not stop the tailer
                    log.warning("live log not applied: %s", error)
                if loaded.impressions.due(self.settings.impressions_flush_seconds):
                    self.flush_impressions()

        thread = threading.Thread(target=loop, name="live-log-tailer", daemon=True)
        thread.start()
        return thread

    # ---- live updates ----------------------------------------------------------------------------------------
    def accept_events(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        """Validate interactions against the served catalogue, append them to the durable log, apply them here.
        Raises ValueError naming what is wrong (nothing is logged then)."""
        loaded = self._current()
        now = loaded.as_of()
        bodies = []
        for position, event in enumerate(events):
            item = str(event[C.ITEM_ID])
            if not loaded.live.knows_item(item):
                raise ValueError(f"events[{position}]: item_id '{item}' is not in the catalogue of version "
                                 f"{loaded.version}")  # fmt: skip
            given = event.get(C.TIMESTAMP)
            timestamp = float(given) if given is not None else now
            if timestamp > now + 1.0:
                raise ValueError(f"events[{position}]: timestamp {timestamp:.0f} is after the serving clock "
                                 f"({now:.0f}): events cannot be in the future")  # fmt: skip
            bodies.append({**event, C.TIMESTAMP: timestamp})
        return _log_and_apply(loaded, EVENT, bodies)

    def accept_item_changes(self, changes: list[dict[str, Any]]) -> dict[str, Any]:
        """New items (title and category required) and price or stock changes: logged durably, then applied —
        new items are embedded and indexed, changes reach the rules and item features."""
        loaded = self._current()
        now = loaded.as_of()
        bodies = []
        for position, change in enumerate(changes):
            item = str(change[C.ITEM_ID])
            if not loaded.live.knows_item(item):
                missing = [f for f in (C.TITLE, C.CATEGORY) if not change.get(f)]
                if missing:
                    raise ValueError(f"items[{position}]: item_id '{item}' is new to version {loaded.version}, so "
                                     f"{' and '.join(missing)} are required")  # fmt: skip
                if self.encoder is None:
                    raise ValueError(f"items[{position}]: new items need the text encoder, not loaded here")
            created = change.get(C.CREATED_AT)
            bodies.append({**change, C.TIMESTAMP: now, C.CREATED_AT: float(created) if created is not None else now})
        return _log_and_apply(loaded, ITEM, bodies)

    def flush_impressions(self) -> None:
        loaded = self.loaded
        if loaded is None:
            return
        try:
            loaded.impressions.flush()
        except Exception as error:  # a full disk must not stop serving: the lists are lost, not the requests
            log.error("impressions not written: %s", error)

    def close(self) -> None:
        """Stop the background watcher and log tailer; write the buffered impressions."""
        self._stop.set()
        self.flush_impressions()

    # ---- requests --------------------------------------------------------------------------------------------
    def user_features(self, loaded: Loaded, user_id: str) -> tuple[dict[str, Any] | None, bool]:
        """(features or None, degraded): an unreachable online store degrades the request instead of failing it."""
        if time.monotonic() < self._store_down_until:
            return None, True
        try:
            row = online_user_row(loaded.store, user_id, loaded.user_refs)
        except Exception as error:
            log.warning("online store unavailable, serving degraded for %.0f s: %s", self.store_retry_seconds, error)
            self._store_down_until = time.monotonic() + self.store_retry_seconds
            return None, True
        return row, False

    def recommend(
        self, user_id: str, k: int, filters: Filters, exclude_seen: bool, explain: bool,
        session_item_ids: tuple[str, ...] = (),
    ) -> tuple[Loaded, Result]:  # fmt: skip
        loaded = self._current()
        unknown = [item for item in session_item_ids if not loaded.live.knows_item(item)]
        if unknown:
            raise RequestError(f"context.session_item_ids: {unknown[:5]} not in the catalogue of version "
                             f"{loaded.version}")  # fmt: skip
        started = time.perf_counter()
        user, degraded = self.user_features(loaded, user_id)
        as_of = loaded.as_of()
        if not degraded:
            user = loaded.live.user_features(user_id, user, as_of)
        fetch_ms = (time.perf_counter() - started) * 1000
        request = Request(user_id=user_id, k=k, as_of=as_of, filters=filters, exclude_seen=exclude_seen,
                          explain=explain, session_item_ids=session_item_ids)  # fmt: skip
        result = loaded.recommender.recommend(request, user, degraded=degraded)
        result.timings_ms = {"user_features": fetch_ms, **result.timings_ms}
        return loaded, self._logged(loaded, "recommend", request, result)

    def search(self, query: str, k: int, user_id: str | None, filters: Filters) -> tuple[Loaded, Result]:
        loaded = self._current()
        if self.encoder is None:
            raise RuntimeError("the query encoder is not loaded")
        vector = self.encoder.encode([query])[0].astype(np.float32)
        user, degraded = self.user_features(loaded, user_id) if user_id else (None, False)
        as_of = loaded.as_of()
        if user_id and not degraded:
            user = loaded.live.user_features(user_id, user, as_of)
        request = Request(user_id=user_id, k=k, as_of=as_of, filters=filters, query_vector=vector)
        return loaded, self._logged(loaded, "search", request, loaded.recommender.recommend(request, user, degraded))

    def similar(self, item_id: str, k: int, filters: Filters) -> tuple[Loaded, Result]:
        """Items like ``item_id`` (KeyError when the version does not know it)."""
        loaded = self._current()
        as_of = loaded.as_of()
        items = loaded.recommender.similar(item_id, k, filters, as_of)
        request = Request(user_id=None, k=k, as_of=as_of, filters=filters)
        return loaded, self._logged(loaded, "similar", request, Result(items))

    def _logged(self, loaded: Loaded, endpoint: str, request: Request, result: Result) -> Result:
        """Name the list with a new request id and add it to the impression log."""
        result.request_id = uuid.uuid4().hex
        items = result.items
        shown = ShownList(result.request_id, request.as_of, request.user_id, loaded.version, endpoint,
                          [i.item_id for i in items], [i.score for i in items], [i.sources for i in items],
                          result.features)  # fmt: skip
        try:
            loaded.impressions.record(shown)
        except Exception as error:  # the answer matters more than its log line
            log.error("impression of %s not logged: %s", result.request_id, error)
        return result

    def _current(self) -> Loaded:
        loaded = self.loaded  # one read: a concurrent swap never mixes two versions in one request
        if loaded is None:
            raise RuntimeError("no version loaded")
        return loaded
