"""A live graph to measure and break: real loopback stream servers, the monitor pipeline, a recorder.

- Stream servers: GStreamer's RTSP server (tests/live/gst_rtsp_server.py, a clip made by FFmpeg) and
  a live MPEG-TS over HTTP server (FFmpeg encodes a lavfi scene in real time to a pipe; this file,
  run as ``livegraph.py http-relay PORT -- FFMPEG ARGS``, serves those bytes to every client that
  connects, so a reader that reconnects gets the live stream again). Each stream has its own scene
  and tone, and every server can be stopped and started again.
- The pipeline: pipelines/monitor.yaml with one copy of its window and model nodes per stream, laid
  out one process per role (sources, windows, one per model) so a fault can hit one role. It runs as
  ``avstream run`` with ``--publish`` on a free loopback port and a JSONL sink.
- A recorder subscribes to everything published and keeps each message with its arrival time.
- Checks of the recorded messages and the JSONL file, and of what is left after the run stops.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml
import zmq

REPO = Path(__file__).resolve().parents[1]
GST_RTSP = REPO / "tests" / "live" / "gst_rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"
FFMPEG = shutil.which("ffmpeg") or "ffmpeg"
TS_PACKET = 188
RELAY_CHUNK = TS_PACKET * 16
RELAY_BACKLOG = (24 << 20) // RELAY_CHUNK  # chunks a client may be behind (seconds of a 1080p stream)
# One scene and tone per stream, so that the streams' content differs.
SCENES = ["testsrc2", "smptebars", "mandelbrot", "rgbtestsrc", "testsrc", "pal100bars", "yuvtestsrc", "cellauto"]
ROLES = ("sources", "windows", "highlight", "violence", "localization", "captions")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


@dataclass
class Server:
    """A server process that can be stopped and started again with the same command."""

    name: str
    cmd: list[str]
    port: int
    log_dir: Path
    uri: str = ""
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    ready_text: str | None = None  # printed when ready; else the port listening

    def start(self, timeout: float = 30.0) -> Server:
        self.starts += 1
        log_path = self.log_dir / f"{self.name}.{self.starts}.log"
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"server {self.name} exited: {log_path.read_text(errors='replace')[-1500:]}")
            if self.ready_text is not None:
                return self.ready_text in log_path.read_text(errors="replace")
            return listening(self.port)

        wait_until(ready, timeout, f"server {self.name}")
        return self

    def stop(self) -> None:
        """Kill the server and everything it started (its own session)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)
        self.proc = None


def scene_inputs(index: int, width: int, height: int, fps: int) -> list[str]:
    scene = SCENES[index % len(SCENES)]
    tone = 300 + 200 * index
    return ["-re", "-f", "lavfi", "-i", f"{scene}=size={width}x{height}:rate={fps}",
            "-re", "-f", "lavfi", "-i", f"sine=frequency={tone}:sample_rate=16000"]


H264_AAC = ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "48k"]


def http_server(index: int, folder: Path, width: int = 320, height: int = 240, fps: int = 25,
                clip: Path | None = None) -> Server:
    """A live MPEG-TS stream of scene ``index`` over HTTP, served to any number of (re)connecting readers.

    With ``clip``, that file in a loop at media speed without re-encoding (next to nothing of CPU,
    so many large streams fit beside the graph); else FFmpeg encodes the scene live."""
    port = free_port()
    if clip is not None:
        source = ["-re", "-stream_loop", "-1", "-i", str(clip), "-c", "copy"]
    else:
        source = [*scene_inputs(index, width, height, fps), *H264_AAC]
    ffmpeg = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", *source, "-f", "mpegts", "pipe:1"]
    cmd = [sys.executable, str(Path(__file__).resolve()), "http-relay", str(port), "--", *ffmpeg]
    return Server(f"http{index}", cmd, port, folder, uri=f"http://127.0.0.1:{port}/live.ts")


def make_clip(path: Path, index: int, seconds: float, width: int = 320, height: int = 240, fps: int = 25,
              encode: list[str] | None = None) -> Path:
    """Scene ``index`` encoded to Matroska (H.264 + AAC by default) for the RTSP server and the loops."""
    if not path.exists():
        inputs = [a for a in scene_inputs(index, width, height, fps) if a != "-re"]
        subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", *inputs, "-t", f"{seconds:g}",
                        *(encode or H264_AAC), "-y", str(path)], check=True)
    return path


def rtsp_server(index: int, folder: Path, seconds: float) -> Server:
    """GStreamer's RTSP server on 127.0.0.1 serving scene ``index`` (``seconds`` long) at /live."""
    clip = make_clip(folder / f"scene{index}-{int(seconds)}s.mkv", index, seconds)
    port = free_port()
    return Server(f"rtsp{index}", [SYSTEM_PYTHON, str(GST_RTSP), str(port), str(clip)], port, folder,
                  uri=f"rtsp://127.0.0.1:{port}/live", ready_text="ready")


def monitor_pipeline(uris: dict[str, str], out: Path) -> Path:
    """pipelines/monitor.yaml on ``uris`` (stream id -> URI): its nodes once per stream, one process per role."""
    base = yaml.safe_load((REPO / "pipelines" / "monitor.yaml").read_text())
    template = base["streams"]["cam0"]
    streams: dict[str, Any] = {}
    nodes: dict[str, Any] = {}
    for sid, uri in uris.items():
        streams[sid] = {"uri": uri, "audio_chunk_s": template.get("audio_chunk_s", 0.1), "process": "sources"}
        for name, node in base["nodes"].items():
            copy = dict(node)
            copy["inputs"] = [sid if i == "cam0" else f"{i}_{sid}" for i in node["inputs"]]
            copy["process"] = "windows" if node["type"].startswith("avstream/av_window") else name
            nodes[f"{name}_{sid}"] = copy
    pipeline = {"version": 1, "name": "monitor", "streams": streams, "nodes": nodes,
                "outputs": {"publish": {"endpoint": "tcp://127.0.0.1:5560", "wait_for_subscribers": 1}}}
    out.write_text(yaml.safe_dump(pipeline, sort_keys=False))
    return out


@dataclass
class Message:
    at: float  # time.time() at arrival
    topic: str
    header: dict[str, Any]


class Recorder:
    """Subscribes to everything on ``endpoint``; keeps every message with its arrival time."""

    def __init__(self, endpoint: str):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, 0)  # unbounded: a gap seen here is the publisher's, not ours
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(endpoint)
        self.messages: list[Message] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            if self.sock.poll(100):
                frames = self.sock.recv_multipart()
                self.messages.append(Message(time.time(), frames[0].decode(), json.loads(frames[1])))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close(linger=0)
        self.ctx.term()

    def results(self) -> list[Message]:
        return [m for m in self.messages if m.header["kind"] not in ("event", "status")]

    def events(self, name: str | None = None) -> list[Message]:
        return [m for m in self.messages if m.header["kind"] == "event" and name in (None, m.header["name"])]

    def statuses(self) -> list[Message]:
        return [m for m in self.messages if m.header["kind"] == "status"]


@dataclass
class Run:
    """``avstream run`` of a pipeline file, its recorder, and what it created (pids, sockets, segments)."""

    pipeline: Path
    folder: Path
    jsonl: Path
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    recorder: Recorder | None = None
    seen_pids: dict[int, str] = field(default_factory=dict)  # every worker pid seen -> its process group
    ipc_paths: set[str] = field(default_factory=set)
    started_wall: float = 0.0
    cpus: set[int] | None = None  # run the graph on these CPUs only

    def start(self) -> Run:
        self.port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.recorder = Recorder(self.endpoint)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.log = open(self.folder / "run.log", "wb")  # noqa: SIM115 - closed in stop()
        self.started_wall = time.time()
        self.proc = subprocess.Popen([sys.executable, "-m", "avstream.engine.cli", "run", str(self.pipeline),
                                      "--publish", self.endpoint, "--jsonl", str(self.jsonl), "--quiet", *self.extra],
                                     cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, preexec_fn=self._pin if self.cpus else None)
        return self

    def _pin(self) -> None:
        assert self.cpus is not None
        os.sched_setaffinity(0, self.cpus)  # the workers inherit it

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def workers(self) -> dict[str, int]:
        """Process group -> pid of the worker running it now (workers name themselves avs:<group>)."""
        found: dict[str, int] = {}
        try:
            kids = psutil.Process(self.pid).children()
        except psutil.Error:
            return found
        for kid in kids:
            try:
                name = kid.name()
            except psutil.Error:
                continue
            if name.startswith("avs:"):  # the kernel keeps 15 bytes of a name: avs:localizatio
                group = next((r for r in ROLES if r.startswith(name[4:])), name[4:])
                found[group] = kid.pid
                self.seen_pids[kid.pid] = group
        return found

    def note_sockets(self) -> None:
        """The ipc socket files the supervisor has bound (to check that none is left after stop)."""
        for pid in [self.pid, *self.workers().values()]:  # consumers bind their input edges
            try:
                for conn in psutil.Process(pid).net_connections(kind="unix"):
                    if isinstance(conn.laddr, str) and conn.laddr:
                        self.ipc_paths.add(conn.laddr)
            except psutil.Error:
                pass

    def sample(self) -> None:
        """Note the current workers and sockets (call now and then: restarts change them)."""
        self.workers()
        self.note_sockets()

    def ring_dirs(self) -> list[Path]:
        """The run's shared-memory ring folders (``/dev/shm/avstream-<supervisor pid in hex><time>``)."""
        return [p for p in Path("/dev/shm").glob(f"avstream-{self.pid:x}*")
                if p.stat().st_mtime >= self.started_wall - 5]

    def wait_results(self, kinds: Iterable[str], streams: Iterable[str], timeout: float) -> None:
        want = {(s, k) for s in streams for k in kinds}

        def all_there() -> bool:
            self.workers()
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"avstream run exited early:\n{self.log_text()[-3000:]}")
            assert self.recorder is not None
            got = {(m.header["stream"], m.header["kind"]) for m in self.recorder.results()}
            return want <= got

        wait_until(all_there, timeout, f"first results of {sorted(want)}")

    def log_text(self) -> str:
        return (self.folder / "run.log").read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> int:
        """SIGINT, as a user's Ctrl-C; the recorder keeps listening until the run has exited."""
        assert self.proc is not None and self.recorder is not None
        self.note_sockets()
        self.workers()
        self._rings = self.ring_dirs()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            rc = rc if rc != 0 else -9
        time.sleep(0.5)  # the final status is in flight
        self.recorder.close()
        self.log.close()
        return rc

    def leftovers(self, settle_s: float = 5.0) -> dict[str, list[str]]:
        """What the run left behind: live worker processes, ring folders, ipc socket files."""
        deadline = time.monotonic() + settle_s
        while True:
            alive = [f"{pid} ({group})" for pid, group in self.seen_pids.items() if _alive(pid)]
            if not alive or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        rings = [str(p) for p in {*self._rings, *self.ring_dirs()} if p.exists()]
        sockets = [p for p in self.ipc_paths if os.path.exists(p)]
        return {"processes": alive, "segments": rings, "sockets": sockets, "seen": [
            f"{len(self.seen_pids)} worker pids, {len(self._rings)} ring folders, {len(self.ipc_paths)} ipc sockets"]}


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# --- checks of what was recorded ---

def seq_gaps(headers: Iterable[dict[str, Any]]) -> tuple[dict[tuple[str, str], int], list[str]]:
    """Per (stream, kind): the messages missing from ``seq`` (counting from 0), and any seq not increasing."""
    last: dict[tuple[str, str], int] = {}
    gaps: dict[tuple[str, str], int] = {}
    problems: list[str] = []
    for h in headers:
        key = (h["stream"], h["kind"])
        prev = last.get(key, -1)
        if h["seq"] <= prev:
            problems.append(f"{key}: seq {h['seq']} after {prev}")
        else:
            gaps[key] = gaps.get(key, 0) + h["seq"] - prev - 1
        last[key] = max(prev, h["seq"])
    return gaps, problems


def check_pub(messages: list[Message]) -> dict[str, Any]:
    """Every published message received: seq strictly increasing per (stream, kind), and no gap."""
    gaps, problems = seq_gaps(m.header for m in messages)
    return {"messages": len(messages), "seq_problems": problems, "gaps": {f"{k[0]}/{k[1]}": v for k, v in gaps.items() if v}}


def check_jsonl(path: Path) -> dict[str, Any]:
    """Every line whole JSON, no line twice, seq strictly increasing per (stream, kind); gaps counted."""
    torn: list[int] = []
    headers: list[dict[str, Any]] = []
    seen: set[str] = set()
    duplicated = 0
    raw = path.read_bytes() if path.exists() else b""
    if raw and not raw.endswith(b"\n"):
        torn.append(-1)  # the last line has no end
    for n, line in enumerate(raw.decode(errors="replace").splitlines(), 1):
        try:
            headers.append(json.loads(line))
        except json.JSONDecodeError:
            torn.append(n)
            continue
        if line in seen:
            duplicated += 1
        seen.add(line)
    gaps, problems = seq_gaps(headers)
    return {"lines": len(headers), "torn": torn, "duplicated": duplicated, "seq_problems": problems,
            "gaps": sum(gaps.values())}


def check_attribution(messages: list[Message], streams: Iterable[str]) -> list[str]:
    """Each message's topic names its own kind and stream, and the stream is one of the run's."""
    known = {*streams, ""}
    bad = []
    for m in messages:
        h = m.header
        if m.topic != f"{h['kind']}.{h['stream']}" or h["stream"] not in known:
            bad.append(f"topic {m.topic} with kind {h['kind']} stream {h['stream']!r}")
        if h["kind"] not in ("event", "status") and h["stream"] == "":
            bad.append(f"a {h['kind']} result without a stream")
    return bad


def media_replays(messages: list[Message]) -> dict[str, int]:
    """Per (stream, kind): results whose t1 is not after the previous one's (media time published twice)."""
    last: dict[tuple[str, str], float] = {}
    replays: dict[str, int] = {}
    for m in messages:
        h = m.header
        if h["kind"] in ("event", "status"):
            continue
        key = (h["stream"], h["kind"])
        if key in last and h["t1"] <= last[key]:
            replays[f"{key[0]}/{key[1]}"] = replays.get(f"{key[0]}/{key[1]}", 0) + 1
        last[key] = max(last.get(key, h["t1"]), h["t1"])
    return replays


def node_drops(status: dict[str, Any]) -> dict[str, int]:
    """Drops each node counted (its input queues), from one status object."""
    return {n["id"]: int(n["drops"]) for n in status.get("nodes", [])}


# --- the HTTP relay (run as a child process) ---

def http_relay(port: int, ffmpeg: list[str]) -> int:
    """Serve FFmpeg's live MPEG-TS (from its standard output) to every client of http://127.0.0.1:PORT/."""
    import http.server
    import queue

    clients: list[queue.Queue[bytes | None]] = []
    lock = threading.Lock()
    encoder = subprocess.Popen(ffmpeg, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)

    def pump() -> None:
        assert encoder.stdout is not None
        while True:
            chunk = encoder.stdout.read(RELAY_CHUNK)  # whole packets: a late joiner starts on a boundary
            with lock:
                for q in list(clients):
                    if q.qsize() > RELAY_BACKLOG:  # a reader that stopped reading is let go, not buffered for
                        clients.remove(q)
                        q.put(None)
                    else:
                        q.put(chunk or None)
            if not chunk:
                os._exit(1)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            q: queue.Queue[bytes | None] = queue.Queue()
            with lock:
                clients.append(q)
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            self.end_headers()
            try:
                while (chunk := q.get()) is not None:
                    self.wfile.write(chunk)
            except OSError:
                pass
            finally:
                with lock:
                    if q in clients:
                        clients.remove(q)

        def log_message(self, *args: Any) -> None:
            pass

    threading.Thread(target=pump, daemon=True).start()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "http-relay" and sys.argv[3] == "--":
        sys.exit(http_relay(int(sys.argv[2]), sys.argv[4:]))
    print("usage: livegraph.py http-relay PORT -- FFMPEG ARGS  (the module is the harness of chaos/soak/overload)")
    sys.exit(2)
