"""Webhooks against a real HTTP server on 127.0.0.1: signatures, retries, a receiver that is down
for a while or hangs, queue overflow, the event filter, and an `avstream run` that alerts."""

from __future__ import annotations

import json
import logging
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from avstream.engine.errors import ConfigError
from avstream.engine.runtime.config import load_pipeline
from avstream.engine.sinks import SinkContext, build_sinks
from avstream.engine.sinks.webhooks import WebhookSink, WebhooksSettings, WebhookTarget, sign
from tests.conftest import REPO, free_port, run_cli
from tests.engine.webhook_receiver import Receiver, wait_for
from tests.pipelines import write_demo_pipeline


def event(name: str, stream: str = "cam0", seq: int = 0) -> dict[str, Any]:
    return {"schema_version": 1, "kind": "event", "stream": stream, "seq": seq, "wall": time.time(),
            "name": name, "detail": {"score": 0.9}, "t0": 1.0, "t1": 1.5, "payloads": []}


def target(url: str, **kw: Any) -> WebhookTarget:
    settings = {"backoff_initial_s": 0.05, "backoff_cap_s": 0.2, "timeout_s": 2.0, **kw}
    return WebhookTarget(url=url, **settings)


@pytest.fixture
def receivers() -> Any:
    started: list[Receiver] = []

    def make(**kw: Any) -> Receiver:
        receiver = Receiver(**kw).start()
        started.append(receiver)
        return receiver

    yield make
    for r in started:
        r.stop()


def test_signed_events_are_retried_after_5xx_until_accepted(receivers: Any) -> None:
    rx = receivers(secret="s3cret", fail_first=3)
    sink = WebhookSink([target(rx.url, secret="s3cret", max_attempts=6)])
    sent = [event("violence_start", seq=0), event("violence_end", seq=1)]
    for header in sent:
        sink.send(header, [])
    wait_for(lambda: len(rx.received) == 2, what="both events")
    sink.close(5.0)
    for got, header in zip(rx.received, sent, strict=True):
        assert got.signature_ok is True
        assert got.message == header  # the §4 header as sent, nothing added
        assert got.headers["X-Avstream-Signature"] == sign(got.body, "s3cret")
        assert got.headers["X-Avstream-Event"] == header["name"]
        assert got.headers["Content-Type"] == "application/json"
    (stats,) = sink.stats()
    assert (stats["delivered"], stats["failures"], stats["dropped"], stats["retries"]) == (2, 0, 0, 3)
    assert rx.attempts == 5


def test_a_target_down_for_a_while_gets_the_events_once_it_is_up(receivers: Any) -> None:
    port = free_port()
    sink = WebhookSink([target(f"http://127.0.0.1:{port}/hook", secret="k", max_attempts=100)])
    for i in range(3):
        sink.send(event("stream_down", seq=i), [])
    wait_for(lambda: sink.targets[0].retries >= 2, what="failed attempts against the closed port")
    rx = receivers(port=port, secret="k")  # the receiver comes up on the same port
    wait_for(lambda: len(rx.received) == 3, what="the queued events")
    sink.close(5.0)
    assert [r.message["seq"] for r in rx.received] == [0, 1, 2]  # in order
    assert all(r.signature_ok for r in rx.received)
    assert sink.stats()[0]["failures"] == 0


def test_a_hanging_target_delays_neither_send_nor_another_target(receivers: Any) -> None:
    stuck = receivers(hang=True)
    fine = receivers()
    sink = WebhookSink([target(stuck.url, timeout_s=30.0), target(fine.url)])
    slowest = 0.0
    for i in range(20):
        started = time.monotonic()
        sink.send(event("violence_start", seq=i), [])
        slowest = max(slowest, time.monotonic() - started)
    wait_for(lambda: len(fine.received) == 20, what="the healthy target's events")
    assert stuck.attempts == 1 and not stuck.received  # still holding its first request
    assert slowest < 0.5  # enqueue only (a generous bound: it is microseconds)
    started = time.monotonic()
    sink.close(0.5)  # gives up on the stuck one
    assert time.monotonic() - started < 5.0
    stuck_stats, fine_stats = sink.stats()
    assert fine_stats["delivered"] == 20 and fine_stats["failures"] == 0
    assert stuck_stats["failures"] >= 19 and stuck_stats["delivered"] == 0  # the queued ones, counted


def test_queue_overflow_is_counted(receivers: Any) -> None:
    stuck = receivers(hang=True)
    sink = WebhookSink([target(stuck.url, queue_size=3, timeout_s=30.0)])
    sink.send(event("violence_start", seq=0), [])
    wait_for(lambda: stuck.attempts == 1, what="the first request in flight")
    for i in range(1, 11):
        sink.send(event("violence_start", seq=i), [])
    stats = sink.stats()[0]
    assert (stats["queued"], stats["dropped"]) == (3, 7)
    stuck.release.set()  # the receiver answers again: what was queued goes out
    wait_for(lambda: len(stuck.received) == 4, what="the queued events")
    sink.close(5.0)
    assert [r.message["seq"] for r in stuck.received] == [0, 1, 2, 3]
    assert sink.stats()[0]["dropped"] == 7


def test_the_event_filter_and_unsigned_targets(receivers: Any) -> None:
    alerts, everything = receivers(), receivers()
    sink = WebhookSink([target(alerts.url, events=["violence_start"]), target(everything.url)])
    sink.send(event("stream_down"), [])
    sink.send(event("violence_start"), [])
    sink.send({"kind": "violence", "stream": "cam0", "seq": 0, "score": 0.9, "latency_ms": 5.0}, [])
    sink.send({"kind": "status", "stream": "", "seq": 0, "nodes": [], "streams": []}, [])
    wait_for(lambda: len(alerts.received) == 1 and len(everything.received) == 2, what="the events")
    sink.close(5.0)
    assert alerts.received[0].message["name"] == "violence_start"
    assert [r.message["name"] for r in everything.received] == ["stream_down", "violence_start"]
    assert "X-Avstream-Signature" not in alerts.received[0].headers  # no secret, no signature


def test_a_4xx_is_not_retried_and_credentials_stay_out_of_the_log(receivers: Any,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    rx = receivers(status=403)
    url = rx.url.replace("http://", "http://ops:hunter2@")
    caplog.set_level(logging.INFO, logger="avstream.sinks.webhooks")
    sink = WebhookSink([target(url, secret="topsecret")])
    sink.send(event("violence_start"), [])
    wait_for(lambda: sink.stats()[0]["failures"] == 1, what="the refused event")
    sink.close(5.0)
    assert rx.attempts == 1
    assert sink.stats()[0]["target"] == rx.url.replace("http://", "http://ops:***@")
    text = caplog.text
    assert "403" in text and "ops:***@" in text and "hunter2" not in text and "topsecret" not in text


def test_basic_auth_from_the_url(receivers: Any) -> None:
    rx = receivers()
    sink = WebhookSink([target(rx.url.replace("http://", "http://ops:p%40ss@"))])
    sink.send(event("stream_up"), [])
    wait_for(lambda: len(rx.received) == 1, what="the event")
    sink.close(5.0)
    assert rx.received[0].headers["Authorization"] == "Basic b3BzOnBAc3M="  # ops:p@ss


def pipeline_with(tmp_path: Path, webhooks: str) -> str:
    return write_demo_pipeline(tmp_path, "webhooks:\n" + textwrap.indent(textwrap.dedent(webhooks), "  "), "hooks")


def test_the_list_form_of_the_config_is_validated_with_locations(tmp_path: Path) -> None:
    spec = load_pipeline(pipeline_with(tmp_path, """\
        - {url: "http://127.0.0.1:9000/hook", events: [violence_start, stream_down], secret: abc}
        - {url: "https://hooks.example.com/x"}
        """))
    settings = WebhooksSettings.model_validate(spec.outputs.sinks["webhooks"])
    assert [t.events for t in settings.root] == [["violence_start", "stream_down"], None]
    assert "abc" not in repr(settings)  # the secret is not in reprs
    with pytest.raises(ConfigError) as err:
        load_pipeline(pipeline_with(tmp_path, """\
            - {url: "ftp://127.0.0.1/x"}
            - {url: "http://127.0.0.1:9000/hook", max_attempts: 0, colour: red}
            """))
    lines = [str(p) for p in err.value.problems]
    assert any(":10:" in line and "outputs.webhooks[0].url: " in line and "not an http(s) URL" in line
               for line in lines), lines
    assert any(":11:" in line and "outputs.webhooks[1].max_attempts" in line for line in lines), lines
    assert any("outputs.webhooks[1].colour: unknown key" in line for line in lines), lines


def test_build_sinks_makes_the_webhook_sink(tmp_path: Path, receivers: Any) -> None:
    rx = receivers(secret="x")
    fanout = build_sinks({"webhooks": [{"url": rx.url, "secret": "x"}]}, SinkContext("t", tmp_path, tmp_path))  # type: ignore[dict-item]
    fanout.send(event("violence_start"), [])
    fanout.close(5.0)
    assert len(rx.received) == 1 and rx.received[0].signature_ok


@pytest.mark.slow
@pytest.mark.skipif(not (REPO / "models" / "violence.onnx").exists(), reason="models/violence.onnx not built yet")
def test_a_run_that_alerts_delivers_signed_webhooks(tmp_path: Path, receivers: Any) -> None:
    # the demo input has a violence segment at 9-11 s (docs/synthetic.md); the built-in model alerts on it
    rx = receivers(secret="hook-secret", fail_first=1)
    hooks = json.dumps([{"url": rx.url, "secret": "hook-secret", "events": ["violence_start", "violence_end"],
                         "backoff_initial_s": 0.05}])
    out = tmp_path / "out.jsonl"
    proc = run_cli("run", str(REPO / "pipelines" / "violence.yaml"), "--set", "streams.cam0.realtime=false",
                   "--set", "nodes.violence.params.on_threshold=0.5",  # the demo fight scores under the calibrated point
                   "--set", f"outputs.webhooks={hooks}", "--publish", f"tcp://127.0.0.1:{free_port()}",
                   "--jsonl", str(out), "--quiet", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "hook-secret" not in proc.stderr
    events = [m for m in map(json.loads, out.read_text().splitlines())
              if m["kind"] == "event" and m["name"] in ("violence_start", "violence_end")]
    assert events and events[0]["name"] == "violence_start"
    assert [r.message for r in rx.received] == events  # all of them, in order, despite the first 500
    assert all(r.signature_ok for r in rx.received)
    assert [r.headers["X-Avstream-Event"] for r in rx.received] == [e["name"] for e in events]
