"""The pipeline's outputs: the ZeroMQ PUB socket of SPEC §4 and the JSONL sink.

The publisher stamps ``seq`` per (stream, kind) and ``wall`` at emit, so sequence numbers continue
across node restarts. ``status`` messages (the run's counters, once a second) go to the PUB socket
only: the JSONL sink is for results and events. Socket set-up lives in ``make_pub_socket`` only, so
authentication (CURVE for non-loopback tcp) can be added in one place.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import zmq

from avstream.engine.items import Event, Result
from avstream.engine.runtime.jsonl import FAILED, RESUMED, JsonlFile
from avstream.engine.sinks import SinkFanout
from avstream.engine.transport.curve import CurveServer, PublishSecurity, secure_server_socket
from avstream.engine.transport.private import bind_private

SCHEMA_VERSION = 1


def make_pub_socket(ctx: zmq.Context[Any], endpoint: str,
                    security: PublishSecurity | None = None) -> tuple[zmq.Socket[Any], CurveServer | None]:
    """The results socket. XPUB so a run can wait for subscribers; behaves as PUB for them. CURVE
    (and its authenticator, returned to be stopped with the socket) when ``security`` has keys."""
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.XPUB_VERBOSE, 1)
    sock.setsockopt(zmq.SNDHWM, 10000)
    sock.setsockopt(zmq.LINGER, 500)
    try:
        curve = secure_server_socket(ctx, sock, endpoint, security)
        bind_private(sock, endpoint)
    except BaseException:
        sock.close(linger=0)
        raise
    return sock, curve


def _dtype_name(arr: np.ndarray) -> str:
    return str(arr.dtype.newbyteorder("<").name)


def jsonl_line(header: dict[str, Any], arrays: list[np.ndarray]) -> dict[str, Any]:
    """A published message as the JSONL sink writes it: each payload's values inline under ``data``."""
    line = dict(header)
    line["payloads"] = [dict(p, data=a.tolist()) for p, a in zip(header["payloads"], arrays, strict=True)]
    return line


class ResultPublisher:
    def __init__(self, ctx: zmq.Context[Any], endpoint: str, jsonl: str | None = None, fsync: str = "batch",
                 sinks: SinkFanout | None = None, security: PublishSecurity | None = None):
        self.sock, self.curve = make_pub_socket(ctx, endpoint, security)
        self.sinks = sinks or SinkFanout([])
        self.endpoint = endpoint
        self.seq: dict[tuple[str, str], int] = {}
        self.subscriptions = 0
        self.published = 0
        self.latest: dict[str, dict[str, dict[str, Any]]] = {}  # stream -> kind -> header
        self.stream_down: dict[str, bool] = {}  # from the stream_down / stream_up events
        self.fsync_each = fsync == "line"
        self.jsonl = JsonlFile(jsonl) if jsonl else None
        self.pending_sync = False

    @property
    def reader_gone(self) -> bool:
        """``--jsonl -`` and the reader of standard output has gone."""
        return self.jsonl is not None and self.jsonl.reader_gone

    def outputs_status(self) -> dict[str, Any]:
        """The ``outputs`` entry of the status object."""
        return {"jsonl": self.jsonl.status()} if self.jsonl is not None else {}

    def poll_subscriptions(self) -> int:
        """Read subscription notices (XPUB); returns the number of current subscriptions."""
        while self.sock.poll(0):
            msg = self.sock.recv()
            if msg[:1] == b"\x01":
                self.subscriptions += 1
            elif msg[:1] == b"\x00":
                self.subscriptions = max(0, self.subscriptions - 1)
        return self.subscriptions

    def wait_for_subscribers(self, count: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.poll_subscriptions() < count:
            if time.monotonic() > deadline:
                return False
            self.sock.poll(50)
        return True

    def _stamp(self, kind: str, stream: str) -> dict[str, Any]:
        key = (stream, kind)
        self.seq[key] = self.seq.get(key, -1) + 1
        return {"schema_version": SCHEMA_VERSION, "kind": kind, "stream": stream, "seq": self.seq[key], "wall": time.time()}

    def publish_result(self, result: Result) -> dict[str, Any]:
        header = self._stamp(result.kind, result.stream)
        header.update(t0=result.t0, t1=result.t1,
                      latency_ms=round((header["wall"] - result.capture_wall) * 1000.0, 3), model=result.model)
        header.update(result.fields)
        arrays = [np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False) for a in result.payloads.values()]
        header["payloads"] = [
            {"name": name, "dtype": _dtype_name(a), "shape": list(a.shape)} for name, a in zip(result.payloads, arrays, strict=True)
        ]
        self._send(header, arrays)
        return header

    def publish_event(self, event: Event) -> dict[str, Any]:
        header = self._stamp("event", event.stream)
        header.update(name=event.name, detail=event.detail)
        if event.t0 is not None:
            header.update(t0=event.t0, t1=event.t1 if event.t1 is not None else event.t0)
        header["payloads"] = []
        if event.name in ("stream_down", "stream_up"):
            self.stream_down[event.stream] = event.name == "stream_down"
        self._send(header, [])
        return header

    def publish_status(self, status: dict[str, Any]) -> dict[str, Any]:
        """The graph's ``status`` message (topic ``status.``); not in ``latest``, the JSONL sink or ``published``."""
        header = self._stamp("status", "")
        header.update(status)
        header["payloads"] = []
        self.sock.send_multipart([b"status.", json.dumps(header).encode()])
        self.sinks.send(header, [])
        return header

    def _send(self, header: dict[str, Any], arrays: list[np.ndarray]) -> None:
        topic = f"{header['kind']}.{header['stream']}".encode()
        frames: list[Any] = [topic, json.dumps(header).encode(), *arrays]
        self.sock.send_multipart(frames, copy=False)
        self.published += 1
        self.latest.setdefault(header["stream"], {})[header["kind"]] = header
        self.sinks.send(header, arrays)
        if self.jsonl is not None:
            outcome = self.jsonl.write(json.dumps(jsonl_line(header, arrays)) + "\n")
            if outcome == FAILED:  # once per spell of failures; the lines dropped are counted in the status
                self.publish_event(Event("output_write_failed", "", {
                    "output": "jsonl", "path": self.jsonl.path, "error": self.jsonl.last_error}))
            elif outcome == RESUMED:
                self.publish_event(Event("output_write_resumed", "", {
                    "output": "jsonl", "path": self.jsonl.path, "output_lines_dropped": self.jsonl.lines_dropped}))
            if self.fsync_each:
                self._fsync()
            else:
                self.pending_sync = True

    def _fsync(self) -> None:
        if self.jsonl is not None:
            self.jsonl.fsync()
        self.pending_sync = False

    def tick(self) -> None:
        """Called about once a second: fsync the batch written since the last tick."""
        if self.pending_sync:
            self._fsync()

    def close(self) -> None:
        if self.jsonl is not None:
            self.tick()
            self.jsonl.close()
            self.jsonl = None
        self.sinks.close()
        self.sock.close()
        if self.curve is not None:
            self.curve.stop()
