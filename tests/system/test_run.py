"""Real multi-process runs: real ZeroMQ sockets, real child processes, a subscriber in its own process."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil
import pytest

from tests.conftest import run_cli
from tests.system.helpers import Subscriber, children, start_run, stop, wait_gone, worker_pid

pytestmark = pytest.mark.timeout(120)

FAST = ["--set", "streams.cam0.realtime=false"]


def endpoint(port: int) -> str:
    return f"tcp://127.0.0.1:{port}"


def check_result_header(msg: dict, stream: str = "cam0") -> None:
    h = msg["header"]
    assert msg["topic"] == f"{h['kind']}.{h['stream']}"
    assert h["schema_version"] == 1 and h["stream"] == stream
    assert isinstance(h["seq"], int) and isinstance(h["wall"], float)
    if h["kind"] != "event":
        assert 0 <= h["t0"] < h["t1"]
        assert isinstance(h["latency_ms"], float) and h["latency_ms"] >= 0
        assert "@" in h["model"]
    assert msg["payload_bytes"] == [
        int(__import__("numpy").prod(p["shape"])) * __import__("numpy").dtype(p["dtype"]).itemsize for p in h["payloads"]
    ]


def test_subscriber_receives_the_spec_messages(port: int, tmp_path: Path) -> None:
    sub = Subscriber(endpoint(port), "highlight.")  # a kind's prefix: no status or event messages
    jsonl = tmp_path / "out.jsonl"
    run = start_run("highlight", "--input", "synthetic://scene?seed=3&duration=6", *FAST, "--publish", endpoint(port),
                    "--set", "outputs.publish.wait_for_subscribers=1", "--jsonl", str(jsonl), "--quiet")
    try:
        out, err = run.communicate(timeout=90)
        assert run.returncode == 0, err
        msgs = sub.until(lambda m: m["header"]["t0"] >= 5.0, timeout=10)  # the last, padded window
    finally:
        sub.close()
        stop(run)
    assert [m["header"]["seq"] for m in msgs] == list(range(len(msgs)))
    assert [m["header"]["t0"] for m in msgs] == [float(i) for i in range(len(msgs))]
    for m in msgs:
        check_result_header(m)
        assert m["header"]["kind"] == "highlight" and 0.0 <= m["header"]["score"] <= 1.0
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [line["seq"] for line in lines] == [m["header"]["seq"] for m in msgs]
    assert "Traceback" not in err


def test_kill9_a_node_is_restarted_and_results_resume(port: int) -> None:
    sub = Subscriber(endpoint(port))
    run = start_run("highlight", "--input", "synthetic://scene?seed=4&duration=40", "--publish", endpoint(port), "--quiet")
    try:
        sub.until(lambda m: m["header"]["kind"] == "highlight", timeout=60)
        os.kill(worker_pid(run.pid, "score"), signal.SIGKILL)
        got = sub.until(lambda m: m["header"]["kind"] == "event", timeout=30)
        event = got[-1]["header"]
        assert event["name"] == "node_restarted" and event["detail"]["node"] == "score"
        assert "SIGKILL" in event["detail"]["reason"]
        after = sub.until(lambda m: m["header"]["kind"] == "highlight", timeout=60)
        before_seq = [m["header"]["seq"] for m in got if m["header"]["kind"] == "highlight"]
        assert after[-1]["header"]["seq"] == (before_seq[-1] + 1 if before_seq else after[-1]["header"]["seq"])
        assert run.poll() is None
    finally:
        sub.close()
        stop(run)


def test_a_hung_node_is_killed_after_its_heartbeat_timeout_and_results_resume(port: int) -> None:
    """A process that stops answering (here SIGSTOP, as a deadlock would) is killed and restarted."""
    sub = Subscriber(endpoint(port))
    run = start_run("highlight", "--input", "synthetic://scene?seed=4&duration=60", "--publish", endpoint(port), "--quiet")
    try:
        sub.until(lambda m: m["header"]["kind"] == "highlight", timeout=60)
        hung = worker_pid(run.pid, "score")
        os.kill(hung, signal.SIGSTOP)
        got = sub.until(lambda m: m["header"]["kind"] == "event" and m["header"]["name"] == "node_restarted", timeout=40)
        assert got[-1]["header"]["detail"]["node"] == "score"
        assert not psutil.pid_exists(hung) or psutil.Process(hung).status() == psutil.STATUS_ZOMBIE
        sub.until(lambda m: m["header"]["kind"] == "highlight", timeout=60)
        assert run.poll() is None
    finally:
        sub.close()
        _, err = stop(run)
    assert "sent no heartbeat for 10 s: killing it" in err, err[-2000:]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_the_graph_within_5s_and_leaves_no_child(port: int, signum: int) -> None:
    sub = Subscriber(endpoint(port))
    run = start_run("highlight", "--input", "synthetic://scene?seed=5&duration=60", "--publish", endpoint(port))
    try:
        sub.until(lambda m: m["header"]["kind"] == "highlight", timeout=60)
        kids = [c.pid for c in children(run.pid)]
        assert len(kids) == 3
        run.send_signal(signum)
        run.wait(timeout=5)
        assert run.returncode == 0
        assert wait_gone(kids, 1) == []
        _, err = run.communicate()
        assert f"stopped (signal {signal.Signals(signum).name})" in err and "Traceback" not in err
    finally:
        sub.close()
        stop(run)


def test_workers_exit_when_the_supervisor_is_killed(port: int) -> None:
    sub = Subscriber(endpoint(port))
    run = start_run("highlight", "--input", "synthetic://scene?seed=6&duration=60", "--publish", endpoint(port), "--quiet")
    try:
        sub.until(lambda m: m["header"]["kind"] == "highlight", timeout=60)
        kids = [c.pid for c in children(run.pid)]
        assert kids
        run.kill()
        run.wait(5)
        assert wait_gone(kids, 5) == [], [psutil.Process(p).cmdline() for p in kids if psutil.pid_exists(p)]
    finally:
        sub.close()
        stop(run)


def test_process_groups_share_one_worker(port: int, tmp_path: Path) -> None:
    path = tmp_path / "grouped.yaml"
    path.write_text(f"""\
version: 1
name: grouped
streams:
  cam0: {{uri: "synthetic://scene?seed=8&duration=30", realtime: true}}
nodes:
  window: {{type: avstream/av_window@v1, inputs: [cam0], process: infer}}
  score:  {{type: avstream/highlight@v1, inputs: [window], process: infer}}
outputs:
  publish: {{endpoint: "{endpoint(port)}"}}
""")
    sub = Subscriber(endpoint(port))
    run = start_run(str(path), "--quiet")
    try:
        sub.until(lambda m: m["header"]["kind"] == "highlight", timeout=60)
        names = sorted(c.name() for c in children(run.pid))
        assert names == ["avs:cam0", "avs:infer"]
    finally:
        sub.close()
        out, err = stop(run)
    assert run.returncode == 0, err


def test_kill9_the_source_resumes_where_it_was(port: int) -> None:
    sub = Subscriber(endpoint(port))
    run = start_run("highlight", "--input", "synthetic://scene?seed=11&duration=40", "--publish", endpoint(port), "--quiet")
    try:
        first = sub.until(lambda m: m["header"]["kind"] == "highlight" and m["header"]["t0"] >= 2.0, timeout=60)
        os.kill(worker_pid(run.pid, "cam0"), signal.SIGKILL)
        got = sub.until(lambda m: m["header"]["kind"] == "event", timeout=30)
        assert got[-1]["header"]["name"] == "node_restarted" and got[-1]["header"]["detail"]["node"] == "cam0"
        after = sub.until(lambda m: m["header"]["kind"] == "highlight" and m["header"]["t0"] >= first[-1]["header"]["t0"] + 3,
                          timeout=60)
        t0s = [m["header"]["t0"] for m in first + got + after if m["header"]["kind"] == "highlight"]
        assert t0s == sorted(t0s)  # resumed after the last media time, not from the start
        assert run.poll() is None
    finally:
        sub.close()
        _, err = stop(run)
    assert "FileExistsError" not in err


FOUR_FAST = """\
version: 1
name: four
streams:
{streams}
nodes:
{windows}
  score: {{type: avstream/highlight@v1, inputs: [w0, w1, w2, w3]}}
outputs:
  publish: {{endpoint: "tcp://127.0.0.1:{port}"}}
"""


@pytest.mark.slow
def test_fast_sources_into_one_encoder_always_finish(tmp_path: Path, port: int) -> None:
    """As-fast-as-possible sources finish long before their consumers: nothing may be lost at the end."""
    streams = "\n".join(f'  s{i}: {{uri: "synthetic://scene?seed={i + 1}&duration=12", realtime: false}}' for i in range(4))
    windows = "\n".join(f"  w{i}: {{type: avstream/av_window@v1, inputs: [s{i}]}}" for i in range(4))
    path = tmp_path / "four.yaml"
    path.write_text(FOUR_FAST.format(streams=streams, windows=windows, port=port))
    for attempt in range(3):
        out = tmp_path / f"out{attempt}.jsonl"
        res = run_cli("run", str(path), "--jsonl", str(out), "--quiet", timeout=90)
        assert res.returncode == 0, res.stderr
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        per_stream = {s: [m["t0"] for m in lines if m["stream"] == s] for s in ("s0", "s1", "s2", "s3")}
        assert all(t0s == [float(t) for t in range(12)] for t0s in per_stream.values()), per_stream
