"""What the service holds at run time: the namespace's champion (and, in shadow or split mode, its challenger), the
online feature store, the query encoder, and the hot swap to a newly published or promoted version. Plain Python,
so it can be tested without a server.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import sqlite3
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.data import columns as C
from models.features.spec import FEATURE_SERVICE, HISTORY_SERVICE
from models.features.store import online_user_row, open_store, user_feature_refs
from models.files import ArtifactError
from models.live.impressions import SHADOW, ImpressionLog, ShownList, impressions_dir
from models.live.log import EVENT, ITEM, LiveLog, open_log
from models.live.overlay import LiveOverlay
from models.ranking.rules import Filters, RulesConfig
from models.recommender.bundle import load_recommender
from models.recommender.recommender import Recommender
from models.recommender.request import Request, Result
from models.recommender.versions import CHALLENGER, VersionStore, choose_namespace
from models.settings import Settings
from models.text.encoders import make_encoder
from models.text.model import TextEncoder
from serving.explore import (
    Exploration,
    ExplorerInfo,
    ItemView,
    Titles,
    describe_ids,
    history_view,
    results_view,
    rules_view,
    stage1_view,
)

log = logging.getLogger(__name__)


class RequestError(ValueError):
    """The request names something the served version does not have (answered 422, not 500)."""


def _store_errors() -> tuple[type[BaseException], ...]:
    """What a failing online store raises: the store's own errors, its database or connection — and nothing else:
    a bug elsewhere is a 500 for its request, not a degraded mode for every user."""
    from feast.errors import FeastError
    from redis.exceptions import RedisError

    return (FeastError, RedisError, sqlite3.Error, OSError, TimeoutError)


STORE_ERRORS = _store_errors()
CHAMPION, CHALLENGER_VARIANT = "champion", "challenger"


class Metrics:
    """Where the runtime reports what it did; the service passes one backed by Prometheus (serving/metrics.py)."""

    def served(self, endpoint: str, variant: str, result: Result, seconds: float) -> None: ...
    def failed(self, endpoint: str) -> None: ...
    def shadow_dropped(self) -> None: ...
    def version_loaded(self, role: str, version: str | None) -> None: ...


def split_share(namespace: str, user_id: str) -> float:
    """A stable number in [0, 1) per user and namespace: the same user lands in the same arm on every worker,
    replica and restart (no state to share)."""
    digest = hashlib.sha256(f"{namespace}\0{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


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
    role: str = "champion"
    """The variant its lists are: champion, challenger (split mode) or shadow."""
    titles: Titles = field(default_factory=lambda: Titles({}))
    """Item titles, for the explorer (people read titles; the rules never do)."""

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


def load_version(
    path: Path, settings: Settings, rules: RulesConfig, encoder: TextEncoder | None, role: str = "champion"
) -> Loaded:  # fmt: skip
    """``role``: champion, challenger (split), or shadow (scored beside the champion, its lists never shown, so
    logged apart)."""
    recommender, manifest = load_recommender(path, rules, encoder.dim if encoder is not None else None,
                                             mapped=settings.memory_map)  # fmt: skip
    dataset = manifest["features"]["store"]["dataset"]
    store = open_store(settings, dataset)
    for service in (FEATURE_SERVICE, HISTORY_SERVICE):  # a registry that lacks them would degrade every request
        store.get_feature_service(service)
    snapshot = pd.Timestamp(manifest["features"]["snapshot_time"]).value / 1e9
    published = pd.Timestamp(manifest["created_at"]).value / 1e9
    event_log = shared_log(settings, dataset)
    encode = (lambda texts: encoder.encode(texts)) if encoder is not None else None
    live = LiveOverlay(recommender, applied_seq=int(manifest.get("live", {}).get("ingested_seq", 0)), encode=encode)
    titles = Titles.of_version(path)
    catch_up(live, event_log, titles)  # a restarted service replays what arrived after its version's data
    folder = impressions_dir(settings, dataset) / SHADOW if role == SHADOW else impressions_dir(settings, dataset)
    impressions = ImpressionLog(folder, recommender.spec.names, settings.impressions_flush_rows,
                                settings.impressions_retention_days)  # fmt: skip
    return Loaded(path, live, manifest, store, snapshot, published, user_feature_refs(store), event_log, impressions,
                  role, titles)  # fmt: skip


def _log_and_apply(loaded: Loaded, kind: str, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """Append durably (the caller answers 200 only after this), then apply here at once; others tail the log."""
    seqs = loaded.log.append(kind, bodies)
    catch_up(loaded.live, loaded.log, loaded.titles)
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


def catch_up(live: LiveOverlay, event_log: LiveLog, titles: Titles | None = None) -> int:
    """Apply every logged record the overlay has not seen yet (and keep new items' titles); returns how many."""
    applied = 0
    while records := event_log.read_after(live.applied_seq):
        live.apply(records)
        if titles is not None:
            titles.learn(records)
        applied += len(records)
    return applied


def freeze_heap() -> None:
    """Collect, then move every object alive now (a loaded version: ~380 k objects at 1 M items) out of the
    cyclic garbage collector's reach. A full collection then scans only what requests allocate, instead of pausing
    the worker for ~150 ms (measured at 1 M items) whenever one falls due. Earlier frozen objects are unfrozen
    first, so a replaced version is collected, not kept."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


@dataclass
class Runtime:
    """Holds the namespace's champion (and challenger) and swaps in a new one only after it loaded and passed its
    checks."""

    settings: Settings
    rules: RulesConfig = field(init=False)
    """Business rules of served lists, from the settings."""
    encoder: TextEncoder | None = None
    loaded: Loaded | None = None
    """The champion: what ``current`` names."""
    challenger: Loaded | None = None
    """Loaded in shadow and split mode, when the namespace has one."""
    last_reload_error: str | None = None
    metrics: Metrics = field(default_factory=Metrics)
    store_retry_seconds: float = 5.0
    """After an online-store failure, serve degraded without trying the store for this long (no per-request
    timeouts piling up during an outage)."""
    shadow_backlog: int = 64
    """Shadow requests waiting beyond this are dropped (counted): the shadow never slows the answers down."""
    _store_down_until: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _shadow: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="shadow"))
    _shadow_slots: threading.BoundedSemaphore = field(init=False)

    def __post_init__(self) -> None:
        self.rules = RulesConfig.from_settings(self.settings)
        self._shadow_slots = threading.BoundedSemaphore(self.shadow_backlog)

    def start(self, load_encoder: bool = True) -> None:
        """Resolve the namespace, load the encoder and the champion (raises ArtifactError when none loads)."""
        try:
            namespace = choose_namespace(self.settings.versions_root, self.settings.namespace)
        except ArtifactError as error:
            self.last_reload_error = str(error)
            raise
        self.settings = self.settings.model_copy(update={"namespace": namespace})
        if load_encoder and self.encoder is None:
            self.encoder = self.published_encoder()
        self.reload()
        if self.loaded is None:
            raise ArtifactError(self.last_reload_error or "no version could be loaded")

    def published_encoder(self) -> TextEncoder:
        """The encoder of the current version's item vectors, from the model the version carries when it carries
        one (the int8 build), else built or loaded from the cache folder."""
        backend = self.published_backend() or "torch"
        try:
            carried = VersionStore(self.settings.versions_dir).current() / "stage1"
        except ArtifactError:
            carried = None
        has_model = carried is not None and (carried / "encoders").is_dir()
        return make_encoder(backend, threads=1, cache_dir=carried if has_model else self.settings.cache_dir)

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

    @property
    def versions(self) -> VersionStore:
        return VersionStore(self.settings.versions_dir)

    def reload(self) -> dict[str, Any]:
        """Load ``current`` (and ``challenger``) if they changed; on failure keep serving the old one, say why."""
        with self._lock:
            try:
                target = self.versions.current()
            except ArtifactError as error:
                self.last_reload_error = str(error)
                return self.status()
            loaded_ids = (id(self.loaded), id(self.challenger))  # ids, not references: a replaced one must go
            if self.loaded is None or target != self.loaded.path:
                try:
                    previous, self.loaded = self.loaded, self._load(target, CHAMPION)
                    self.last_reload_error = None
                    if previous is not None:
                        previous.impressions.flush()
                    del previous
                    self.metrics.version_loaded(CHAMPION, self.loaded.version)
                    log.info("serving version %s", self.loaded.version)
                except Exception as error:  # a bad version must never take the service down
                    self.last_reload_error = f"refused {target.name}: {error}"
                    log.error("refused version %s: %s", target.name, error)
            self._reload_challenger()
            if (id(self.loaded), id(self.challenger)) != loaded_ids:
                freeze_heap()  # champion or challenger changed: freeze what is loaded now, release what was replaced
            return self.status()

    def _load(self, path: Path, role: str) -> Loaded:
        return load_version(path, self.settings, self.rules, self.encoder, role)

    def _reload_challenger(self) -> None:
        """The challenger follows its pointer; none when the mode is off, there is none, or it is the champion."""
        target = self.versions.pointed(CHALLENGER) if self.settings.challenger_mode != "off" else None
        if self.loaded is not None and target == self.loaded.path:
            target = None
        current = self.challenger
        if (current.path if current else None) == target:
            return
        try:
            role = SHADOW if self.settings.challenger_mode == "shadow" else CHALLENGER_VARIANT
            self.challenger = self._load(target, role) if target else None
            if self.challenger is not None:
                log.info("challenger %s in %s mode", self.challenger.version, self.settings.challenger_mode)
        except Exception as error:
            self.challenger = None
            self.last_reload_error = f"refused challenger {target.name if target else ''}: {error}"
            log.error("refused challenger %s: %s", target, error)
        if current is not None:
            current.impressions.flush()
        self.metrics.version_loaded(CHALLENGER_VARIANT, self.challenger.version if self.challenger else None)

    def promote(self, reason: str) -> dict[str, Any]:
        """The challenger becomes the champion now (other workers follow within their reload interval)."""
        self.versions.promote(reason or "promoted through the service")
        return self.reload()

    def rollback(self, reason: str) -> dict[str, Any]:
        """Serve the version the champion replaced, now."""
        self.versions.rollback(reason or "rolled back through the service")
        return self.reload()

    def status(self) -> dict[str, Any]:
        challenger = self.challenger
        return {
            "namespace": self.settings.namespace,
            "version": self.loaded.version if self.loaded else None,
            "challenger": {"version": challenger.version, "mode": self.settings.challenger_mode,
                           "share": self.settings.challenger_share} if challenger else None,
            "last_reload_error": self.last_reload_error,
        }  # fmt: skip

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
                for loaded in (self.loaded, self.challenger):
                    if loaded is None:
                        continue
                    try:
                        catch_up(loaded.live, loaded.log, loaded.titles)
                    except Exception as error:  # a locked or unreadable log must not stop the tailer
                        log.warning("live log not applied: %s", error)
                    if loaded.impressions.due(self.settings.impressions_flush_seconds):
                        self._flush(loaded)

        thread = threading.Thread(target=loop, name="live-log-tailer", daemon=True)
        thread.start()
        return thread

    # ---- live updates ----------------------------------------------------------------------------------------
    def accept_events(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        """Validate interactions against the served catalogue, append them to the durable log, apply them here.
        Raises RequestError naming what is wrong (nothing is logged then)."""
        loaded = self._current()
        now = loaded.as_of()
        bodies = []
        for position, event in enumerate(events):
            item = str(event[C.ITEM_ID])
            if not loaded.live.knows_item(item):
                raise RequestError(f"events[{position}]: item_id '{item}' is not in the catalogue of version "
                                 f"{loaded.version}")  # fmt: skip
            given = event.get(C.TIMESTAMP)
            timestamp = float(given) if given is not None else now
            if timestamp > now + 1.0:
                raise RequestError(f"events[{position}]: timestamp {timestamp:.0f} is after the serving clock "
                                 f"({now:.0f}): events cannot be in the future")  # fmt: skip
            bodies.append({**event, C.TIMESTAMP: timestamp})
        return self._log_and_apply(loaded, EVENT, bodies)

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
                    raise RequestError(f"items[{position}]: item_id '{item}' is new to version {loaded.version}, so "
                                     f"{' and '.join(missing)} are required")  # fmt: skip
                if self.encoder is None:
                    raise RequestError(f"items[{position}]: new items need the text encoder, not loaded here")
            created = change.get(C.CREATED_AT)
            bodies.append({**change, C.TIMESTAMP: now, C.CREATED_AT: float(created) if created is not None else now})
        return self._log_and_apply(loaded, ITEM, bodies)

    def _log_and_apply(self, loaded: Loaded, kind: str, bodies: list[dict[str, Any]]) -> dict[str, Any]:
        accepted = _log_and_apply(loaded, kind, bodies)
        challenger = self.challenger
        if challenger is not None:
            try:  # the same log: the challenger sees the same user at once
                catch_up(challenger.live, challenger.log, challenger.titles)
            except Exception:  # logged and acknowledged already: the challenger's trouble is not the caller's
                log.exception("challenger %s did not apply the live log", challenger.version)
        return accepted

    def flush_impressions(self) -> None:
        for loaded in (self.loaded, self.challenger):
            if loaded is not None:
                self._flush(loaded)

    @staticmethod
    def _flush(loaded: Loaded) -> None:
        try:
            loaded.impressions.flush()
        except Exception as error:  # a full disk must not stop serving: the lists are lost, not the requests
            log.error("impressions not written: %s", error)

    def drain_shadow(self) -> None:
        """Wait until every queued shadow scoring is done (one worker thread: the queue runs in order)."""
        self._shadow.submit(lambda: None).result()

    def close(self) -> None:
        """Stop the background watcher and log tailer; finish the shadow work; write the buffered impressions."""
        self._stop.set()
        self._shadow.shutdown(wait=True)
        self.flush_impressions()

    # ---- requests --------------------------------------------------------------------------------------------
    def user_features(self, loaded: Loaded, user_id: str) -> tuple[dict[str, Any] | None, bool]:
        """(features or None, degraded): an unreachable online store degrades the request instead of failing it;
        any other error is raised (a 500 for this request only)."""
        if time.monotonic() < self._store_down_until:
            return None, True
        try:
            row = online_user_row(loaded.store, user_id, loaded.user_refs)
        except STORE_ERRORS as error:
            log.warning("online store unavailable, serving degraded for %.0f s: %s", self.store_retry_seconds, error)
            self._store_down_until = time.monotonic() + self.store_retry_seconds
            return None, True
        return row, False

    def variant_for(self, user_id: str | None) -> str:
        """Split mode: a stable share of users gets the challenger's lists; everyone else (and every other mode)
        the champion's."""
        if self.settings.challenger_mode != "split" or self.challenger is None or user_id is None:
            return CHAMPION
        share = split_share(str(self.settings.namespace), user_id)
        return CHALLENGER_VARIANT if share < self.settings.challenger_share else CHAMPION

    def recommend(
        self, user_id: str, k: int, filters: Filters, exclude_seen: bool, explain: bool,
        session_item_ids: tuple[str, ...] = (),
    ) -> tuple[Loaded, Result]:  # fmt: skip
        """The list of the user's variant; in shadow mode the challenger scores the same request off the answer's
        path and its list is logged under the same request id."""
        started = time.perf_counter()
        challenger = self.challenger
        loaded = self._serving(user_id)
        self._check_session(loaded, session_item_ids)
        stored = self.user_features(loaded, user_id)
        request, result = self._recommend(loaded, user_id, k, filters, exclude_seen, explain, session_item_ids,
                                          stored, loaded.as_of(), started)  # fmt: skip
        self._logged(loaded, "recommend", request, result, started)
        shadow = challenger if challenger is not None and challenger.role == SHADOW else None
        if shadow is not None and result.request_id is not None:
            shadowed = replace(request, explain=False)
            self._score_in_shadow(shadow, result.request_id, shadowed, stored)
        return loaded, result

    def _serving(self, user_id: str) -> Loaded:
        """The version whose list this user gets: the challenger for the user's arm in split mode, else the
        champion."""
        challenger = self.challenger
        split = self.variant_for(user_id) == CHALLENGER_VARIANT and challenger is not None
        return challenger if split and challenger is not None else self._current()

    @staticmethod
    def _user_row(loaded: Loaded, stored: tuple[dict[str, Any] | None, bool], user_id: str,
                  as_of: float) -> dict[str, Any] | None:  # fmt: skip
        """The online store's row with the live log's events on top (as stored when the store failed)."""
        user, degraded = stored
        return user if degraded else loaded.live.user_features(user_id, user, as_of)

    @staticmethod
    def _check_session(loaded: Loaded, session_item_ids: tuple[str, ...]) -> None:
        unknown = [item for item in session_item_ids if not loaded.live.knows_item(item)]
        if unknown:
            raise RequestError(f"context.session_item_ids: {unknown[:5]} not in the catalogue of version "
                               f"{loaded.version}")  # fmt: skip

    def _recommend(
        self, loaded: Loaded, user_id: str, k: int, filters: Filters, exclude_seen: bool, explain: bool,
        session_item_ids: tuple[str, ...], stored: tuple[dict[str, Any] | None, bool], as_of: float, started: float,
    ) -> tuple[Request, Result]:  # fmt: skip
        """``stored``: the online store's row (or None) and whether the store failed; the live log goes on top."""
        user, degraded = self._user_row(loaded, stored, user_id, as_of), stored[1]
        fetch_ms = (time.perf_counter() - started) * 1000
        request = Request(user_id=user_id, k=k, as_of=as_of, filters=filters, exclude_seen=exclude_seen,
                          explain=explain, session_item_ids=session_item_ids)  # fmt: skip
        result = loaded.recommender.recommend(request, user, degraded=degraded)
        result.timings_ms = {"user_features": fetch_ms, **result.timings_ms}
        return request, result

    def _score_in_shadow(
        self, shadow: Loaded, request_id: str, request: Request, stored: tuple[dict[str, Any] | None, bool]
    ) -> None:  # fmt: skip
        """Queue the challenger's answer to the same request — the same stored user row (the store is read once)
        and serving clock; dropped (and counted) when the queue is full."""
        if not self._shadow_slots.acquire(blocking=False):
            self.metrics.shadow_dropped()
            return

        def score() -> None:
            started = time.perf_counter()
            try:
                user, degraded = stored
                if not degraded and request.user_id is not None:
                    user = shadow.live.user_features(request.user_id, user, request.as_of)
                result = shadow.recommender.recommend(request, user, degraded=degraded)
                self._logged(shadow, "recommend", request, result, started, request_id)
            except Exception:  # the shadow must never hurt the champion's answers
                log.exception("shadow scoring of request %s failed", request_id)
                self.metrics.failed("recommend-shadow")
            finally:
                self._shadow_slots.release()

        try:
            self._shadow.submit(score)
        except RuntimeError:  # shutting down
            self._shadow_slots.release()

    # ---- the explorer ----------------------------------------------------------------------------------------
    def explore(
        self, user_id: str, k: int, filters: Filters, exclude_seen: bool, session_item_ids: tuple[str, ...],
        per_source: int,
    ) -> Exploration:  # fmt: skip
        """What each stage did for this user's list, from the variant the user is served. The same steps as
        ``recommend`` on one recommender (a live item change between them cannot mix two catalogues); the list is
        not logged as an impression: a person inspecting it is not a customer who saw it."""
        loaded = self._serving(user_id)
        self._check_session(loaded, session_item_ids)
        recommender = loaded.recommender
        as_of = loaded.as_of()
        started = time.perf_counter()
        stored = self.user_features(loaded, user_id)
        user, degraded = self._user_row(loaded, stored, user_id, as_of), stored[1]
        fetch_ms = (time.perf_counter() - started) * 1000
        request = Request(user_id=user_id, k=k, as_of=as_of, filters=filters, exclude_seen=exclude_seen,
                          explain=True, session_item_ids=session_item_ids)  # fmt: skip
        started = time.perf_counter()
        retrieval = recommender.retrieve(request, user, degraded)
        retrieval_ms = (time.perf_counter() - started) * 1000
        result = recommender.recommend(request, user, degraded, retrieval=retrieval)  # stage 1 once, shown as ranked
        return Exploration(
            namespace=str(self.settings.namespace), version=loaded.version, variant=loaded.role, user_id=user_id,
            known_user=not retrieval.fallback and bool(retrieval.query.seen),
            history=history_view(recommender, loaded.titles, retrieval, as_of),
            stage1=stage1_view(recommender, loaded.titles, retrieval, per_source, as_of),
            results=results_view(recommender, loaded.titles, retrieval, result, as_of),
            rules=rules_view(result), fallback=result.fallback, degraded=result.degraded,
            timings_ms={name: round(ms, 3) for name, ms in
                        {"user_features": fetch_ms, **result.timings_ms, "retrieval": retrieval_ms}.items()},
        )  # fmt: skip

    def explorer_info(self) -> ExplorerInfo:
        """What the explorer page offers to try: example users, the categories to filter by."""
        loaded = self._current()
        catalog = loaded.recommender.catalog
        return ExplorerInfo(
            namespace=str(self.settings.namespace), version=loaded.version, dataset=loaded.dataset,
            items=len(catalog.item_ids), k_candidates=loaded.recommender.k_candidates,
            example_users=[str(u) for u in loaded.manifest.get("explorer", {}).get("example_users", [])],
            categories=sorted({str(c) for c in catalog.categories}),
        )  # fmt: skip

    def describe_items(self, item_ids: list[str]) -> list[ItemView]:
        """Titles, categories, prices and stock of the items named (unknown ids left out)."""
        loaded = self._current()
        return describe_ids(loaded.recommender, loaded.titles, item_ids, loaded.as_of())

    def search(self, query: str, k: int, user_id: str | None, filters: Filters) -> tuple[Loaded, Result]:
        started = time.perf_counter()
        loaded = self._current()
        if self.encoder is None:
            raise RuntimeError("the query encoder is not loaded")
        vector = self.encoder.encode([query])[0].astype(np.float32)
        user, degraded = self.user_features(loaded, user_id) if user_id else (None, False)
        as_of = loaded.as_of()
        if user_id and not degraded:
            user = loaded.live.user_features(user_id, user, as_of)
        request = Request(user_id=user_id, k=k, as_of=as_of, filters=filters, query_vector=vector)
        result = loaded.recommender.recommend(request, user, degraded)
        return loaded, self._logged(loaded, "search", request, result, started)

    def similar(self, item_id: str, k: int, filters: Filters) -> tuple[Loaded, Result]:
        """Items like ``item_id`` (KeyError when the version does not know it)."""
        started = time.perf_counter()
        loaded = self._current()
        as_of = loaded.as_of()
        items = loaded.recommender.similar(item_id, k, filters, as_of)
        request = Request(user_id=None, k=k, as_of=as_of, filters=filters)
        return loaded, self._logged(loaded, "similar", request, Result(items), started)

    def _logged(
        self, loaded: Loaded, endpoint: str, request: Request, result: Result, started: float,
        request_id: str | None = None,
    ) -> Result:  # fmt: skip
        """Name the list with a request id (a new one, or the shadowed request's), log it, count it."""
        result.request_id = request_id or uuid.uuid4().hex
        variant = loaded.role
        seconds = time.perf_counter() - started
        items = result.items
        shown = ShownList(result.request_id, request.as_of, request.user_id, loaded.version, endpoint,
                          [i.item_id for i in items], [i.score for i in items], [i.sources for i in items],
                          result.features, variant, seconds * 1000)  # fmt: skip
        try:
            loaded.impressions.record(shown)
        except Exception as error:  # the answer matters more than its log line
            log.error("impression of %s not logged: %s", result.request_id, error)
        self.metrics.served(endpoint, variant, result, seconds)
        return result

    def _current(self) -> Loaded:
        loaded = self.loaded  # one read: a concurrent swap never mixes two versions in one request
        if loaded is None:
            raise RuntimeError("no version loaded")
        return loaded
