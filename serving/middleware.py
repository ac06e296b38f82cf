"""BentoML answers request-validation errors with 400; HTTP APIs conventionally use 422 (Unprocessable Content)
for a well-formed body whose fields break the schema. This ASGI middleware rewrites exactly those responses; the
body (pydantic's error list, each naming the field in ``loc``) is passed through unchanged."""

from __future__ import annotations

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
