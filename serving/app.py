"""The app factory: model loading and registry polling in the lifespan, errors as sentences.

`create_app` is pure: settings in, app out. What a server process tunes for all its apps (the
upload spool, MLflow's limits in the environment, the garbage collector) is done once by the
server's entry point (`serving.process`), never here: two apps in one process (tests) do not
change each other."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from swagger_ui_bundle import swagger_ui_path

from monitoring.model_metrics import StoreCollector
from monitoring.writer import PredictionLog
from serving.api import Service, router
from serving.batching import MicroBatcher
from serving.decode import UploadError
from serving.decode_pool import DecodePool
from serving.feedback_api import router as feedback_router
from serving.limits import MULTIPART_OVERHEAD, BodySizeLimit, body_limit
from serving.metrics import RequestMetrics, ServiceMetrics, scrape
from serving.model_store import ModelStore
from serving.settings import ServingSettings
from serving.shadow import ShadowScorer

STATIC_DIR = Path(__file__).parent / "static"
MAX_ERRORS_SHOWN = 3


def _validation_message(error: RequestValidationError) -> str:
    """A few sentences for FastAPI's list of validation errors, however long the list: a body of
    a million bad values gets three sentences and a count, not a million."""
    errors = error.errors()
    sentences = []
    for item in errors[:MAX_ERRORS_SHOWN]:
        where = ".".join(str(part) for part in item["loc"] if part != "body")
        if item["type"] == "missing" and where in ("file", "files"):
            sentences.append(
                f"No file was uploaded: send the image as the multipart form field '{where}'."
            )
        elif "Expected UploadFile" in item["msg"]:
            sentences.append(f"{where}: send a file here (a form part with a filename), not text.")
        elif item["type"] == "extra_forbidden":
            sentences.append(f"{where}: there is no such field here; /docs lists the fields.")
        else:
            sentences.append(f"{where or 'request body'}: {item['msg'][:200]}.")
    if len(errors) > MAX_ERRORS_SHOWN:
        sentences.append(f"({len(errors) - MAX_ERRORS_SHOWN} more problems like these.)")
    return " ".join(sentences)


def _install_error_handlers(app: FastAPI) -> None:
    def detail(status: int, message: str) -> JSONResponse:
        return JSONResponse({"detail": message}, status_code=status)

    @app.exception_handler(UploadError)
    async def upload_error(_: Request, error: UploadError) -> JSONResponse:
        response = detail(error.status_code, error.detail)
        response.headers.update(error.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        return detail(422, _validation_message(error))


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    settings = settings or ServingSettings()
    if settings.model_path is None and (missing := settings.missing_local_store()):
        raise FileNotFoundError(missing)
    store, metrics = ModelStore(settings), ServiceMetrics()
    batcher = MicroBatcher(
        settings.batch_max_size,
        settings.batch_max_wait_ms,
        metrics,
        enabled=settings.batching,
        queue_limit=settings.batch_queue_limit,
        deadline_seconds=settings.request_deadline_seconds,
    )
    prediction_log = PredictionLog(settings, metrics.monitoring)
    # The challenger, scored in the shadow: from the registry only, and only when sampled.
    challenger = None
    if settings.model_path is None and settings.shadow_sample_rate > 0:
        challenger = ModelStore(settings, settings.challenger_alias, optional=True)
    shadow = ShadowScorer(settings, challenger, metrics.monitoring.shadow, prediction_log)
    # Gauges every worker reads alike from the store, at scrape time (feedback accuracy, drift).
    store_gauges = CollectorRegistry()
    store_gauges.register(StoreCollector(prediction_log.store))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.model_path is not None:
            store.refresh()  # a local file: quick, and one that cannot be loaded stops the start
        await batcher.start()
        prediction_log.start()  # opens the store at once, on its own thread
        # The first load from the registry and the polling run in the background: the socket
        # opens at once, `/health` answers, and `/ready` says why it is not ready yet.
        pollers = [asyncio.create_task(store.poll()), asyncio.create_task(shadow.follow(store))]
        shadow.start()
        yield
        for poller in pollers:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        store.close()
        await batcher.stop()
        await asyncio.to_thread(shadow.stop)  # its last answers go to the log, stopped next
        await asyncio.to_thread(prediction_log.stop)

    app = FastAPI(
        title="MNIST digit recognizer",
        description="Classifies pictures of handwritten digits with the registry's "
        "production model.",
        lifespan=lifespan,
        docs_url=None,  # served below from local files: FastAPI's default loads them from a CDN
        redoc_url=None,
    )
    app.state.service = Service(
        settings,
        store,
        metrics,
        batcher,
        DecodePool(
            settings.max_image_pixels,
            settings.decode_threads,
            settings.max_pending_pixels,
            settings.decode_inline_pixels,
        ),
        prediction_log,
        shadow,
    )
    _install_error_handlers(app)
    app.include_router(router)
    app.include_router(feedback_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    app.add_middleware(BodySizeLimit, limit_for=body_limit(settings), slack=MULTIPART_OVERHEAD)

    if origins := settings.cors_origins.replace(",", " ").split():
        app.add_middleware(
            CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"], max_age=600
        )
    app.add_middleware(RequestMetrics, metrics=metrics)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title}: API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        # A local model file's version is a digest, not a number: it has no gauge value.
        if store.current is not None and store.current.version.isdigit():
            metrics.model_version.clear()
            metrics.model_version.labels(settings.model_name, settings.model_alias).set(
                float(store.current.version)
            )
        metrics.alias_version.clear()
        if store.alias_version is not None:
            metrics.alias_version.labels(settings.model_name, settings.model_alias).set(
                float(store.alias_version)
            )
        # No challenger is a value, 0, not an absent series: with several workers a cleared
        # gauge would keep its last value in their shared files (prometheus-client's
        # multiprocess mode), and the dashboard would show a challenger that left.
        challenger = shadow.current
        challenger_gauge = metrics.monitoring.shadow.version
        challenger_gauge.labels(settings.model_name, settings.challenger_alias).set(
            0.0 if challenger is None else float(challenger.version)
        )
        # Off the event loop: the store's gauges are read from the database.
        text = await asyncio.to_thread(scrape, metrics.registry, store_gauges)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    return app
