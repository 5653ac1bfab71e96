"""Overload: more live input than the graph can take (8 live 1920x1080 50 fps streams on 2 cores).

Eight HTTP servers on loopback each send a 1920x1080 50 fps H.264 clip (every frame a reference:
none can be skipped undecoded) in a loop at media speed
(copied, not re-encoded, so the servers cost next to nothing); the monitor pipeline (bench/livegraph.py
layout: one process per role) reads all eight, pinned to ``--cores`` CPUs. Measured after the
pipeline's first results, over ``--seconds``:

- overload itself: the frames dropped because decoding fell behind real time (the sources'
  ``frames_dropped_lag``, docs/capture.md), the media the sources' hand-over queues dropped
  (``capture_drops``) and the drops the window nodes counted on their inputs (``drop_oldest`` edges
  for live sources: engine/transport/edges.py); items (frames and audio chunks) per second the
  sources sent against those the window nodes took (each item goes to the four window nodes);
- latency: the 95th percentile of ``latency_ms`` of the results that arrived in each quarter of
  the measured time; bounded means the last quarter's is at most ``LATENCY_FACTOR`` times the
  second quarter's (the first is start-up);
- drops against the policy: only media is dropped, results and events never (no ``seq`` gap on the
  PUB socket); the drops are in the nodes' counters of the status;
- memory: PSS and RSS per process, the median of the last quarter against that of the second
  quarter: RSS at most ``MEMORY_FACTOR`` times, PSS that plus ``PSS_SLACK_MB``.

    python bench/overload.py [--seconds 120] [--streams 8] [--cores 2] [--size 1920x1080] [--fps 50]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import livegraph as lg  # noqa: E402 - bench/ is not a package

DENSE_H264 = ["-c:v", "libx264", "-preset", "veryfast", "-bf", "0", "-g", "50", "-pix_fmt", "yuv420p",
              "-c:a", "aac", "-b:a", "48k"]
LATENCY_FACTOR = 3.0
LATENCY_SLACK_MS = 1000.0  # on top of the factor: a shared machine's scheduling noise at small latencies
MEMORY_FACTOR = 1.25
# PSS splits shared pages among every process mapping them, other programs' included: on a shared
# machine it swings by tens of MB while RSS stays flat (bench/soak.py's plots), hence the slack.
PSS_SLACK_MB = 32.0


def p95(values: list[float]) -> float:
    return sorted(values)[min(len(values) - 1, int(0.95 * len(values)))] if values else 0.0


def quarters(items: list[Any], start: float, end: float, at: Any) -> list[list[Any]]:
    span = (end - start) / 4
    return [[x for x in items if start + i * span <= at(x) < start + (i + 1) * span] for i in range(4)]


# What a live source drops when the graph or its own decoding is slower than real time (docs/capture.md)
SOURCE_DROPS = ("capture_drops", "frames_dropped_lag")


def node_totals(status: dict[str, Any], kind: str) -> dict[str, dict[str, int]]:
    """Per node whose id starts with ``kind``: items in and out, drops, queue and the sources' drop
    counters, from one status object."""
    return {n["id"]: {"in": n["items_in"], "out": n["items_out"], "drops": n["drops"], "queue": n["queue"],
                      **{c: int(n.get("counters", {}).get(c, 0)) for c in SOURCE_DROPS}}
            for n in status.get("nodes", []) if n["id"].startswith(kind)}


def run_overload(folder: Path, seconds: float = 120.0, streams: int = 8, cores: int = 2, width: int = 1920,
                 height: int = 1080, fps: int = 50, every: float = 2.0, log: Any = print) -> dict[str, Any]:
    # CABAC, deblocking and no B-frames: every frame is a reference the decoder must decode in full
    clip = lg.make_clip(folder / f"overload-{width}x{height}p{fps}.mkv", 0, 10, width, height, fps, DENSE_H264)
    servers = [lg.http_server(i, folder, width, height, clip=clip) for i in range(streams)]
    for server in servers:
        server.start()
    ids = [f"cam{i}" for i in range(streams)]
    pipeline = lg.monitor_pipeline({sid: s.uri for sid, s in zip(ids, servers, strict=True)}, folder / "overload.yaml")
    cpus = set(sorted(os.sched_getaffinity(0))[:cores])
    run = lg.Run(pipeline, folder, folder / "results.jsonl", cpus=cpus).start()
    pss: list[tuple[float, str, int, int]] = []  # (wall, role, PSS, RSS)
    try:
        run.wait_results(("highlight",), ids, timeout=240)
        start = time.time()
        while time.time() - start < seconds:
            if run.proc is not None and run.proc.poll() is not None:
                raise RuntimeError(f"avstream run ended under overload:\n{run.log_text()[-2000:]}")
            for role, pid in [("supervisor", run.pid), *run.workers().items()]:
                try:
                    mem = psutil.Process(pid).memory_full_info()
                    pss.append((time.time(), role, mem.pss, mem.rss))
                except psutil.Error:
                    pass
            run.note_sockets()
            time.sleep(every)
        end = time.time()
    finally:
        rc = run.stop()
        for server in servers:
            server.stop()
    left = run.leftovers()
    rec = run.recorder
    assert rec is not None
    in_run = [m for m in rec.statuses() if start <= m.at <= end]
    first, last = in_run[0], in_run[-1]
    dt = last.at - first.at
    src0, src1 = node_totals(first.header, "cam"), node_totals(last.header, "cam")
    win0, win1 = node_totals(first.header, "w_"), node_totals(last.header, "w_")
    offered = sum(v["out"] - src0[k]["out"] for k, v in src1.items()) / dt
    taken = sum(v["in"] - win0[k]["in"] for k, v in win1.items()) / dt
    dropped = sum(v["drops"] - win0[k]["drops"] for k, v in win1.items())
    source_dropped = {c: sum(v[c] - src0[k][c] for k, v in src1.items()) for c in SOURCE_DROPS}
    final = rec.statuses()[-1].header
    results = [m for m in rec.results() if start <= m.at <= end]
    lat = [[float(m.header["latency_ms"]) for m in q] for q in quarters(results, start, end, lambda m: m.at)]
    roles = sorted({p[1] for p in pss})
    memory: dict[str, dict[str, float]] = {}
    for role in roles:
        qs = quarters([p for p in pss if p[1] == role], start, end, lambda p: p[0])
        if all(qs):
            memory[role] = {f"q{i + 1}_mb": statistics.median(p[2] for p in q) / 1e6 for i, q in enumerate(qs)}
            memory[role].update({f"rss_q{i + 1}_mb": statistics.median(p[3] for p in q) / 1e6 for i, q in enumerate(qs)})
    per_window = {k: {"in": v["in"], "drops": v["drops"], "queue": v["queue"]} for k, v in node_totals(final, "w_").items()}
    return {
        "streams": streams, "size": f"{width}x{height}", "fps": fps, "cores": sorted(cpus), "seconds": end - start,
        "exit_code": rc, "leftovers": left,
        "offered_items_per_s": offered, "taken_items_per_s": taken, "drops_in_run": dropped,
        "source_drops_in_run": source_dropped,
        "drops_final": sum(v["drops"] for v in per_window.values()), "per_window": per_window,
        "sources_final": node_totals(final, "cam"),
        "source_counters": {n["id"]: n.get("counters", {}) for n in final.get("nodes", []) if n["id"].startswith("cam")},
        "source_extra": {n["id"]: n.get("extra", {}) for n in final.get("nodes", []) if n["id"].startswith("cam")},
        "latency_p95_ms": [p95(q) for q in lat], "results_per_quarter": [len(q) for q in lat],
        "pub": lg.check_pub(rec.messages), "memory": memory,
    }


def summary(r: dict[str, Any]) -> str:
    lat = r["latency_p95_ms"]
    mem = ", ".join(f"{k} " + "/".join(f"{v[f'q{i}_mb']:.0f}" for i in range(1, 5)) + " MB (RSS "
                    + "/".join(f"{v[f'rss_q{i}_mb']:.0f}" for i in range(1, 5)) + ")" for k, v in r["memory"].items())
    return "\n".join([
        f"overload: {r['streams']} live {r['size']} streams on CPUs {r['cores']}, {r['seconds']:.0f} s measured",
        f"  items offered by the sources {r['offered_items_per_s']:.1f}/s, taken by the window nodes "
        f"{r['taken_items_per_s']:.1f}/s (x{r['taken_items_per_s'] / max(r['offered_items_per_s'], 1e-9):.2f} of "
        f"4 windows per stream); window-input drops {r['drops_in_run']} in the run, {r['drops_final']} in all; "
        f"source drops {r['source_drops_in_run']} (frames offered {r['streams'] * r['fps']}/s)",
        f"  latency p95 per quarter (ms): {', '.join(f'{v:.0f}' for v in lat)}; last/second "
        f"x{lat[3] / max(lat[1], 1e-9):.2f} (bound x{LATENCY_FACTOR:g} + {LATENCY_SLACK_MS:g} ms); results per quarter {r['results_per_quarter']}",
        f"  source reconnects {sum(int(c.get('reconnects', 0)) for c in r['source_counters'].values())}; "
        f"PUB: {r['pub']['messages']} messages, seq problems {len(r['pub']['seq_problems'])}, gaps {r['pub']['gaps']}",
        f"  PSS per quarter (medians): {mem}",
        f"  exit code {r['exit_code']}, left after stop: {r['leftovers']}",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--fps", type=int, default=50)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="avs-overload-") as tmp:
        print(summary(run_overload(Path(tmp), args.seconds, args.streams, args.cores, width, height, args.fps)))


if __name__ == "__main__":
    main()
