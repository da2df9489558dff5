"""The explorer web app: a JSON API over a :class:`RecommenderExplorer` or a
:class:`TextExplorer` plus one static HTML/JS page (no build step, nothing fetched
from the network).

Build it with :func:`create_app` (a factory, so tests run it in-process with FastAPI's
``TestClient`` as well as behind a real server). Every error answers JSON
``{"error": "..."}``: 400 for a malformed ``Host`` header, 403 for a request to a host
name the app does not serve, 404 for
an unknown user, item, latent or concept, 422 for malformed or out-of-range parameters
(``true`` is no id or number), 413 for an oversized body; no stack trace ever reaches
the client.

The app has no authentication, so it answers only requests addressed to a loopback
name (``localhost``, ``127.0.0.1``, ``[::1]``) or to a name it was told to serve:
otherwise a web page whose own host name was re-pointed at 127.0.0.1 (DNS rebinding)
could read it. The API docs (``/api/docs``) are Swagger UI served from the
``fastapi-offline`` package, so they render with no network.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import fastapi_offline
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from steercf.errors import InputError, SteerCFError, UnknownIdError
from steercf.explorer.recommender import MAX_N, MAX_PROFILE_ITEMS, KnobSpec, RecommenderExplorer
from steercf.explorer.text import MAX_TOP, TextExplorer
from steercf.steering import DEFAULT_RULE

STATIC_DIR = Path(__file__).with_name("static")
# Swagger UI's JavaScript and CSS, shipped inside the fastapi-offline package
DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).with_name("static")
DOCS_ASSETS_URL = "/api/docs-assets"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
# A Host header (or a --host value), lower-cased, matched whole: a host name or IPv4
# address (letters, digits, ".", "-", "_"), or an IPv6 address in brackets, each with
# an optional ":port" of digits only; or a bare IPv6 address (--host ::1), no port.
# Anything else ("localhost:1@evil.com", "a b", "host:80x") is malformed.
_HOST_RE = re.compile(
    r"(?:\[(?P<v6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9._-]*))(?::[0-9]{1,5})?"
    r"|(?P<bare>[0-9a-f]*:[0-9a-f:.]*)"
)
MAX_BODY_BYTES = 256 * 1024  # a 2,000-item profile is ~30 KB of JSON
MAX_KNOBS = 64
QUERY_CHARS = 200
log = logging.getLogger("steercf.explorer")

Explorer = RecommenderExplorer | TextExplorer


# ---- request bodies ---------------------------------------------------------------------
def _not_a_boolean(value: Any) -> Any:
    # JSON true/false would pass as 1/0 (or user "1"): a client bug, never a choice
    if isinstance(value, bool):
        raise ValueError(f"expected a number or an id, got {json.dumps(value)}")
    return value


NotBool = BeforeValidator(_not_a_boolean)
Id = Annotated[str | int, NotBool]  # a user or item id as the data set spells it
Int = Annotated[int, NotBool]
Number = Annotated[float, NotBool]


class KnobIn(BaseModel):
    """One slider: ``{"concept": "Horror", "strength": 0.3}`` or ``{"latent": 12, ...}``."""

    model_config = ConfigDict(extra="forbid")
    concept: str | None = Field(None, min_length=1, max_length=QUERY_CHARS)
    latent: Int | None = Field(None, ge=0)
    strength: Number = Field(..., ge=-5.0, le=5.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_target(self) -> KnobIn:
        if (self.concept is None) == (self.latent is None):
            raise ValueError("a knob names exactly one of 'concept' or 'latent'")
        return self


class RecommendIn(BaseModel):
    """A steering request for one user (``user``) or a built profile (``items``)."""

    model_config = ConfigDict(extra="forbid")
    user: Id | None = Field(None)
    items: list[Id] | None = Field(None, max_length=MAX_PROFILE_ITEMS)
    knobs: list[KnobIn] = Field(default_factory=list, max_length=MAX_KNOBS)
    rule: Literal["convex", "additive"] = DEFAULT_RULE
    n: Int = Field(20, ge=1, le=MAX_N)
    source: str | None = Field(None, max_length=QUERY_CHARS)
    mapping: str | None = Field(None, max_length=QUERY_CHARS)
    top_latents: Int | None = Field(None, ge=1, le=64)
    explain: StrictBool = True

    @model_validator(mode="after")
    def _one_user(self) -> RecommendIn:
        if (self.user is None) == (self.items is None):
            raise ValueError("give either 'user' (a user id) or 'items' (a profile of item ids)")
        return self


class MapIn(BaseModel):
    """Where the knobs move the test users: ``{"knobs": [...], "rule": ...}``."""

    model_config = ConfigDict(extra="forbid")
    knobs: list[KnobIn] = Field(..., min_length=1, max_length=MAX_KNOBS)
    rule: Literal["convex", "additive"] = DEFAULT_RULE
    source: str | None = Field(None, max_length=QUERY_CHARS)
    mapping: str | None = Field(None, max_length=QUERY_CHARS)
    top_latents: Int | None = Field(None, ge=1, le=64)


class SliderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    latent: Int = Field(..., ge=0)
    strength: Number = Field(..., ge=-1.0, le=1.0, allow_inf_nan=False)


class SearchIn(BaseModel):
    """A steered text search: the query and one slider per edited latent."""

    model_config = ConfigDict(extra="forbid")
    query: str = Field(..., min_length=1, max_length=1000)
    sliders: list[SliderIn] = Field(default_factory=list, max_length=MAX_KNOBS)
    top: Int = Field(10, ge=1, le=MAX_TOP)


# ---- middleware and errors ----------------------------------------------------------------
def host_name(host: str) -> str | None:
    """The name part of a ``Host`` header or a ``--host`` value, lower case, without
    the port, IPv6 brackets or a final dot (``"[::1]:8000"`` -> ``"::1"``); None when
    the value is malformed (see ``_HOST_RE``): a lenient parse would read
    ``localhost:1@evil.com`` as ``localhost``."""
    match = _HOST_RE.fullmatch(host.strip().lower())
    if match is None:
        return None
    name = match["v6"] or match["bare"] or match["name"] or ""
    return name.removesuffix(".")


def allowed_host_names(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The loopback names and ``extra`` as :func:`host_name` spells them; a wildcard
    bind address (``0.0.0.0``, ``::``, empty) adds nothing a client would send.

    Raises:
        InputError: a name that is no host name or address (a pattern such as ``*``).
    """
    names = []
    for raw in (*LOOPBACK_HOSTS, *extra):
        name = host_name(str(raw))
        if name in ("", "0.0.0.0", "::"):
            continue
        if name is None:
            raise InputError(
                f"{raw!r} is not a host name or IP address (patterns such as '*' are not "
                "supported: name each host the explorer is reached by)"
            )
        names.append(name)
    return tuple(dict.fromkeys(names))


class HostCheck:
    """Answer only requests whose ``Host`` header names an allowed host (403 JSON
    otherwise): the loopback names and ``allowed``, any port.

    The app has no authentication; checking the Host header is what keeps a web page
    on another site from reading it through DNS rebinding (its name re-pointed at
    127.0.0.1, the browser then treats this API as that site's own)."""

    def __init__(self, app: Any, allowed: Iterable[str] = ()) -> None:
        self.app, self.allowed = app, allowed_host_names(allowed)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers", [])).get(b"host")
        name = host_name(header.decode("latin-1")) if header is not None else None
        if name is not None and name in self.allowed:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":  # no routes of that kind today: refuse alike
            await send({"type": "websocket.close", "code": 1008})
            return
        if header is not None and name is None:
            await _send_json(
                send,
                400,
                f"malformed Host header {header.decode('latin-1')!r}: expected a host name, "
                "an IPv4 address or a [bracketed] IPv6 address, with an optional :PORT",
            )
            return
        shown = ", ".join(f"[{h}]" if ":" in h else h for h in self.allowed)
        asked = "no Host header" if name is None else f"host {name!r}"
        await _send_json(
            send,
            403,
            f"this explorer answers requests for {shown} only, not {asked} (it has no "
            "authentication); to serve another name, start it with --allow-host NAME",
        )


class BodyLimit:
    """Reject request bodies over ``max_bytes`` with 413 before the app reads them.

    Bodies are small here, so the middleware buffers up to the limit and replays the
    body to the app; that also covers chunked uploads that declare no length."""

    def __init__(self, app: Any, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _send_json(send, 400, "malformed Content-Length header")
                return
            if int(declared) > self.max_bytes:
                await _send_json(send, 413, self._message())
                return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await _send_json(send, 413, self._message())
                return
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _message(self) -> str:
        return f"request body too large (limit {self.max_bytes // 1024} KiB)"


async def _send_json(send: Any, status: int, message: str) -> None:
    payload = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _validation_message(err: RequestValidationError) -> str:
    parts = []
    for problem in err.errors()[:5]:
        if problem.get("type") == "json_invalid":
            error = (problem.get("ctx") or {}).get("error", "")
            parts.append(f"the request body is not valid JSON{f' ({error})' if error else ''}")
            continue
        where = ".".join(str(p) for p in problem.get("loc", ()) if p != "body")
        text = str(problem.get("msg", "invalid value")).removeprefix("Value error, ")
        parts.append(f"{where}: {text}" if where else text)
    return "; ".join(parts) or "invalid request"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(UnknownIdError)
    async def unknown(_: Request, err: UnknownIdError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=404)

    @app.exception_handler(SteerCFError)
    async def invalid(_: Request, err: SteerCFError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def malformed(_: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _validation_message(err)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code)

    @app.exception_handler(Exception)
    async def crash(request: Request, err: Exception) -> JSONResponse:
        # the traceback goes to the server log, never to the client
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"error": f"internal error ({type(err).__name__}); see the server log"},
            status_code=500,
        )


# ---- the factory ----------------------------------------------------------------------------
def load_explorer(
    model_dir: str | Path,
    data: Any = None,
    text_column: str = "text",
    title_column: str | None = "title",
    **options: Any,
) -> Explorer:
    """A recommender or text explorer for a saved model directory (kind read from it).

    Args:
        data: for a spliced recommender, a loaded ``InteractionData`` or a
            ``load_dataset`` spec (default: the data set recorded with the model); for a
            text model, the corpus file to search.
        options: passed to the explorer (``source``, ``mapping``, ``top_latents``,
            ``seed`` for recommenders; ``embedder``, ``embeddings``, ``cache_dir``,
            ``progress`` for text).
    """
    from steercf.io import load_model_dir

    kind, _, _ = load_model_dir(model_dir)
    if kind == "TextSAE":
        return TextExplorer.from_dir(model_dir, data, text_column, title_column, **options)
    return RecommenderExplorer.from_dir(model_dir, data, **options)


QUERY = Query("", max_length=QUERY_CHARS)
LIMIT = Query(50, ge=1, le=500)
OFFSET = Query(0, ge=0)


def create_app(
    source: str | Path | Explorer,
    data: Any = None,
    *,
    allowed_hosts: Iterable[str] = (),
    **options: Any,
) -> FastAPI:
    """The explorer app over a model directory (or a ready explorer).

    Args:
        source: a spliced recommender or text model directory, or an explorer object.
        data: see :func:`load_explorer`.
        allowed_hosts: host names answered besides ``localhost``, ``127.0.0.1`` and
            ``[::1]`` (any port); requests for other names get 403.
        options: see :func:`load_explorer`.

    Returns:
        a FastAPI app; ``app.state.explorer`` is the explorer behind it.
    """
    explorer = (
        source
        if isinstance(source, (RecommenderExplorer, TextExplorer))
        else load_explorer(source, data, **options)
    )
    app = FastAPI(
        title="steercf explorer",
        docs_url=None,  # FastAPI's own page loads Swagger UI from a CDN: see _docs_routes
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.explorer = explorer
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    # checked here: Starlette builds the middleware only on the first request
    app.add_middleware(HostCheck, allowed=allowed_host_names(allowed_hosts))  # runs first
    _install_error_handlers(app)

    def rec() -> RecommenderExplorer:
        if not isinstance(explorer, RecommenderExplorer):
            raise StarletteHTTPException(
                404, "this explorer serves a text model, not a recommender"
            )
        return explorer

    def text() -> TextExplorer:
        if not isinstance(explorer, TextExplorer):
            raise StarletteHTTPException(
                404, "this explorer serves a recommender, not a text model"
            )
        return explorer

    _shared_routes(app, explorer)
    _recommender_routes(app, rec)
    _text_routes(app, text)
    _docs_routes(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _docs_routes(app: FastAPI) -> None:
    """Swagger UI at ``/api/docs`` with its assets served from the fastapi-offline
    package (nothing fetched from the network)."""
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS_DIR), name="docs-assets")

    @app.get("/api/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=str(app.openapi_url),
            title=f"{app.title} - API",
            swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png",
            # no spec-validator badge: it would send the spec to an outside service
            swagger_ui_parameters={"validatorUrl": None},
        )


def _shared_routes(app: FastAPI, explorer: Explorer) -> None:
    """The page, health, info and the latent browser (either kind of model)."""

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/api/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return explorer.info()

    @app.get("/api/latents")
    def latents(q: str = QUERY, limit: int = LIMIT, offset: int = OFFSET) -> dict[str, Any]:
        return explorer.latents(q, limit, offset)

    @app.get("/api/latents/{latent}")
    def latent(latent: int) -> dict[str, Any]:
        return explorer.latent(latent)


def _recommender_routes(app: FastAPI, rec: Callable[[], RecommenderExplorer]) -> None:
    """Users, items, concepts and (steered) recommendations; 404 for a text model."""

    @app.get("/api/users")
    def users(q: str = QUERY, limit: int = LIMIT) -> dict[str, Any]:
        return rec().users(q, limit)

    @app.get("/api/items")
    def items(q: str = QUERY, limit: int = LIMIT) -> dict[str, Any]:
        return rec().search_items(q, limit)

    @app.get("/api/concepts")
    def concepts(
        source: str | None = Query(None, max_length=QUERY_CHARS), q: str = QUERY, limit: int = LIMIT
    ) -> dict[str, Any]:
        explorer = rec()
        return explorer.concepts(source or explorer.source, q, limit)

    @app.post("/api/recommend")
    def recommend(body: RecommendIn) -> dict[str, Any]:
        knobs = [KnobSpec(k.strength, k.concept, k.latent) for k in body.knobs]
        return rec().recommend(
            user=None if body.user is None else str(body.user),
            items=body.items,
            knobs=knobs,
            rule=body.rule,
            n=body.n,
            source=body.source,
            mapping=body.mapping,
            top_latents=body.top_latents,
            explain=body.explain,
        )

    @app.post("/api/map")
    def steering_map(body: MapIn) -> dict[str, Any]:
        knobs = [KnobSpec(k.strength, k.concept, k.latent) for k in body.knobs]
        return rec().steering_map(
            knobs,
            rule=body.rule,
            source=body.source,
            mapping=body.mapping,
            top_latents=body.top_latents,
        )


def _text_routes(app: FastAPI, text: Callable[[], TextExplorer]) -> None:
    """Steerable search; 404 for a recommender."""

    @app.post("/api/search")
    def search(body: SearchIn) -> dict[str, Any]:
        if not body.query.strip():
            raise InputError("type a query to search for")
        return text().search(body.query, [(s.latent, s.strength) for s in body.sliders], body.top)
