"""What a worker serves while the real app is still being imported: `/health` from the first
moment, `/ready` 503 until a model is loaded.

Importing FastAPI, NumPy and the app takes a worker about half a second on an idle 2-core
machine and several seconds on a busy one, MLflow and ONNX Runtime seconds more. `StartingApp` is
what the worker's uvicorn serves: it imports nothing heavy itself, builds the real app on a
thread once the socket listens, runs the real app's lifespan, and from then on hands every
request to it.

A worker that replaces one that died (`wait=True`) waits instead: its lifespan ends only once the
real app is up and its model loaded, so uvicorn takes no connection before it can answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

ASGIApp = Callable[..., Any]
STARTING = "the server is starting"
WAIT_FOR_MODEL_POLL_SECONDS = 0.05


async def _respond(send: Callable, status: int, body: dict, headers: dict | None = None) -> None:
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


class Lifespan:
    """The real app's lifespan, driven by hand (the server drives only the outer one's)."""

    def __init__(self, app: ASGIApp) -> None:
        self.inbox: asyncio.Queue[dict] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self.started, self.stopped = loop.create_future(), loop.create_future()
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self.task = asyncio.create_task(app(scope, self.inbox.get, self._sent))

    async def _sent(self, message: dict) -> None:
        kind = message["type"]
        future = self.started if kind.startswith("lifespan.startup") else self.stopped
        if kind.endswith(".failed"):
            future.set_exception(RuntimeError(message.get("message") or kind))
        else:
            future.set_result(None)

    async def start(self) -> None:
        await self.inbox.put({"type": "lifespan.startup"})
        await asyncio.wait([self.started, self.task], return_when=asyncio.FIRST_COMPLETED)
        if not self.started.done():  # the app ended its lifespan without a word
            self.task.result()
            raise RuntimeError("the app's lifespan ended before its startup did")
        self.started.result()

    async def stop(self) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait([self.stopped, self.task], return_when=asyncio.FIRST_COMPLETED)


class StartingApp:
    """An ASGI app that builds the real one with `build` (on a thread) and then serves it.

    `ready(app)` says whether the real app has a model (what `wait` waits for). `on_started(app)`
    is called once the real app has started. `on_failure` is called with the error when the real
    app cannot be built or started after the server already listens (the worker then stops:
    what it would serve is broken)."""

    def __init__(
        self,
        build: Callable[[], ASGIApp],
        ready: Callable[[ASGIApp], bool],
        on_failure: Callable[[BaseException], None],
        on_started: Callable[[ASGIApp], None] = lambda _: None,
        wait: bool = False,
    ) -> None:
        self.build, self.ready, self.wait = build, ready, wait
        self.on_failure, self.on_started = on_failure, on_started
        self.app: ASGIApp | None = None  # the real app, once its lifespan has started

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif self.app is not None:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await self._starting(scope, send)

    async def _starting(self, scope: dict, send: Callable) -> None:
        if scope["path"] == "/health":
            await _respond(send, 200, {"status": "ok"})
        elif scope["path"] == "/ready":
            await _respond(send, 503, {"ready": False, "model_version": None, "reason": STARTING})
        else:
            detail = "The server is starting: try again in a moment."
            await _respond(send, 503, {"detail": detail}, {"Retry-After": "1"})

    async def _start(self) -> Lifespan:
        app = await asyncio.to_thread(self.build)
        lifespan = Lifespan(app)
        await lifespan.start()
        self.on_started(app)
        while self.wait and not self.ready(app):
            await asyncio.sleep(WAIT_FOR_MODEL_POLL_SECONDS)
        self.app = app
        return lifespan

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        await receive()  # lifespan.startup
        starting = asyncio.create_task(self._start())
        if self.wait:
            try:
                await starting
            except Exception as error:
                await send({"type": "lifespan.startup.failed", "message": str(error)})
                return
        else:
            starting.add_done_callback(self._failed_late)
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        if starting.done() and not starting.cancelled() and starting.exception() is None:
            await starting.result().stop()
        else:
            starting.cancel()
            with contextlib.suppress(BaseException):
                await starting
        await send({"type": "lifespan.shutdown.complete"})

    def _failed_late(self, starting: asyncio.Task) -> None:
        if not starting.cancelled() and (error := starting.exception()) is not None:
            log.error("The app could not start: %s", error)
            self.on_failure(error)
