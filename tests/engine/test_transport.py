"""Edges over real ZeroMQ ipc sockets inside one process: policies, drops, shared-memory frames."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from avstream.engine.items import NATIVE_FIT, AudioChunk, EndOfStream, Event, MediaFit, VideoFrame
from avstream.engine.transport.edges import EdgeSpec, Inbox, InputPort, OutputPort
from avstream.engine.transport.wire import decode, encode

pytestmark = pytest.mark.timeout(30)


def make_edge(tmp_path: Path, policy: str, size: int, kind: str = "media") -> EdgeSpec:
    return EdgeSpec("src", "dst", kind, policy, size, endpoint=f"ipc://{tmp_path}/e0", reader=0)


def setup(tmp_path: Path, policy: str, size: int) -> tuple[zmq.Context[Any], OutputPort, Inbox, InputPort, threading.Event]:
    ctx: zmq.Context[Any] = zmq.Context()
    stop = threading.Event()
    edge = make_edge(tmp_path, policy, size)
    inbox = Inbox()
    port = InputPort(ctx, edge, inbox, tmp_path, stop)
    assert port.ready.wait(5)
    out = OutputPort(ctx, "src", [edge], tmp_path, stop)
    return ctx, out, inbox, port, stop


def test_wire_round_trip_of_every_item() -> None:
    chunk = AudioChunk("s", 1.5, 100.0, np.arange(8, dtype=np.float32), 16000)
    got = decode(encode(chunk))
    assert isinstance(got, AudioChunk) and got.t == 1.5 and got.sample_rate == 16000
    np.testing.assert_array_equal(got.samples, chunk.samples)
    ev = decode(encode(Event("stream_down", "s", {"error": "x"}, 1.0, 2.0)))
    assert isinstance(ev, Event) and ev.detail == {"error": "x"} and ev.t1 == 2.0
    assert decode(encode(EndOfStream("s"))) == EndOfStream("s")


def test_block_policy_delivers_everything_in_order_through_shared_memory(tmp_path: Path) -> None:
    ctx, out, inbox, port, stop = setup(tmp_path, "block", 2)
    n = 40

    def produce() -> None:
        for i in range(n):
            out.send(VideoFrame("s", i / 25, time.time(), np.full((72, 128, 3), i, np.uint8)))
        out.send(EndOfStream("s"))

    t = threading.Thread(target=produce)
    t.start()
    seen = []
    while True:
        got = inbox.get(5)
        assert got is not None
        item = got[1]
        if isinstance(item, EndOfStream):
            break
        assert isinstance(item, VideoFrame)
        assert not item.image.flags.owndata  # a view into the ring
        seen.append(int(item.image[0, 0, 0]))
        time.sleep(0.002)  # a slow consumer: the producer must wait, not drop
        item.release()
    t.join(5)
    assert seen == list(range(n))
    assert inbox.drops() == 0 and out.ring is not None and out.ring.stale_reclaims == 0
    stop.set()
    port.thread.join(2)
    out.close(0)
    ctx.destroy(linger=0)


@pytest.mark.parametrize("policy", ["drop_oldest", "latest"])
def test_dropping_policies_count_drops_and_keep_the_newest(tmp_path: Path, policy: str) -> None:
    ctx, out, inbox, port, stop = setup(tmp_path, policy, 3)
    n = 60
    for i in range(n):
        out.send(VideoFrame("s", i / 25, time.time(), np.full((8, 8, 3), i, np.uint8)))
    out.send(EndOfStream("s"))
    items: list[Any] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # wait until the end marker is queued behind the kept frames
        if any(isinstance(q, EndOfStream) for q in port.queue):
            break
        time.sleep(0.01)
    while (got := inbox.get(0.5)) is not None:
        items.append(got[1])
    frames = [it for it in items if isinstance(it, VideoFrame)]
    assert isinstance(items[-1], EndOfStream)  # never dropped
    cap = 1 if policy == "latest" else 3
    assert len(frames) <= cap
    assert int(frames[-1].image[0, 0, 0]) == n - 1
    assert inbox.drops() >= n - cap - 4  # what ZeroMQ still held when we looked is not a drop
    for f in frames:
        f.release()
    stop.set()
    port.thread.join(2)
    out.close(0)
    ctx.destroy(linger=0)


def test_each_edge_gets_the_image_of_its_fit_written_once_per_size(tmp_path: Path) -> None:
    fast, slow = MediaFit(12, 10, 8.0, 16000), MediaFit(12, 10, 4.0, 16000)
    edges = [EdgeSpec("src", f"w{i}", "media", "block", 8, endpoint=f"ipc://{tmp_path}/e{i}", reader=i, fit=fit)
             for i, fit in enumerate([fast, slow, None])]
    ctx: zmq.Context[Any] = zmq.Context()
    stop = threading.Event()
    inboxes = [Inbox() for _ in edges]
    ports = [InputPort(ctx, e, box, tmp_path, stop) for e, box in zip(edges, inboxes, strict=True)]
    assert all(p.ready.wait(5) for p in ports)
    out = OutputPort(ctx, "src", edges, tmp_path, stop)
    small, full = np.full((10, 12, 3), 1, np.uint8), np.full((40, 48, 3), 2, np.uint8)
    # the 4 fps fit does not take this one: its edge is sent nothing and holds no slot
    out.send(VideoFrame("s", 0.12, 0.0, small, fitted={fast.frame_key: small, NATIVE_FIT.frame_key: full}))
    assert out.ring is not None and out.ring.ring is not None
    flags = out.ring.ring.flags
    assert sorted(map(tuple, flags[flags.any(axis=1)].tolist())) == [(0, 0, 1), (1, 0, 0)]
    both = np.full((10, 12, 3), 3, np.uint8)
    out.send(VideoFrame("s", 0.25, 0.0, both, fitted={fast.frame_key: both, slow.frame_key: both}))
    assert sorted(map(tuple, flags[flags.any(axis=1)].tolist())) == [(0, 0, 1), (1, 0, 0), (1, 1, 0)]  # one slot
    out.send(VideoFrame("s", 0.5, 0.0, full))  # a plain frame (a source without fits): every edge
    out.send(EndOfStream("s"))
    got: list[list[tuple[float, int, tuple[int, ...]]]] = []
    for box in inboxes:
        seen: list[tuple[float, int, tuple[int, ...]]] = []
        while not isinstance(item := (box.get(5) or (0, None))[1], EndOfStream):
            assert isinstance(item, VideoFrame)
            seen.append((item.t, int(item.image[0, 0, 0]), item.image.shape))
            item.release()
        got.append(seen)
    assert got[0] == [(0.12, 1, (10, 12, 3)), (0.25, 3, (10, 12, 3)), (0.5, 2, (40, 48, 3))]
    assert got[1] == [(0.25, 3, (10, 12, 3)), (0.5, 2, (40, 48, 3))]
    assert got[2] == [(0.12, 2, (40, 48, 3)), (0.5, 2, (40, 48, 3))]
    assert not out.ring.ring.flags.any()  # every reader released what it was sent
    stop.set()
    for p in ports:
        p.thread.join(2)
    out.close(0)
    ctx.destroy(linger=0)
