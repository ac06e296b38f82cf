"""The ASGI middlewares in ``serving.middleware``, driven by tiny fake ASGI apps (no server, no network), plus one
real Starlette stack through ``TestClient`` for ``BodyLimit`` and ``AdminToken`` together."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from serving.middleware import AdminToken, ASGIApp, BodyLimit, JsonNotFound, Message, Scope

ADMIN = "/admin/reload"
TOKEN = "s3cret-token"


@dataclass
class Result:
    messages: list[Message]

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.messages[0]["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body")

    def json(self) -> Any:
        return json.loads(self.body)


def drive(
    app: ASGIApp,
    *,
    path: str = "/",
    method: str = "POST",
    headers: Sequence[tuple[bytes, bytes]] = (),
    chunks: Sequence[bytes] = (b"",),
) -> Result:
    """Run ``await app(scope, receive, send)``: the body arrives in ``chunks`` (``more_body`` on all but the last),
    then ``http.disconnect``; returns every message the app sent."""
    scope = {"type": "http", "method": method, "path": path, "headers": list(headers)}
    incoming: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1} for i, chunk in enumerate(chunks)
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    async def main() -> None:
        await app(scope, receive, send)

    asyncio.run(main())
    return Result(sent)


@dataclass
class EchoApp:
    """Reads the whole body, then answers 200 with its length; a ``BodyTooLarge`` from ``receive`` is turned into a
    500 response, the way BentoML's endpoint wrapper turns any exception into one."""

    bodies: list[bytes] = field(default_factory=list)
    calls: int = 0

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        self.calls += 1
        body = b""
        try:
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
        except Exception:
            await send({"type": "http.response.start", "status": 500, "headers": []})
            await send({"type": "http.response.body", "body": b"boom"})
            raise
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": str(len(body)).encode()})


def responder(status: int, *parts: bytes, content_type: bytes = b"text/plain") -> ASGIApp:
    """An app that answers ``status`` with ``parts`` as separate body messages (``more_body`` on all but the last)."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        headers = [(b"content-type", content_type), (b"content-length", str(len(b"".join(parts))).encode())]
        await send({"type": "http.response.start", "status": status, "headers": [*headers, (b"x-request-id", b"r1")]})
        for i, part in enumerate(parts):
            await send({"type": "http.response.body", "body": part, "more_body": i < len(parts) - 1})

    return app


def assert_json_response(result: Result) -> None:
    assert result.headers[b"content-type"] == b"application/json"
    assert int(result.headers[b"content-length"]) == len(result.body)


# --- BodyLimit ---------------------------------------------------------------------------------------------------


def test_body_limit_rejects_by_content_length_without_calling_the_app() -> None:
    app = EchoApp()
    result = drive(BodyLimit(app, max_bytes=10), headers=[(b"content-length", b"11")], chunks=[b"x" * 11])
    assert result.status == 413
    assert_json_response(result)
    assert result.json() == {"error": "request body is 11 bytes, over the limit of 10 bytes (RECSYS_MAX_BODY_BYTES)"}
    assert app.calls == 0


def test_body_limit_rejects_a_chunked_body_once_the_total_passes_the_limit() -> None:
    app = EchoApp()
    result = drive(BodyLimit(app, max_bytes=10), chunks=[b"x" * 6, b"y" * 6, b"z" * 6])
    assert [m["type"] for m in result.messages] == ["http.response.start", "http.response.body"]  # app's 500 dropped
    assert result.status == 413
    assert_json_response(result)
    assert result.json() == {"error": "request body is over the limit of 10 bytes (RECSYS_MAX_BODY_BYTES)"}
    assert app.bodies == []  # the app never got a whole body


def test_body_limit_passes_a_body_at_the_limit_whole() -> None:
    app = EchoApp()
    chunks = [b"x" * 4, b"y" * 6]
    result = drive(BodyLimit(app, max_bytes=10), headers=[(b"content-length", b"10")], chunks=chunks)
    assert (result.status, result.body) == (200, b"10")
    assert app.bodies == [b"".join(chunks)]
    chunked = drive(BodyLimit(app, max_bytes=10), chunks=chunks)
    assert (chunked.status, app.bodies[-1]) == (200, b"xxxxyyyyyy")


# --- AdminToken --------------------------------------------------------------------------------------------------


def admin(token: str | None = TOKEN) -> AdminToken:
    return AdminToken(responder(200, b"reloaded"), token=token, paths=frozenset({ADMIN}))


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {token}".encode())]


@pytest.mark.parametrize("headers", [[], [(b"authorization", b"Basic abc")], [(b"authorization", b"Bearer ")]])
def test_admin_token_missing_or_malformed_is_401(headers: list[tuple[bytes, bytes]]) -> None:
    result = drive(admin(), path=ADMIN, headers=headers)
    assert result.status == 401
    assert result.headers[b"www-authenticate"] == b"Bearer"
    assert_json_response(result)
    assert result.json()["error"] == f"{ADMIN} needs an admin token: Authorization: Bearer <RECSYS_ADMIN_TOKEN>"


def test_admin_token_wrong_is_403() -> None:
    result = drive(admin(), path=ADMIN, headers=bearer("guess"))
    assert result.status == 403
    assert_json_response(result)
    assert "RECSYS_ADMIN_TOKEN" in result.json()["error"]


def test_admin_token_right_passes() -> None:
    result = drive(admin(), path=ADMIN, headers=bearer(TOKEN))
    assert (result.status, result.body) == (200, b"reloaded")


def test_admin_paths_are_disabled_without_a_configured_token() -> None:
    result = drive(admin(token=None), path=ADMIN, headers=bearer(TOKEN))
    assert result.status == 403
    assert_json_response(result)
    assert result.json() == {"error": f"{ADMIN} is disabled: no admin token is configured (set RECSYS_ADMIN_TOKEN)"}


def test_admin_token_leaves_other_paths_alone() -> None:
    assert drive(admin(), path="/recommend").status == 200
    assert drive(admin(token=None), path="/admin/reload/more").status == 200


def test_admin_token_guards_the_path_with_a_trailing_slash() -> None:
    assert drive(admin(), path=ADMIN + "/").status == 401
    assert drive(admin(), path=ADMIN + "/", headers=bearer(TOKEN)).status == 200


# --- JsonNotFound ------------------------------------------------------------------------------------------------


def test_not_found_array_becomes_an_object() -> None:
    body = b'[{"error":"item x not found"},{"error":"user y not found"}]'  # what BentoML's NotFound gives
    result = drive(JsonNotFound(responder(404, body, content_type=b"application/json")), path="/item")
    assert result.status == 404
    assert_json_response(result)
    assert result.json() == {"error": "item x not found; user y not found", "path": "/item"}
    assert result.headers[b"x-request-id"] == b"r1"  # other headers survive


def test_not_found_text_becomes_an_object() -> None:
    result = drive(JsonNotFound(responder(404, b"Not Found")), path="/nope")  # Starlette's unknown route
    assert result.status == 404
    assert_json_response(result)
    assert result.json() == {"error": "Not Found", "path": "/nope"}


def test_not_found_json_object_is_unchanged() -> None:
    body = b'{"error":"task_id not found"}'
    result = drive(JsonNotFound(responder(404, body, content_type=b"application/json")))
    assert (result.status, result.body) == (404, body)
    assert result.headers[b"content-length"] == str(len(body)).encode()


def test_other_statuses_pass_untouched() -> None:
    result = drive(JsonNotFound(responder(200, b"[1, ", b"2]")))
    assert result.messages[1:] == [
        {"type": "http.response.body", "body": b"[1, ", "more_body": True},
        {"type": "http.response.body", "body": b"2]", "more_body": False},
    ]


def test_not_found_body_in_several_parts_is_buffered() -> None:
    result = drive(JsonNotFound(responder(404, b"Not ", b"", b"Found")), path="/x")
    assert [m["type"] for m in result.messages] == ["http.response.start", "http.response.body"]
    assert_json_response(result)
    assert result.json() == {"error": "Not Found", "path": "/x"}


@pytest.mark.parametrize(
    "middleware", [BodyLimit(responder(404, b"x"), 0), admin(None), JsonNotFound(responder(404, b"x"))]
)
def test_non_http_scopes_pass_through(middleware: ASGIApp) -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        seen.append(scope)

    async def main() -> None:
        await middleware({"type": "lifespan"}, None, None)  # type: ignore[arg-type]

    middleware.app = app  # type: ignore[attr-defined]
    asyncio.run(main())
    assert seen == [{"type": "lifespan"}]


# --- a real ASGI stack ---------------------------------------------------------------------------------------------


def test_body_limit_and_admin_token_in_a_starlette_app() -> None:
    async def reload(request: Request) -> JSONResponse:
        return JSONResponse({"reloaded": len(await request.body())})

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"received": len(await request.body())})

    app = Starlette(
        routes=[Route(ADMIN, reload, methods=["POST"]), Route("/echo", echo, methods=["POST"])],
        middleware=[  # like BentoML's add_asgi_middleware: user middleware inside Starlette's error handling
            Middleware(BodyLimit, max_bytes=100),
            Middleware(AdminToken, token=TOKEN, paths=frozenset({ADMIN})),
        ],
    )
    with TestClient(app) as client:  # raise_server_exceptions: nothing may escape the middlewares
        assert client.post("/echo", content=b"x" * 100).json() == {"received": 100}
        big = client.post("/echo", content=b"x" * 101)
        assert big.status_code == 413
        assert big.json() == {"error": "request body is 101 bytes, over the limit of 100 bytes (RECSYS_MAX_BODY_BYTES)"}
        streamed = client.post("/echo", content=iter([b"x" * 60, b"y" * 60]))  # no content-length: chunked
        assert streamed.status_code == 413
        assert streamed.json() == {"error": "request body is over the limit of 100 bytes (RECSYS_MAX_BODY_BYTES)"}

        assert client.post(ADMIN).status_code == 401
        assert client.post(ADMIN, headers={"Authorization": "Bearer nope"}).status_code == 403
        ok = client.post(ADMIN, content=b"{}", headers={"Authorization": f"Bearer {TOKEN}"})
        assert (ok.status_code, ok.json()) == (200, {"reloaded": 2})
        too_big = client.post(ADMIN, content=b"x" * 101, headers={"Authorization": "Bearer nope"})
        assert too_big.status_code == 413  # the size check runs first, so an oversized body never reaches auth
