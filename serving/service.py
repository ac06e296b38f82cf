"""The BentoML service: retrieval and ranking in one class (one process, no IPC between stages).

It serves one namespace (RECSYS_NAMESPACE, else the only one published): it loads the namespace's champion at start
(readiness stays false until it passed its checks) and, in shadow or split mode, its challenger; delegates every
request to the runtime (serving/runtime.py), and swaps to a newly published or promoted version in the background
(or on ``POST /reload``, ``/promote``, ``/rollback``) without dropping requests; a version that fails its checks is
refused. Endpoints that change the service need the admin token; bodies over the size limit get 413 unread; only a
failing online store degrades requests — any other error is a 500 for that request, logged and counted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any, Literal

import bentoml
from bentoml.exceptions import BentoMLException, InvalidArgument, NotFound
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.files import ArtifactError
from models.ranking.rules import Filters
from models.recommender.request import Result
from models.recommender.versions import STATE_MODEL
from models.settings import Settings
from serving.explore import Exploration, ExplorerInfo, ItemView
from serving.metrics import PrometheusMetrics
from serving.middleware import EXPLORER_HEADERS, AdminToken, BodyLimit, JsonNotFound, PageHeaders, ValidationErrorsAs422
from serving.runtime import RequestError, Runtime

log = logging.getLogger(__name__)

ADMIN_PATHS = frozenset({"/reload", "/promote", "/rollback", "/events", "/items", "/explore"})
"""Every endpoint that changes what the service serves or holds, and /explore (it shows a user's history): they
need the admin token."""


class Context(BaseModel):
    """What the client knows about the visit. Only what the re-ranker was trained to use: the device of the
    visit is not (the user's usual device is a stored user feature), so it is refused rather than ignored."""

    model_config = ConfigDict(extra="forbid")

    session_item_ids: list[Annotated[str, Field(max_length=128)]] = Field(
        default_factory=list, max_length=50,
        description="Items viewed in the current session, oldest first: the newest history of the request (stage 1's "
        "session sources start from them, and the re-ranker's session affinity).",
    )  # fmt: skip


class RequestFilters(BaseModel):
    categories: list[Annotated[str, Field(max_length=128)]] | None = Field(default=None, max_length=100)
    max_price: float | None = Field(default=None, ge=0)
    in_stock_only: bool | None = Field(default=None, description="Default: the service's stock rule (true).")

    def to_filters(self) -> Filters:
        return Filters(tuple(self.categories) if self.categories else None, self.max_price, self.in_stock_only)


class Item(BaseModel):
    item_id: str
    score: float
    explanation: dict[str, Any] | None = None


class Recommendations(BaseModel):
    version: str
    variant: str = Field(description="Which arm answered: 'champion', or 'challenger' (split mode).")
    request_id: str = Field(description="Names this list in the impression log; events can name it back (their "
                            "request_id).")  # fmt: skip
    items: list[Item]
    fallback: bool = Field(description="Unknown user: popular and fresh items.")
    degraded: bool = Field(description="User features unavailable: stage-1 order with default features.")
    timings_ms: dict[str, float] = Field(default_factory=dict)


def _response(version: str, result: Result, variant: str = "champion") -> Recommendations:
    items = [Item(item_id=i.item_id, score=round(i.score, 6), explanation=i.explanation) for i in result.items]
    timings = {k: round(v, 3) for k, v in result.timings_ms.items()}
    assert result.request_id is not None, "every served list is logged under a request id"
    return Recommendations(version=version, variant=variant, request_id=result.request_id, items=items,
                           fallback=result.fallback, degraded=result.degraded, timings_ms=timings)  # fmt: skip


K = Annotated[int, Field(ge=1, le=100, description="How many items to return.")]
LATEST_UNIX_SECONDS = 4_102_444_800.0
"""2100-01-01: a bound every time field stays under (a wild value would be logged and then fail every replay)."""
ID = Annotated[str, Field(min_length=1, max_length=128)]
MAX_PRICE = 1e9
"""Prices above this are refused: the item table holds float32 (a wild price would become infinity there)."""


class Event(BaseModel):
    """One interaction in the data contract's shape; an unknown user is allowed (it becomes known)."""

    user_id: ID
    item_id: ID
    event_type: Literal["view", "click", "add_to_cart", "purchase", "rating"]
    timestamp: float | None = Field(default=None, ge=0, le=LATEST_UNIX_SECONDS,
                                    description="Unix seconds; default: the serving clock now.")  # fmt: skip
    rating: float | None = Field(default=None, ge=0, le=10)
    request_id: str | None = Field(default=None, max_length=64, description="The list that led to it, if any "
                                   "(a /recommend or /search response's request_id).")  # fmt: skip

    @model_validator(mode="after")
    def _rating_with_rating_events(self) -> Event:
        if (self.event_type == "rating") != (self.rating is not None):
            raise ValueError("a rating goes with event_type 'rating', and only with it")
        return self


class ItemChange(BaseModel):
    """A new item (title and category required, the rest optional), or a price or stock change of a known one."""

    item_id: ID
    title: str | None = Field(default=None, min_length=1, max_length=512)
    description: str | None = Field(default=None, max_length=4000)
    category: str | None = Field(default=None, min_length=1, max_length=128)
    tags: str | None = Field(default=None, max_length=1000, description="'|'-separated labels (style, brand, ...)")
    created_at: float | None = Field(default=None, ge=0, le=LATEST_UNIX_SECONDS,
                                     description="Launch time, unix seconds; default: now.")  # fmt: skip
    price: float | None = Field(default=None, ge=0, le=MAX_PRICE)
    in_stock: bool | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> ItemChange:
        if self.price is None and self.in_stock is None and self.title is None:
            raise ValueError("an item needs a title and category (new), or a price or in_stock (change)")
        return self


Reason = Annotated[str, Field(max_length=1000, description="Recorded in the namespace's release history.")]


class Accepted(BaseModel):
    accepted: int
    last_seq: int = Field(description="Sequence number of the last record in the durable log.")


def _unprocessable(error: ValueError) -> InvalidArgument:
    return InvalidArgument(str(error), error_code=HTTPStatus.UNPROCESSABLE_ENTITY)


def _settings() -> Settings:
    """From source: ``Settings()`` (RECSYS_* environment). From a built bento: the state folder it carries as the
    model ``recsys-state`` (serving/package.py), unless RECSYS_STATE_DIR points elsewhere."""
    bento = RecSys.bento  # type: ignore[attr-defined]
    if bento is None or "RECSYS_STATE_DIR" in os.environ:
        return Settings()
    tags = [model.tag for model in bento.info.all_models if model.tag.name == STATE_MODEL]
    if not tags:
        raise ArtifactError(f"bento {bento.tag} carries no '{STATE_MODEL}' model (see serving/bentofile.yaml)")
    return Settings(state_dir=Path(bentoml.models.get(tags[0]).path))


def _threads() -> None:
    """One thread per request path: oversubscribing 2 cores costs more than it gains for single queries."""
    import faiss
    import torch

    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)


@bentoml.service(name="recsys", traffic={"timeout": 30})  # workers: scripts/serve.sh sets them per machine
class RecSys:
    def __init__(self) -> None:
        _threads()
        self.settings = _settings()
        self.runtime = Runtime(self.settings, metrics=PrometheusMetrics())
        self.runtime.start()
        self.runtime.watch(self.settings.reload_interval_seconds)
        self.runtime.tail(self.settings.live_poll_seconds)

    def __is_ready__(self) -> bool:
        return self.runtime.ready

    @bentoml.on_shutdown
    def _stop_watching(self) -> None:
        self.runtime.close()

    @contextmanager
    def _counted(self, endpoint: str) -> Iterator[None]:
        """A request error (4xx) passes as it is; anything else is a bug or a broken artifact: logged with its
        traceback and counted, answered 500 for this request only — other users are served as before."""
        try:
            yield
        except BentoMLException:
            raise
        except Exception:
            log.exception("%s failed", endpoint)
            self.runtime.metrics.failed(endpoint)
            raise

    @bentoml.api
    def recommend(
        self,
        user_id: ID,
        k: K = 10,
        context: Context | None = None,
        filters: RequestFilters | None = None,
        exclude_seen: bool = True,
        explain: bool = False,
    ) -> Recommendations:
        """Personalised recommendations: retrieval from every stage-1 source, LightGBM re-ranking, business rules."""
        context = context or Context()
        with self._counted("recommend"):
            try:
                loaded, result = self.runtime.recommend(
                    user_id, k, (filters or RequestFilters()).to_filters(), exclude_seen, explain,
                    tuple(context.session_item_ids),
                )  # fmt: skip
            except RequestError as error:
                raise _unprocessable(error) from error
            return _response(loaded.version, result, loaded.role)

    @bentoml.api
    def similar(self, item_id: ID, k: K = 10, filters: RequestFilters | None = None) -> Recommendations:
        """Items similar to ``item_id`` (text and collaborative neighbours)."""
        with self._counted("similar"):
            try:
                loaded, result = self.runtime.similar(item_id, k, (filters or RequestFilters()).to_filters())
            except KeyError as error:
                version = self.runtime.status()["version"]
                raise NotFound(f"item_id '{item_id}' is not in the catalogue of version {version}") from error
            return _response(loaded.version, result)

    @bentoml.api
    def search(
        self,
        query: Annotated[str, Field(min_length=1, max_length=512)],
        k: K = 10,
        user_id: ID | None = None,
        filters: RequestFilters | None = None,
    ) -> Recommendations:
        """Semantic search over item text, re-ranked for the user when ``user_id`` is given."""
        with self._counted("search"):
            loaded, result = self.runtime.search(query, k, user_id, (filters or RequestFilters()).to_filters())
            return _response(loaded.version, result)

    @bentoml.api
    def explore(
        self,
        user_id: ID,
        k: K = 10,
        context: Context | None = None,
        filters: RequestFilters | None = None,
        exclude_seen: bool = True,
        per_source: Annotated[int, Field(ge=1, le=50, description="Candidates shown per stage-1 source.")] = 10,
    ) -> Exploration:
        """What each stage did for this user's list (the /ui page draws it): history, stage-1 candidates per source,
        the re-ranked list with its moves, feature contributions and rules, timings. Not logged as impressions.
        Admin token: it shows the user's history."""
        context = context or Context()
        with self._counted("explore"):
            try:
                return self.runtime.explore(user_id, k, (filters or RequestFilters()).to_filters(), exclude_seen,
                                            tuple(context.session_item_ids), per_source)  # fmt: skip
            except RequestError as error:
                raise _unprocessable(error) from error

    @bentoml.api(route="/explore/info")
    def explorer_info(self) -> ExplorerInfo:
        """The served version, example users and the categories to filter by (for the /ui page)."""
        with self._counted("explore-info"):
            return self.runtime.explorer_info()

    @bentoml.api(route="/explore/items")
    def describe_items(
        self, item_ids: Annotated[list[ID], Field(min_length=1, max_length=100)]
    ) -> list[ItemView]:  # fmt: skip
        """Title, category, price and stock of each item named (unknown ids are left out)."""
        with self._counted("explore-items"):
            return self.runtime.describe_items(item_ids)

    @bentoml.api
    def events(self, events: Annotated[list[Event], Field(min_length=1, max_length=1000)]) -> Accepted:
        """Interactions as they happen: durably logged before the answer, visible to the next request on every
        worker within a second (the items become seen, recent items and category shares move)."""
        with self._counted("events"):
            try:
                return Accepted(**self.runtime.accept_events([e.model_dump() for e in events]))
            except RequestError as error:
                raise _unprocessable(error) from error

    @bentoml.api
    def items(self, items: Annotated[list[ItemChange], Field(min_length=1, max_length=1000)]) -> Accepted:
        """New items and price or stock changes: durably logged, then applied on every worker (a new item is embedded
        and indexed: search, similar items and recommendations can return it within seconds)."""
        with self._counted("items"):
            try:
                return Accepted(**self.runtime.accept_item_changes([i.model_dump() for i in items]))
            except RequestError as error:
                raise _unprocessable(error) from error

    @bentoml.api
    def reload(self) -> dict[str, Any]:
        """Switch to the newest published version now (it is also picked up in the background). Admin token."""
        return self.runtime.reload()

    @bentoml.api
    def promote(self, reason: Reason = "") -> dict[str, Any]:
        """Make the namespace's challenger its champion, now on this worker, within the reload interval on the
        others. Admin token."""
        try:
            return self.runtime.promote(reason)
        except ArtifactError as error:
            raise InvalidArgument(str(error), error_code=HTTPStatus.CONFLICT) from error

    @bentoml.api
    def rollback(self, reason: Reason = "") -> dict[str, Any]:
        """Serve the version the champion replaced (a second rollback undoes the first). Admin token."""
        try:
            return self.runtime.rollback(reason)
        except ArtifactError as error:
            raise InvalidArgument(str(error), error_code=HTTPStatus.CONFLICT) from error

    @bentoml.api(route="/version")
    def version(self) -> dict[str, Any]:
        """The namespace, the version being served (and the challenger, its mode and share), and why the last
        reload was refused, if it was."""
        return self.runtime.status()


UI_DIR = Path(__file__).with_name("ui")
"""The explorer page: plain HTML, CSS and JavaScript served by the service itself (no build step, no CDN)."""


def _add_defences() -> None:
    """From the environment at import (a bento reads the same): the body limit first (a huge body is refused
    unread, token or not), then the admin token, then the JSON 404s and 422s."""
    settings = Settings()
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    RecSys.add_asgi_middleware(BodyLimit, max_bytes=settings.max_body_bytes)  # type: ignore[attr-defined]
    RecSys.add_asgi_middleware(AdminToken, token=token, paths=ADMIN_PATHS)  # type: ignore[attr-defined]
    RecSys.add_asgi_middleware(JsonNotFound)  # type: ignore[attr-defined]
    RecSys.add_asgi_middleware(ValidationErrorsAs422)  # type: ignore[attr-defined]


def _mount_explorer() -> None:
    """The page, with a content security policy that lets it load and call nothing but this service."""
    from starlette.staticfiles import StaticFiles

    if not (UI_DIR / "index.html").is_file():  # an install without the page still serves every endpoint
        log.warning("%s not found: /ui is not served", UI_DIR / "index.html")
        return
    page = PageHeaders(StaticFiles(directory=UI_DIR, html=True), EXPLORER_HEADERS)
    RecSys.mount_asgi_app(page, path="/ui")  # type: ignore[attr-defined]


_add_defences()
_mount_explorer()
