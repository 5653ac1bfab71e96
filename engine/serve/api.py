"""The REST API of ``avstream serve`` (SPEC §6), served by uvicorn on a thread of the daemon.

Handlers never touch the graph themselves: they hand a function to the supervisor loop
(``ServiceSupervisor.call``), which owns every socket and process.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from avstream.engine.capture.base import redact_text
from avstream.engine.errors import ConfigError
from avstream.engine.serve.config import validate_request_stream
from avstream.engine.serve.service import ServiceSupervisor
from avstream.engine.serve.viewer import ViewerHub
from avstream.engine.serve.web import add_clip_routes, add_viewer_routes, install_guard


def load_or_create_token(path: Path) -> str:
    """The bearer token; a new one is written (mode 0600) when the file is missing."""
    try:
        token = path.read_text(encoding="utf-8").strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    return token


def create_app(service: ServiceSupervisor, token: str) -> FastAPI:
    server = service.config.server
    app = FastAPI(title="avstream serve", description="Streams, events, clips and metrics of one avstream daemon.")

    install_guard(app, token, open_path=lambda path: path == "/metrics" and not server.metrics_auth,
                  max_body_bytes=server.max_body_bytes,
                  login_hint=f"The token is in {service.config.path(server.token_file)}.")

    @app.exception_handler(TimeoutError)
    async def busy(_request: Request, _exc: TimeoutError) -> Response:
        return JSONResponse({"detail": "the service did not answer in time; try again"}, status_code=503)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> Response:
        ready = service.call(service.ready)
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    @app.get("/api/streams")
    def list_streams() -> list[dict[str, Any]]:
        views: list[dict[str, Any]] = service.call(lambda: [service.stream_view(s) for s in service.streams])
        return views

    @app.get("/api/streams/{sid}")
    def get_stream(sid: str) -> Response:
        view = service.call(lambda: service.stream_view(sid, detail=True) if sid in service.streams else None)
        if view is None:
            return JSONResponse({"detail": f"no stream '{sid}'"}, status_code=404)
        return JSONResponse(view)

    @app.post("/api/streams", status_code=201)
    async def add_stream(request: Request) -> Response:
        raw = b""
        async for chunk in request.stream():  # a chunked body has no Content-Length to check up front
            raw += chunk
            if len(raw) > server.max_body_bytes:
                return JSONResponse({"detail": f"request body larger than {server.max_body_bytes} bytes"}, status_code=413)
        try:
            body = json.loads(raw or b"null")
        except (ValueError, RecursionError) as exc:  # ValueError: also an integer of more than 4300 digits
            why = "nested too deeply" if isinstance(exc, RecursionError) else exc
            return JSONResponse({"detail": [f"<request>:1:1: : not JSON: {why}"]}, status_code=422)
        try:
            entry = validate_request_stream(body, service.config.base_dir)
        except ConfigError as exc:
            return JSONResponse({"detail": [redact_text(str(p)) for p in exc.problems]}, status_code=422)

        def add() -> dict[str, Any] | None:
            if entry.id in service.streams:
                return None
            service.add_stream(entry)
            return service.stream_view(entry.id)

        try:
            view = service.call(add)
        except ConfigError as exc:  # the pipeline template itself is broken
            return JSONResponse({"detail": [redact_text(str(p)) for p in exc.problems]}, status_code=422)
        if view is None:
            return JSONResponse({"detail": f"stream '{entry.id}' exists"}, status_code=409)
        return JSONResponse(view, status_code=201)

    @app.delete("/api/streams/{sid}")
    def delete_stream(sid: str) -> Response:
        def remove() -> bool:
            if sid not in service.streams or service.streams[sid].removing:
                return False
            service.remove_stream(sid)
            service.config.streams.pop(sid, None)
            return True

        if not service.call(remove):
            return JSONResponse({"detail": f"no stream '{sid}'"}, status_code=404)
        return JSONResponse({"id": sid, "state": "stopped"})

    @app.post("/api/streams/{sid}/restart")
    def restart_stream(sid: str) -> Response:
        def restart() -> bool:
            run = service.streams.get(sid)
            if run is None or run.removing:
                return False
            service.remove_stream(sid, readd=run.entry)
            return True

        if not service.call(restart):
            return JSONResponse({"detail": f"no stream '{sid}'"}, status_code=404)
        return JSONResponse({"id": sid, "state": "starting"}, status_code=202)

    @app.get("/api/events")
    def events(stream: str | None = None, name: str | None = None, since: float | None = None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = service.call(lambda: [
            e for e in service.event_log.events
            if (stream is None or e.get("stream") == stream) and (name is None or e.get("name") == name)
            and (since is None or e.get("wall", 0) > since)])
        return json.loads(redact_text(json.dumps(found)))

    add_clip_routes(app, lambda: service.named_sinks.get("record"))
    if isinstance(service.viewer, ViewerHub):
        add_viewer_routes(app, service.viewer, token, title="avstream serve")

    @app.get("/metrics")
    def metrics() -> Response:
        sink = service.named_sinks.get("metrics")
        if sink is None:
            return PlainTextResponse("metrics are not available in this build\n", status_code=503)
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(sink.registry), media_type=CONTENT_TYPE_LATEST)  # type: ignore[attr-defined]

    return app


class RedactingFilter(logging.Filter):
    """Credentials in URIs masked in the web server's own log lines and tracebacks too."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact_text(record.getMessage()), None
        if record.exc_info:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class ApiServer:
    """uvicorn on a daemon thread; ``started`` once the socket listens."""

    def __init__(self, app: FastAPI, listen: str):
        """Binds ``listen`` (HOST:PORT) now, so a port in use is an error before any stream starts."""
        host, _, port = listen.rpartition(":")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host.strip("[]"), int(port)))
        except OSError:
            self.sock.close()
            raise
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        for name in ("uvicorn", "uvicorn.error", "uvicorn.asgi"):
            logging.getLogger(name).addFilter(RedactingFilter())
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, name="rest-api",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()

    def started(self) -> bool:
        return bool(self.server.started)

    def failed(self) -> bool:
        return not self.thread.is_alive() and not self.server.started

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)
