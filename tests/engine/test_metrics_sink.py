"""The metrics sink: real headers and status messages in, the Prometheus text format out (parsed with
prometheus_client's own parser); served over HTTP during an `avstream run`."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from avstream.engine.errors import ConfigError
from avstream.engine.inference.contract import read_contract
from avstream.engine.runtime.config import load_pipeline
from avstream.engine.sinks import SinkContext, build_sinks
from avstream.engine.sinks.metrics import MetricsSink
from avstream.engine.timing import Timing
from tests.conftest import REPO, free_port
from tests.engine.webhook_receiver import wait_for
from tests.pipelines import write_demo_pipeline

# the shipped violence model's name@version, as its metrics label it
VIOLENCE_REF = read_contract(REPO / "models" / "violence.onnx").ref if (REPO / "models" / "violence.onnx").exists() else ""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(got: Samples, metric: str, **labels: str) -> float:
    return got[(metric, frozenset(labels.items()))]


def scrape(sink: MetricsSink) -> Samples:
    body, content_type = sink.render()
    assert content_type.startswith("text/plain")
    return samples(body.decode())


def inference(calls: list[float]) -> dict[str, Any]:
    timing = Timing({"model": "violence@1"})
    for c in calls:
        timing.observe(c)
    return timing.snapshot()


def node(nid: str, streams: list[str], **kw: Any) -> dict[str, Any]:
    base = {"id": nid, "type": "avstream/x@v1", "process": nid, "state": "running", "fps_in": 1.0, "fps_out": 1.0,
            "items_in": 0, "items_out": 0, "queue": 0, "drops": 0, "latency_ms": 0.0, "restarts": 0,
            "counters": {}, "extra": {}, "timings": {}, "streams": streams}
    return {**base, **kw}


def status(seq: int, nodes: list[dict[str, Any]], streams: dict[str, str]) -> dict[str, Any]:
    return {"schema_version": 1, "kind": "status", "stream": "", "seq": seq, "wall": time.time(), "run": "t",
            "run_id": "r", "uptime_s": 1.0, "final": False, "nodes": nodes, "payloads": [],
            "streams": [{"id": s, "state": st, "latest": {}} for s, st in streams.items()]}


def result(kind: str, stream: str, latency_ms: float, seq: int = 0) -> dict[str, Any]:
    return {"schema_version": 1, "kind": kind, "stream": stream, "seq": seq, "wall": time.time(), "t0": 0.0,
            "t1": 2.0, "latency_ms": latency_ms, "model": f"{kind}@1", "score": 0.5, "payloads": []}


def event(name: str, stream: str) -> dict[str, Any]:
    return {"schema_version": 1, "kind": "event", "stream": stream, "seq": 0, "wall": time.time(), "name": name,
            "detail": {}, "payloads": []}


def test_status_results_and_events_become_the_spec_metrics() -> None:
    sink = MetricsSink()
    sink.send(status(0, [
        node("cam0", ["cam0"], items_out=300, extra={"state": "up", "reconnects": 2.0, "stalls": 1.0, "av_skew_ms": 40.0}),
        # a camera + microphone pair: one extras dict per input
        node("lobby", ["lobby"], items_out=50, extra={"v4l2:///dev/video0": {"reconnects": 1.0, "stalls": 3.0},
                                                      "mic://default": {"reconnects": 4.0}, "av_skew_ms": -12.5}),
        node("window", ["cam0", "lobby"], items_in=350, items_out=20, queue=3, drops=7),
        node("violence", ["cam0", "lobby"], items_in=20, items_out=20, restarts=1,
             timings={"inference_seconds": inference([0.004, 0.02, 0.02, 0.3])}),
    ], {"cam0": "running", "lobby": "down"}), [])
    for i, ms in enumerate([30.0, 80.0, 2500.0]):
        sink.send(result("violence", "cam0", ms, seq=i), [])
    sink.send(result("caption", "lobby", 700.0), [])
    sink.send(event("violence_start", "cam0"), [])
    sink.send(event("node_restarted", ""), [])
    got = scrape(sink)

    assert value(got, "avstream_items_out_total", stream="cam0", node="cam0") == 300
    assert value(got, "avstream_frames_in_total", stream="", node="window") == 350  # shared by two streams
    assert value(got, "avstream_drops_total", stream="", node="window") == 7
    assert value(got, "avstream_queue_depth", node="window") == 3
    assert value(got, "avstream_node_restarts_total", node="violence") == 1
    assert value(got, "avstream_reconnects_total", stream="cam0") == 2
    assert value(got, "avstream_reconnects_total", stream="lobby") == 5  # over both inputs
    assert value(got, "avstream_stalls_total", stream="lobby") == 3
    assert value(got, "avstream_av_skew_seconds", stream="cam0") == pytest.approx(0.040)
    assert value(got, "avstream_av_skew_seconds", stream="lobby") == pytest.approx(-0.0125)
    assert value(got, "avstream_stream_up", stream="cam0") == 1
    assert value(got, "avstream_stream_up", stream="lobby") == 0

    inf = {"node": "violence", "model": "violence@1"}
    assert value(got, "avstream_inference_seconds_count", **inf) == 4
    assert value(got, "avstream_inference_seconds_sum", **inf) == pytest.approx(0.344)
    assert value(got, "avstream_inference_seconds_bucket", le="0.005", **inf) == 1
    assert value(got, "avstream_inference_seconds_bucket", le="0.025", **inf) == 3
    assert value(got, "avstream_inference_seconds_bucket", le="+Inf", **inf) == 4

    assert value(got, "avstream_results_total", stream="cam0", kind="violence") == 3
    assert value(got, "avstream_results_total", stream="lobby", kind="caption") == 1
    lat = {"stream": "cam0", "kind": "violence"}
    assert value(got, "avstream_result_latency_seconds_count", **lat) == 3
    assert value(got, "avstream_result_latency_seconds_sum", **lat) == pytest.approx(2.61)
    assert value(got, "avstream_result_latency_seconds_bucket", le="0.05", **lat) == 1
    assert value(got, "avstream_result_latency_seconds_bucket", le="0.1", **lat) == 2
    assert value(got, "avstream_result_latency_seconds_bucket", le="2.5", **lat) == 3
    assert value(got, "avstream_events_total", stream="cam0", name="violence_start") == 1
    assert value(got, "avstream_events_total", stream="", name="node_restarted") == 1


def test_totals_survive_a_worker_restart_and_events_flip_stream_up() -> None:
    sink = MetricsSink()
    sink.send(status(0, [node("cam0", ["cam0"], items_out=100, extra={"reconnects": 3.0}),
                         node("violence", ["cam0"], timings={"inference_seconds": inference([0.01] * 5)})],
                     {"cam0": "running"}), [])
    # the source's and the encoder's processes restarted: their totals start again from zero
    sink.send(status(1, [node("cam0", ["cam0"], items_out=30, extra={"reconnects": 1.0}),
                         node("violence", ["cam0"], timings={"inference_seconds": inference([0.2] * 2)})],
                     {"cam0": "running"}), [])
    got = scrape(sink)
    assert value(got, "avstream_items_out_total", stream="cam0", node="cam0") == 130
    assert value(got, "avstream_reconnects_total", stream="cam0") == 4
    inf = {"node": "violence", "model": "violence@1"}
    assert value(got, "avstream_inference_seconds_count", **inf) == 7
    assert value(got, "avstream_inference_seconds_bucket", le="0.01", **inf) == 5
    sink.send(event("stream_down", "cam0"), [])
    assert value(scrape(sink), "avstream_stream_up", stream="cam0") == 0  # at once, not at the next status
    sink.send(event("stream_up", "cam0"), [])
    assert value(scrape(sink), "avstream_stream_up", stream="cam0") == 1


def test_remove_stream_drops_its_series() -> None:
    sink = MetricsSink()
    sink.send(status(0, [node("a", ["a"], items_out=1), node("b", ["b"], items_out=2)],
                     {"a": "running", "b": "running"}), [])
    for s in ("a", "b"):
        sink.send(result("highlight", s, 10.0), [])
        sink.send(event("stream_up", s), [])
    sink.remove_stream("a")
    got = scrape(sink)
    assert not [k for k in got if ("stream", "a") in k[1] or ("node", "a") in k[1]]
    assert value(got, "avstream_queue_depth", node="b") == 0
    assert value(got, "avstream_results_total", stream="b", kind="highlight") == 1
    assert value(got, "avstream_items_out_total", stream="b", node="b") == 2


def test_other_sinks_export_their_counters_through_the_metrics_registry(tmp_path: Path) -> None:
    port = free_port()  # nothing listens: the event fails
    fanout = build_sinks({
        "webhooks": [{"url": f"http://user:pw@127.0.0.1:{port}/h", "max_attempts": 1}],  # type: ignore[dict-item]
        "metrics": {"listen": None},
    }, SinkContext("t", tmp_path, tmp_path))
    metrics = next(s for s in fanout.sinks if isinstance(s, MetricsSink))
    fanout.send(event("violence_start", "cam0"), [])
    target = f"http://user:***@127.0.0.1:{port}/h"
    wait_for(lambda: value(scrape(metrics), "avstream_webhook_failures_total", target=target) == 1,
             what="the failure counted")
    assert value(scrape(metrics), "avstream_webhook_deliveries_total", target=target) == 0
    fanout.close()


def test_the_mqtt_connection_state_is_a_metric(tmp_path: Path) -> None:
    pytest.importorskip("paho.mqtt")
    fanout = build_sinks({"mqtt": {"port": free_port(), "queue_size": 2}, "metrics": {"listen": None}},
                         SinkContext("t", tmp_path, tmp_path))  # no broker there: disconnected
    metrics = next(s for s in fanout.sinks if isinstance(s, MetricsSink))
    assert value(scrape(metrics), "avstream_mqtt_connected") == 0
    for _ in range(4):
        fanout.send(event("stream_down", "cam0"), [])
    wait_for(lambda: value(scrape(metrics), "avstream_mqtt_dropped_total") == 2, what="the overflow counted")
    fanout.close(timeout_s=0.5)


def test_the_http_server_binds_where_told(tmp_path: Path) -> None:
    port = free_port()
    sink = MetricsSink(listen=f"127.0.0.1:{port}")
    try:
        sink.send(result("highlight", "cam0", 12.0), [])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            got = samples(response.read().decode())
        assert value(got, "avstream_results_total", stream="cam0", kind="highlight") == 1
        with pytest.raises(OSError):  # the port is taken: a clear start-up error, not a silent no-metrics run
            MetricsSink(listen=f"127.0.0.1:{port}")
    finally:
        sink.close()


def test_the_settings_are_validated_with_locations(tmp_path: Path) -> None:
    path = Path(write_demo_pipeline(tmp_path, 'metrics: {listen: "9108"}\n', "m"))
    with pytest.raises(ConfigError) as err:
        load_pipeline(str(path))
    assert any(":9:13: outputs.metrics.listen: not HOST:PORT: '9108' (e.g." in str(p) and "HOST:PORT" in str(p) for p in err.value.problems)
    path.write_text(path.read_text().replace('{listen: "9108"}', "{}"))
    assert load_pipeline(str(path)).outputs.sinks["metrics"] == {"listen": "127.0.0.1:9108"}


@pytest.mark.slow
@pytest.mark.skipif(not (REPO / "models" / "violence.onnx").exists(), reason="models/violence.onnx not built yet")
def test_a_run_serves_its_metrics_while_it_runs(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "avstream.engine.cli", "run", "violence", "--duration", "12",
                             "--set", "streams.cam0.realtime=true", "--set", f"outputs.metrics.listen=127.0.0.1:{port}",
                             "--publish", f"tcp://127.0.0.1:{free_port()}", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    got: Samples = {}

    def scraped_enough() -> bool:
        nonlocal got
        assert proc.poll() is None, f"the run ended before its metrics were seen: {proc.stderr.read() if proc.stderr else ''}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                got = samples(response.read().decode())
        except OSError:
            return False  # not listening yet
        return (got.get(("avstream_result_latency_seconds_count", frozenset({"stream": "cam0", "kind": "violence"}.items())), 0) >= 3
                and got.get(("avstream_inference_seconds_count", frozenset({"node": "violence", "model": VIOLENCE_REF}.items())), 0) >= 3)

    try:
        wait_for(scraped_enough, timeout=60, what="latency and inference samples")
    finally:
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr[-2000:]
    assert value(got, "avstream_items_out_total", stream="cam0", node="cam0") > 0
    assert value(got, "avstream_frames_in_total", stream="cam0", node="window") > 0
    assert value(got, "avstream_results_total", stream="cam0", kind="violence") >= 3
    assert value(got, "avstream_stream_up", stream="cam0") == 1
    assert value(got, "avstream_reconnects_total", stream="cam0") == 0


def test_crash_loops_and_replays_become_metrics() -> None:
    sink = MetricsSink()
    snapshot = status(0, [node("score", ["cam0"], state="failed", restarts=6, failures=1),
                          node("window", ["cam0"])], {"cam0": "running"})
    snapshot["streams"][0]["replayed"] = {"highlight": 4}
    sink.send(snapshot, [])
    got = scrape(sink)
    assert value(got, "avstream_node_failures_total", node="score") == 1
    assert value(got, "avstream_node_failed", node="score") == 1
    assert value(got, "avstream_node_failed", node="window") == 0
    assert value(got, "avstream_replayed_total", stream="cam0", kind="highlight") == 4
    recovered = status(1, [node("score", ["cam0"], restarts=7, failures=1), node("window", ["cam0"])],
                       {"cam0": "running"})
    sink.send(recovered, [])
    got = scrape(sink)
    assert value(got, "avstream_node_failed", node="score") == 0
    assert value(got, "avstream_node_failures_total", node="score") == 1
