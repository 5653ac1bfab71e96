"""Results are published at most once per (stream, kind, media span), also across restarts.

A monitor-like run (source, windows and models in one process, realtime) has its worker SIGKILLed
again and again, some kills landing while the restarted process is still starting. A subscriber on
the real PUB socket then checks, per (stream, kind), that ``t1`` only ever grows and ``seq`` goes up
by one per message.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.system.helpers import Subscriber, start_run, stop, worker_pid

pytestmark = pytest.mark.timeout(170)

PIPELINE = """\
version: 1
name: noreplay
streams:
  cam0: {uri: "synthetic://scene?seed=21&duration=300", process: av}
nodes:
  w_highlight: {type: avstream/av_window@v1, inputs: [cam0], process: av}
  w_violence:  {type: avstream/av_window@v1, inputs: [cam0], process: av}
  highlight: {type: avstream/highlight@v1, inputs: [w_highlight], process: av, params: {model: "builtin:highlight"}}
  violence:  {type: avstream/violence@v1, inputs: [w_violence], process: av, params: {model: "builtin:violence"}}
outputs:
  publish: {endpoint: "tcp://127.0.0.1:%d"}
"""


def drain(sub: Subscriber, into: list[dict[str, Any]], wait: float) -> None:
    try:
        into.append(sub.message(wait))
        while True:
            into.append(sub.message(0.01))
    except queue.Empty:
        pass


def new_worker(run_pid: int, old: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = worker_pid(run_pid, "av")
            if pid != old and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return pid
        except (LookupError, psutil.NoSuchProcess):
            pass
        time.sleep(0.02)
    raise TimeoutError("the worker did not come back")


def status_after(status_file: Path, restarts: int, timeout: float) -> None:
    """Wait until the status shows the restarted worker's first report (state no longer `restarting`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = status_file.read_text().splitlines() if status_file.exists() else []
        if lines:
            node = {n["id"]: n for n in json.loads(lines[-1])["nodes"]}["cam0"]
            if node["restarts"] >= restarts and node["state"] != "restarting":
                return
        time.sleep(0.02)
    raise TimeoutError("no status of the restarted worker")


def test_no_result_is_published_twice_after_restarts(port: int, tmp_path: Path) -> None:
    pipeline = tmp_path / "noreplay.yaml"
    pipeline.write_text(PIPELINE % port)
    status = tmp_path / "status.jsonl"
    sub = Subscriber(f"tcp://127.0.0.1:{port}")
    run = start_run(str(pipeline), "--quiet", "--status-json", str(status))
    seen: list[dict[str, Any]] = []
    try:
        seen += sub.until(lambda m: m["header"]["kind"] == "highlight" and m["header"]["t1"] >= 6, timeout=90)
        pid = worker_pid(run.pid, "av")
        for restarts in (1, 2, 3):
            os.kill(pid, signal.SIGKILL)
            pid = new_worker(run.pid, pid, timeout=30)
            if restarts < 3:  # the next kill lands while the new worker is still starting
                status_after(status, restarts, timeout=30)
            drain(sub, seen, 0.05)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            drain(sub, seen, 0.5)
            later = [m for m in seen if m["header"]["kind"] == "highlight"]
            if later and later[-1]["header"]["t1"] >= 30:
                break
        assert run.poll() is None
    finally:
        sub.close()
        _, err = stop(run)
    assert "Traceback" not in err
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for m in seen:
        h = m["header"]
        if h["kind"] in ("highlight", "violence"):
            by_key.setdefault((h["stream"], h["kind"]), []).append(h)
    assert set(by_key) == {("cam0", "highlight"), ("cam0", "violence")}
    for key, hs in by_key.items():
        seqs = [h["seq"] for h in hs]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (key, seqs)
        replayed = [(a["t1"], b["t1"]) for a, b in zip(hs, hs[1:], strict=False) if b["t1"] <= a["t1"]]
        assert replayed == [], f"{key}: t1 went back {len(replayed)} times: {replayed[:10]}"
        assert hs[-1]["t1"] >= 20, key


def test_the_guard_drops_results_whose_media_time_was_published_and_counts_them() -> None:
    from avstream.engine.runtime.replay import ReplayGuard

    guard = ReplayGuard()
    assert [guard.admit("a", "highlight", t1) for t1 in (2.0, 3.0, 4.0)] == [True, True, True]
    assert guard.admit("b", "highlight", 2.0) and guard.admit("a", "violence", 2.0)  # per (stream, kind)
    assert [guard.admit("a", "highlight", t1) for t1 in (2.0, 3.0, 4.0, 5.0)] == [False, False, False, True]
    assert guard.replayed("a") == {"highlight": 3} and guard.replayed("b") == {}
    (line,) = guard.report()
    assert "3 replayed highlight" in line and "already published up to 4.00 s" in line
    assert guard.report() == []  # each drop is logged once
    guard.forget_stream("a")  # a stream restarted on request: a new media timeline
    assert guard.admit("a", "highlight", 1.0) and guard.replayed("a") == {}
