"""The live viewer's hub: published messages and preview frames to the pages connected over ``WS /api/live``.

The hub is a sink of the run's publisher (``send``: results, events, status once a second) and takes
the preview frames of the sources (``send_frame``), both on the supervisor's thread. Neither may
block it: messages land in a small pending buffer under a lock (frames: newest wins per stream;
messages: bounded, oldest dropped) and one ``call_soon_threadsafe`` wakes the web server's event
loop, which spreads them over the clients. Each client has its own bounded queue in the same
shape, so a slow page loses frames, never stalls the others. Wire format: docs/viewer.md.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import struct
import threading
from typing import Any, Protocol

import numpy as np

from avstream.engine.sinks import Sink

log = logging.getLogger("avstream.viewer")
RESULT_KINDS = ("highlight", "violence", "localization", "caption")
PENDING_MESSAGES = 512  # between the publisher and the event loop
CLIENT_MESSAGES = 256  # per page; a page that reads slower loses the oldest


class FrameLike(Protocol):
    """What a preview frame carries (``avstream.engine.items.PreviewFrame``)."""

    stream: str
    t: float
    wall: float
    width: int
    height: int
    jpeg: bytes


def frame_message(frame: FrameLike) -> bytes:
    """The binary WS message of a frame: 4-byte big-endian header length, JSON header, JPEG."""
    head = json.dumps({"stream": frame.stream, "t": frame.t, "wall": frame.wall,
                       "width": frame.width, "height": frame.height}).encode()
    return struct.pack(">I", len(head)) + head + bytes(frame.jpeg)


def heatmap_json(heatmap: np.ndarray) -> dict[str, Any]:
    """A heatmap as the page draws it: values scaled so the map's peak is 255 (``max``: the peak)."""
    heat = np.nan_to_num(np.asarray(heatmap, dtype=np.float32), nan=0.0).clip(min=0.0)
    peak = float(heat.max()) if heat.size else 0.0
    scaled = np.rint(heat * (255.0 / peak)) if peak > 0 else np.zeros_like(heat)
    h, w = heat.shape
    return {"w": int(w), "h": int(h), "max": round(peak, 5), "data": scaled.astype(np.uint8).ravel().tolist()}


def result_message(header: dict[str, Any], arrays: list[np.ndarray]) -> dict[str, Any]:
    """A result header for the page: the payloads become JSON (a localization's heatmap as 0-255 ints)."""
    out = {k: v for k, v in header.items() if k != "payloads"}
    for desc, array in zip(header.get("payloads") or [], arrays, strict=False):
        if desc.get("name") == "heatmap" and array.ndim == 2:
            out["heatmap"] = heatmap_json(array)
    return {"type": "result", "header": out}


class HealthTracker:
    """Per-stream health lines from the status messages of ``avstream run`` and ``avstream serve``."""

    def __init__(self) -> None:
        self.frames: dict[str, tuple[float, float]] = {}  # stream -> (wall, frames out of its source)

    def health(self, status: dict[str, Any]) -> list[dict[str, Any]]:
        wall = float(status.get("wall") or 0.0)
        nodes = status.get("nodes") or []
        out = []
        for stream in status.get("streams") or []:
            sid = stream.get("id")
            if not isinstance(sid, str):
                continue
            source: dict[str, Any] = next((n for n in nodes if n.get("id") == sid), {})
            extra = source.get("extra") or {}
            frames = float((source.get("counters") or {}).get("frames_out") or 0.0)
            # video frames a second from the source's counter; serve's fps_in (all items) without one
            before = self.frames.get(sid)
            fps = float(stream.get("fps_in") or 0.0) if "frames_out" not in (source.get("counters") or {}) else 0.0
            if before is not None and wall > before[0] and frames > before[1]:
                fps = (frames - before[1]) / (wall - before[0])
            self.frames[sid] = (wall, frames)
            serving = [n for n in nodes if sid in (n.get("streams") or [])]
            drops = stream.get("drops")
            if drops is None:
                drops = sum(int(n.get("drops") or 0) for n in serving) + int(extra.get("drops") or 0)
            latencies = [v.get("latency_ms") for v in (stream.get("latest") or {}).values() if isinstance(v, dict)]
            latency = max((float(x) for x in latencies if isinstance(x, (int, float))), default=None)
            out.append({"type": "health", "stream": sid, "fps": round(float(fps), 2), "drops": int(drops),
                        "av_skew_ms": stream.get("av_skew_ms", extra.get("av_skew_ms")),
                        "state": stream.get("state"), "connection": extra.get("state"),
                        "reconnects": extra.get("reconnects"), "stalls": extra.get("stalls"),
                        "latency_ms": None if latency is None else round(latency, 1),
                        "restarts": max((int(n.get("restarts") or 0) for n in serving), default=0)})
        return out


class ViewerClient:
    """One connected page: its queues, filled on the event loop, emptied by its writer."""

    def __init__(self) -> None:
        self.messages: collections.deque[str] = collections.deque(maxlen=CLIENT_MESSAGES)
        self.frames: dict[str, bytes] = {}
        self.wake = asyncio.Event()
        self.dropped_messages = 0
        self.dropped_frames = 0

    def put_message(self, text: str) -> None:
        if len(self.messages) == self.messages.maxlen:
            self.dropped_messages += 1
        self.messages.append(text)
        self.wake.set()

    def put_frame(self, stream: str, data: bytes) -> None:
        if stream in self.frames:
            self.dropped_frames += 1
        self.frames[stream] = data
        self.wake.set()


class ViewerHub(Sink):
    """Fan-out of the run's messages and preview frames to the pages; see the module docstring."""

    name = "viewer"

    def __init__(self, streams: list[str] | None = None):
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake_pending = False
        self._pending_messages: collections.deque[str] = collections.deque(maxlen=PENDING_MESSAGES)
        self._pending_frames: dict[str, bytes] = {}
        self._streams: list[str] = list(streams or [])
        self._clients: set[ViewerClient] = set()
        self._watching = 0  # pages connected (read by the supervisor's thread)
        self.health = HealthTracker()
        self.dropped_messages = 0  # at the hand-off to the event loop
        self.dropped_frames = 0
        self.frames_in = 0
        self.ended: str | None = None

    # --- the supervisor's thread ---
    def send(self, header: dict[str, Any], arrays: list[np.ndarray]) -> None:
        kind = header.get("kind")
        if kind == "status":
            messages = self.health.health(header)  # rates need every status, watched or not
            if header.get("final"):
                messages.append({"type": "ended", "reason": "run ended"})
                self.ended = "run ended"
        elif not self._watching:
            return
        elif kind in RESULT_KINDS:
            messages = [result_message(header, arrays)]
        elif kind == "event":
            messages = [{"type": "event", **{k: v for k, v in header.items() if k != "payloads"}}]
        else:
            return
        if self._watching:
            self._post([json.dumps(m, allow_nan=False, default=str) for m in messages])

    def send_frame(self, frame: FrameLike) -> None:
        if not self._watching:
            return
        data = frame_message(frame)
        with self._lock:
            self.frames_in += 1
            if frame.stream in self._pending_frames:
                self.dropped_frames += 1
            self._pending_frames[frame.stream] = data
        self._schedule()

    def wanted_streams(self) -> set[str]:
        """The streams some page watches (every page shows all streams)."""
        with self._lock:
            return set(self._streams) if self._watching else set()

    def set_streams(self, streams: list[str]) -> None:
        """The run's stream set changed (a stream added or removed over REST)."""
        with self._lock:
            if streams == self._streams:
                return
            self._streams = list(streams)
        self._post([json.dumps({"type": "streams", "streams": list(streams)})])

    def streams(self) -> list[str]:
        with self._lock:
            return list(self._streams)

    def _post(self, texts: list[str]) -> None:
        with self._lock:
            for text in texts:
                if len(self._pending_messages) == self._pending_messages.maxlen:
                    self.dropped_messages += 1
                self._pending_messages.append(text)
        self._schedule()

    def _schedule(self) -> None:
        """One wake-up of the event loop per batch, however many messages arrive before it runs."""
        with self._lock:
            loop = self._loop
            if loop is None or self._wake_pending:
                return
            self._wake_pending = True
        try:
            loop.call_soon_threadsafe(self._flush)
        except RuntimeError:  # the loop is closed: the web server stopped
            with self._lock:
                self._wake_pending = False

    # --- the event loop ---
    def _flush(self) -> None:
        with self._lock:
            self._wake_pending = False
            messages, frames = list(self._pending_messages), self._pending_frames
            self._pending_messages.clear()
            self._pending_frames = {}
        for client in self._clients:
            for text in messages:
                client.put_message(text)
            for stream, data in frames.items():
                client.put_frame(stream, data)

    def connect(self) -> ViewerClient:
        """A page connected (called on the event loop): its queue, primed with the hello."""
        loop = asyncio.get_running_loop()
        client = ViewerClient()
        with self._lock:
            self._loop = loop
            self._clients.add(client)
            self._watching = len(self._clients)
            streams = list(self._streams)
        client.put_message(json.dumps({"type": "hello", "streams": streams}))
        if self.ended:
            client.put_message(json.dumps({"type": "ended", "reason": self.ended}))
        return client

    def disconnect(self, client: ViewerClient) -> None:
        with self._lock:
            self._clients.discard(client)
            self._watching = len(self._clients)
        if client.dropped_frames or client.dropped_messages:
            log.debug("viewer page left: %d frames and %d messages dropped for it",
                      client.dropped_frames, client.dropped_messages)

    def metric_families(self) -> list[Any]:
        from avstream.engine.sinks.metrics import counter_family, gauge_family

        with self._lock:
            watching, frames, dropped = self._watching, self.frames_in, self.dropped_frames + self.dropped_messages
        return [gauge_family("avstream_viewer_pages", "Viewer pages connected", [], [((), watching)]),
                counter_family("avstream_viewer_frames_total", "Preview frames received for the viewer", [],
                               [((), frames)]),
                counter_family("avstream_viewer_dropped_total", "Viewer messages and frames dropped before "
                               "reaching the web server", [], [((), dropped)])]
