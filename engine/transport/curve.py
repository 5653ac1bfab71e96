"""CURVE on the results socket (SPEC §9): who may publish where, and with which keys.

A ``tcp://`` endpoint whose host is not loopback (127.0.0.0/8, ``::1``, ``localhost``; ``*``,
``0.0.0.0`` and interface names are not) is authenticated and encrypted with ZeroMQ CURVE: the
server's key pair from ``secret_key`` (a ``zmq.auth`` ``.key_secret`` file) and only the client
public keys found in the ``clients`` folder (``*.key`` files) may connect. Without keys such an
endpoint is refused unless ``insecure`` is set. Keys are the files ``zmq.auth.create_certificates``
writes (``avstream keys``); the authentication runs in pyzmq's ``ThreadAuthenticator``.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger("avstream.curve")
LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class PublishSecurity:
    """How the results socket is protected: CURVE keys (absolute paths), or an explicit opt-out."""

    secret_key: str | None = None  # the server's .key_secret file
    clients: str | None = None  # folder of the allowed clients' public .key files
    insecure: bool = False

    @property
    def curve(self) -> bool:
        return self.secret_key is not None


NETWORK_SCHEMES = ("tcp://", "ws://", "wss://")  # ws(s): where libzmq is built with it, the same rule as tcp


def endpoint_host(endpoint: str) -> str | None:
    """The host part of a network endpoint (brackets of IPv6 removed); None for ipc and inproc."""
    scheme = next((s for s in NETWORK_SCHEMES if endpoint.startswith(s)), None)
    if scheme is None:
        return None
    address = endpoint[len(scheme):].split("/", 1)[0]  # a ws path follows the port
    address = address.rsplit(";", 1)[-1]  # "tcp://source;dest": the destination counts
    if address.startswith("["):
        return address[1:address.find("]")] if "]" in address else address[1:]
    return address.rsplit(":", 1)[0]


def is_loopback_host(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # '*', an interface name or a host name: may face the network
        return False


def needs_curve(endpoint: str) -> bool:
    """True for a tcp (or ws) endpoint anyone on the network could reach."""
    host = endpoint_host(endpoint)
    return host is not None and not is_loopback_host(host)


def check_publish(endpoint: str, security: PublishSecurity, curve_key: str = "outputs.publish.curve",
                  insecure_key: str = "outputs.publish.insecure") -> list[tuple[str, str]]:
    """Problems of publishing on ``endpoint`` with ``security``, as (``curve.secret_key``,
    ``curve.clients`` or "" for the endpoint itself, message) pairs; empty when it may start.
    ``curve_key`` and ``insecure_key`` are the settings' names in the messages."""
    problems: list[tuple[str, str]] = []
    if security.secret_key is not None:
        problems += [("curve.secret_key", m) for m in _check_secret(Path(security.secret_key))]
    if security.clients is not None:
        problems += [("curve.clients", m) for m in _check_clients(Path(security.clients))]
    if needs_curve(endpoint) and not security.curve and not security.insecure:
        problems.append(("", f"{endpoint} is not a loopback address: results would go to anyone on the "
                             f"network unauthenticated; give CURVE keys ({curve_key}: {{secret_key: FILE, clients: DIR}}, "
                             f"made by `avstream keys --out DIR`) or set {insecure_key}: true"))
    return problems


def _check_secret(path: Path) -> list[str]:
    if not path.is_file():
        return [f"no such key file: {path}"]
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        return [f"cannot read the server's secret key {path}: {getattr(exc, 'strerror', None) or exc}"]
    if not secret:
        return [f"{path} holds no secret key (the .key_secret file of `avstream keys` is needed)"]
    return []


def _check_clients(folder: Path) -> list[str]:
    if not folder.is_dir():
        return [f"not a folder of client public keys: {folder}"]
    keys = sorted(folder.glob("*.key"))
    if not keys:
        return [f"no client public keys (*.key) in {folder}: nobody could connect"]
    problems = []
    for key in keys:
        try:
            zmq.auth.load_certificate(key)
        except (OSError, ValueError) as exc:
            problems.append(f"not a ZeroMQ public key file: {key} ({exc})")
    return problems


class CurveServer:
    """CURVE for the server sockets of one context: the authenticator and the server's keys."""

    def __init__(self, ctx: zmq.Context[Any], security: PublishSecurity):
        assert security.secret_key is not None and security.clients is not None
        self.public, secret = zmq.auth.load_certificate(security.secret_key)
        if not secret:
            raise ValueError(f"{security.secret_key} holds no secret key")
        self.secret = secret
        self.auth = ThreadAuthenticator(ctx, log=logging.getLogger("avstream.curve.auth"))
        self.auth.start()
        # Only the public keys in the folder are let in (read once, at start).
        self.auth.configure_curve(domain="*", location=str(security.clients))

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Before bind: the socket serves CURVE with the server's key pair."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def stop(self) -> None:
        self.auth.stop()


def secure_server_socket(ctx: zmq.Context[Any], sock: zmq.Socket[Any], endpoint: str,
                         security: PublishSecurity | None) -> CurveServer | None:
    """Set ``sock`` up before it binds ``endpoint``: CURVE when keys are given, a warning (once, here)
    when an endpoint that needs CURVE is published on insecurely. Raises ValueError when it would
    publish unauthenticated on the network without ``insecure`` (the config check reports that first)."""
    security = security or PublishSecurity()
    if security.curve:
        server = CurveServer(ctx, security)
        server.apply(sock)
        return server
    if needs_curve(endpoint):
        if not security.insecure:
            raise ValueError(f"{endpoint} needs CURVE keys or insecure: true")
        log.warning("publishing on %s WITHOUT authentication or encryption (insecure: true): anyone who can "
                    "reach it receives the results", endpoint)
    return None


def client_socket(ctx: zmq.Context[Any], server_public_key: str | Path | None = None,
                  client_key: str | Path | None = None, socket_type: int = zmq.SUB) -> zmq.Socket[Any]:
    """A subscriber for a CURVE publisher: ``server_public_key`` is the server's ``.key`` file,
    ``client_key`` this client's ``.key_secret`` file (its public key must be in the server's clients
    folder). Without keys: a plain socket (loopback publishers)."""
    sock = ctx.socket(socket_type)
    if server_public_key is not None:
        if client_key is None:
            sock.close(linger=0)
            raise ValueError("a CURVE subscriber needs its own key pair (client_key) as well")
        server_public, _ = zmq.auth.load_certificate(server_public_key)
        public, secret = zmq.auth.load_certificate(client_key)
        if not secret:
            sock.close(linger=0)
            raise ValueError(f"{client_key} holds no secret key")
        sock.curve_serverkey = server_public
        sock.curve_publickey = public
        sock.curve_secretkey = secret
    return sock
