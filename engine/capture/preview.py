"""Live preview of a source's video: JPEG frames for a viewer, made only while someone watches.

The supervisor tells each worker which streams are watched (control message ``preview``). While a
stream of a source is watched, its reader attaches the decoded frame as it came out of the decoder
(``VideoFrame.native``: an ``av.VideoFrame``, or a BGR array for generated inputs and cameras) to
the items it delivers; a file also hands over, as preview-only items (``fitted == {}``, sent to no
edge), the frames it decodes anyway that no consumer takes. The node thread offers them to a
:class:`PreviewTap`: a gate on wall time keeps at most ``fps`` a second per stream, and a one-slot
hand-off (the newest wins, what it replaces is counted as dropped) passes the frame to the tap's
own thread, which scales it (aspect kept, even sides, at most ``max_width`` wide), encodes a JPEG
with OpenCV and pushes a :class:`~avstream.engine.items.PreviewFrame` to the supervisor's results
socket. The node thread never waits for it; nothing is attached, scaled or encoded while nobody
watches, and what the consumers get is the same either way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq

from avstream.engine.capture.fit import GridGate
from avstream.engine.items import PreviewFrame, VideoFrame
from avstream.engine.transport.edgekeys import edge_connect
from avstream.engine.transport.wire import encode

PREVIEW_HWM = 4  # frames queued towards the supervisor; past that a frame is dropped, not delayed
_NO_IMAGE = np.zeros((0, 0, 3), np.uint8)


def preview_only(stream: str, t: float, wall: float, native: Any) -> VideoFrame:
    """An item for the preview alone: a decoded frame no consumer takes (sent to no edge)."""
    return VideoFrame(stream, t, wall, _NO_IMAGE, fitted={}, native=native)


def is_preview_only(item: Any) -> bool:
    return isinstance(item, VideoFrame) and item.fitted is not None and not item.fitted


def preview_size(width: int, height: int, max_width: int) -> tuple[int, int]:
    """The preview's size for a ``width`` x ``height`` frame: aspect kept, at most ``max_width``
    wide, never enlarged, both sides even (JPEG chroma subsampling, browsers' video paths)."""
    if width <= 0 or height <= 0:
        return 0, 0
    scale = min(1.0, max_width / width)
    return max(2, int(width * scale) // 2 * 2), max(2, int(round(height * scale)) // 2 * 2)


class PreviewTap:
    """One source node's preview (as ``PreviewSpec`` says): the watched set, a rate gate per stream,
    the encoder thread.

    ``wanted()`` returns the streams the supervisor last asked for (read from the worker's control
    link; cheap and thread-safe). ``offer`` is called from the node thread, everything else from
    the tap's own thread.
    """

    def __init__(self, *, fps: float, max_width: int, quality: int, endpoint: str, zctx: zmq.Context[Any],
                 wanted: Callable[[], frozenset[str]], stop: threading.Event):
        self.fps, self.max_width, self.quality, self.endpoint = fps, max_width, quality, endpoint
        self.zctx, self.wanted, self.stop = zctx, wanted, stop
        self.encoded = 0
        self.dropped = 0  # replaced in the slot before they were encoded, or refused by a full socket
        self.failed = 0  # frames the encoder could not convert or encode
        self._gates: dict[str, GridGate] = {}
        self._slot: tuple[str, float, float, Any] | None = None
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None
        self._scaler: Any = None

    def watching(self, stream: str) -> bool:
        return stream in self.wanted()

    def due(self, stream: str) -> bool:
        """Whether a frame of ``stream`` offered now would be taken (the gate does not move)."""
        gate = self._gates.get(stream)
        return gate is None or time.monotonic() >= gate.next_time()

    def offer(self, item: VideoFrame) -> None:
        """Take ``item.native`` for the preview when its stream is watched and a frame is due."""
        native, item.native = item.native, None
        if native is None or not self.watching(item.stream):
            return
        gate = self._gates.get(item.stream)
        if gate is None:
            gate = self._gates[item.stream] = GridGate(self.fps)
        if not gate.keep(time.monotonic()):
            return
        with self._ready:
            if self._slot is not None:
                self.dropped += 1
            self._slot = (item.stream, item.t, item.wall, native)
            self._ready.notify()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="preview", daemon=True)
            self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait for the encoder thread (it ends within a poll interval of ``stop``), before the
        worker's ZeroMQ context is terminated and its interpreter exits."""
        if self._thread is not None:
            self._thread.join(timeout)

    def status(self) -> dict[str, Any]:
        return {"watched": sorted(self.wanted()), "encoded": self.encoded, "dropped": self.dropped,
                "failed": self.failed}

    def _run(self) -> None:
        import cv2

        sock = self.zctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, PREVIEW_HWM)
        edge_connect(sock, self.endpoint)
        sock.connect(self.endpoint)
        params = [cv2.IMWRITE_JPEG_QUALITY, self.quality]
        try:
            while not self.stop.is_set():
                with self._ready:
                    if self._slot is None:
                        self._ready.wait(0.1)
                    taken, self._slot = self._slot, None
                if taken is None:
                    continue
                stream, t, wall, native = taken
                try:
                    image = self._bgr(native)
                    ok, jpeg = cv2.imencode(".jpg", image, params)
                except Exception:  # a frame format the scaler cannot take: counted, the source goes on
                    ok = False
                if not ok:
                    self.failed += 1
                    continue
                frame = PreviewFrame(stream, t, wall, image.shape[1], image.shape[0], jpeg.tobytes())
                try:
                    sock.send_multipart(encode(frame), flags=zmq.NOBLOCK, copy=False)
                    self.encoded += 1
                except zmq.Again:
                    self.dropped += 1
        finally:
            sock.close()

    def _bgr(self, native: Any) -> np.ndarray:
        """The frame at the preview's size, as BGR: scaled inside the colour conversion (swscale)
        for a decoded frame, by OpenCV for an array."""
        if isinstance(native, np.ndarray):
            import cv2

            w, h = preview_size(native.shape[1], native.shape[0], self.max_width)
            if (w, h) == (native.shape[1], native.shape[0]):
                return native
            return cv2.resize(native, (w, h), interpolation=cv2.INTER_AREA)
        import av

        if self._scaler is None:
            self._scaler = av.video.reformatter.VideoReformatter()
        w, h = preview_size(native.width, native.height, self.max_width)
        interpolation = "AREA" if w < native.width else None
        out = self._scaler.reformat(native, format="bgr24", width=w, height=h, interpolation=interpolation,
                                    threads=1)
        return np.ascontiguousarray(out.to_ndarray())
