"""Capture throughput and cost: the engine's file and network sources vs the FFmpeg CLI.

In one run, on the same 1280x720 25 fps H.264 + AAC clip and the same decoder thread count:
- decode to BGR frames as fast as possible, engine vs ``ffmpeg -threads N -i IN -map 0:v:0
  -pix_fmt bgr24 -f rawvideo /dev/null``: from the file (``FileReader``) and from a TCP stream an
  FFmpeg server sends unpaced (``NetworkReader``); frames/s and the ratio engine/CLI (target >= 0.9);
- CPU per real-time stream: the source node reading a live 720p25 + 16 kHz TCP stream (paced by the
  server, ``-re``) for ``--live-seconds``, as % of one core.

    python bench/capture.py [--seconds 20] [--threads 2] [--repeat 2] [--live-seconds 10]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from avstream.engine.capture.files import FileReader
from avstream.engine.capture.live import LiveSettings
from avstream.engine.capture.network import NetworkReader
from avstream.engine.items import AudioChunk, VideoFrame
from avstream.engine.node import NodeContext
from avstream.plugins.sources import FileSource, SourceParams

FFMPEG = shutil.which("ffmpeg") or "ffmpeg"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_clip(folder: Path, seconds: float) -> Path:
    clip = folder / f"bench720p_{seconds:g}s.ts"
    if not clip.exists():
        subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                        f"testsrc2=s=1280x720:r=25:d={seconds}", "-f", "lavfi", "-i",
                        f"sine=f=440:r=48000:d={seconds}", "-c:v", "libx264", "-preset", "veryfast", "-g", "50",
                        "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", "-f", "mpegts", "-y", str(clip)],
                       check=True)
    return clip


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def tcp_server(clip: Path, port: int, paced: bool) -> subprocess.Popen[bytes]:
    """An FFmpeg server sending ``clip`` once over TCP to one client."""
    cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", *(["-re"] if paced else []), "-i", str(clip),
           "-c", "copy", "-f", "mpegts", f"tcp://127.0.0.1:{port}?listen=1"]
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + 10
    while not _port_listening(port):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("the FFmpeg server did not start")
        time.sleep(0.02)
    return proc


def _port_listening(port: int) -> bool:
    """Listening, checked without connecting (the server takes one client only)."""
    hexport = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        if any(line.split()[1].endswith(hexport) and line.split()[3] == "0A" for line in lines):
            return True
    return False


def cli_fps(url: str, threads: int) -> tuple[float, float]:
    """The FFmpeg CLI decoding ``url`` to BGR rawvideo into /dev/null: (frames per wall second,
    frames per CPU second of that process)."""
    t = time.perf_counter()
    proc = subprocess.Popen([FFMPEG, "-hide_banner", "-nostdin", "-threads", str(threads), "-i", url, "-map",
                             "0:v:0", "-pix_fmt", "bgr24", "-f", "rawvideo", "-y", "/dev/null"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise RuntimeError(err[-500:])
    frames = int(err.rsplit("frame=", 1)[1].split()[0])
    return frames / wall, frames / (usage.ru_utime + usage.ru_stime)


def engine_file_fps(clip: Path, threads: int) -> tuple[float, float]:
    t, cpu = time.perf_counter(), time.process_time()
    reader = FileReader(str(clip), stream="bench", audio=False)
    # the same decoder thread count as the CLI's -threads
    vs = reader._vs  # noqa: SLF001 - the bench sets what FileReader leaves to FFmpeg's default
    assert vs is not None
    vs.codec_context.thread_count = threads
    n = sum(1 for item in reader.read() if isinstance(item, VideoFrame))
    reader.close()
    return n / (time.perf_counter() - t), n / (time.process_time() - cpu)


def engine_net_fps(clip: Path, threads: int) -> tuple[float, float]:
    port = free_port()
    srv = tcp_server(clip, port, paced=False)
    t, cpu = time.perf_counter(), time.process_time()
    reader = NetworkReader(f"tcp://127.0.0.1:{port}", stream="bench", audio=False,
                           live=LiveSettings(decode_threads=threads, reconnect=False))
    reader.bind()
    n = sum(1 for item in reader.read() if isinstance(item, VideoFrame))
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    reader.close()
    srv.wait(10)
    return n / wall, n / cpu


def cli_net_fps(clip: Path, threads: int) -> tuple[float, float]:
    port = free_port()
    srv = tcp_server(clip, port, paced=False)
    try:
        return cli_fps(f"tcp://127.0.0.1:{port}", threads)
    finally:
        srv.wait(10)


def live_cpu(clip: Path, seconds: float) -> dict[str, float]:
    """The source node on a real-time 720p25 stream with audio resampled to 16 kHz: CPU % of one core."""
    port = free_port()
    srv = tcp_server(clip, port, paced=True)
    stop = threading.Event()
    ctx = NodeContext("src", ("bench",), Path("."), stop, logging.getLogger("bench"))
    node = FileSource(ctx, SourceParams(uri=f"tcp://127.0.0.1:{port}", sample_rate=16000, reconnect=False))
    frames = chunks = 0
    first: float | None = None
    started = None
    cpu0 = 0.0
    try:
        for item in node.produce():
            if isinstance(item, VideoFrame):
                frames += 1
                first = first or time.perf_counter()
            elif isinstance(item, AudioChunk):
                chunks += 1
            if started is None and first is not None and time.perf_counter() - first >= 2.0:
                # after a 2 s warm-up (the connect backlog arrives in a burst)
                started, cpu0 = time.perf_counter(), time.process_time()
                frames = chunks = 0
            if started is not None and time.perf_counter() - started >= seconds:
                break
    finally:
        stop.set()
        srv.kill()
        srv.wait()
    wall = time.perf_counter() - (started or time.perf_counter())
    cpu = time.process_time() - cpu0
    return {"cpu_pct_of_one_core": 100 * cpu / wall, "fps": frames / wall, "audio_chunks_per_s": chunks / wall,
            **{k: v for k, v in ctx.counters.items() if "drop" in k}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="clip length")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="decoder threads (both sides)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per measurement (best is kept)")
    ap.add_argument("--live-seconds", type=float, default=10.0)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "avstream-bench")
    args = ap.parse_args()
    if shutil.which("ffmpeg") is None:
        print("the FFmpeg CLI is needed (apt-get install ffmpeg)", file=sys.stderr)
        return 2
    args.dir.mkdir(parents=True, exist_ok=True)
    clip = make_clip(args.dir, args.seconds)
    print(f"clip: {clip.name} (1280x720, 25 fps, H.264 + AAC), decoder threads: {args.threads}, "
          f"best of {args.repeat}")
    best: dict[str, tuple[float, float]] = {}
    for _ in range(args.repeat):  # interleaved, so both sides see the same machine load
        for name, fn in (("cli file", lambda: cli_fps(str(clip), args.threads)),
                         ("engine file", lambda: engine_file_fps(clip, args.threads)),
                         ("cli tcp", lambda: cli_net_fps(clip, args.threads)),
                         ("engine tcp", lambda: engine_net_fps(clip, args.threads))):
            wall_fps, cpu_fps = fn()
            old = best.get(name, (0.0, 0.0))
            best[name] = (max(old[0], wall_fps), max(old[1], cpu_fps))
    for src in ("file", "tcp"):
        (e, ec), (c, cc) = best[f"engine {src}"], best[f"cli {src}"]
        print(f"{src:>5}: engine {e:6.1f} fps   ffmpeg CLI {c:6.1f} fps   ratio {e / c:.2f} (target >= 0.90)   "
              f"per CPU second: engine {ec:6.1f}, CLI {cc:6.1f}, ratio {ec / cc:.2f}")
    live = live_cpu(clip, args.live_seconds)
    print(f" live: 720p25 + 16 kHz over TCP, real time for {args.live_seconds:g} s: "
          f"{live['cpu_pct_of_one_core']:.1f}% of one core, {live['fps']:.1f} fps delivered, "
          f"drops: {int(sum(v for k, v in live.items() if 'drop' in k))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
