"""A real HTTP webhook receiver on 127.0.0.1 for the tests: checks each signature, can fail the first
attempts, answer a chosen status, or hang until released."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.waiting import wait_until


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool | None  # None: no secret to check against

    @property
    def message(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    port: int = 0
    secret: str | None = None
    fail_first: int = 0  # answer 500 to this many requests first
    status: int = 200
    hang: bool = False  # hold each request until `release` is set
    attempts: int = 0
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.attempts += 1
                if receiver.hang:
                    receiver.release.wait(60)
                if receiver.attempts <= receiver.fail_first:
                    code = 500
                else:
                    code = receiver.status
                    ok = None
                    if receiver.secret is not None:
                        want = "sha256=" + hmac.new(receiver.secret.encode(), body, hashlib.sha256).hexdigest()
                        ok = hmac.compare_digest(want, self.headers.get("X-Avstream-Signature", ""))
                    if code < 300:
                        receiver.received.append(Received(self.path, dict(self.headers.items()), body, ok))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server signature
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def wait_for(check: Any, timeout: float = 20.0, what: str = "condition") -> None:
    wait_until(check, what, timeout, every=0.02)
