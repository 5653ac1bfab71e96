"""The data plane: ZeroMQ PUSH/PULL edges with shared-memory video and per-edge backpressure.

Each edge has one receiving socket (bound by the consumer) and one sending socket (connected by the
producer), so ZeroMQ's reconnection covers restarts on either side; edges from one node to one
process share them (one endpoint): a message crosses, is received and parsed once per process.
Video frames fitted by their source (``VideoFrame.fitted``) go to each edge in the size of its
``EdgeSpec.fit``, and only to the edges whose fit took them. Backpressure policies act in the
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
from avstream.engine.transport.edgekeys import edge_bind, edge_connect
from avstream.engine.transport.private import bind_private
from avstream.engine.transport.shards import ShardRouter
from avstream.engine.transport.shm import FrameRing, RingReader
from avstream.engine.transport.wire import Rejects, WireError, encode, parse

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
    """The sending side of all of one node's outgoing edges. Used from the node's thread only.

    Edges with one endpoint (the supervisor gives the edges from a node to one process one endpoint)
    share a socket: a message crosses to that process once, naming the edges that take it when
    not all of them do.
    """

    def __init__(self, ctx: zmq.Context[Any], node_id: str, edges: list[EdgeSpec], ring_dir: Path,
                 stop: threading.Event, use_shm: bool = True, router: ShardRouter | None = None):
        """``router``: picks the edges of replicated consumers that take an item (by stream)."""
        self.stop = stop
        self.router = router
        self.sockets: list[zmq.Socket[Any]] = []
        self.socket_of: list[int] = []  # per edge: its socket
        by_endpoint: dict[str, int] = {}
        for edge in edges:
            k = by_endpoint.get(edge.endpoint)
            if k is None:
                k = by_endpoint[edge.endpoint] = len(self.sockets)
                sock = ctx.socket(zmq.PUSH)
                sock.setsockopt(zmq.SNDHWM, FRAME_HWM if edge.kind == "media" else 64)
                sock.setsockopt(zmq.LINGER, 2000)
                # The consumer may bind a moment after we connect: retry fast (ZeroMQ's default is 100 ms).
                sock.setsockopt(zmq.RECONNECT_IVL, 5)
                sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
                edge_connect(sock, edge.endpoint)  # CURVE on tcp edges between hosts
                sock.connect(edge.endpoint)
                self.sockets.append(sock)
            self.socket_of.append(k)
        # frames cross to another host inline: shared memory only reaches the readers of this one
        self.inline = [not e.endpoint.startswith("ipc://") for e in edges]
        frame_edges = [e for e, inline in zip(edges, self.inline, strict=True) if e.kind == "media" and not inline]
        self.ring: FrameRing | None = None
        if use_shm and frame_edges:
            slots = sum(e.size + 2 * FRAME_HWM + 2 for e in frame_edges) + 2
            self.ring = FrameRing(ring_dir, node_id.replace("/", "_"), readers=len(edges), slots=slots)
        # which of a fitted frame's images each edge takes, and its flag byte in the ring
        self.frame_keys = [(e.fit or NATIVE_FIT).frame_key for e in edges]
        self.readers = [e.reader for e in edges]
        self.on_socket = [sum(1 for k in self.socket_of if k == s) for s in range(len(self.sockets))]
        self.sent = 0

    def send(self, item: Item) -> bool:
        """Send to every edge that takes ``item``; waits under backpressure. False when the engine is stopping."""
        targets = self.router.targets(item) if self.router is not None else None
        if isinstance(item, VideoFrame) and item.fitted is not None:
            return self._send_fitted(item, item.fitted, targets)
        edges = list(range(len(self.socket_of))) if targets is None else targets
        desc = None
        shm_readers = [self.readers[i] for i in edges if not self.inline[i]]
        if isinstance(item, VideoFrame) and self.ring is not None and shm_readers:
            desc = self.ring.write(item.image, shm_readers)
        whole: dict[bool, list[Any]] = {}
        for s, sock in enumerate(self.sockets):
            mine = [i for i in edges if self.socket_of[i] == s]
            if not mine:
                continue
            inline = self.inline[mine[0]]
            if len(mine) == self.on_socket[s]:
                frames = whole.get(inline) or whole.setdefault(inline, encode(item, None if inline else desc))
            else:
                frames = encode(item, None if inline else desc, to=[self.readers[i] for i in mine])
            if not self._push(sock, frames, mine):
                return False
        self.sent += 1
        return True

    def _send_fitted(self, frame: VideoFrame, fitted: dict[str, np.ndarray], targets: list[int] | None) -> bool:
        """Each edge gets the image of its fit; each image goes into the ring once, flagged for the
        readers that get it; an edge whose fit did not take this frame is sent nothing."""
        groups: dict[int, tuple[np.ndarray, list[int]]] = {}
        for i, key in enumerate(self.frame_keys):
            image = fitted.get(key) if targets is None or i in targets else None
            if image is not None:
                groups.setdefault(id(image), (image, []))[1].append(i)
        # the largest first: a ring that has to grow does so before the smaller images take slots
        for image, edges in sorted(groups.values(), key=lambda g: -g[0].nbytes):
            local = [self.readers[i] for i in edges if not self.inline[i]]
            desc = self.ring.write(image, local) if self.ring is not None and local else None
            item = VideoFrame(frame.stream, frame.t, frame.wall, image)
            whole: dict[bool, list[Any]] = {}  # the message for a socket all of whose edges take the image
            for s, sock in enumerate(self.sockets):
                on_socket = [i for i in edges if self.socket_of[i] == s]
                if not on_socket:
                    continue
                inline = self.inline[on_socket[0]]
                mine = [self.readers[i] for i in on_socket]
                if len(mine) == self.on_socket[s]:
                    frames = whole.get(inline) or whole.setdefault(inline, encode(item, None if inline else desc))
                else:
                    frames = encode(item, None if inline else desc, to=mine)
                if not self._push(sock, frames, on_socket):
                    return False
        self.sent += 1
        return True

    def _push(self, sock: zmq.Socket[Any], frames: list[Any], edges: list[int]) -> bool:
        while True:
            try:
                sock.send_multipart(frames, copy=False, flags=zmq.NOBLOCK)
                return True
            except zmq.Again:
                if self.stop.is_set():
                    return False
                if self.router is not None and self.router.gone(edges):
                    self.router.dropped += 1  # its replica went down: the supervisor counts the gap
                    return True
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
        # ports of one link share its count (a port being set up may not have its link yet)
        links = {id(link): link for p in self.ports if (link := getattr(p, "link", None)) is not None}.values()
        return sum(p.dropped + p.reader.stale for p in self.ports) + sum(link.rejects.count for link in links)


class InputLink:
    """One bound receiving socket and its thread, shared by the input ports of one process that one
    producer feeds: a message is received and parsed once, then each edge it names gets its own item.

    With ``block`` edges the link stops reading while one of them is full (the producer then waits,
    as it would on that edge alone); the dropping policies keep reading and drop in their queues.
    """

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, kind: str, stop: threading.Event):
        self.ctx, self.endpoint, self.kind, self.stop = ctx, endpoint, kind, stop
        self.ports: dict[int, InputPort] = {}  # by reader index
        self.ready = threading.Event()
        self.rejects = Rejects(f"edge socket {endpoint}")  # malformed messages, dropped
        self.thread = threading.Thread(target=self._run, name=f"in:{endpoint.rsplit('/', 1)[-1]}", daemon=True)

    def add(self, port: InputPort) -> None:
        """Before ``start``: the socket is bound only once every port of the process is known."""
        self.ports[port.edge.reader] = port

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        sock = self.ctx.socket(zmq.PULL)
        sock.setsockopt(zmq.RCVHWM, FRAME_HWM if self.kind == "media" else 64)
        sock.setsockopt(zmq.LINGER, 0)
        edge_bind(self.ctx, sock, self.endpoint)
        bind_private(sock, self.endpoint)
        self.ready.set()
        try:
            self._loop(sock)
        except zmq.ZMQError:
            if not self.stop.is_set():
                raise
        finally:
            sock.close()

    def _loop(self, sock: zmq.Socket[Any]) -> None:
        ports = list(self.ports.values())
        blocking = [p for p in ports if p.edge.policy == "block"]
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        while not self.stop.is_set():
            full = next((p for p in blocking if len(p.queue) >= p.capacity), None)
            if full is not None:
                with full.inbox.cond:
                    if len(full.queue) >= full.capacity:
                        full.inbox.cond.wait(POLL_MS / 1000)
                continue
            if not poller.poll(POLL_MS):
                continue
            try:
                msg = parse([f.buffer for f in sock.recv_multipart(copy=False)])
            except WireError as exc:
                self.rejects.note(exc)
                continue
            for port in ports if msg.to is None else [self.ports[r] for r in msg.to if r in self.ports]:
                port.received += 1
                try:
                    item = msg.item(port.attach if msg.shm is not None else None)
                except WireError as exc:  # a descriptor outside the ring, or for no ring of ours
                    self.rejects.note(exc)
                    continue
                if item is not None:  # None: its shared-memory slot was reclaimed, counted as stale
                    port.put(item)


class InputPort:
    """The receiving side of one edge: a bounded queue, filled by the edge's :class:`InputLink`
    (given when the process shares one among its ports; else one of its own, started at once)."""

    def __init__(self, ctx: zmq.Context[Any], edge: EdgeSpec, inbox: Inbox, ring_dir: Path, stop: threading.Event,
                 link: InputLink | None = None):
        self.edge = edge
        self.inbox = inbox
        self.stop = stop
        self.queue: collections.deque[Item] = collections.deque()
        self.capacity = 1 if edge.policy == "latest" else edge.size
        self.reader = RingReader(ring_dir, edge.reader)
        self.dropped = 0
        self.received = 0
        inbox.ports.append(self)
        self.link = link or InputLink(ctx, edge.endpoint, edge.kind, stop)
        self.link.add(self)
        self.ready = self.link.ready
        self.thread = self.link.thread
        if link is None:
            self.link.start()

    def attach(self, desc: dict[str, Any]) -> tuple[np.ndarray, Callable[[], None]] | None:
        got = self.reader.view(desc)
        if got is None:
            return None
        return got[0], lambda: self.reader.release(desc)

    def put(self, item: Item) -> None:
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
