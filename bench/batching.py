"""Cross-stream batching: N streams through one batched encoder vs N unbatched encoders, same run.

Both layouts run as real pipelines (``avstream run``, one process per node, real sockets), with N
synthetic streams each cut by its own window node:

- batched:   N windows nodes → one encoder (``max_batch: N``, ``max_wait_ms``) serving every stream;
- unbatched: N windows nodes → N encoders, one per stream, each in its own process (batch 1).

Two measurements per layout, interleaved (this machine is shared, so both see the same load):

1. saturation (``realtime: false``, sources as fast as they decode): windows per second end to end
   (first to last result) and the encoders' CPU seconds per window;
2. real time (``realtime: true``): p50 / p99 result latency (emit wall − capture wall of the window's
   last sample) and the encoders' CPU per window.

    python bench/batching.py [--streams 4] [--seconds 20] [--model builtin:highlight] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pipeline(streams: int, seconds: float, realtime: bool, batched: bool, model: str, node_type: str,
             wait_ms: float) -> str:
    lines = ["version: 1", "name: batching-bench", "streams:"]
    for i in range(streams):
        lines.append(f"  s{i}: {{uri: \"synthetic://scene?seed={i + 1}&duration={seconds:g}\", "
                     f"realtime: {str(realtime).lower()}}}")
    lines.append("nodes:")
    for i in range(streams):
        lines.append(f"  w{i}: {{type: avstream/av_window@v1, inputs: [s{i}]}}")
    common = f"model: \"{model}\", threads: 1"
    if batched:
        ins = ", ".join(f"w{i}" for i in range(streams))
        lines.append(f"  enc: {{type: {node_type}, inputs: [{ins}], "
                     f"params: {{{common}, max_batch: {streams}, max_wait_ms: {wait_ms:g}}}}}")
    else:
        for i in range(streams):
            lines.append(f"  enc{i}: {{type: {node_type}, inputs: [w{i}], params: {{{common}}}}}")
    lines += ["outputs:", f"  publish: {{endpoint: \"tcp://127.0.0.1:{free_port()}\"}}"]
    return "\n".join(lines) + "\n"


def encoder_cpu(root: int, seen: dict[int, float]) -> None:
    """CPU seconds of the encoder worker processes (named ``avs:enc...``), sampled until they exit."""
    try:
        for child in psutil.Process(root).children(recursive=True):
            try:
                if child.name().startswith("avs:enc"):
                    t = child.cpu_times()
                    seen[child.pid] = t.user + t.system
            except psutil.Error:
                continue
    except psutil.Error:
        pass


def run_once(yaml_text: str, work: Path, timeout: float) -> dict[str, Any]:
    path = work / "p.yaml"
    path.write_text(yaml_text)
    jsonl = work / "out.jsonl"
    jsonl.unlink(missing_ok=True)
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "avstream.engine.cli", "run", str(path), "--jsonl", str(jsonl),
                             "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    cpu: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            encoder_cpu(proc.pid, cpu)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        raise RuntimeError(f"run did not finish in {timeout:.0f} s") from None
    finally:
        done.set()
        sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"avstream run failed ({proc.returncode}): {err.strip()[-400:]}")
    results = [json.loads(x) for x in jsonl.read_text().splitlines()]
    results = [r for r in results if r["kind"] != "event"]
    walls = [r["wall"] for r in results]
    lat = sorted(r["latency_ms"] for r in results)
    span = max(walls) - min(walls) if len(walls) > 1 else float("nan")
    return {"results": len(results), "per_s": (len(results) - 1) / span if span > 0 else float("nan"),
            "p50": lat[len(lat) // 2], "p99": lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "cpu_per_window_ms": 1e3 * sum(cpu.values()) / max(1, len(results)), "wall": time.time() - t0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20.0, help="media seconds per stream")
    ap.add_argument("--model", default="builtin:highlight")
    ap.add_argument("--node", default="avstream/highlight@v1", help="encoder node type")
    ap.add_argument("--wait-ms", type=float, default=50.0, help="max_wait_ms of the batched encoder")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per layout and mode (best counts)")
    args = ap.parse_args()
    cpus = len(os.sched_getaffinity(0))
    print(f"batching bench: {args.streams} streams x {args.seconds:g} s, {args.model}, {cpus} CPUs", flush=True)
    table: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for _ in range(args.rounds):
            for mode, realtime in (("saturation", False), ("real time", True)):
                for layout, batched in (("batched", True), ("unbatched", False)):
                    text = pipeline(args.streams, args.seconds, realtime, batched, args.model, args.node, args.wait_ms)
                    try:
                        r = run_once(text, work, timeout=args.seconds * 2 + 40)
                    except RuntimeError as exc:
                        print(f"  {mode:<10} {layout:<9} failed: {exc}", flush=True)
                        continue
                    table.setdefault((mode, layout), []).append(r)
                    print(f"  {mode:<10} {layout:<9} {r['results']:4d} results  {r['per_s']:6.1f} windows/s  "
                          f"p50 {r['p50']:6.1f} ms  p99 {r['p99']:7.1f} ms  encoder CPU {r['cpu_per_window_ms']:5.2f} "
                          f"ms/window  ({r['wall']:.1f} s)", flush=True)

    def best(mode: str, layout: str, key: str, high: bool) -> float:
        vals = [r[key] for r in table.get((mode, layout), [])]
        return (max(vals) if high else min(vals)) if vals else float("nan")

    print("summary (best round of each):")
    sb, su = best("saturation", "batched", "per_s", True), best("saturation", "unbatched", "per_s", True)
    print(f"  saturation throughput: batched {sb:.1f} vs unbatched {su:.1f} windows/s -> ratio x{sb / su:.2f}")
    cb, cu = (best("saturation", lay, "cpu_per_window_ms", False) for lay in ("batched", "unbatched"))
    print(f"  encoder CPU per window at saturation: batched {cb:.2f} ms vs unbatched {cu:.2f} ms -> x{cu / cb:.2f} less")
    pb, pu = best("real time", "batched", "p99", False), best("real time", "unbatched", "p99", False)
    mb, mu = best("real time", "batched", "p50", False), best("real time", "unbatched", "p50", False)
    print(f"  real-time latency p50/p99: batched {mb:.1f}/{pb:.1f} ms vs unbatched {mu:.1f}/{pu:.1f} ms")
    rb, ru = (best("real time", lay, "cpu_per_window_ms", False) for lay in ("batched", "unbatched"))
    print(f"  encoder CPU per window in real time: batched {rb:.2f} ms vs unbatched {ru:.2f} ms -> x{ru / rb:.2f} less")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
