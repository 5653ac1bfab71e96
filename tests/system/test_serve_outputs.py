"""The operator's path through `avstream serve`, against real servers: two camera files, a third
stream added over REST, Home Assistant entities in a real Mosquitto, signed webhooks at a real HTTP
receiver, a stream-copied clip with pre- and post-roll served over REST, and metrics scraped."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.engine.test_serve import Daemon, free_port
from tests.engine.webhook_receiver import Receiver
from tests.mosquitto import Broker, Subscriber, needs_mosquitto
from tests.waiting import wait_until

FFMPEG, FFPROBE = shutil.which("ffmpeg"), shutil.which("ffprobe")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240),
              pytest.mark.skipif(FFMPEG is None or FFPROBE is None, reason="needs the FFmpeg CLI (scripts/test.sh installs it)")]
REPO = Path(__file__).resolve().parents[2]


def probe(path: Path) -> dict[str, Any]:
    assert FFPROBE is not None
    out = subprocess.run([FFPROBE, "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True)
    parsed: dict[str, Any] = json.loads(out.stdout)
    return parsed


def wait(check: Any, what: str, timeout: float = 90.0) -> Any:
    return wait_until(check, what, timeout, every=0.3)


@pytest.fixture(scope="module")
def camera_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert FFMPEG is not None
    path = tmp_path_factory.mktemp("cams") / "cam.mp4"
    subprocess.run([FFMPEG, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi",
                    "-i", "sine=frequency=440:sample_rate=16000", "-t", "20", "-c:v", "libx264", "-preset",
                    "ultrafast", "-g", "25", "-sc_threshold", "0", "-c:a", "aac", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, camera_file: Path) -> Iterator[tuple[Daemon, Subscriber, Receiver]]:
    needs_mosquitto()
    folder = tmp_path_factory.mktemp("serve-outputs")
    broker = Broker(folder / "broker", free_port())
    broker.start()
    subscriber = Subscriber(broker.port, ["homeassistant/#", "avstream/#"])
    receiver = Receiver(secret="hook-secret").start()
    # the violence pipeline with its alert forced on, so each stream's first window raises violence_start
    pipeline = folder / "alerting.yaml"
    pipeline.write_text((REPO / "pipelines" / "violence.yaml").read_text())
    streams = textwrap.dedent(f"""\
        a: {{pipeline: {pipeline}, uri: "{camera_file}", realtime: true, loop: true}}
        b: {{pipeline: {pipeline}, uri: "{camera_file}", realtime: true, loop: true}}
        """)
    sections = textwrap.dedent(f"""\
        mqtt: {{host: 127.0.0.1, port: {broker.port}, prefix: avstream, discovery: true}}
        webhooks: [{{url: "{receiver.url}", events: [violence_start], secret: hook-secret}}]
        record: {{on: [violence_start], pre_roll_s: 1, post_roll_s: 3}}
        """)
    _force_alert(pipeline)
    daemon = Daemon(folder, streams, sections=sections)
    try:
        yield daemon, subscriber, receiver
    finally:
        if daemon.proc.poll() is None:
            daemon.stop()
        subscriber.close()
        receiver.stop()
        broker.stop()


def _force_alert(pipeline: Path) -> None:
    import yaml

    tree = yaml.safe_load(pipeline.read_text())
    for node in tree["nodes"].values():
        if node.get("type", "").startswith("avstream/violence@"):
            node.setdefault("params", {}).update(on_threshold=0.0, off_threshold=0.0)
    pipeline.write_text(yaml.safe_dump(tree, sort_keys=False))


def test_the_operator_path(service: tuple[Daemon, Subscriber, Receiver], camera_file: Path) -> None:
    daemon, subscriber, receiver = service
    daemon.wait_state("a", ("running",))
    daemon.wait_state("b", ("running",))
    # a third stream joins while the others run
    added = daemon.client.post("/api/streams", json={"id": "c", "pipeline": "highlight", "uri": str(camera_file),
                                                     "realtime": True, "loop": True})
    assert added.status_code == 201, added.text
    daemon.wait_state("c", ("running",))

    # Home Assistant discovery in the real broker, and the retained alert state
    config_topic = "homeassistant/binary_sensor/avstream_a/violence_alert/config"
    config = wait(lambda: subscriber.last(config_topic), "the violence alert entity of stream a")
    entity = json.loads(config)
    assert entity["device_class"] == "safety" and entity["unique_id"] and entity["device"]
    wait(lambda: subscriber.last("avstream/a/violence/alert") == b"ON", "the retained alert ON")
    wait(lambda: subscriber.last("avstream/c/highlight/score") is not None, "the added stream's highlight score")

    # signed webhooks
    wait(lambda: any(r.message["stream"] == "a" for r in receiver.received), "a webhook for stream a")
    assert all(r.signature_ok for r in receiver.received)
    assert {r.headers["X-Avstream-Event"] for r in receiver.received} == {"violence_start"}

    # a stream-copied clip with pre- and post-roll, listed and served over REST
    clips = wait(lambda: [c for c in daemon.client.get("/api/clips", params={"stream": "a"}).json()], "a clip of a")
    clip = clips[0]
    mp4 = daemon.client.get(f"/api/clips/{clip['id']}.mp4")
    assert mp4.status_code == 200 and len(mp4.content) > 1000
    side = daemon.client.get(f"/api/clips/{clip['id']}.json").json()
    assert side["event"]["name"] == "violence_start" and side["pre_roll_s"] == 1 and side["post_roll_s"] == 3
    saved = daemon.folder / "clip.mp4"
    saved.write_bytes(mp4.content)
    got, source = probe(saved), probe(camera_file)
    video = [s for s in got["streams"] if s["codec_type"] == "video"][0]
    src_video = [s for s in source["streams"] if s["codec_type"] == "video"][0]
    for key in ("codec_name", "profile", "width", "height", "pix_fmt"):
        assert video[key] == src_video[key], key  # copied, not re-encoded
    assert any(s["codec_type"] == "audio" for s in got["streams"])
    assert float(got["format"]["duration"]) >= 3.0

    # metrics, scraped without a token (server.metrics_auth is off by default)
    text = daemon.anonymous.get("/metrics").text
    assert 'avstream_results_total{kind="violence",stream="a"}' in text
    assert "avstream_mqtt_connected 1.0" in text
    assert 'avstream_clips_total{stream="a"}' in text
    assert "avstream_result_latency_seconds_bucket" in text


def test_sighup_rebuilds_a_changed_output_section(tmp_path: Path) -> None:
    receiver = Receiver(secret="later").start()
    daemon = Daemon(tmp_path, 'a: {pipeline: highlight, uri: "sample://demo", realtime: true, loop: true}\n')
    try:
        daemon.wait_state("a", ("running",))
        daemon.config.write_text(daemon.config.read_text()
                                 + f'webhooks: [{{url: "{receiver.url}", secret: later}}]\n')
        daemon.proc.send_signal(signal.SIGHUP)
        wait(lambda: "outputs rebuilt: webhooks" in daemon.log.read_text(), "the webhooks output rebuilt")
        (tmp_path / "noise.mp4").write_bytes(b"not media")  # its stream fails: an event for the new target
        added = daemon.client.post("/api/streams", json={"id": "bad", "pipeline": "highlight",
                                                         "uri": str(tmp_path / "noise.mp4")})
        assert added.status_code == 201, added.text
        got = wait(lambda: [r for r in receiver.received if r.message.get("stream") == "bad"], "an event of 'bad'")
        assert all(r.signature_ok for r in got)
        assert daemon.streams()["a"]["state"] == "running"  # the other stream untouched
    finally:
        if daemon.proc.poll() is None:
            daemon.stop()
        receiver.stop()
