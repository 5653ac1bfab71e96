"""A node killed each time it comes back: marked failed, reported, retried slowly; the run goes on.

A real two-stream run; a loop SIGKILLs one stream's encoder process whenever it is back. After
``max_restarts`` restarts inside ``window_s`` a ``node_failed`` event must come out on the PUB socket,
the status must show the node ``failed``, the other stream must keep producing results and the run
must not end. Once the killing stops, the slow retry must survive and be announced (``node_recovered``).
"""

from __future__ import annotations

import os
import queue
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.system.helpers import Subscriber, start_run, stop, worker_pid

pytestmark = pytest.mark.timeout(150)

PIPELINE = """\
version: 1
name: crashloop
streams:
  a: {uri: "synthetic://scene?seed=11&duration=300"}
  b: {uri: "synthetic://scene?seed=12&duration=300"}
nodes:
  window_a: {type: avstream/av_window@v1, inputs: [a]}
  window_b: {type: avstream/av_window@v1, inputs: [b]}
  score_a:
    type: avstream/highlight@v1
    inputs: [window_a]
    params: {model: "builtin:highlight"}
    restart: {max_restarts: 2, window_s: 60, failed_retry_s: 4, recovered_after_s: 2}
  score_b: {type: avstream/highlight@v1, inputs: [window_b], params: {model: "builtin:highlight"}}
outputs:
  publish: {endpoint: "tcp://127.0.0.1:%d"}
"""


def drain(sub: Subscriber, wait: float) -> list[dict[str, Any]]:
    got = []
    try:
        got.append(sub.message(wait))
        while True:
            got.append(sub.message(0.01))
    except queue.Empty:
        return got


def headers(msgs: list[dict[str, Any]], kind: str, **match: Any) -> list[dict[str, Any]]:
    out = [m["header"] for m in msgs if m["header"]["kind"] == kind]
    return [h for h in out if all(h.get(k) == v or h.get("detail", {}).get(k) == v for k, v in match.items())]


def test_a_crash_loop_marks_the_node_failed_and_the_run_goes_on(port: int, tmp_path: Path) -> None:
    pipeline = tmp_path / "crashloop.yaml"
    pipeline.write_text(PIPELINE % port)
    sub = Subscriber(f"tcp://127.0.0.1:{port}")
    run = start_run(str(pipeline), "--quiet")
    seen: list[dict[str, Any]] = []
    try:
        seen += sub.until(lambda m: m["header"]["kind"] == "highlight" and m["header"]["stream"] == "a", timeout=90)
        kills = 0
        deadline = time.monotonic() + 60
        while not headers(seen, "event", name="node_failed"):  # kill score_a each time it is back
            assert time.monotonic() < deadline, "no node_failed event"
            try:
                os.kill(worker_pid(run.pid, "score_a"), signal.SIGKILL)
                kills += 1
            except (LookupError, ProcessLookupError):
                pass
            seen += drain(sub, 0.05)
        failed_at = len(seen)
        (failed,) = headers(seen, "event", name="node_failed")
        assert failed["stream"] == "" and failed["detail"]["node"] == "score_a"
        detail = failed["detail"]
        assert detail["restarts"] == 3 and detail["window_s"] == 60 and detail["retry_in_s"] == 4
        assert "SIGKILL" in detail["last_exit"] and kills >= 3
        assert len(headers(seen, "event", name="node_restarted", node="score_a")) == 2

        # Failed, not ended: the status says so and the other stream keeps going.
        status = sub.until(lambda m: m["header"]["kind"] == "status", timeout=10)
        seen += status
        node = {n["id"]: n for n in status[-1]["header"]["nodes"]}["score_a"]
        assert node["state"] == "failed" and node["failures"] == 1
        more = sub.until(lambda m: m["header"]["kind"] == "highlight" and m["header"]["stream"] == "b", timeout=20)
        seen += more
        assert run.poll() is None

        # The slow retry survives once nothing kills it any more.
        seen += sub.until(lambda m: m["header"]["kind"] == "event" and m["header"]["name"] == "node_recovered",
                          timeout=60)
        recovered = headers(seen, "event", name="node_recovered")[-1]
        assert recovered["detail"]["node"] == "score_a" and recovered["detail"]["failed_for_s"] >= 4
        seen += sub.until(lambda m: m["header"]["kind"] == "highlight" and m["header"]["stream"] == "a", timeout=30)
        status = sub.until(lambda m: m["header"]["kind"] == "status", timeout=10)
        assert {n["id"]: n for n in status[-1]["header"]["nodes"]}["score_a"]["state"] == "running"
        after = [h for h in headers(seen[failed_at:], "highlight") if h["stream"] == "b"]
        assert len(after) >= 3  # stream b ran on all along
        assert run.poll() is None
    finally:
        sub.close()
        _, err = stop(run)
    assert run.returncode == 0, err
    assert "Traceback" not in err


def test_restart_settings_are_validated_with_locations(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    bad = PIPELINE.replace("restart: {max_restarts: 2, window_s: 60, failed_retry_s: 4, recovered_after_s: 2}",
                           "restart: {max_restarts: -1, window_s: 0, retry: 3}") % 5999
    bad = bad.replace('  b: {uri: "synthetic://scene?seed=12&duration=300"}',
                      '  b: {uri: "synthetic://scene?seed=12&duration=300", restart: 5}')
    path = tmp_path / "bad.yaml"
    path.write_text(bad)
    res = run_cli("validate", str(path))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.splitlines()
    assert any(":5:" in line and "streams.b.restart: restart is a mapping" in line for line in lines), lines
    assert any(":13:" in line and "nodes.score_a.restart.max_restarts:" in line for line in lines), lines
    assert any("nodes.score_a.restart.window_s:" in line for line in lines), lines
    assert any("nodes.score_a.restart.retry: unknown key" in line for line in lines), lines
