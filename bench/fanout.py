"""Fan-out: one source read by 1 and by 4 window nodes, in the same run.

1. transport: a sender process with an ``OutputPort`` of N media edges and a reader process with N
   consumers, each in its own thread doing with every frame what the window node does (copy it out of
   shared memory, release the slot), as the monitor pipeline's window nodes share one process. Frames sent as fast as the readers take them (``block``): 1280x720 to every
   reader (a source without fits), and one 112x112 image flagged for all readers (fitted frames).
2. pipeline: ``avstream run`` of a 1280x720 25 fps clip (``realtime: false``): the source and N
   window nodes (2 s windows at 8 fps, 112x112, in one process, as in the monitor pipeline).

Prints frames/s and CPU per frame (every process, user + system), and the 4-reader / 1-reader
ratios; ``extra reader`` is the CPU one more reader adds per frame.

    python bench/fanout.py [--frames 600] [--seconds 20] [--repeats 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq
from clips import clip_720p  # bench/ is the script's folder

from avstream.engine.items import EndOfStream, MediaFit, VideoFrame
from avstream.engine.transport.edges import EdgeSpec, Inbox, InputPort, OutputPort

REPO = Path(__file__).resolve().parents[1]
FIT = MediaFit(112, 112, 8.0, 16000)


def cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def sender(edges: list[EdgeSpec], ring_dir: str, n: int, size: tuple[int, int], fitted: bool, result: Any) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    out = OutputPort(ctx, "src", edges, Path(ring_dir), threading.Event())
    rng = np.random.default_rng(0)
    pool = [rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8) for _ in range(4)]
    start = cpu_s()  # start-up (imports, sockets) is not the transport's cost
    for i in range(n):
        image = pool[i % len(pool)]
        out.send(VideoFrame("s", i / 25, time.time(), image, fitted={FIT.frame_key: image} if fitted else None))
    out.send(EndOfStream("s"))
    spent = cpu_s() - start
    out.close()
    ctx.term()
    result.put(("sender", spent, 0.0, 0.0))


def readers_process(edges: list[EdgeSpec], ring_dir: str, ready: Any, result: Any) -> None:
    """N window-like consumers in one process, each in its own thread (a worker's layout)."""
    ctx: zmq.Context[Any] = zmq.Context()
    stop = threading.Event()
    inboxes = [Inbox() for _ in edges]
    ports = [InputPort(ctx, e, box, Path(ring_dir), stop) for e, box in zip(edges, inboxes, strict=True)]
    for port in ports:
        port.ready.wait()
    spans: list[tuple[float, float]] = []

    def consume(inbox: Inbox) -> None:
        first = last = 0.0
        while True:
            got = inbox.get(30)
            if got is None or isinstance(got[1], EndOfStream):
                break
            frame = got[1]
            assert isinstance(frame, VideoFrame)
            first = first or time.perf_counter()
            frame.image.copy()  # what the window node does with a frame it keeps: a copy, then release
            frame.release()
            last = time.perf_counter()
        spans.append((first, last))

    threads = [threading.Thread(target=consume, args=(box,)) for box in inboxes]
    start = cpu_s()  # start-up (imports, sockets) is not the transport's cost
    ready.put(1)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spent = cpu_s() - start
    stop.set()
    for port in ports:
        port.thread.join(1)
    ctx.destroy(linger=0)
    result.put(("readers", spent, min(f for f, _ in spans), max(last for _, last in spans)))


def transport_run(readers: int, n: int, size: tuple[int, int], fitted: bool) -> tuple[float, float, float]:
    """(frames/s at the slowest reader, CPU ms per frame over both processes, of which the sender's)."""
    mpc = mp.get_context("spawn")
    ready, result = mpc.Queue(), mpc.Queue()
    with tempfile.TemporaryDirectory(prefix="avsf-") as tmp:
        edges = [EdgeSpec("src", f"w{i}", "media", "block", 8, f"ipc://{tmp}/e{i}", i, FIT if fitted else None)
                 for i in range(readers)]
        recv = mpc.Process(target=readers_process, args=(edges, tmp, ready, result))
        recv.start()
        ready.get(timeout=60)
        send = mpc.Process(target=sender, args=(edges, tmp, n, size, fitted, result))
        send.start()
        reports = [result.get(timeout=600) for _ in range(2)]
        for p in (send, recv):
            p.join(30)
    first, last = next((f, la) for kind, _, f, la in reports if kind == "readers")
    fps = (n - 1) / (last - first)
    cpu = sum(c for _, c, _, _ in reports)
    sent = sum(c for kind, c, _, _ in reports if kind == "sender")
    return fps, cpu / n * 1e3, sent / n * 1e3


PIPELINE = """\
version: 1
name: fanout
streams:
  cam0: {{uri: {clip}, realtime: false}}
nodes:
{windows}
"""


def pipeline_run(clip: Path, readers: int, folder: Path) -> tuple[float, float, int]:
    """(wall s, CPU s of every process, frames the source delivered) of one run with ``readers`` windows."""
    windows = "\n".join(f"  w{i}: {{type: avstream/av_window@v1, inputs: [cam0], process: windows, params: "
                        f"{{seconds: 2.0, hop: 1.0, fps: 8, width: 112, height: 112}}}}" for i in range(readers))
    path = folder / f"fanout{readers}.yaml"
    path.write_text(PIPELINE.format(clip=clip, windows=windows))
    status = folder / f"fanout{readers}.status.jsonl"
    cmd = [sys.executable, "-m", "avstream.engine.cli", "run", str(path), "--quiet", "--publish", "tcp://127.0.0.1:0",
           "--status-json", str(status)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"avstream run failed:\n{res.stderr[-2000:]}")
    import json

    final = json.loads(status.read_text().splitlines()[-1])
    frames = int(next(n for n in final["nodes"] if n["id"] == "cam0")["counters"].get("frames_out", 0))
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=600, help="frames per transport run")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the pipeline clip")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "avstream-bench"))
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}; best of {args.repeats} runs, 1 and 4 readers interleaved", flush=True)
    cases = [("1280x720 to every reader", (1280, 720), False), ("112x112 fitted, one image", (112, 112), True)]
    for label, size, fitted in cases:
        best: dict[int, tuple[float, float, float]] = {}
        for _ in range(args.repeats):
            for readers in (1, 4):
                fps, cpu, sent = transport_run(readers, args.frames, size, fitted)
                old = best.get(readers)
                best[readers] = (max(fps, old[0]), *min((cpu, sent), old[1:])) if old else (fps, cpu, sent)
        (f1, c1, s1), (f4, c4, s4) = best[1], best[4]
        print(f"transport, {label}:\n"
              f"  1 reader : {f1:7.0f} frames/s  {c1:6.3f} ms CPU/frame (sender {s1:.3f})\n"
              f"  4 readers: {f4:7.0f} frames/s  {c4:6.3f} ms CPU/frame (sender {s4:.3f})\n"
              f"  ratio 4/1: {f4 / f1:.2f}x frames/s, {c4 / c1:.2f}x CPU; an extra reader adds "
              f"{(c4 - c1) / 3:.3f} ms CPU/frame, {(s4 - s1) / 3:.3f} of it in the sender", flush=True)
    folder = Path(args.cache)
    folder.mkdir(parents=True, exist_ok=True)
    clip = clip_720p(folder, args.seconds)
    runs: dict[int, tuple[float, float, int]] = {}
    for _ in range(args.repeats):
        for readers in (1, 4):
            got = pipeline_run(clip, readers, folder)
            if readers not in runs or got[1] < runs[readers][1]:
                runs[readers] = got
    (w1, c1, n1), (w4, c4, n4) = runs[1], runs[4]
    print(textwrap.dedent(f"""\
        pipeline, {args.seconds:.0f} s 1280x720 25 fps clip, windows of 112x112 at 8 fps:
          1 window : wall {w1:6.2f} s  cpu {c1:6.2f} s  {n1 / w1:6.1f} frames/s  {c1 / max(n1, 1) * 1e3:6.2f} ms CPU/frame
          4 windows: wall {w4:6.2f} s  cpu {c4:6.2f} s  {n4 / w4:6.1f} frames/s  {c4 / max(n4, 1) * 1e3:6.2f} ms CPU/frame
          ratio 4/1: wall {w4 / w1:.2f}x, cpu {c4 / c1:.2f}x; extra window {(c4 - c1) / 3 / max(n4, 1) * 1e3:.2f} ms CPU/frame"""))


if __name__ == "__main__":
    main()
