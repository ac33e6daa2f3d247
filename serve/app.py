"""The HTTP service: a JSON API over one `Engine`, and the search page.

    GET  /                          the search page (static/index.html, with app.js and style.css)
    POST /api/search                {"text", "k", "rerank_k"} -> ranked videos with per-frame gates and attention
    GET  /api/health                index mode, checkpoint, videos, build time; stale or older-index warnings
    GET  /api/video?id=ID           an indexed video's metadata
    GET  /api/video/thumbnails?id=ID  its T sampled frames as one JPEG strip
    GET  /api/video/file?id=ID      its bytes, with HTTP range requests (206) so a player can seek

Videos are named by their index id and looked up in the index's metadata: no part of a request
becomes a path. The page's files are read from the package once, at start. Every error is JSON,
`{"error": "..."}`, with a 4xx status for a bad request and 503 while the index is being rebuilt.
Endpoints are plain functions, so FastAPI runs them in its thread pool; the engine serialises
inference itself.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from gais_pipe.extract.errors import VideoError

from .engine import Engine, Unavailable

STATIC = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_BODY = 64 * 1024  # bytes of a request body; a search is a few hundred


class SearchRequest(BaseModel):
    text: str
    k: int | None = None
    rerank_k: int | None = None


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def page_files() -> dict[str, bytes]:
    folder = resources.files("gais_pipe.serve") / "static"
    return {name: (folder / name).read_bytes() for name in STATIC}


def check_search(request: SearchRequest, limits: dict, defaults: dict) -> tuple[str, int, int]:
    """The query's text, k and rerank_k, or ValueError with what is wrong."""
    text = request.text.strip()
    if not text:
        raise ValueError("empty query")
    if len(text) > int(limits["max_text_chars"]):
        raise ValueError(f"query longer than {limits['max_text_chars']} characters")
    k = int(defaults["k"]) if request.k is None else request.k
    rerank_k = int(defaults["rerank_k"]) if request.rerank_k is None else request.rerank_k
    if not 1 <= k <= int(limits["max_k"]):
        raise ValueError(f"k must be between 1 and {limits['max_k']}")
    if not 0 <= rerank_k <= int(limits["max_rerank_k"]):
        raise ValueError(f"rerank_k must be between 0 and {limits['max_rerank_k']}")
    return text, k, rerank_k


def create_app(engine: Engine, host: str = "127.0.0.1") -> FastAPI:
    app = FastAPI(title="gais-pipe", docs_url=None, redoc_url=None, openapi_url=None)
    # A page on another site can make a browser send requests to 127.0.0.1 under its own host name (DNS
    # rebinding); on loopback only requests naming this machine are answered.
    if host in LOOPBACK:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", "[::1]", "::1"])
    install_error_handlers(app)
    add_page_routes(app)
    add_api_routes(app, engine)
    return app


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def failure(_: Request, exc: Exception) -> JSONResponse:  # still logged by uvicorn
        return error(500, f"internal error: {type(exc).__name__}: {exc}")

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return error(400, "malformed JSON")
        first = problems[0] if problems else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        return error(400, f"{where or 'request'}: {first.get('msg', 'invalid')}")

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return error(413, f"request body over {MAX_BODY} bytes")
        return await call_next(request)


def add_page_routes(app: FastAPI) -> None:
    files = page_files()

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return Response(files["index.html"], media_type=STATIC["index.html"])

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in files:  # only the page's own files, by name
            raise HTTPException(404, f"no such file: {name}")
        return Response(files[name], media_type=STATIC[name], headers={"Cache-Control": "no-cache"})


def add_api_routes(app: FastAPI, engine: Engine) -> None:
    limits, defaults = engine.config["serve"], engine.config["query"]

    @app.post("/api/search")
    def search(request: SearchRequest) -> JSONResponse:
        try:
            text, k, rerank_k = check_search(request, limits, defaults)
            return JSONResponse(engine.search(text, k, rerank_k))
        except ValueError as exc:
            return error(400, str(exc))
        except Unavailable as exc:
            return error(503, str(exc))

    @app.get("/api/health")
    def health() -> JSONResponse:
        try:
            return JSONResponse(engine.health())
        except Unavailable as exc:
            return error(503, str(exc))

    @app.get("/api/video")
    def video(id: str = Query(..., max_length=4096)) -> JSONResponse:
        return JSONResponse(lookup(lambda: engine.entry(id), id))

    @app.get("/api/video/thumbnails")
    def thumbnails(id: str = Query(..., max_length=4096)) -> FileResponse:
        path = lookup(lambda: engine.thumbnail_strip(id), id)
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/video/file")
    def video_file(id: str = Query(..., max_length=4096)) -> FileResponse:
        return FileResponse(lookup(lambda: engine.video_file(id), id))  # answers Range requests with 206


def lookup(get, video_id: str):
    """An answer about one video, with the errors a client can act on as HTTP statuses."""
    try:
        return get()
    except KeyError:
        raise HTTPException(404, f"{video_id}: not in the index") from None
    except FileNotFoundError as exc:
        raise HTTPException(404, str(exc)) from None
    except VideoError as exc:
        raise HTTPException(422, f"{video_id}: cannot be decoded ({exc})") from None
    except Unavailable as exc:
        raise HTTPException(503, str(exc)) from None
