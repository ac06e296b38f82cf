"""BentoML answers request-validation errors with 400; HTTP APIs conventionally use 422 (Unprocessable Content)
for a well-formed body whose fields break the schema. This ASGI middleware rewrites exactly those responses; the
body (pydantic's error list, each naming the field in ``loc``) is passed through unchanged."""

from __future__ import annotations

import contextlib
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

VALIDATION_MARKER = b"validation error"


class ValidationErrorsAs422:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: list[dict] = []

        async def rewrite(message: dict) -> None:
            if message["type"] == "http.response.start" and message["status"] == 400:
                held.append(message)  # wait for the body to tell a validation error from other 400s
                return
            if held and message["type"] == "http.response.body":
                start = held.pop()
                if VALIDATION_MARKER in message.get("body", b""):
                    start = {**start, "status": 422}
                await send(start)
            await send(message)

        await self.app(scope, receive, rewrite)


# --- request guards and JSON 404s: pure ASGI, so they run before BentoML reads or parses a body ---------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = Sequence[tuple[bytes, bytes]]


async def send_json(send: Send, status: int, payload: dict[str, Any], headers: Headers = ()) -> None:
    """Send a whole JSON response: start (with a correct content-length) and one body message."""
    body = json.dumps(payload).encode()
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (``name`` in lower case, as ASGI servers send them)."""
    return next((value for key, value in scope.get("headers", ()) if key.lower() == name), None)


class BodyTooLarge(Exception):
    """Raised from ``receive()`` into the app once a streamed body passes the limit, so it stops reading."""


class BodyLimit:
    """Answer 413 to a body over ``max_bytes`` before the app reads it: by ``content-length`` at once (the app is
    never called, so a client waiting on ``Expect: 100-continue`` never uploads), else by counting a chunked body
    as it arrives. After a 413 the app's own messages (its error response to ``BodyTooLarge``) are dropped."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = f"over the limit of {self.max_bytes} bytes (RECSYS_MAX_BODY_BYTES)"
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_json(send, 413, {"error": f"request body is {int(declared)} bytes, {limit}"})
            return
        received, started, answered = 0, False, False

        async def counted() -> Message:
            nonlocal received, answered
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if not (started or answered):
                        await send_json(send, 413, {"error": f"request body is {limit}"})
                        answered = True
                    raise BodyTooLarge(f"request body is {limit}")
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if answered:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        # The client has its 413 (or, if the app had already started answering, a cut-off response).
        with contextlib.suppress(BodyTooLarge):
            await self.app(scope, counted, guarded)


def route_key(path: str) -> str:
    """A path with one trailing slash stripped (``/`` stays ``/``), so ``/admin/x/`` is guarded like ``/admin/x``."""
    return path.removesuffix("/") or "/"


class AdminToken:
    """Guard admin endpoints with ``Authorization: Bearer <RECSYS_ADMIN_TOKEN>``, checked before the body is read.
    With no token configured the endpoints are disabled (403) rather than open: a missing setting fails closed."""

    def __init__(self, app: ASGIApp, token: str | None, paths: frozenset[str]) -> None:
        self.app = app
        self.token = None if token is None else token.encode()
        self.paths = frozenset(route_key(p) for p in paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or route_key(path) not in self.paths:
            await self.app(scope, receive, send)
            return
        if self.token is None:
            error = f"{path} is disabled: no admin token is configured (set RECSYS_ADMIN_TOKEN)"
            await send_json(send, 403, {"error": error})
            return
        scheme, _, credentials = (header(scope, b"authorization") or b"").strip().partition(b" ")
        if scheme.lower() != b"bearer" or not credentials.strip():
            error = f"{path} needs an admin token: Authorization: Bearer <RECSYS_ADMIN_TOKEN>"
            await send_json(send, 401, {"error": error}, [(b"www-authenticate", b"Bearer")])
            return
        if not hmac.compare_digest(credentials.strip(), self.token):
            await send_json(send, 403, {"error": f"{path}: the admin token does not match RECSYS_ADMIN_TOKEN"})
            return
        await self.app(scope, receive, send)


def not_found_text(body: bytes) -> str | None:
    """The message of a 404 body, or None when it already is a JSON object. BentoML sends ``Not Found`` as plain
    text for an unknown route and ``[{"error": "..."}]`` (a one-item array) when an endpoint raises ``NotFound``."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip() or "Not Found"
    if isinstance(data, dict):
        return None
    items = data if isinstance(data, list) else [data]
    parts = [
        str(i["error"]) if isinstance(i, dict) and "error" in i else i if isinstance(i, str) else json.dumps(i)
        for i in items
    ]
    return "; ".join(parts) or "Not Found"


def encoded(start: Message) -> bool:
    return any(key.lower() == b"content-encoding" for key, _ in start.get("headers", ()))


class JsonNotFound:
    """Make every 404 a JSON object ``{"error", "path"}`` like the service's other errors, whatever the route or
    endpoint sent. Only 404 bodies are buffered (all ``more_body`` parts); other responses stream through. HEAD
    requests (no body) and encoded (e.g. gzipped) bodies pass unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") == "HEAD":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        parts: list[bytes] = []

        async def rewrite(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] == 404 and not encoded(message):
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            parts.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(parts)
            text = not_found_text(body)
            if text is None:
                await send(start)
                await send({"type": "http.response.body", "body": body})
                return
            dropped = (b"content-type", b"content-length")
            kept = [(k, v) for k, v in start.get("headers", ()) if k.lower() not in dropped]
            await send_json(send, 404, {"error": text, "path": scope.get("path", "")}, kept)

        await self.app(scope, receive, rewrite)


EXPLORER_HEADERS = (
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
"""The explorer page may load and call nothing but this service (no CDN, no inline script), and no other site may
frame it."""


class PageHeaders:
    """Add fixed headers to every response of the app it wraps (the explorer's static files)."""

    def __init__(self, app: ASGIApp, headers: tuple[tuple[bytes, bytes], ...]) -> None:
        self.app = app
        self.headers = list(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.headers]}
            await send(message)

        await self.app(scope, receive, with_headers)
