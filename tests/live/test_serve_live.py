"""`avstream serve` with real cameras and a real broker on 127.0.0.1.

GStreamer's RTSP server (with a password) and an FFmpeg HTTP listener are the two configured cameras;
an FFmpeg TCP listener is the third, added over REST while the others run. Results are collected on
the daemon's ZeroMQ PUB socket and from a real Mosquitto. Then the RTSP server is killed and started
again on its port (the stream goes down and comes back, the others never stop), and the broker is
SIGKILLed and restarted (the graph does not stall; MQTT publishing and the retained state come back).
The tests run in order on one daemon, like tests/engine/test_serve.py.
"""

from __future__ import annotations

import json
import signal
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from tests.engine.test_serve import Collector, Daemon, free_port  # noqa: E402
from tests.live.servers import Server, ffmpeg_server, needs_ffmpeg, needs_gst_rtsp, rtsp_server, sync_clip  # noqa: E402
from tests.mosquitto import Broker, Received, Subscriber, needs_mosquitto  # noqa: E402
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

PASSWORD = "s3cret-cam"
# quick reconnects, so an outage and its recovery fit in a test
LIVE = "stall_timeout: 3, open_timeout: 5, backoff_initial: 0.3, backoff_max: 1.5"
TOPICS = ["avstream/#", "homeassistant/#", "test/#"]


@dataclass
class Live:
    daemon: Daemon
    collector: Collector
    broker: Broker
    subscriber: Subscriber
    rtsp: Server
    rtsp_uri: str  # without the credentials
    tcp: Server
    tcp_uri: str


def wait(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    return wait_until(check, what, timeout, every=0.3)


def metric(daemon: Daemon, name: str, labels: dict[str, str] | None = None) -> float | None:
    """One sample of GET /metrics, by name (``_total`` included) and labels; None when absent."""
    text = daemon.anonymous.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                return float(sample.value)
    return None


def grows(collector: Collector, streams: tuple[str, ...], by: int, what: str, timeout: float = 30.0) -> None:
    """Each of ``streams`` publishes ``by`` more highlight results from now on."""
    start = {s: len(collector.seqs(s, "highlight")) for s in streams}
    wait(lambda: all(len(collector.seqs(s, "highlight")) >= start[s] + by for s in streams), what, timeout)


def assert_unbroken(collector: Collector, stream: str) -> None:
    seqs = collector.seqs(stream, "highlight")
    assert len(seqs) >= 3, f"{stream}: only {seqs}"
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"{stream}: seq broken {seqs}"


def events(daemon: Daemon, stream: str, name: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = daemon.client.get("/api/events", params={"stream": stream, "name": name}).json()
    return found


def new_results(subscriber: Subscriber, stream: str) -> list[Received]:
    """Results of ``stream`` delivered live (not a retained copy)."""
    return [m for m in subscriber.messages(f"avstream/{stream}/highlight") if not m.retain]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    needs_ffmpeg()
    needs_gst_rtsp()
    needs_mosquitto()
    folder = tmp_path_factory.mktemp("serve-live")
    started: list[Server] = []
    broker = Broker(folder / "broker", free_port())
    broker.start()
    subscriber = Subscriber(broker.port, TOPICS)
    daemon: Daemon | None = None
    collector: Collector | None = None
    try:
        clip = sync_clip(folder / "sync.mkv", seconds=600.0)  # outlasts the module; the server loops nothing
        rtsp, rtsp_uri = rtsp_server(clip, folder, auth=f"viewer:{PASSWORD}")
        http, http_uri = ffmpeg_server("http", folder)
        tcp, tcp_uri = ffmpeg_server("tcp", folder)
        for server in (rtsp, http):
            started.append(server.start())
        secret_uri = rtsp_uri.replace("rtsp://", f"rtsp://viewer:{PASSWORD}@")
        streams = textwrap.dedent(f"""\
            cam_rtsp: {{pipeline: highlight, uri: "{secret_uri}", {LIVE}}}
            cam_http: {{pipeline: highlight, uri: "{http_uri}", {LIVE}}}
            """)
        sections = f"mqtt: {{host: 127.0.0.1, port: {broker.port}, prefix: avstream, discovery: true}}\n"
        daemon = Daemon(folder, streams, sections=sections)
        collector = Collector(f"tcp://127.0.0.1:{daemon.pub}")
        yield Live(daemon, collector, broker, subscriber, rtsp, rtsp_uri, tcp, tcp_uri)
    finally:
        if collector is not None:
            collector.close()
        if daemon is not None and daemon.proc.poll() is None:
            daemon.stop()
        subscriber.close()
        broker.stop()
        for server in [*started, tcp]:
            server.stop()


def test_two_live_cameras_run_and_publish(live: Live) -> None:
    d, collector, sub = live.daemon, live.collector, live.subscriber
    for sid in ("cam_rtsp", "cam_http"):
        d.wait_state(sid, ("running",), timeout=90)
    grows(collector, ("cam_rtsp", "cam_http"), 3, "results of both cameras on the PUB socket", timeout=60)
    for sid in ("cam_rtsp", "cam_http"):
        sub.wait_for(partial(sub.messages, f"avstream/{sid}/highlight"), f"MQTT results of {sid}")
        sub.wait_for(partial(sub.last, f"homeassistant/sensor/avstream_{sid}/highlight_score/config"),
                     f"the discovery config of {sid}")
        assert sub.last(f"avstream/{sid}/available") == b"online"
    assert sub.last("avstream/available") == b"online"
    assert metric(d, "avstream_mqtt_connected") == 1.0
    assert metric(d, "avstream_stream_up", {"stream": "cam_rtsp"}) == 1.0
    assert d.client.get("/readyz").status_code == 200


def test_a_third_camera_added_over_rest_runs_and_the_others_keep_going(live: Live) -> None:
    d, collector, sub = live.daemon, live.collector, live.subscriber
    live.tcp.start()
    r = d.client.post("/api/streams", json={"id": "cam_tcp", "pipeline": "highlight", "uri": live.tcp_uri,
                                            "stall_timeout": 3, "open_timeout": 5, "backoff_initial": 0.3,
                                            "backoff_max": 1.5})
    assert r.status_code == 201, r.text
    d.wait_state("cam_tcp", ("running",), timeout=90)
    wait(lambda: collector.seqs("cam_tcp", "highlight"), "the added camera's first result")
    sub.wait_for(lambda: sub.messages("avstream/cam_tcp/highlight"), "MQTT results of the added camera")
    grows(collector, ("cam_rtsp", "cam_http", "cam_tcp"), 2, "results of all three cameras")
    for sid in ("cam_rtsp", "cam_http"):
        assert_unbroken(collector, sid)
    assert d.client.get("/api/streams/cam_tcp").json()["nodes"]["score"]["shared"] is True


def test_a_camera_server_killed_and_restarted_goes_down_and_comes_back(live: Live) -> None:
    d, collector, sub = live.daemon, live.collector, live.subscriber
    d.wait_state("cam_rtsp", ("running",))
    reconnects = metric(d, "avstream_reconnects_total", {"stream": "cam_rtsp"}) or 0.0
    live.rtsp.kill()
    down = d.wait_state("cam_rtsp", ("down",), timeout=30)
    assert down["uri"] == live.rtsp_uri.replace("rtsp://", "rtsp://viewer:***@")
    wait(lambda: events(d, "cam_rtsp", "stream_down"), "the stream_down event in GET /api/events")
    sub.wait_for(lambda: sub.last("avstream/cam_rtsp/available") == b"offline", "cam_rtsp offline")
    fresh = Subscriber(live.broker.port, TOPICS)
    try:
        retained = fresh.retained_snapshot("test/sentinel-down")
        assert retained["avstream/cam_rtsp/available"] == b"offline"
        assert retained["avstream/cam_http/available"] == b"online"
    finally:
        fresh.close()
    assert metric(d, "avstream_stream_up", {"stream": "cam_rtsp"}) == 0.0
    # the outage is this stream's alone
    grows(collector, ("cam_http", "cam_tcp"), 3, "results of the other cameras during the outage")
    assert d.streams()["cam_rtsp"]["state"] == "down"
    n_down = len(collector.seqs("cam_rtsp", "highlight"))

    live.rtsp.start()
    d.wait_state("cam_rtsp", ("running",), timeout=60)
    wait(lambda: events(d, "cam_rtsp", "stream_up"), "the stream_up event in GET /api/events")
    sub.wait_for(lambda: sub.last("avstream/cam_rtsp/available") == b"online", "cam_rtsp online again")
    wait(lambda: len(collector.seqs("cam_rtsp", "highlight")) > n_down + 1, "cam_rtsp results after the restart")
    wait(lambda: (metric(d, "avstream_reconnects_total", {"stream": "cam_rtsp"}) or 0.0) > reconnects,
         "avstream_reconnects_total of cam_rtsp to go up", timeout=20)
    wait(lambda: metric(d, "avstream_stream_up", {"stream": "cam_rtsp"}) == 1.0, "avstream_stream_up back to 1")
    for sid in ("cam_http", "cam_tcp"):
        assert_unbroken(collector, sid)
        assert d.streams()[sid]["state"] == "running"


def test_the_broker_killed_mid_run_the_graph_goes_on_and_mqtt_resumes(live: Live) -> None:
    d, collector, broker = live.daemon, live.collector, live.broker
    every = ("cam_rtsp", "cam_http", "cam_tcp")
    for sid in every:
        d.wait_state(sid, ("running",))
    assert metric(d, "avstream_mqtt_connected") == 1.0
    broker.stop(signal.SIGKILL)
    wait(lambda: metric(d, "avstream_mqtt_connected") == 0.0, "avstream_mqtt_connected to drop to 0", timeout=30)
    # nothing in the graph waits for the broker
    grows(collector, every, 3, "results on the PUB socket while the broker is down")
    assert all(s["state"] == "running" for s in d.streams().values())
    assert d.client.get("/healthz").status_code == 200

    broker.start()  # the same port, no persistence: the retained state must be sent again
    wait(lambda: metric(d, "avstream_mqtt_connected") == 1.0, "avstream_mqtt_connected back to 1", timeout=60)
    fresh = Subscriber(broker.port, TOPICS)
    try:
        for sid in every:
            fresh.wait_for(partial(new_results, fresh, sid), f"new MQTT results of {sid} after the broker restart")
        retained = fresh.retained_snapshot("test/sentinel-up")
        assert retained["avstream/available"] == b"online"
        for sid in every:
            assert retained[f"avstream/{sid}/available"] == b"online", sid
            config = json.loads(retained[f"homeassistant/sensor/avstream_{sid}/highlight_score/config"])
            assert config["state_topic"] == f"avstream/{sid}/highlight/score"
    finally:
        fresh.close()
    for sid in ("cam_http", "cam_tcp"):
        assert_unbroken(collector, sid)  # not one result lost on the PUB socket


def test_camera_credentials_are_never_shown(live: Live) -> None:
    d = live.daemon
    shown = live.rtsp_uri.replace("rtsp://", "rtsp://viewer:***@")
    assert d.streams()["cam_rtsp"]["uri"] == shown
    assert d.client.get("/api/streams/cam_rtsp").json()["uri"] == shown
    downs = events(d, "cam_rtsp", "stream_down")
    assert downs and all(e["detail"]["uri"] == shown for e in downs)
    for path in ("/api/streams", "/api/streams/cam_rtsp", "/api/events"):
        assert PASSWORD not in d.client.get(path).text, path
    assert PASSWORD not in d.log.read_text()
    assert "viewer:***@" in d.log.read_text()  # the URI is logged, redacted
    assert PASSWORD not in json.dumps(live.collector.headers)
    assert not [m.topic for m in live.subscriber.messages() if PASSWORD.encode() in m.payload]
