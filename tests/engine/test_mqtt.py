"""The MQTT output against a real Mosquitto broker: topics and payloads of SPEC §8, Home Assistant
discovery, the last will, a broker that goes away and comes back, and `avstream run` end to end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from avstream.engine.items import Event, Result
from avstream.engine.runtime.outputs import ResultPublisher
from avstream.engine.sinks import SinkContext, SinkFanout, build_sinks
from avstream.engine.sinks.mqtt import MqttSink
from tests.conftest import REPO, free_port
from tests.mosquitto import Broker, Subscriber, needs_mosquitto
from tests.pipelines import demo_pipeline

SENTINEL = "test/sentinel"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    needs_mosquitto()
    b = Broker(tmp_path / "broker", free_port())
    b.start()
    yield b
    b.stop()


def make_sink(tmp_path: Path, port: int, **settings: Any) -> MqttSink:
    fanout = build_sinks({"mqtt": {"port": port, **settings}}, SinkContext("violence", tmp_path, tmp_path))
    sink = fanout.sinks[0]
    assert isinstance(sink, MqttSink)
    return sink


def wait(check: Any, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_topics_retained_state_and_discovery(tmp_path: Path, broker: Broker) -> None:
    live = Subscriber(broker.port, ["avstream/#", "homeassistant/#", SENTINEL])
    sink = make_sink(tmp_path, broker.port)
    ctx: zmq.Context[Any] = zmq.Context()
    pub = ResultPublisher(ctx, f"ipc://{tmp_path}/pub", None, "batch", SinkFanout([sink]))  # real headers
    pub.publish_result(Result("violence", "cam0", 0.0, 2.0, time.time(), "violence@1",
                              {"score": 0.9, "alert": True, "audio_score": 0.8, "visual_score": 0.95}))
    pub.publish_result(Result("highlight", "cam0", 0.0, 2.0, time.time(), "highlight@1", {"score": 0.4567891}))
    pub.publish_result(Result("localization", "cam0", 0.0, 2.0, time.time(), "loc@1", {"score": 0.25, "peak": [0.5, 0.5]},
                              {"heatmap": np.ones((4, 4), np.float16)}))
    pub.publish_result(Result("caption", "cam0", 0.0, 2.0, time.time(), "cap@1",
                              {"text": "a dog barks", "source": "audio", "confidence": 0.7}))
    pub.publish_event(Event("violence_start", "cam0", {"score": 0.9}, t0=0.0))
    pub.publish_status({"nodes": [], "streams": []})
    live.wait_for(lambda: live.messages("avstream/cam0/events"), "the event")

    violence = json.loads(live.messages("avstream/cam0/violence")[0].payload)
    assert violence["kind"] == "violence" and violence["alert"] is True and violence["seq"] == 0
    loc = json.loads(live.messages("avstream/cam0/localization")[0].payload)
    assert loc["payloads"][0]["name"] == "heatmap" and "data" not in loc["payloads"][0]  # no binary frames
    assert live.last("avstream/cam0/highlight/score") == b"0.4568"
    assert live.last("avstream/cam0/localization/score") == b"0.25"
    event = json.loads(live.messages("avstream/cam0/events")[0].payload)
    assert event["name"] == "violence_start" and event["detail"] == {"score": 0.9}
    assert not [m for m in live.messages() if "status" in m.topic]  # status is not published

    late = Subscriber(broker.port, ["avstream/#", "homeassistant/#", SENTINEL])
    retained = late.retained_snapshot(SENTINEL)
    assert retained["avstream/available"] == b"online"
    assert retained["avstream/cam0/available"] == b"online"
    assert retained["avstream/cam0/violence/alert"] == b"ON"
    assert retained["avstream/cam0/caption/text"] == b"a dog barks"
    assert "avstream/cam0/violence" not in retained and "avstream/cam0/events" not in retained
    alert = json.loads(retained["homeassistant/binary_sensor/avstream_cam0/violence_alert/config"])
    assert alert["device_class"] == "safety" and alert["state_topic"] == "avstream/cam0/violence/alert"
    assert (alert["payload_on"], alert["payload_off"]) == ("ON", "OFF")
    assert [a["topic"] for a in alert["availability"]] == ["avstream/available", "avstream/cam0/available"]
    assert alert["availability_mode"] == "all" and alert["unique_id"] == "avstream_cam0_violence_alert"
    assert alert["device"] == {"identifiers": ["avstream_cam0"], "name": "cam0", "manufacturer": "avstream",
                               "model": "violence"}
    for obj, state in (("highlight_score", "highlight/score"), ("localization_score", "localization/score")):
        config = json.loads(retained[f"homeassistant/sensor/avstream_cam0/{obj}/config"])
        assert config["state_class"] == "measurement" and config["state_topic"] == f"avstream/cam0/{state}"
        assert config["device"]["identifiers"] == ["avstream_cam0"]
    caption = json.loads(retained["homeassistant/sensor/avstream_cam0/caption/config"])
    assert caption["state_topic"] == "avstream/cam0/caption/text"
    late.close()

    # the alert goes off, the stream goes down: retained states follow
    pub.publish_result(Result("violence", "cam0", 2.0, 4.0, time.time(), "violence@1",
                              {"score": 0.1, "alert": False, "audio_score": 0.1, "visual_score": 0.1}))
    pub.publish_event(Event("stream_down", "cam0", {"uri": "x"}))
    live.wait_for(lambda: live.last("avstream/cam0/available") == b"offline", "cam0 offline")
    assert live.last("avstream/cam0/violence/alert") == b"OFF"

    # Home Assistant restarts: it gets the configs again
    before = len(live.messages("homeassistant/binary_sensor/avstream_cam0/violence_alert/config"))
    live.client.publish("homeassistant/status", b"online")
    live.wait_for(lambda: len(live.messages("homeassistant/binary_sensor/avstream_cam0/violence_alert/config")) > before,
                  "the configs after HA's birth message")

    sink.remove_stream("cam0")
    live.wait_for(lambda: live.last("homeassistant/sensor/avstream_cam0/caption/config") == b"", "the cleared configs")
    late = Subscriber(broker.port, ["avstream/#", "homeassistant/#", SENTINEL])
    retained = late.retained_snapshot(SENTINEL)
    assert sorted(retained) == ["avstream/available"], retained  # everything of cam0 is gone
    late.close()

    pub.close()  # closes the sink: the service says it is going
    ctx.destroy(linger=0)
    live.wait_for(lambda: live.last("avstream/available") == b"offline", "offline at close")
    assert sink.dropped == 0
    live.close()


def test_password_and_no_discovery(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    needs_mosquitto()
    broker = Broker(tmp_path / "broker", free_port(), users={"avs": "s3cret pw"})
    broker.start()
    try:
        live = Subscriber(broker.port, ["#"], auth=("avs", "s3cret pw"))
        sink = make_sink(tmp_path, broker.port, username="avs", password="s3cret pw", discovery=False, prefix="site/a")
        sink.send({"kind": "highlight", "stream": "cam/1", "seq": 0, "score": 0.5, "payloads": []}, [])
        live.wait_for(lambda: live.last("site/a/cam_1/highlight/score") == b"0.5", "the score")
        assert not [m for m in live.messages() if m.topic.startswith("homeassistant/")]
        assert "s3cret" not in repr(sink.settings)
        sink.close()
        live.close()

        refused = make_sink(tmp_path, broker.port, username="avs", password="wrong", reconnect_max_s=1)
        log = tmp_path / "broker" / "mosquitto.log"
        wait(lambda: log.read_text().count("not authorised") >= 3, "three refused attempts")
        assert not refused.connected
        assert caplog.text.count("refused the connection") == 1  # one line, not one per attempt
        assert "wrong" not in caplog.text and "s3cret" not in caplog.text
        refused.send({"kind": "highlight", "stream": "cam0", "seq": 0, "score": 0.5, "payloads": []}, [])
        refused.close(0.5)
    finally:
        broker.stop()


HOLDER = textwrap.dedent("""\
    import sys, time
    from pathlib import Path
    from avstream.engine.sinks import SinkContext, SinkFanout, build_sinks
    sink = build_sinks({"mqtt": {"port": int(sys.argv[1]), "keepalive": 60}}, SinkContext("t", Path("."), Path("."))).sinks[0]
    sink.send({"kind": "highlight", "stream": "cam0", "seq": 0, "score": 0.5, "payloads": []}, [])
    time.sleep(600)
    """)


def test_last_will_says_offline_when_the_process_dies(tmp_path: Path, broker: Broker) -> None:
    live = Subscriber(broker.port, ["avstream/#"])
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(broker.port)], cwd=REPO)
    try:
        live.wait_for(lambda: live.messages("avstream/cam0/highlight"), "the holder's first result")
        assert live.last("avstream/available") == b"online"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(20)
        live.wait_for(lambda: live.last("avstream/available") == b"offline", "the last will")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    live.close()


def highlight(seq: int) -> dict[str, Any]:
    return {"schema_version": 1, "kind": "highlight", "stream": "cam0", "seq": seq, "wall": time.time(),
            "t0": float(seq), "t1": seq + 2.0, "latency_ms": 1.0, "model": "highlight@1", "score": 0.5, "payloads": []}


def test_broker_restart_queues_without_blocking(tmp_path: Path) -> None:
    needs_mosquitto()
    # a persistent session for the test subscriber (the broker keeps it across the restart), so what
    # the sink sends right after reconnecting reaches it however quickly the sink reconnects
    broker = Broker(tmp_path / "broker", free_port(), persistence=True)
    broker.start()
    live = Subscriber(broker.port, ["avstream/#"], client_id="test-subscriber", clean=False)
    sink = make_sink(tmp_path, broker.port, queue_size=6, reconnect_max_s=1)
    try:
        sink.send(highlight(0), [])
        live.wait_for(lambda: live.messages("avstream/cam0/highlight"), "the first result")
        broker.stop()  # SIGTERM: the broker saves the subscriber's session
        wait(lambda: not sink.connected, "the sink to notice the broker is gone")
        durations = []
        for seq in range(1, 21):  # 2 messages each (result + score), 40 for a queue of 6
            start = time.perf_counter()
            sink.send(highlight(seq), [])
            durations.append(time.perf_counter() - start)
        assert max(durations) < 0.5, durations  # generous: it only takes a lock and appends
        assert sink.dropped == 40 - 6
        announced = len(live.messages("avstream/available"))
        broker.start()
        live.wait_for(lambda: any(json.loads(m.payload)["seq"] == 20 for m in live.messages("avstream/cam0/highlight")),
                      "the queued results after the restart", timeout_s=60)
        assert sink.connected
        assert len(live.messages("avstream/available")) > announced  # the retained state is sent again
        seqs = [json.loads(m.payload)["seq"] for m in live.messages("avstream/cam0/highlight")]
        assert sorted(set(seqs)) == [0, 18, 19, 20]  # the newest 3 results (+ their 3 scores) were kept
        # (QoS 1 is at least once: the broker may deliver a message twice across its restart)
        assert live.messages("avstream/cam0/highlight/score")[-3:][0].payload == b"0.5"
        sink.close()
    finally:
        live.close()
        broker.stop()


def test_avstream_run_publishes_to_mqtt(tmp_path: Path, broker: Broker) -> None:
    live = Subscriber(broker.port, ["avstream/#", "homeassistant/#"])
    out = subprocess.run([sys.executable, "-m", "avstream.engine.cli", "run", str(REPO / "pipelines/highlight.yaml"),
                          "--input", "sample://demo", "--duration", "4", "--quiet",
                          "--publish", f"ipc://{tmp_path}/pub", "--set", f"outputs.mqtt.port={broker.port}"],
                         capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    live.wait_for(lambda: live.messages("avstream/cam0/highlight"), "a result from the run")
    header = json.loads(live.messages("avstream/cam0/highlight")[0].payload)
    assert header["kind"] == "highlight" and header["stream"] == "cam0" and 0.0 <= header["score"] <= 1.0
    config = json.loads(live.messages("homeassistant/sensor/avstream_cam0/highlight_score/config")[0].payload)
    assert config["device"]["model"] == "highlight"
    live.wait_for(lambda: live.last("avstream/available") == b"offline", "offline after the run ended")
    live.close()


def test_unreachable_broker_at_start_is_one_warning_and_a_later_connection(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    needs_mosquitto()
    broker = Broker(tmp_path / "broker", free_port())
    sink = make_sink(tmp_path, broker.port, reconnect_max_s=1)
    try:
        sink.send(highlight(0), [])
        wait(lambda: "cannot reach the broker" in caplog.text, "the warning")
        time.sleep(2.5)  # several attempts meanwhile
        assert caplog.text.count("cannot reach the broker") == 1
        broker.start()
        live = Subscriber(broker.port, ["avstream/#"])
        live.wait_for(lambda: live.last("avstream/cam0/available") == b"online", "the retained state after connecting")
        live.close()
    finally:
        sink.close()
        broker.stop()


PIPELINE = demo_pipeline("mqtt: {port: 1883, qos: 3, colour: red}\n", "p")


def test_settings_errors_are_located_and_paho_is_imported_only_when_used(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE)
    out = subprocess.run([sys.executable, "-m", "avstream.engine.cli", "validate", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"{path}:9:22: outputs.mqtt.qos:" in out.stdout + out.stderr
    assert "outputs.mqtt.colour: unknown key" in out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    check = textwrap.dedent(f"""\
        import sys
        import avstream.engine.sinks, avstream.engine.runtime.config as config
        assert "mqtt" in avstream.engine.sinks.SINK_KINDS and "paho" not in sys.modules
        sys.modules["paho"] = None  # as if paho-mqtt were not installed
        try:
            config.load_pipeline({str(path)!r})
        except config.ConfigError as err:
            print("\\n".join(str(p) for p in err.problems))
        """)
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "outputs.mqtt: needs a package that is not installed: paho-mqtt (pip install 'avstream[serve]')" in out.stdout


def test_tls_with_a_ca_file(tmp_path: Path) -> None:
    needs_mosquitto()
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    broker = Broker(tmp_path / "broker", free_port(), tls=(cert, key))
    broker.start()
    try:
        live = Subscriber(broker.port, ["avstream/#"], ca_file=cert)
        sink = make_sink(tmp_path, broker.port, ca_file="server.pem")  # relative to the pipeline's folder
        sink.send(highlight(0), [])
        live.wait_for(lambda: live.last("avstream/cam0/highlight/score") == b"0.5", "the score over TLS")
        sink.close()
        live.close()
    finally:
        broker.stop()
