"""CURVE on the graph's own tcp sockets (edges, control, results) when its processes span hosts.

With the Ray backend, edges between hosts and the workers' links to the supervisor are ``tcp://``
(SPEC §10: ZeroMQ stays the data plane, CURVE between hosts, §9). Each run makes two key pairs: the
binding side of every tcp socket serves CURVE with the run's server pair, the connecting side uses
the client pair, and a ZAP handler (pyzmq's ``ThreadAuthenticator``) in every process that binds lets
in only the run's client key. Keys reach the workers in their spec folder (0600 in a 0700 folder),
never on a socket. ``ipc://`` sockets are untouched: they stay on one host, private by file mode.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger("avstream.edgekeys")


@dataclass(frozen=True)
class EdgeKeys:
    """The run's two CURVE key pairs, Z85 text."""

    server_public: str
    server_secret: str
    client_public: str
    client_secret: str

    @staticmethod
    def generate() -> EdgeKeys:
        server_public, server_secret = zmq.curve_keypair()
        client_public, client_secret = zmq.curve_keypair()
        return EdgeKeys(server_public.decode(), server_secret.decode(), client_public.decode(), client_secret.decode())

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> EdgeKeys:
        raw = json.loads(text)
        return EdgeKeys(**{k: str(raw[k]) for k in ("server_public", "server_secret", "client_public", "client_secret")})


class _RunClientOnly:
    """ZAP credentials provider: the run's client key and no other."""

    def __init__(self, client_public: bytes):
        self.client_public = client_public

    def callback(self, domain: str, key: bytes) -> bool:
        return bool(key == self.client_public)


_active: EdgeKeys | None = None
_authenticators: dict[int, ThreadAuthenticator] = {}  # per context (a ZAP handler serves one context)
_lock = threading.Lock()


def activate(keys: EdgeKeys | None) -> None:
    """Use ``keys`` on every tcp socket this process binds or connects for the graph."""
    global _active
    _active = keys


def active() -> EdgeKeys | None:
    return _active


def _is_tcp(endpoint: str) -> bool:
    return endpoint.startswith("tcp://")


def edge_bind(ctx: zmq.Context[Any], sock: zmq.Socket[Any], endpoint: str) -> None:
    """Before binding a graph socket: CURVE server on tcp when the run has keys."""
    keys = _active
    if keys is None or not _is_tcp(endpoint):
        return
    with _lock:
        if id(ctx) not in _authenticators:
            auth = ThreadAuthenticator(ctx, log=logging.getLogger("avstream.edgekeys.auth"))
            auth.start()
            auth.configure_curve_callback(domain="*", credentials_provider=_RunClientOnly(keys.client_public.encode()))
            _authenticators[id(ctx)] = auth
    sock.curve_secretkey = keys.server_secret.encode()
    sock.curve_publickey = keys.server_public.encode()
    sock.curve_server = True


def edge_connect(sock: zmq.Socket[Any], endpoint: str) -> None:
    """Before connecting a graph socket: CURVE client on tcp when the run has keys."""
    keys = _active
    if keys is None or not _is_tcp(endpoint):
        return
    sock.curve_serverkey = keys.server_public.encode()
    sock.curve_publickey = keys.client_public.encode()
    sock.curve_secretkey = keys.client_secret.encode()


def stop_authenticators() -> None:
    with _lock:
        for auth in _authenticators.values():
            auth.stop()
        _authenticators.clear()
