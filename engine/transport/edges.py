"""The data plane: ZeroMQ PUSH/PULL edges with shared-memory video and per-edge backpressure.

Each edge has one receiving socket (bound by the consumer) and one sending socket (connected by the
producer), so ZeroMQ's reconnection covers restarts on either side. Backpressure policies act in the
consumer's bounded queue:

- ``block``: when the queue is full the receiver stops reading; ZeroMQ's high-water marks fill up and
  the producer's send waits. Nothing is dropped.
- ``drop_oldest``: the receiver keeps reading; a full queue drops its oldest droppable item.
- ``latest``: like drop_oldest with room for a single droppable item: always the newest.

Only media samples and windows are droppable; stream info, events, results and end-of-stream markers
always get through. Every drop is counted and reported in the node's status.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from avstream.engine.items import NATIVE_FIT, AudioChunk, AVWindow, Item, MediaFit, VideoFrame
from avstream.engine.transport.shm import FrameRing, RingReader
from avstream.engine.transport.wire import decode, encode

POLICIES = ("block", "drop_oldest", "latest")


@dataclass
class EdgeSpec:
    src: str
    dst: str
    kind: str  # item kind carried
    policy: str = "block"
    size: int = 8  # receiving queue capacity
    endpoint: str = ""  # filled by the supervisor (the receiver binds it)
    reader: int = 0  # index of this edge among the src node's frame readers
    fit: MediaFit | None = None  # what the consumer takes from its source (window nodes); None: all as sent

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> EdgeSpec:
        """An edge from its ``asdict`` form (a compiled pipeline's JSON)."""
        fit = raw.get("fit")
        return EdgeSpec(**{**raw, "fit": MediaFit(**fit) if isinstance(fit, dict) else fit})


DROPPABLE = (VideoFrame, AudioChunk, AVWindow)
FRAME_HWM = 2  # frames in flight per edge inside ZeroMQ; the ring must cover queue + this
POLL_MS = 20  # stop is noticed within this; idle wake-ups are negligible


class OutputPort:
    """The sending side of all of one node's outgoing edges. Used from the node's thread only."""

    def __init__(self, ctx: zmq.Context[Any], node_id: str, edges: list[EdgeSpec], ring_dir: Path,
                 stop: threading.Event, use_shm: bool = True):
        self.stop = stop
        self.sockets: list[zmq.Socket[Any]] = []
        for edge in edges:
            sock = ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, FRAME_HWM if edge.kind == "media" else 64)
            sock.setsockopt(zmq.LINGER, 2000)
            # The consumer may bind a moment after we connect: retry fast (ZeroMQ's default is 100 ms).
            sock.setsockopt(zmq.RECONNECT_IVL, 5)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
            sock.connect(edge.endpoint)
            self.sockets.append(sock)
        frame_edges = [e for e in edges if e.kind == "media"]
        self.ring: FrameRing | None = None
        if use_shm and frame_edges:
            slots = sum(e.size + 2 * FRAME_HWM + 2 for e in frame_edges) + 2
            self.ring = FrameRing(ring_dir, node_id.replace("/", "_"), readers=len(edges), slots=slots)
        # which of a fitted frame's images each edge takes, and its flag byte in the ring
        self.frame_keys = [(e.fit or NATIVE_FIT).frame_key for e in edges]
        self.readers = [e.reader for e in edges]
        self.sent = 0

    def send(self, item: Item) -> bool:
        """Send to every edge; waits under backpressure. False when the engine is stopping."""
        if isinstance(item, VideoFrame) and item.fitted is not None:
            return self._send_fitted(item, item.fitted)
        desc = None
        if isinstance(item, VideoFrame) and self.ring is not None:
            desc = self.ring.write(item.image)
        frames = encode(item, desc)
        for sock in self.sockets:
            if not self._push(sock, frames):
                return False
        self.sent += 1
        return True

    def _send_fitted(self, frame: VideoFrame, fitted: dict[str, np.ndarray]) -> bool:
        """Each edge gets the image of its fit; each image goes into the ring once, flagged for the
        readers that get it; an edge whose fit did not take this frame is sent nothing."""
        groups: dict[int, tuple[np.ndarray, list[int]]] = {}
        for i, key in enumerate(self.frame_keys):
            image = fitted.get(key)
            if image is not None:
                groups.setdefault(id(image), (image, []))[1].append(i)
        # the largest first: a ring that has to grow does so before the smaller images take slots
        for image, edges in sorted(groups.values(), key=lambda g: -g[0].nbytes):
            desc = self.ring.write(image, [self.readers[i] for i in edges]) if self.ring is not None else None
            frames = encode(VideoFrame(frame.stream, frame.t, frame.wall, image), desc)
            for i in edges:
                if not self._push(self.sockets[i], frames):
                    return False
        self.sent += 1
        return True

    def _push(self, sock: zmq.Socket[Any], frames: list[Any]) -> bool:
        while True:
            try:
                sock.send_multipart(frames, copy=False, flags=zmq.NOBLOCK)
                return True
            except zmq.Again:
                if self.stop.is_set():
                    return False
                sock.poll(POLL_MS, zmq.POLLOUT)

    def close(self, linger_ms: int = 2000) -> None:
        for sock in self.sockets:
            sock.close(linger=linger_ms)
        if self.ring is not None:
            self.ring.close()


class Inbox:
    """Bounded per-edge queues of one node, filled by one receiver thread per edge."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.ports: list[InputPort] = []
        self._turn = 0

    def get(self, timeout: float) -> tuple[int, Item] | None:
        """The next item of any edge (round robin), or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                n = len(self.ports)
                for k in range(n):
                    i = (self._turn + k) % n
                    if self.ports[i].queue:
                        self._turn = (i + 1) % n
                        item = self.ports[i].queue.popleft()
                        self.cond.notify_all()
                        return i, item
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def depth(self) -> int:
        return sum(len(p.queue) for p in self.ports)

    def drops(self) -> int:
        return sum(p.dropped + p.reader.stale for p in self.ports)


class InputPort:
    """The receiving side of one edge: a thread reading its socket into a bounded queue."""

    def __init__(self, ctx: zmq.Context[Any], edge: EdgeSpec, inbox: Inbox, ring_dir: Path, stop: threading.Event):
        self.edge = edge
        self.inbox = inbox
        self.stop = stop
        self.queue: collections.deque[Item] = collections.deque()
        self.capacity = 1 if edge.policy == "latest" else edge.size
        self.reader = RingReader(ring_dir, edge.reader)
        self.dropped = 0
        self.received = 0
        self.ready = threading.Event()
        inbox.ports.append(self)
        self.thread = threading.Thread(target=self._run, args=(ctx,), name=f"in:{edge.src}->{edge.dst}", daemon=True)
        self.thread.start()

    def _attach(self, desc: dict[str, Any]) -> tuple[np.ndarray, Callable[[], None]] | None:
        got = self.reader.view(desc)
        if got is None:
            return None
        return got[0], lambda: self.reader.release(desc)

    def _run(self, ctx: zmq.Context[Any]) -> None:
        sock = ctx.socket(zmq.PULL)
        sock.setsockopt(zmq.RCVHWM, FRAME_HWM if self.edge.kind == "media" else 64)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(self.edge.endpoint)
        self.ready.set()
        try:
            self._loop(sock)
        except zmq.ZMQError:
            if not self.stop.is_set():
                raise
        finally:
            sock.close()

    def _loop(self, sock: zmq.Socket[Any]) -> None:
        while not self.stop.is_set():
            if self.edge.policy == "block":
                with self.inbox.cond:
                    if len(self.queue) >= self.capacity:
                        self.inbox.cond.wait(POLL_MS / 1000)
                        continue
            if not sock.poll(POLL_MS):
                continue
            frames = sock.recv_multipart(copy=False)
            item = decode([f.buffer for f in frames], self._attach)
            self.received += 1
            if item is None:  # its shared-memory slot was reclaimed: counted as stale
                continue
            self._put(item)

    def _put(self, item: Item) -> None:
        with self.inbox.cond:
            if self.edge.policy != "block" and isinstance(item, DROPPABLE):
                droppable = sum(1 for q in self.queue if isinstance(q, DROPPABLE))
                while droppable >= self.capacity:
                    for old in self.queue:
                        if isinstance(old, DROPPABLE):
                            self.queue.remove(old)
                            if isinstance(old, VideoFrame):
                                old.release()
                            self.dropped += 1
                            droppable -= 1
                            break
            self.queue.append(item)
            self.inbox.cond.notify_all()
