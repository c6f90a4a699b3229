"""The FastAPI app of `reidnet serve`: routers, error handling, and the background workers.

`create_app(settings)` opens the database, and its lifespan starts the job scheduler (after
stopping jobs a previous server process left running) and the dataset worker, and stops both on
shutdown. Every error a client can cause is answered 4xx with a `detail` that says what to fix;
anything else is a logged 500 whose detail reveals nothing.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse

from reidnet._version import __version__
from reidnet.config import shown, shown_key
from reidnet.errors import ReidnetError
from reidnet.service import schemas
from reidnet.service.datasets import DatasetProcessor
from reidnet.service.db import Database
from reidnet.service.deps import ServiceState
from reidnet.service.errors import ServiceError
from reidnet.service.head_limit import HeaderLimit
from reidnet.service.jobs import JobManager
from reidnet.service.routers import datasets, experiments, jobs
from reidnet.service.settings import ServiceSettings

logger = logging.getLogger(__name__)

JSON_BODY_LIMIT = 1024 * 1024  # every request but the dataset upload is a small JSON document
UPLOAD_PATH = "/api/v1/datasets"


def create_app(settings: ServiceSettings) -> FastAPI:
    settings.make_folders()
    database = Database(settings.url)
    database.create_all()
    state = ServiceState(
        settings=settings,
        database=database,
        jobs=JobManager(database, settings),
        datasets=DatasetProcessor(database, settings),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        for partial in settings.cache_dir.glob(".*"):  # archives a killed server left half built
            partial.unlink(missing_ok=True)
        await run_in_threadpool(state.jobs.start)
        await run_in_threadpool(state.datasets.recover)
        try:
            yield
        finally:
            await run_in_threadpool(state.jobs.stop)
            await run_in_threadpool(state.datasets.shutdown)
            database.dispose()

    app = FastAPI(
        title="reidnet fine-tuning service",
        version=__version__,
        description="Upload datasets, then run train, evaluate, inference and export jobs of "
        "re-identification models. Every endpoint but /api/v1/health and the docs needs "
        "'Authorization: Bearer <key>' (keys come from `reidnet users create`).",
        lifespan=lifespan,
        docs_url=None,  # served by _add_docs from local assets, not from a CDN
        redoc_url=None,
    )
    app.state.service = state
    app.include_router(datasets.router)
    app.include_router(experiments.router)
    app.include_router(jobs.router)

    @app.get("/api/v1/health", response_model=schemas.Health, tags=["service"])
    def health() -> schemas.Health:
        """Liveness; needs no API key."""
        return schemas.Health(version=__version__)

    _add_docs(app)
    _add_error_handlers(app)
    _add_body_limit(app)
    app.add_middleware(HeaderLimit, limit=settings.max_header_bytes)  # outermost: runs first
    _document_validation_errors(app)
    return app


# What `invalid_request` answers with 422, in place of FastAPI's default schema (a list `detail`).
_VALIDATION_PROBLEM = {
    "title": "HTTPValidationError",
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {"type": "string", "description": "Every problem, one 'where: what' each."},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {
                        "type": "array",
                        "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                    },
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}


def _document_validation_errors(app: FastAPI) -> None:
    """Make /openapi.json describe the 422 body this service sends."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            components = schema.get("components", {}).get("schemas", {})
            if "HTTPValidationError" in components:
                components["HTTPValidationError"] = _VALIDATION_PROBLEM
                components.pop("ValidationError", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


DOCS_ASSETS_PATH = "/docs-assets"


def _add_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc with their JavaScript and CSS served by this server.

    FastAPI's pages load them from a public CDN, which leaves the pages blank on an offline host;
    the fastapi-offline package ships the same Swagger UI 5 and ReDoc 2 bundles, mounted here as
    in FastAPI's "custom docs UI static assets" recipe.
    """
    from importlib.resources import files

    from fastapi.openapi.docs import (
        get_redoc_html,
        get_swagger_ui_html,
        get_swagger_ui_oauth2_redirect_html,
    )
    from fastapi.staticfiles import StaticFiles

    assets = files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS_PATH, StaticFiles(directory=str(assets)), name="docs-assets")
    redirect_url = app.swagger_ui_oauth2_redirect_url

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "") + DOCS_ASSETS_PATH
        return get_swagger_ui_html(
            openapi_url=request.scope.get("root_path", "") + app.openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=redirect_url,
            swagger_js_url=f"{root}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}/swagger-ui.css",
            swagger_favicon_url=f"{root}/favicon.png",
        )

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "") + DOCS_ASSETS_PATH
        return get_redoc_html(
            openapi_url=request.scope.get("root_path", "") + app.openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}/redoc.standalone.js",
            redoc_favicon_url=f"{root}/favicon.png",
            with_google_fonts=False,
        )


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_request: Request, error: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status_code)

    @app.exception_handler(ReidnetError)
    async def user_error(_request: Request, error: ReidnetError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            message = next(p for p in problems if p.get("type") == "json_invalid")
            detail = f"the request body is not valid JSON: {message.get('ctx', {}).get('error')}"
            return JSONResponse({"detail": detail}, status_code=400)
        lines = [_describe(p) for p in problems]
        return JSONResponse(
            {"detail": "; ".join(lines), "errors": _jsonable(problems)}, status_code=422
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal server error (see the server log)"}, 500)


def _describe(problem: dict) -> str:
    where = ".".join(str(part) for part in problem.get("loc", ()))
    got = "" if problem.get("type") == "missing" else f" (got {shown(problem.get('input'), 80)})"
    return f"{shown_key(where)}: {problem.get('msg')}{got}"


def _jsonable(problems: list[dict]) -> list[dict]:
    return [
        {"loc": list(p.get("loc", ())), "msg": p.get("msg"), "type": p.get("type")}
        for p in problems
    ]


def _add_body_limit(app: FastAPI) -> None:
    app.add_middleware(JsonBodyLimit, limit=JSON_BODY_LIMIT, exempt_path=UPLOAD_PATH)


class JsonBodyLimit:
    """Refuse (413) any request body but the upload's over `limit` bytes, however it is sent.

    A declared Content-Length over the limit is refused before reading; a chunked body is read
    into memory up to the limit and refused as soon as it passes it, then handed on whole.
    """

    def __init__(self, app, limit: int, exempt_path: str):
        self.app, self.limit, self.exempt_path = app, limit, exempt_path

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] == self.exempt_path:
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            await self._refuse(scope, receive, send)
            return
        body, ending = bytearray(), None
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                ending = message
                break
            body += message.get("body", b"")
            if len(body) > self.limit:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        pending = [ending or {"type": "http.request", "body": bytes(body), "more_body": False}]

        async def replay():
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send) -> None:
        answer = JSONResponse(
            {"detail": f"request body over {self.limit} bytes: specs are small JSON"},
            status_code=413,
        )
        await answer(scope, receive, send)
