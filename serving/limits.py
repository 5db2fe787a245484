"""Request body size limit, enforced while the body arrives (before any parsing or decoding)."""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.schemas import MAX_PIXEL_SIDE
from serving.settings import ServingSettings

MULTIPART_OVERHEAD = 64 * 1024
# `/predict/pixels`: 512 rows of 512 grey levels written as "255, " fit in this many bytes.
PIXELS_BODY_LIMIT = MAX_PIXEL_SIDE**2 * 5 + 4096


def human_size(size: int) -> str:
    """A byte count as people write limits: `5 MB`, `4 KB` (binary units)."""
    if size >= 2**20:
        return f"{size / 2**20:.4g} MB"
    return f"{size / 2**10:.4g} KB"


def batch_body_limit(settings: ServingSettings) -> int:
    """The largest body of `/predict/batch`: its files at their largest, multipart aside."""
    return settings.max_upload_bytes * settings.max_batch_files


def body_limit(settings: ServingSettings) -> Callable[[str], int]:
    """Each route's body limit, by the request's path."""

    def limit_for(path: str) -> int:
        if path.endswith("/batch"):
            return batch_body_limit(settings)
        return PIXELS_BODY_LIMIT if path.endswith("/pixels") else settings.max_upload_bytes

    return limit_for


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"The upload is larger than the {human_size(limit)} limit.")


class BodySizeLimit:
    """Pure ASGI middleware: answers 413 to a body over `limit_for(path)` bytes (plus `slack`,
    room for multipart headers; the answer names the limit itself), by its Content-Length header
    at once, or by counting the bytes as they arrive when there is none.

    Counting stops the read by raising inside `receive`; whatever the app then answers (FastAPI
    turns a failed body read into a 400) is replaced by the 413.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int], slack: int = 0) -> None:
        self.app = app
        self.limit_for = limit_for
        self.slack = slack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        allowed = limit + self.slack
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > allowed:
            await self._refuse(send, limit)
            return
        received, exceeded, answered = 0, False, False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > allowed:
                    exceeded = True
                    raise BodyTooLarge(limit)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered
            if not exceeded:
                answered = answered or message["type"] == "http.response.start"
                await send(message)
            elif message["type"] == "http.response.start" and not answered:
                answered = True
                await self._refuse(send, limit)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            if not answered:
                await self._refuse(send, limit)

    @staticmethod
    async def _refuse(send: Send, limit: int) -> None:
        body = json.dumps({"detail": str(BodyTooLarge(limit))}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})
