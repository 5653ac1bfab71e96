"""Frame transport between two processes: the engine's data path vs raw pyzmq.

Both sides move the same 1280x720 BGR frames from one process to another in the same run:
- engine: ``OutputPort`` -> shared-memory ring + descriptor on an ipc PUSH socket -> ``InputPort``
  (the receiver gets a numpy view, then releases the slot);
- baseline: pyzmq ``ipc://`` PUSH/PULL with ``copy=False`` of the same arrays, as a user would write it.
Prints frames/s, p50/p99 latency (send to receive) and the ratio engine/baseline.

    python bench/transport.py [--frames 600] [--width 1280 --height 720]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from avstream.engine.items import EndOfStream, VideoFrame
from avstream.engine.transport.edges import EdgeSpec, Inbox, InputPort, OutputPort


def pool(width: int, height: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(8)]


def engine_sender(edge: EdgeSpec, ring_dir: str, n: int, width: int, height: int) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    out = OutputPort(ctx, "bench", [edge], Path(ring_dir), threading.Event())
    frames = pool(width, height)
    for i in range(n):
        out.send(VideoFrame("s", i / 25, time.time(), frames[i % len(frames)]))
    out.send(EndOfStream("s"))
    out.close()
    ctx.term()


def engine_receiver(edge: EdgeSpec, ring_dir: str, ready: Any, result: Any) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    stop = threading.Event()
    inbox = Inbox()
    port = InputPort(ctx, edge, inbox, Path(ring_dir), stop)
    port.ready.wait()
    ready.set()
    lat, first = [], None
    checksum = 0
    while True:
        got = inbox.get(10)
        if got is None or isinstance(got[1], EndOfStream):
            break
        item = got[1]
        assert isinstance(item, VideoFrame)
        now = time.time()
        first = first or now
        checksum += int(item.image[0, 0, 0])
        lat.append(now - item.wall)
        item.release()
    result.put((lat, first, time.time(), checksum))
    stop.set()
    port.thread.join(1)
    ctx.destroy(linger=0)


def raw_sender(endpoint: str, n: int, width: int, height: int) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 2)
    sock.connect(endpoint)
    frames = pool(width, height)
    for i in range(n):
        sock.send_multipart([np.float64(time.time()).tobytes(), frames[i % len(frames)]], copy=False)
    sock.send_multipart([b"end", b""])
    sock.close(linger=5000)
    ctx.term()


def raw_receiver(endpoint: str, ready: Any, result: Any, width: int, height: int) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, 2)
    sock.bind(endpoint)
    ready.set()
    lat, first = [], None
    checksum = 0
    while True:
        head, body = sock.recv_multipart(copy=False)
        if head.bytes == b"end":
            break
        now = time.time()
        first = first or now
        image = np.frombuffer(body.buffer, np.uint8).reshape(height, width, 3)
        checksum += int(image[0, 0, 0])
        lat.append(now - float(np.frombuffer(head.bytes, np.float64)[0]))
    result.put((lat, first, time.time(), checksum))
    sock.close()
    ctx.term()


def measure(kind: str, n: int, width: int, height: int) -> dict[str, float]:
    mpc = mp.get_context("spawn")
    ready, result = mpc.Event(), mpc.Queue()
    with tempfile.TemporaryDirectory(prefix="avsb-") as tmp:
        endpoint = f"ipc://{tmp}/edge"
        if kind == "engine":
            edge = EdgeSpec("a", "b", "media", "block", 8, endpoint, 0)
            recv = mpc.Process(target=engine_receiver, args=(edge, tmp, ready, result))
            send = mpc.Process(target=engine_sender, args=(edge, tmp, n, width, height))
        else:
            recv = mpc.Process(target=raw_receiver, args=(endpoint, ready, result, width, height))
            send = mpc.Process(target=raw_sender, args=(endpoint, n, width, height))
        recv.start()
        ready.wait(30)
        send.start()
        lat, first, last, _ = result.get(timeout=300)
        send.join(30)
        recv.join(30)
    lat_ms = np.array(lat[10:]) * 1000  # skip start-up
    return {"fps": (len(lat) - 1) / (last - first), "p50": float(np.percentile(lat_ms, 50)), "p99": float(np.percentile(lat_ms, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"engine": [], "raw": []}
    for r in range(args.repeats):  # interleaved so machine noise hits both sides alike
        for kind in ("raw", "engine"):
            m = measure(kind, args.frames, args.width, args.height)
            results[kind].append(m)
            print(f"run {r + 1} {kind:<6} {m['fps']:8.1f} frames/s  p50 {m['p50']:6.2f} ms  p99 {m['p99']:6.2f} ms", flush=True)
    best = {k: max(v, key=lambda m: m["fps"]) for k, v in results.items()}
    med = {k: float(np.median([m["fps"] for m in v])) for k, v in results.items()}
    print(f"\n{args.width}x{args.height} BGR, {args.frames} frames per run, {args.repeats} runs each")
    for k in ("raw", "engine"):
        print(f"{k:<7} median {med[k]:8.1f} frames/s   best run p50 {best[k]['p50']:.2f} ms  p99 {best[k]['p99']:.2f} ms")
    print(f"ratio engine/raw throughput (median): {med['engine'] / med['raw']:.2f}x  (target >= 2x)")


if __name__ == "__main__":
    main()
