"""The web side shared by ``avstream serve`` and ``avstream run --view``: the token guard, the login
page, the viewer's page, assets and live feed (``WS /api/live``), and the clip routes.

Auth (SPEC §6, docs/viewer.md): the ``Authorization: Bearer`` header on every path but /healthz and
/readyz, or, for GET routes and the WebSocket only, the HttpOnly ``avstream_token`` cookie set by
``POST /login`` or by visiting ``/?token=...``. The cookie is never accepted for POST/DELETE, so a
page of another site cannot make the browser change anything (no CSRF); the WebSocket also checks
that its Origin is this server.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import json
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from avstream.engine.serve.viewer import ViewerClient, ViewerHub

COOKIE = "avstream_token"
STATIC_DIR = Path(__file__).parent / "static"
OPEN_PATHS = ("/healthz", "/readyz", "/login")
COOKIE_METHODS = ("GET", "HEAD")
WS_UNAUTHORIZED = 4401

LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>avstream viewer: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{background:#111418;color:#d8dde3;font:15px system-ui,sans-serif;display:flex;justify-content:center;
margin-top:18vh}} form{{background:#1a1f26;padding:24px 28px;border-radius:8px;min-width:320px}}
h1{{font-size:18px;margin:0 0 14px}} input{{width:100%;box-sizing:border-box;padding:8px;margin:6px 0 12px;
background:#0d1014;color:#d8dde3;border:1px solid #333b45;border-radius:4px}} button{{padding:7px 16px;
background:#2f6fd0;color:#fff;border:0;border-radius:4px;cursor:pointer}} .err{{color:#ff7a7a;margin:0 0 10px}}
p.hint{{color:#8a939d;font-size:13px}}
</style></head><body>
<form method="post" action="/login" id="login">
<h1>avstream viewer</h1>
{message}
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" autofocus>
<button type="submit">Sign in</button>
<p class="hint">{hint}</p>
</form></body></html>
"""


def token_matches(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def bearer(headers: Any) -> str | None:
    value = str(headers.get("authorization", ""))
    return value[len("Bearer "):] if value.startswith("Bearer ") else None


def login_page(hint: str, wrong: bool = False) -> HTMLResponse:
    message = '<p class="err">Wrong token.</p>' if wrong else ""
    body = LOGIN_PAGE.format(message=message, hint=html.escape(hint))
    return HTMLResponse(body, status_code=401 if wrong else 200, headers={"Cache-Control": "no-store"})


def with_cookie(response: Response, token: str) -> Response:
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
    return response


def install_guard(app: FastAPI, token: str, *, open_path: Callable[[str], bool], max_body_bytes: int,
                  login_hint: str) -> None:
    """Every HTTP request authenticated (see the module docstring); ``/`` without auth is the login page."""

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        path = request.url.path
        if not open_path(path) and path not in OPEN_PATHS:
            given = bearer(request.headers)
            from_cookie = given is None and request.method in COOKIE_METHODS
            if from_cookie:
                given = request.cookies.get(COOKIE)
            if path == "/" and request.method in COOKIE_METHODS and "token" in request.query_params:
                if token_matches(request.query_params["token"], token):  # the token leaves the address bar
                    return with_cookie(RedirectResponse("/", status_code=303), token)
                return login_page(login_hint, wrong=True)
            if given is None or not token_matches(given, token):
                if path == "/" and request.method in COOKIE_METHODS:
                    return login_page(login_hint, wrong=given is not None)
                return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body_bytes):
            return JSONResponse({"detail": f"request body larger than {max_body_bytes} bytes"}, status_code=413)
        response: Response = await call_next(request)
        return response


def websocket_allowed(websocket: WebSocket, token: str) -> bool:
    """The token (header, or the cookie of a page of this server) and an Origin that is this server."""
    origin = websocket.headers.get("origin")
    host = websocket.headers.get("host", "")
    try:
        other_site = origin is not None and urllib.parse.urlsplit(origin).netloc != host
    except ValueError:  # an Origin no URL parser reads ("http://[")
        return False
    if other_site:
        return False
    given = bearer(websocket.headers)
    if given is None:
        if origin is None:  # a cookie only counts from a page, which always sends its Origin
            return False
        given = websocket.cookies.get(COOKIE)
    return given is not None and token_matches(given, token)


async def _write(websocket: WebSocket, client: ViewerClient) -> None:
    """The page's queue to its socket: messages in order, then the newest frame of each stream."""
    while True:
        await client.wake.wait()
        client.wake.clear()
        while client.messages:
            await websocket.send_text(client.messages.popleft())
        frames, client.frames = client.frames, {}
        for data in frames.values():
            await websocket.send_bytes(data)


async def live_feed(websocket: WebSocket, hub: ViewerHub, token: str) -> None:
    await websocket.accept()
    if not websocket_allowed(websocket, token):
        await websocket.close(code=WS_UNAUTHORIZED, reason="wrong or missing token")
        return
    client = hub.connect()
    writer = asyncio.ensure_future(_write(websocket, client))
    try:
        while True:  # the page sends nothing that matters; reading notices it leaving
            await websocket.receive_text()
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        hub.disconnect(client)
        writer.cancel()


def add_viewer_routes(app: FastAPI, hub: ViewerHub, token: str, *, title: str) -> None:
    """``GET /`` (the page), ``POST /login``, assets under ``/viewer/``, ``WS /api/live``."""
    index = (STATIC_DIR / "index.html").read_text(encoding="utf-8").replace("{{title}}", html.escape(title))

    @app.get("/", include_in_schema=False)
    def page() -> Response:
        return HTMLResponse(index, headers={"Cache-Control": "no-store"})

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        body = (await request.body())[:4096].decode(errors="replace")
        given = (urllib.parse.parse_qs(body).get("token") or [""])[0].strip()
        if not token_matches(given, token):
            return login_page("", wrong=True)
        return with_cookie(RedirectResponse("/", status_code=303), token)

    @app.get("/api/viewer")
    def viewer_state() -> dict[str, Any]:
        return {"streams": hub.streams(), "watching": sorted(hub.wanted_streams()), "ended": hub.ended}

    app.mount("/viewer", StaticFiles(directory=STATIC_DIR), name="viewer")

    @app.websocket("/api/live")
    async def live(websocket: WebSocket) -> None:
        await live_feed(websocket, hub, token)


def add_clip_routes(app: FastAPI, recorder: Callable[[], Any]) -> None:
    """The recorded event clips (SPEC §6); ``recorder()`` is the ``record`` sink, or None without one."""

    @app.get("/api/clips")
    def clips(stream: str | None = None) -> Any:
        sink = recorder()
        return sink.list_clips(stream) if sink is not None else []

    @app.get("/api/clips/{clip}")
    def clip(clip: str) -> Response:
        sink = recorder()
        clip_id, _, ext = clip.rpartition(".") if clip.endswith((".mp4", ".json")) else (clip, "", "")
        path = sink.clip_path(clip_id) if sink is not None else None
        if path is None:
            return JSONResponse({"detail": f"no clip '{clip_id}'"}, status_code=404)
        path = Path(path)
        if ext == "mp4":
            return FileResponse(path, media_type="video/mp4")
        sidecar = path.with_suffix(".json")
        if ext == "json":
            return FileResponse(sidecar, media_type="application/json")
        meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        return JSONResponse({"id": clip_id, "mp4": f"/api/clips/{clip_id}.mp4", "json": f"/api/clips/{clip_id}.json",
                             **meta})


def create_run_app(hub: ViewerHub, token: str, recorder: Callable[[], Any], title: str) -> FastAPI:
    """The small app of ``avstream run --view``: the viewer, its feed and the run's clips."""
    app = FastAPI(title="avstream run viewer", docs_url=None, redoc_url=None)
    install_guard(app, token, open_path=lambda path: path in ("/healthz",), max_body_bytes=65536,
                  login_hint="The token is in the viewer line the run printed.")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    add_viewer_routes(app, hub, token, title=title)
    add_clip_routes(app, recorder)
    return app
