"""`avstream serve`: the daemon as a subprocess on free ports, its REST API as a client sees it."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq

pytest.importorskip("fastapi", reason="the serve extra is not installed")


class Reply:
    def __init__(self, status_code: int, content: bytes):
        self.status_code, self.content = status_code, content
        self.text = content.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class Client:
    """A few lines of urllib: the daemon's API as any HTTP client sees it."""

    def __init__(self, base_url: str, token: str | None = None):
        self.base_url, self.token = base_url, token

    def request(self, method: str, path: str, body: Any = None, content: bytes | None = None,
                headers: dict[str, str] | None = None, params: dict[str, str] | None = None) -> Reply:
        url = self.base_url + path + (("?" + urllib.parse.urlencode(params)) if params else "")
        data = content if content is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token is not None:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=20) as resp:
                return Reply(resp.status, resp.read())
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, exc.read())

    def get(self, path: str, headers: dict[str, str] | None = None, params: dict[str, str] | None = None) -> Reply:
        return self.request("GET", path, headers=headers, params=params)

    def post(self, path: str, json: Any = None, content: bytes | None = None) -> Reply:
        return self.request("POST", path, body=json, content=content)

    def delete(self, path: str) -> Reply:
        return self.request("DELETE", path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def workers(daemon: Daemon) -> dict[int, str]:
    """The daemon's worker processes, pid -> name (`avs:<process>`)."""
    out = {}
    for child in psutil.Process(daemon.proc.pid).children(recursive=True):
        try:
            name = child.name()
        except psutil.NoSuchProcess:
            continue
        if name.startswith("avs:"):
            out[child.pid] = name
    return out


def shared_processes(daemon: Daemon) -> list[str]:
    """Names of the processes running the shared (template) nodes: `avs:t<N>.<process>`."""
    return sorted(n for n in workers(daemon).values() if n.startswith("avs:t") and "." in n)


class Daemon:
    def __init__(self, folder: Path, streams: str, extra: str = "", sections: str = ""):
        self.folder = folder
        self.port, self.pub = free_port(), free_port()
        self.config = folder / "serve.yaml"
        self.config.write_text(textwrap.dedent(f"""\
            version: 1
            server: {{listen: "127.0.0.1:{self.port}", publish: "tcp://127.0.0.1:{self.pub}", failed_retry_s: 2{extra}}}
            streams:
            """) + textwrap.indent(textwrap.dedent(streams), "  ") + textwrap.dedent(sections))
        self.log = folder / "serve.log"
        # systemd's side of Type=notify: a datagram socket named by $NOTIFY_SOCKET
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(folder / "notify.sock"))
        env = {**os.environ, "NOTIFY_SOCKET": str(folder / "notify.sock")}
        self.proc = subprocess.Popen([sys.executable, "-m", "avstream.engine.cli", "serve", str(self.config)],
                                     stdout=self.log.open("w"), stderr=subprocess.STDOUT, cwd=folder, env=env)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while not (folder / "token").exists() or not self._up():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.2)
        self.token = (folder / "token").read_text().strip()
        self.client = Client(self.url, self.token)
        self.anonymous = Client(self.url)

    def _up(self) -> bool:
        try:
            return Client(self.url).get("/healthz").status_code == 200
        except OSError:
            return False

    def streams(self) -> dict[str, dict[str, Any]]:
        return {s["id"]: s for s in self.client.get("/api/streams").json()}

    def wait_state(self, sid: str, states: tuple[str, ...], timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.streams().get(sid)
            if got is not None and got["state"] in states:
                return got
            time.sleep(0.3)
        raise AssertionError(f"stream {sid} never reached {states}: {self.streams().get(sid)}")

    def notifications(self, timeout: float = 60) -> list[str]:
        got: list[str] = []
        self.notify.settimeout(timeout)
        while not any("READY=1" in g for g in got):
            got.append(self.notify.recv(4096).decode())
        return got

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self.notify.close()


class Collector:
    """Every result header published, in order, from the daemon's PUB socket."""

    def __init__(self, endpoint: str):
        self.headers: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(endpoint)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            if self.sock.poll(50):
                frames = self.sock.recv_multipart()
                self.headers.append(json.loads(frames[1]))

    def seqs(self, stream: str, kind: str) -> list[int]:
        return [h["seq"] for h in list(self.headers) if h.get("stream") == stream and h.get("kind") == kind]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close(0)
        self.ctx.term()


STREAMS = """\
a: {pipeline: highlight, uri: "sample://demo", realtime: true, loop: true}
b: {pipeline: highlight, uri: "sample://demo", realtime: true, loop: true}
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("serve"), STREAMS)
    yield d
    if d.proc.poll() is None:
        d.stop()


def test_ready_for_systemd(daemon: Daemon) -> None:
    assert any(n.startswith("READY=1") for n in daemon.notifications())
    daemon.wait_state("a", ("running",))
    assert daemon.anonymous.get("/readyz").status_code == 200


def test_two_streams_run_and_a_third_joins_the_same_encoders(daemon: Daemon) -> None:
    daemon.wait_state("a", ("running",))
    daemon.wait_state("b", ("running",))
    assert daemon.client.get("/readyz").status_code == 200
    before = shared_processes(daemon)
    assert before == ["avs:t0.score", "avs:t0.window"]
    collector = Collector(f"tcp://127.0.0.1:{daemon.pub}")
    try:
        time.sleep(3)
        r = daemon.client.post("/api/streams", json={"id": "c", "pipeline": "highlight", "uri": "sample://demo",
                                                     "realtime": True, "loop": True})
        assert r.status_code == 201, r.text
        assert r.json()["state"] == "starting"
        daemon.wait_state("c", ("running",))
        deadline = time.monotonic() + 60
        while not collector.seqs("c", "highlight") and time.monotonic() < deadline:
            time.sleep(0.3)
        assert collector.seqs("c", "highlight"), "the added stream produced no result"
        assert shared_processes(daemon) == before  # no second copy of the window or the model
        time.sleep(3)
        for sid in ("a", "b"):
            seqs = collector.seqs(sid, "highlight")
            assert len(seqs) >= 3
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"{sid}: seq broken {seqs}"
        detail = daemon.client.get("/api/streams/c").json()
        assert detail["nodes"]["c"]["out"] > 0 and detail["nodes"]["score"]["shared"] is True
        # DELETE leaves the others untouched
        n_a = len(collector.seqs("a", "highlight"))
        assert daemon.client.delete("/api/streams/c").status_code == 200
        deadline = time.monotonic() + 30
        while "c" in daemon.streams() and time.monotonic() < deadline:
            time.sleep(0.3)
        assert "c" not in daemon.streams()
        time.sleep(3)
        seqs = collector.seqs("a", "highlight")
        assert len(seqs) > n_a and seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert daemon.streams()["a"]["state"] == "running"
        assert shared_processes(daemon) == before
    finally:
        collector.close()


def test_token_is_required_and_stored_0600(daemon: Daemon) -> None:
    assert stat.S_IMODE((daemon.folder / "token").stat().st_mode) == 0o600
    r = daemon.anonymous.get("/api/streams", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.content == b""
    assert daemon.anonymous.get("/api/streams").status_code == 401
    assert daemon.anonymous.get("/openapi.json").status_code == 401
    assert daemon.client.get("/openapi.json").json()["paths"]["/api/streams"]
    assert daemon.anonymous.get("/healthz").status_code == 200


def test_bad_posts(daemon: Daemon) -> None:
    r = daemon.client.post("/api/streams", json={"id": "x", "pipeline": "highlight", "uri": "missing.mp4"})
    assert r.status_code == 422
    assert r.json()["detail"][0].startswith("<request>:1:1: streams.x.uri: "), r.text
    r = daemon.client.post("/api/streams", json={"id": "x", "pipeline": "highlight", "uri": "a.mp4", "realtim": True})
    assert r.status_code == 422 and "streams.x.realtim: unknown key" in r.json()["detail"][0], r.text
    r = daemon.client.post("/api/streams", json={"id": "y", "pipeline": "nonesuch", "uri": "sample://demo"})
    assert r.status_code == 422 and "streams.y.pipeline" in r.json()["detail"][0]
    r = daemon.client.post("/api/streams", json={"id": "a", "pipeline": "highlight", "uri": "sample://demo"})
    assert r.status_code == 409
    r = daemon.client.post("/api/streams", content=b"x" * 100_000)
    assert r.status_code == 413


def test_credentials_are_redacted_and_a_bad_uri_fails_alone(daemon: Daemon) -> None:
    r = daemon.client.post("/api/streams", json={"id": "cam", "pipeline": "highlight",
                                                 "uri": "rtsp://user:secret@127.0.0.1:9/stream1"})
    assert r.status_code == 201, r.text
    got = daemon.wait_state("cam", ("down", "failed"))
    assert got["uri"] == "rtsp://user:***@127.0.0.1:9/stream1"
    time.sleep(1.5)
    for path in ("/api/streams", "/api/streams/cam", "/api/events?stream=cam"):
        assert "secret" not in daemon.client.get(path).text
    assert daemon.client.get("/api/events", params={"stream": "cam", "name": "stream_down"}).json()
    assert daemon.streams()["a"]["state"] == "running"
    assert daemon.client.delete("/api/streams/cam").status_code == 200
    assert "secret" not in daemon.log.read_text()


def test_a_broken_source_is_failed_and_retried(daemon: Daemon) -> None:
    (daemon.folder / "broken.mp4").write_bytes(b"not a video at all" * 100)
    r = daemon.client.post("/api/streams", json={"id": "broken", "pipeline": "highlight", "uri": "broken.mp4"})
    assert r.status_code == 201, r.text
    got = daemon.wait_state("broken", ("failed",))
    assert got["error"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        events = daemon.client.get("/api/events", params={"stream": "broken", "name": "stream_failed"}).json()
        if len(events) >= 2:  # tried again (failed_retry_s: 2) and failed again
            break
        time.sleep(0.5)
    assert len(events) >= 2
    assert daemon.client.get("/healthz").status_code == 200
    assert daemon.streams()["a"]["state"] == "running"
    assert daemon.client.delete("/api/streams/broken").status_code == 200


class Unauthorized(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="camera"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_a_401_is_final_for_that_stream_and_retried_slowly(daemon: Daemon) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unauthorized)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://user:secret@127.0.0.1:{server.server_address[1]}/stream.ts"
        assert daemon.client.post("/api/streams", json={"id": "locked", "pipeline": "highlight", "uri": uri}).status_code == 201
        got = daemon.wait_state("locked", ("failed",))
        assert "401" in got["error"] and "secret" not in json.dumps(got)
        assert daemon.streams()["a"]["state"] == "running"
        assert daemon.client.delete("/api/streams/locked").status_code == 200
    finally:
        server.shutdown()
        server.server_close()


def test_sighup_applies_the_difference(daemon: Daemon) -> None:
    text = daemon.config.read_text()
    daemon.config.write_text(text.replace("  b: {", "  d: {"))  # b removed, d added, a unchanged
    pid_a = [pid for pid, name in workers(daemon).items() if name == "avs:a"]
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_state("d", ("running",))
    deadline = time.monotonic() + 30
    while "b" in daemon.streams() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert "b" not in daemon.streams()
    assert [pid for pid, name in workers(daemon).items() if name == "avs:a"] == pid_a  # untouched
    pid_d = [pid for pid, name in workers(daemon).items() if name == "avs:d"]
    daemon.config.write_text(text.replace("  b: {", "  d: {").replace("d: {pipeline: highlight,", "d: {pipeline: highlight, fps: 5,"))
    daemon.proc.send_signal(signal.SIGHUP)  # d changed: restarted with its new entry
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now_d = [pid for pid, name in workers(daemon).items() if name == "avs:d"]
        if now_d and now_d != pid_d:
            break
        time.sleep(0.3)
    assert now_d and now_d != pid_d
    daemon.wait_state("d", ("running",))
    assert [pid for pid, name in workers(daemon).items() if name == "avs:a"] == pid_a
    daemon.config.write_text("version: [")  # a broken config is reported, not applied
    daemon.proc.send_signal(signal.SIGHUP)
    time.sleep(2)
    assert set(daemon.streams()) >= {"a", "d"}
    assert "reload: config not applied" in daemon.log.read_text()
    daemon.config.write_text(text)


def _comm(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_watch_applies_a_changed_file(tmp_path: Path) -> None:
    d = Daemon(tmp_path, 'a: {pipeline: highlight, uri: "sample://demo", realtime: true, loop: true}\n',
               extra=", watch: true")
    try:
        d.wait_state("a", ("running",))
        time.sleep(1.1)  # a different mtime for sure
        d.config.write_text(d.config.read_text() + '  e: {pipeline: highlight, uri: "sample://demo", realtime: true}\n')
        d.wait_state("e", ("running", "stopped"))
        since = time.time()
        assert d.client.get("/api/events", params={"since": str(since + 3600)}).json() == []
    finally:
        assert d.stop() == 0


BATCHED = """\
version: 1
name: batched
streams: {cam0: {uri: "sample://demo", realtime: false}}
nodes:
  window: {type: avstream/av_window@v1, inputs: [cam0]}
  score: {type: avstream/highlight@v1, inputs: [window], params: {model: "builtin:highlight", max_batch: 8, max_wait_ms: 50}}
outputs: {publish: {endpoint: "tcp://127.0.0.1:5560"}}
"""


def test_windows_of_several_streams_share_model_calls(tmp_path: Path) -> None:
    (tmp_path / "batched.yaml").write_text(BATCHED)
    d = Daemon(tmp_path, "".join(f'{s}: {{pipeline: batched.yaml, uri: "sample://demo", realtime: false}}\n'
                                 for s in ("a", "b", "c")))
    try:
        for sid in ("a", "b", "c"):
            d.wait_state(sid, ("stopped",), timeout=120)  # the file ended; the shared nodes run on
        assert d.client.get("/readyz").status_code == 200
        score = d.client.get("/api/streams/a").json()["nodes"]["score"]
        assert score["shared"] and score["counters"]["windows"] >= 3 * 15
        assert score["counters"]["batches"] < score["counters"]["windows"]  # batched across streams
        assert shared_processes(d) == ["avs:t0.score", "avs:t0.window"]
        print(f"score: {score['counters']['windows']:.0f} windows in {score['counters']['batches']:.0f} model calls")
    finally:
        assert d.stop() == 0


def test_status_nodes_name_their_streams_for_the_metrics(daemon: Daemon) -> None:
    """The service's status message has each node's `streams` and `timings` (docs/messages.md), which
    the metrics sink needs for per-stream reconnects/stalls and the inference histogram."""
    from avstream.engine.sinks import SINK_KINDS

    daemon.wait_state("a", ("running",))
    collector = Collector(f"tcp://127.0.0.1:{daemon.pub}")
    try:
        def scored() -> dict[str, Any] | None:  # the latest status once the model has run
            found = [h for h in list(collector.headers) if h.get("kind") == "status"]
            score = {n["id"]: n for n in found[-1]["nodes"]}["score"] if found else {}
            return found[-1] if score.get("timings", {}).get("inference_seconds", {}).get("count") else None

        deadline = time.monotonic() + 30
        while scored() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        status = scored()
    finally:
        collector.close()
    assert status is not None, "no status message with the score node's inference timings"
    nodes = {n["id"]: n for n in status["nodes"]}
    assert nodes["a"]["streams"] == ["a"]
    assert {"a"} < set(nodes["score"]["streams"])  # shared: a and the module's other stream(s)
    if "metrics" in SINK_KINDS:
        text = daemon.anonymous.get("/metrics").text
        assert 'avstream_reconnects_total{stream="a"}' in text
        assert "avstream_inference_seconds_count{" in text


def test_restart_and_metrics(daemon: Daemon) -> None:
    from avstream.engine.sinks import SINK_KINDS

    daemon.wait_state("a", ("running",))
    r = daemon.client.post("/api/streams/a/restart")
    assert r.status_code == 202
    daemon.wait_state("a", ("running",))
    assert daemon.client.post("/api/streams/nonesuch/restart").status_code == 404
    metrics = daemon.anonymous.get("/metrics")
    assert metrics.status_code == (200 if "metrics" in SINK_KINDS else 503), metrics.text
    assert daemon.client.get("/api/clips").json() == [] or "record" in SINK_KINDS
    assert daemon.client.get("/api/clips/nonesuch.mp4").status_code == 404


def test_a_crashed_shared_process_is_restarted(daemon: Daemon) -> None:
    (pid,) = [pid for pid, name in workers(daemon).items() if name == "avs:t0.score"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        events = daemon.client.get("/api/events", params={"name": "node_restarted"}).json()
        if any(e["detail"]["process"] == "t0.score" for e in events):
            break
        time.sleep(0.3)
    assert any(e["detail"]["process"] == "t0.score" for e in events)
    seq = daemon.streams()["a"]["latest"]["highlight"]["seq"]
    deadline = time.monotonic() + 60
    while daemon.streams()["a"]["latest"]["highlight"]["seq"] <= seq + 1 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert daemon.streams()["a"]["latest"]["highlight"]["seq"] > seq + 1  # results flow again
    assert shared_processes(daemon) == ["avs:t0.score", "avs:t0.window"]


def test_sigterm_stops_every_process(daemon: Daemon) -> None:
    children = workers(daemon)
    assert children
    assert daemon.stop() == 0
    time.sleep(0.5)
    assert not [pid for pid in children if psutil.pid_exists(pid) and _comm(str(pid)) == children[pid]]


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "serve.yaml"
        config.write_text(f"version: 1\nserver: {{listen: '127.0.0.1:{port}', publish: 'tcp://127.0.0.1:{free_port()}'}}\n"
                          "streams:\n  a: {pipeline: highlight, uri: 'sample://demo'}\n")
        r = subprocess.run([sys.executable, "-m", "avstream.engine.cli", "serve", str(config)],
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert f"the REST API cannot listen on 127.0.0.1:{port}" in r.stdout + r.stderr


def test_config_errors_exit_2_with_locations(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(textwrap.dedent("""\
        version: 1
        server: {listen: "127.0.0.1:notaport", colour: blue}
        streams:
          a: {pipeline: highlight, uri: "missing.mp4"}
          b: {pipeline: nonesuch, uri: "sample://demo"}
        mqtt: {host: 127.0.0.1}
        """))
    env = {k: v for k, v in os.environ.items() if k != "UNSET_PW"}
    r = subprocess.run([sys.executable, "-m", "avstream.engine.cli", "serve", str(config)],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert any(line.startswith(f"{config}:2:") and "server.listen" in line for line in lines), lines
    assert any("server.colour: unknown key" in line for line in lines), lines
    assert any(line.startswith(f"{config}:4:") and "streams.a.uri" in line for line in lines), lines
    assert any(line.startswith(f"{config}:5:") and "streams.b.pipeline" in line for line in lines), lines
    assert not (tmp_path / "token").exists()


def test_sink_sections_go_to_registered_kinds_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from avstream.engine.errors import ConfigError
    from avstream.engine.serve.config import load_serve_config
    from avstream.engine.sinks import SINK_KINDS, SinkKind

    monkeypatch.setitem(SINK_KINDS, "record", SinkKind("tests.engine.test_sinks:RecorderSettings",
                                                       "tests.engine.test_sinks:make_recorder", "test recorder"))
    monkeypatch.delitem(SINK_KINDS, "mqtt", raising=False)
    monkeypatch.setenv("SERVE_LABEL", "from-env")
    config = tmp_path / "serve.yaml"
    config.write_text(textwrap.dedent("""\
        version: 1
        streams:
          a: {pipeline: highlight, uri: "sample://demo"}
        record: {label: "${SERVE_LABEL}", limit: 3}
        """))
    loaded = load_serve_config(config)
    assert loaded.sinks["record"] == {"label": "from-env", "limit": 3}
    assert loaded.server.listen == "127.0.0.1:8760" and loaded.path("token") == tmp_path / "token"
    config.write_text(config.read_text() + "mqtt: {host: 127.0.0.1}\n")
    config.write_text(config.read_text().replace("limit: 3", "limit: 0"))
    with pytest.raises(ConfigError) as err:
        load_serve_config(config)
    messages = [str(p) for p in err.value.problems]
    assert any(m.startswith(f"{config}:4:") and "record.limit" in m for m in messages), messages
    assert any(m.startswith(f"{config}:5:") and "not available in this build" in m for m in messages), messages


def test_the_spec_sections_validate_with_the_real_sink_kinds(tmp_path: Path) -> None:
    """SPEC §6's example sections (mqtt, a webhooks list, record) read as the sinks' own settings."""
    from avstream.engine.errors import ConfigError
    from avstream.engine.serve.config import load_serve_config

    config = tmp_path / "serve.yaml"
    config.write_text(textwrap.dedent("""\
        version: 1
        streams:
          a: {pipeline: highlight, uri: "sample://demo"}
        mqtt: {host: 127.0.0.1, port: 1883, prefix: avstream, qos: 1, discovery: true}
        webhooks: [{url: "http://127.0.0.1:9000/hook", events: [violence_start, stream_down], secret: s3}]
        record: {on: [violence_start], pre_roll_s: 5, post_roll_s: 10, retain_days: 7, max_total_gb: 20}
        """))
    loaded = load_serve_config(config)
    assert loaded.sinks["mqtt"]["prefix"] == "avstream"
    targets: Any = loaded.sinks["webhooks"]  # the webhooks settings are a list of targets
    assert targets[0]["events"] == ["violence_start", "stream_down"]
    assert "record" in loaded.sinks
    config.write_text(config.read_text().replace('url: "http://127.0.0.1:9000/hook"', 'url: "ftp://x"'))
    with pytest.raises(ConfigError) as err:
        load_serve_config(config)
    assert any(f"{config}:5:" in str(p) and "webhooks" in str(p) for p in err.value.problems), err.value.problems
