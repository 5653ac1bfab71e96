"""What CURVE costs on the results socket: messages/s and latency, plain vs CURVE, in one run.

The publisher is the engine's own results socket (``make_pub_socket``: XPUB, CURVE when given keys,
keys written by ``avstream keys``); the subscriber runs in another process and connects with the
engine's client helper (``client_socket``), over loopback TCP. Each message is a topic, a result
header and a payload (a 32x32 float16 heatmap by default, like a localization result).

- throughput: the publisher sends ``--messages`` as fast as the subscriber keeps up (a credit window
  on a side channel keeps the PUB from dropping); messages/s = received / elapsed;
- latency: one message at a time, publish to receive (both clocks are CLOCK_MONOTONIC on one host).

    python bench/curve_cost.py [--messages 20000] [--latency-samples 2000] [--payload 2048]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq

from avstream.engine.runtime.outputs import make_pub_socket
from avstream.engine.transport.curve import PublishSecurity, client_socket
from avstream.engine.transport.keys_cli import write_keys

WINDOW = 1000  # messages in flight before the publisher waits for the subscriber's credit


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def subscriber(endpoint: str, credit: str, keys: dict[str, str] | None, total: int, latency: int) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    sub = client_socket(ctx, keys["server"], keys["client"]) if keys else client_socket(ctx)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    back = ctx.socket(zmq.PUSH)
    back.connect(credit)
    back.send_json({"ready": True})
    got, first = 0, 0.0
    while got < total:
        sub.recv_multipart(copy=False)
        if got == 0:
            first = time.monotonic()
        got += 1
        if got % WINDOW == 0:
            back.send_json({"credit": got})
    elapsed = time.monotonic() - first
    delays = []
    for _ in range(latency):
        frames = sub.recv_multipart()
        delays.append(time.monotonic() - json.loads(frames[1])["sent"])
        back.send_json({"ack": True})
    back.send_json({"rate": (total - 1) / elapsed if elapsed > 0 else 0.0, "delays": delays})
    back.close(linger=2000)
    sub.close()
    ctx.term()


def measure(security: PublishSecurity | None, keys: dict[str, str] | None, messages: int, latency: int,
            payload: int) -> dict[str, float]:
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    ctx: zmq.Context[Any] = zmq.Context()
    pub, curve = make_pub_socket(ctx, endpoint, security)
    pub.setsockopt(zmq.SNDHWM, 0)
    credit = ctx.socket(zmq.PULL)
    credit_endpoint = f"ipc://{tempfile.mkdtemp()}/credit"
    credit.bind(credit_endpoint)
    proc = mp.get_context("spawn").Process(target=subscriber, args=(endpoint, credit_endpoint, keys, messages, latency))
    proc.start()
    credit.recv_json()
    while not pub.poll(100):  # XPUB: the subscription arrives once the (CURVE) handshake is done
        pass
    pub.recv()
    header = {"schema_version": 1, "kind": "localization", "stream": "cam0", "seq": 0, "wall": 0.0, "t0": 0.0,
              "t1": 1.0, "latency_ms": 1.0, "model": "bench@1", "score": 0.5, "peak": [0.5, 0.5],
              "payloads": [{"name": "heatmap", "dtype": "float16", "shape": [payload // 2]}]}
    body = b"\0" * payload
    sent, acked = 0, 0
    while sent < messages:
        if sent - acked >= WINDOW:
            acked = int(credit.recv_json()["credit"])
            continue
        header["seq"] = sent
        pub.send_multipart([b"localization.cam0", json.dumps(header).encode(), body], copy=False)
        sent += 1
    for _ in range(latency):
        header["sent"] = time.monotonic()
        pub.send_multipart([b"localization.cam0", json.dumps(header).encode(), body])
        while "ack" not in (reply := credit.recv_json()):
            pass
    del reply
    final: dict[str, Any] = {}
    while "rate" not in final:
        final = credit.recv_json()
    proc.join(30)
    pub.close(linger=0)
    credit.close(linger=0)
    if curve is not None:
        curve.stop()
    ctx.term()
    delays = sorted(final["delays"])
    return {"rate": float(final["rate"]), "p50_ms": statistics.median(delays) * 1000,
            "p99_ms": delays[min(len(delays) - 1, int(len(delays) * 0.99))] * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--latency-samples", type=int, default=2000)
    parser.add_argument("--payload", type=int, default=2048, help="payload bytes per message")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = write_keys(Path(tmp) / "keys")
        security = PublishSecurity(str(files["server secret key"]), str(files["client public key"].parent))
        keys = {"server": str(files["server public key"]), "client": str(files["client secret key"])}
        plain = measure(None, None, args.messages, args.latency_samples, args.payload)
        curve = measure(security, keys, args.messages, args.latency_samples, args.payload)
    print(f"{'':8} {'msg/s':>10} {'p50 ms':>8} {'p99 ms':>8}   ({args.messages} messages of "
          f"{args.payload} B payload; {args.latency_samples} latency samples; tcp loopback)")
    for name, r in (("plain", plain), ("CURVE", curve)):
        print(f"{name:8} {r['rate']:10.0f} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f}")
    print(f"CURVE/plain: throughput x{curve['rate'] / plain['rate']:.2f}, "
          f"p50 latency x{curve['p50_ms'] / plain['p50_ms']:.2f}, p99 latency x{curve['p99_ms'] / plain['p99_ms']:.2f}")


if __name__ == "__main__":
    main()
