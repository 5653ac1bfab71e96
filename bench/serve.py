"""`avstream serve` against `avstream run` of the same work, in the same run (issue 9's targets).

1. Daemon overhead. N streams (default 4) of one clip (1280x720 25 fps + audio, made once with the
   synthetic generator; ``--real`` adds a pair on a clip joined from the shared surveillance data),
   paced in real time, through
   - serve: ``avstream serve`` with MQTT (a real mosquitto on 127.0.0.1, skipped with a message when
     it is not installed), a webhook target (an http.server receiver), metrics scraped once a second
     like Prometheus would and ``GET /api/streams`` once a second like a dashboard; the N streams
     share the template's window and encoder processes;
   - run: ``avstream run`` of one generated pipeline where the same N streams feed the same window and
     encoder nodes (so models are shared the same way), results on a PUB socket only.
   The sides alternate (``--rounds``), the medians count. For each: CPU seconds of the whole process
   tree per media second, from launch to exit (user + system of every descendant, via
   RUSAGE_CHILDREN) and in the steady state (psutil samples of the tree between the first and last
   result, per process role), results counted on the PUB socket.
2. ``POST /api/streams`` to that stream's first result on the PUB socket (``--adds`` adds and
   deletes on the warm template), next to the window length. Target: <= 1 s + the window.
3. A clip written after its post-roll: streams of the violence pipeline with the alert forced on
   (thresholds 0, so the first window raises ``violence_start``) and ``record: {pre_roll_s: 1,
   post_roll_s: 3}``; from the wall time at which the media time ``t1 + post_roll_s`` of the event
   was captured (result header ``wall - latency_ms`` gives each window end's capture wall) to the
   MP4's mtime and to the clip's first listing in ``GET /api/clips``.

    python bench/serve.py [--seconds 30] [--streams 4] [--rounds 2] [--adds 5] [--clips 3] [--real]
                          [--pipeline highlight] [--json out.json]
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import yaml
import zmq
from clips import REAL_DATA, clip_720p, real_clip  # bench/ is the script's folder

REPO = Path(__file__).resolve().parents[1]
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
CLI = [sys.executable, "-m", "avstream.engine.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --- the real components around the daemon ---
class Mosquitto:
    """``mosquitto -c conf`` on 127.0.0.1 and a free port."""

    def __init__(self, folder: Path):
        assert MOSQUITTO is not None
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        conf = folder / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        f"log_dest file {folder / 'mosquitto.log'}\n")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("mosquitto did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


class HookReceiver:
    """A webhook target: answers 200 to every POST and counts them."""

    def __init__(self) -> None:
        self.count = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.count += 1
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Results:
    """A SUB socket on a PUB endpoint, connected before the publisher binds (ZeroMQ retries), so no
    result is lost: per stream, the results (non-event kinds) with their receive wall, and events."""

    def __init__(self, endpoint: str):
        self.lock = threading.Lock()
        self.results: dict[str, list[tuple[float, dict[str, Any]]]] = {}
        self.events: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        self._sock.setsockopt(zmq.RCVTIMEO, 100)
        self._sock.connect(endpoint)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                frames = self._sock.recv_multipart()
            except zmq.Again:
                continue
            got, header = time.time(), json.loads(frames[1])
            with self.lock:
                if header.get("kind") == "event":
                    self.events.append(header)
                else:
                    self.results.setdefault(str(header.get("stream")), []).append((got, header))

    def of(self, stream: str) -> list[tuple[float, dict[str, Any]]]:
        with self.lock:
            return list(self.results.get(stream, []))

    def all(self) -> list[tuple[float, dict[str, Any]]]:
        with self.lock:
            return [r for rs in self.results.values() for r in rs]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close(0)
        self._ctx.term()


class TreeSampler:
    """CPU seconds of every process under ``root`` (itself included), sampled every ``period`` s:
    ``series`` holds (wall, {pid: (role, cpu s)}) so any span's CPU can be split by role."""

    def __init__(self, root: int, streams: set[str], period: float = 0.5):
        self.root, self.streams, self.period = psutil.Process(root), streams, period
        self.series: list[tuple[float, dict[int, tuple[str, float]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def role(self, proc: psutil.Process) -> str:
        if proc.pid == self.root.pid:
            return "supervisor"
        name = proc.name()
        if not name.startswith("avs:"):
            return "other"
        name = name[4:].split(".", 1)[-1] if name[4:5] == "t" and "." in name else name[4:]
        return "sources" if name in self.streams else name

    def _loop(self) -> None:
        while not self._stop.is_set():
            now: dict[int, tuple[str, float]] = {}
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                break
            for proc in procs:
                try:
                    t = proc.cpu_times()
                    now[proc.pid] = (self.role(proc), t.user + t.system)
                except psutil.Error:
                    continue
            self.series.append((time.time(), now))
            self._stop.wait(self.period)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def span(self, start: float, end: float) -> tuple[float, dict[str, float]]:
        """(wall seconds, CPU seconds per role) between the samples nearest ``start`` and ``end``;
        a process that appears or exits inside the span counts from / until its samples."""
        inside = [s for s in self.series if start <= s[0] <= end]
        if len(inside) < 2:
            return float("nan"), {}
        (w0, first), (w1, _) = inside[0], inside[-1]
        latest: dict[int, tuple[str, float]] = {}
        for _, sample in inside:  # a process that exits inside the span counts until its last sample
            latest.update(sample)
        roles: dict[str, float] = {}
        for pid, (role, cpu) in latest.items():
            roles[role] = roles.get(role, 0.0) + cpu - first.get(pid, (role, 0.0))[1]
        return w1 - w0, roles


class Api:
    def __init__(self, port: int, token: str):
        self.base, self.token = f"http://127.0.0.1:{port}", token

    def call(self, method: str, path: str, body: Any = None, auth: bool = True) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=20) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")


# --- the two sides ---
def template(pipeline: str) -> tuple[dict[str, Any], str]:
    """The pipeline's YAML tree and its (single) stream id."""
    path = Path(pipeline) if pipeline.endswith((".yaml", ".yml")) else REPO / "pipelines" / f"{pipeline}.yaml"
    tree = yaml.safe_load(path.read_text())
    (source,) = tree["streams"]
    return tree, source


def run_yaml(pipeline: str, clip: Path, streams: list[str], endpoint: str) -> str:
    """The template with ``streams`` in place of its one stream, all feeding its nodes."""
    tree, source = template(pipeline)
    tree["name"] = "serve-bench"
    tree["streams"] = {s: {"uri": str(clip), "realtime": True} for s in streams}
    for node in tree["nodes"].values():
        ins = node.get("inputs", [])
        if source in ins:
            node["inputs"] = [x for i in ins for x in (streams if i == source else [i])]
    tree["outputs"] = {"publish": {"endpoint": endpoint}}
    return yaml.safe_dump(tree, sort_keys=False)


def serve_yaml(folder: Path, port: int, pub: int, streams: dict[str, dict[str, Any]],
               broker: Mosquitto | None, hook: HookReceiver, record: dict[str, Any] | None = None) -> Path:
    tree: dict[str, Any] = {
        "version": 1,
        "server": {"listen": f"127.0.0.1:{port}", "publish": f"tcp://127.0.0.1:{pub}", "data_dir": "data"},
        "streams": streams,
        "webhooks": [{"url": hook.url, "secret": "bench-secret",
                      "events": ["violence_start", "violence_end", "stream_up", "stream_down", "stream_failed"]}],
    }
    if broker is not None:
        tree["mqtt"] = {"host": "127.0.0.1", "port": broker.port, "prefix": "avstream", "discovery": True}
    if record is not None:
        tree["record"] = record
    path = folder / "serve.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def start_daemon(config: Path, log: Path) -> tuple[subprocess.Popen[bytes], Api]:
    proc = subprocess.Popen([*CLI, "serve", str(config)], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            cwd=config.parent)
    server = yaml.safe_load(config.read_text())["server"]
    port = int(server["listen"].rsplit(":", 1)[1])
    token_file = config.parent / "token"
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"avstream serve exited:\n{log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise SystemExit("avstream serve did not start")
        if token_file.exists():
            api = Api(port, token_file.read_text().strip())
            try:
                if api.call("GET", "/healthz", auth=False)[0] == 200:
                    return proc, api
            except OSError:
                pass
        time.sleep(0.1)


def stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def summarize(side: str, wall: float, cpu: float, media_s: float, results: Results, sampler: TreeSampler,
              extra: dict[str, Any]) -> dict[str, Any]:
    got = results.all()
    walls = sorted(w for w, _ in got)
    steady_wall, roles = (sampler.span(walls[0] + 1.0, walls[-1] - 0.5) if len(walls) > 4
                          else (float("nan"), {}))
    steady = sum(roles.values()) / steady_wall if steady_wall == steady_wall and steady_wall > 0 else float("nan")
    n_steady = sum(1 for w in walls if walls[0] + 1.0 <= w <= walls[-1] - 0.5)
    return {"side": side, "wall_s": wall, "cpu_s": cpu, "cpu_per_media_s": cpu / media_s,
            "steady_cpu_per_s": steady, "steady_roles_per_s": {k: v / steady_wall for k, v in roles.items()},
            "results": len(got), "results_per_s": n_steady / steady_wall if steady_wall > 0 else float("nan"),
            "latency_p50_ms": median([float(h.get("latency_ms", 0.0)) for _, h in got]), **extra}


def side_run(work: Path, pipeline: str, clip: Path, streams: list[str], media_s: float) -> dict[str, Any]:
    pub = free_port()
    path = work / "run.yaml"
    path.write_text(run_yaml(pipeline, clip, streams, f"tcp://127.0.0.1:{pub}"))
    results = Results(f"tcp://127.0.0.1:{pub}")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen([*CLI, "run", str(path), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=REPO)
    sampler = TreeSampler(proc.pid, set(streams))
    _, err = proc.communicate(timeout=media_s * 3 + 120)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    sampler.stop()
    time.sleep(0.3)
    results.close()
    if proc.returncode != 0:
        raise SystemExit(f"avstream run failed ({proc.returncode}):\n{err.decode()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return summarize("run", wall, cpu, media_s, results, sampler, {})


def side_serve(work: Path, pipeline: str, clip: Path, streams: list[str], media_s: float,
               broker: Mosquitto | None, hook: HookReceiver) -> dict[str, Any]:
    port, pub = free_port(), free_port()
    folder = work / f"serve-{port}"
    folder.mkdir()
    config = serve_yaml(folder, port, pub, {s: {"pipeline": pipeline, "uri": str(clip), "realtime": True}
                                            for s in streams}, broker, hook)
    results = Results(f"tcp://127.0.0.1:{pub}")
    hooks_before = hook.count
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc, api = start_daemon(config, folder / "serve.log")
    sampler = TreeSampler(proc.pid, set(streams))
    scrapes, polls = 0, 0
    deadline = time.monotonic() + media_s * 3 + 120
    # like Prometheus and a dashboard: /metrics and the stream list once a second, until every file ended
    while time.monotonic() < deadline:
        status, _ = api.call("GET", "/metrics", auth=False)
        scrapes += status == 200
        status, body = api.call("GET", "/api/streams")
        polls += status == 200
        if status == 200 and all(s.get("state") == "stopped" for s in body) and len(body) == len(streams):
            break
        time.sleep(1.0)
    else:
        raise SystemExit(f"the serve streams did not end:\n{(folder / 'serve.log').read_text()[-2000:]}")
    time.sleep(1.0)  # the last results of the shared nodes
    stop_daemon(proc)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    sampler.stop()
    results.close()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return summarize("serve", wall, cpu, media_s, results, sampler,
                     {"metrics_scrapes": scrapes, "status_polls": polls, "webhooks": hook.count - hooks_before,
                      "mqtt": broker is not None})


def overhead(work: Path, pipeline: str, clip: Path, label: str, args: argparse.Namespace,
             broker: Mosquitto | None, hook: HookReceiver) -> dict[str, Any]:
    streams = [f"s{i}" for i in range(args.streams)]
    media_s = probe_seconds(clip)
    rows: list[dict[str, Any]] = []
    print(f"overhead on {label}: {args.streams} streams x {media_s:.1f} s, {pipeline}, {args.rounds} rounds", flush=True)
    for i in range(args.rounds):
        # alternate which side goes first, so a load trend on the shared machine hits both
        order = ("serve", "run") if i % 2 == 0 else ("run", "serve")
        for side in order:
            row = (side_serve(work, pipeline, clip, streams, media_s, broker, hook) if side == "serve"
                   else side_run(work, pipeline, clip, streams, media_s))
            rows.append(row)
            roles = ", ".join(f"{k} {v:.2f}" for k, v in sorted(row["steady_roles_per_s"].items()))
            print(f"  {side:<5} wall {row['wall_s']:5.1f} s  total {row['cpu_per_media_s']:.3f} CPU s/media s  "
                  f"steady {row['steady_cpu_per_s']:.3f} CPU s/s ({roles})  {row['results']} results "
                  f"({row['results_per_s']:.2f}/s)  p50 latency {row['latency_p50_ms']:.0f} ms"
                  + (f"  [{row['metrics_scrapes']} scrapes, {row['webhooks']} webhooks, "
                     f"mqtt {'on' if row['mqtt'] else 'off'}]" if side == "serve" else ""), flush=True)
    out: dict[str, Any] = {"input": label, "media_s": media_s, "streams": args.streams, "pipeline": pipeline,
                           "rows": rows}
    for key in ("cpu_per_media_s", "steady_cpu_per_s", "results", "results_per_s"):
        for side in ("serve", "run"):
            out[f"{side}_{key}"] = median([r[key] for r in rows if r["side"] == side])
    out["ratio_total"] = out["serve_cpu_per_media_s"] / out["run_cpu_per_media_s"]
    # what serve spends beyond run once per launch (imports, API, sinks, shutdown): total minus steady
    out["serve_extra_cpu_s"] = (out["serve_cpu_per_media_s"] - out["run_cpu_per_media_s"]) * media_s
    out["ratio_steady"] = out["serve_steady_cpu_per_s"] / out["run_steady_cpu_per_s"]
    print(f"  median: serve {out['serve_cpu_per_media_s']:.3f} vs run {out['run_cpu_per_media_s']:.3f} CPU s/media s "
          f"-> serve/run {out['ratio_total']:.3f} (overhead {100 * (out['ratio_total'] - 1):+.1f}%, target <= +5%); "
          f"steady {out['serve_steady_cpu_per_s']:.3f} vs {out['run_steady_cpu_per_s']:.3f} -> "
          f"{out['ratio_steady']:.3f} ({100 * (out['ratio_steady'] - 1):+.1f}%); results {out['serve_results']:.0f} "
          f"vs {out['run_results']:.0f}; serve used {out['serve_extra_cpu_s']:.1f} CPU s more in all", flush=True)
    return out


# --- adds and clips on one daemon ---
def forced_violence(folder: Path) -> Path:
    """pipelines/violence.yaml with the alert forced on: its first window raises violence_start."""
    tree, _ = template("violence")
    for node in tree["nodes"].values():
        if str(node.get("type", "")).startswith("avstream/violence@"):
            node.setdefault("params", {}).update(on_threshold=0.0, off_threshold=0.0)
    path = folder / "violence-forced.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def wait_for(check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.02)
    return None


def request_costs(api: Api, pid: int, seconds: float = 5.0, rate: float = 20.0) -> dict[str, float]:
    """CPU ms of the daemon's own process (REST, sinks, supervisor loop) per request of /metrics and of
    GET /api/streams, from its CPU over ``seconds`` at ``rate`` requests/s against the same time idle."""
    proc = psutil.Process(pid)

    def cpu_during(path: str | None) -> tuple[float, int]:
        t, start, n = proc.cpu_times(), time.monotonic(), 0
        while time.monotonic() - start < seconds:
            if path is not None:
                api.call("GET", path)
                n += 1
            time.sleep(1.0 / rate)
        after = proc.cpu_times()
        return (after.user + after.system - t.user - t.system) / (time.monotonic() - start), n

    idle, _ = cpu_during(None)
    out = {"idle_cpu_per_s": idle}
    for path in ("/metrics", "/api/streams"):
        busy, n = cpu_during(path)
        out[path] = 1e3 * (busy - idle) * seconds / max(1, n)
    print(f"daemon process: {idle:.3f} CPU s/s with 2 streams and no requests; /metrics {out['/metrics']:.1f} ms "
          f"and GET /api/streams {out['/api/streams']:.1f} ms of CPU per request", flush=True)
    return out


def adds_and_clips(work: Path, pipeline: str, clip: Path, args: argparse.Namespace, broker: Mosquitto | None,
                   hook: HookReceiver) -> dict[str, Any]:
    port, pub = free_port(), free_port()
    folder = work / "serve-adds"
    folder.mkdir()
    violence = forced_violence(folder)
    record: dict[str, Any] = {"on": ["violence_start"], "pre_roll_s": 1.0, "post_roll_s": 3.0}
    # one looping stream per template loads its models; both are removed before measuring (a template
    # keeps its processes for the next stream)
    warm = {"warm-a": {"pipeline": pipeline, "uri": str(clip), "realtime": True, "loop": True},
            "warm-b": {"pipeline": str(violence), "uri": str(clip), "realtime": True, "loop": True}}
    config = serve_yaml(folder, port, pub, warm, broker, hook, record)
    results = Results(f"tcp://127.0.0.1:{pub}")
    proc, api = start_daemon(config, folder / "serve.log")
    out: dict[str, Any] = {"adds": [], "clips": []}
    try:
        for stream in warm:
            if not wait_for(lambda s=stream: results.of(s), 120):
                raise SystemExit(f"no result from {stream}:\n{(folder / 'serve.log').read_text()[-2000:]}")
        out["request_cpu_ms"] = request_costs(api, proc.pid)
        for stream in warm:
            api.call("DELETE", f"/api/streams/{stream}")
        print(f"POST /api/streams -> first result ({pipeline}, {args.adds} adds):", flush=True)
        for i in range(args.adds):
            stream = f"add{i}"
            posted = time.time()
            status, body = api.call("POST", "/api/streams", {"id": stream, "pipeline": pipeline, "uri": str(clip),
                                                             "realtime": True})
            replied = time.time()
            if status != 201:
                raise SystemExit(f"POST /api/streams: {status} {body}")
            first = wait_for(lambda s=stream: results.of(s), 60)
            if not first:
                raise SystemExit(f"no result from {stream}")
            got, header = first[0]
            window = float(header["t1"]) - float(header["t0"])
            # when the source had its first media: the window end's capture wall minus its media time
            media_zero = float(header["wall"]) - float(header["latency_ms"]) / 1000.0 - float(header["t1"])
            out["adds"].append({"stream": stream, "first_result_s": got - posted, "window_s": window,
                                "t1_s": float(header["t1"]), "reply_s": replied - posted,
                                "to_first_media_s": media_zero - posted, "latency_ms": header.get("latency_ms")})
            print(f"  {stream}: {got - posted:.2f} s (reply {replied - posted:.2f} s, first media "
                  f"{media_zero - posted:.2f} s, window {window:.2f} s ending at t1 {float(header['t1']):.2f} s, "
                  f"latency {header.get('latency_ms', 0):.0f} ms)", flush=True)
            api.call("DELETE", f"/api/streams/{stream}")
        print(f"clip written after its post-roll (violence forced, pre 1 s, post 3 s, {args.clips} clips):", flush=True)
        for i in range(args.clips):
            stream = f"rec{i}"
            status, body = api.call("POST", "/api/streams", {"id": stream, "pipeline": str(violence),
                                                             "uri": str(clip), "realtime": True})
            if status != 201:
                raise SystemExit(f"POST /api/streams: {status} {body}")
            listed = wait_for(lambda s=stream: api.call("GET", f"/api/clips?stream={s}")[1], 60)
            seen = time.time()
            event = next((e for e in results.events if e.get("stream") == stream and e.get("name") == "violence_start"),
                         None)
            if not listed or event is None:
                raise SystemExit(f"no clip or no violence_start for {stream}")
            # the capture wall of media time 0: each result's emit wall minus its latency minus its t1
            offsets = [h["wall"] - h["latency_ms"] / 1000.0 - h["t1"] for _, h in results.of(stream)]
            end_media = float(event.get("t1", event.get("t0")) or 0.0) + float(record["post_roll_s"])
            end_wall = median(offsets) + end_media
            mtime = os.stat(listed[0]["mp4"]).st_mtime
            row = {"stream": stream, "post_roll_end_media_s": end_media, "to_mtime_s": mtime - end_wall,
                   "to_listed_s": seen - end_wall, "duration_s": listed[0].get("duration_s")}
            out["clips"].append(row)
            print(f"  {stream}: post-roll end at media {end_media:.2f} s -> file written {row['to_mtime_s']:.2f} s later, "
                  f"listed {row['to_listed_s']:.2f} s later (clip {row['duration_s']} s)", flush=True)
            api.call("DELETE", f"/api/streams/{stream}")
    finally:
        stop_daemon(proc)
        results.close()
    out["first_result_median_s"] = median([a["first_result_s"] for a in out["adds"]])
    out["window_s"] = median([a["window_s"] for a in out["adds"]])
    out["to_first_media_median_s"] = median([a["to_first_media_s"] for a in out["adds"]])
    out["clip_to_mtime_median_s"] = median([c["to_mtime_s"] for c in out["clips"]])
    out["clip_to_listed_median_s"] = median([c["to_listed_s"] for c in out["clips"]])
    print(f"  median first result {out['first_result_median_s']:.2f} s after POST (window {out['window_s']:.2f} s; "
          f"target <= {1 + out['window_s']:.2f} s; first media {out['to_first_media_median_s']:.2f} s after POST); clip {out['clip_to_mtime_median_s']:.2f} s after the post-roll "
          f"(listed {out['clip_to_listed_median_s']:.2f} s)", flush=True)
    return out


# --- inputs ---
def probe_seconds(clip: Path) -> float:
    import av

    with av.open(str(clip)) as container:
        return float(container.duration or 0) / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0, help="media seconds per stream")
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2, help="serve/run pairs, alternating (medians reported)")
    ap.add_argument("--pipeline", default="highlight")
    ap.add_argument("--adds", type=int, default=5, help="POST/DELETE cycles timed to the first result")
    ap.add_argument("--clips", type=int, default=3, help="recorded clips timed after their post-roll")
    ap.add_argument("--real", action="store_true", help="also a pair on real surveillance clips (shared data)")
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "avstream-bench"))
    ap.add_argument("--json", help="write every figure to this file")
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    clip = clip_720p(cache, args.seconds)
    print(f"serve bench: {len(os.sched_getaffinity(0))} CPUs, load {os.getloadavg()[0]:.1f}", flush=True)
    report: dict[str, Any] = {"cpus": len(os.sched_getaffinity(0)), "overhead": []}
    if MOSQUITTO is None:
        print("mosquitto is not installed (Debian package `mosquitto`): the serve side runs without MQTT", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = Mosquitto(work / "broker") if MOSQUITTO is not None else None
        hook = HookReceiver()
        try:
            if not args.skip_overhead:
                report["overhead"].append(overhead(work, args.pipeline, clip, "synthetic 1280x720 25 fps + audio",
                                                   args, broker, hook))
                if args.real:
                    real = real_clip(cache, args.seconds)
                    if real is None:
                        print(f"no real clips at {REAL_DATA}: the real-footage pair is skipped", flush=True)
                    else:
                        report["overhead"].append(overhead(work, args.pipeline, real,
                                                           "real surveillance clips joined, 1280x720 25 fps", args,
                                                           broker, hook))
            report["adds_and_clips"] = adds_and_clips(work, args.pipeline, clip, args, broker, hook)
        finally:
            hook.stop()
            if broker is not None:
                broker.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
