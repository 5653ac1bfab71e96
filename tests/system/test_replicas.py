"""``replicas: 3`` on an encoder: streams sharded by consistent hashing, resharded when one dies.

Six synthetic streams (as fast as possible) go through one window node to a highlight encoder with
three replicas, each a worker process of its own. The test checks the assignment against a ring it
builds itself with uhashring (md5, 160 virtual nodes per replica), SIGKILLs one replica's process
mid-run (stopped for half a second first, so that windows are queued at it and lost), and checks in the JSONL output: the lost replica's streams moved to the replicas the
ring gives without it (``streams_moved``), every stream kept getting results after the kill, the
windows lost are reported (``results_dropped`` and the status's ``dropped``) and match the media-time
gap the results show, the other streams lost nothing, and ``seq`` is gap-free per stream and kind.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from uhashring import HashRing

from tests.system.helpers import start_run, stop, worker_pid

pytestmark = pytest.mark.timeout(150)

STREAMS = [f"s{i}" for i in range(6)]  # ids the ring spreads 2-2-2 (checked below)
SECONDS = 150  # media time per stream; windows of 2 s, hop 1 s: long enough for the replica to return


def pipeline(port: int) -> str:
    streams = "\n".join(f'  {s}: {{uri: "synthetic://scene?seed={11 + i}&duration={SECONDS}", realtime: false, process: src}}'
                        for i, s in enumerate(STREAMS))
    return f"""version: 1
name: sharded
streams:
{streams}
nodes:
  window: {{type: avstream/av_window@v1, inputs: [{", ".join(STREAMS)}], process: src}}
  score: {{type: avstream/highlight@v1, inputs: [window], replicas: 3, params: {{model: "builtin:highlight"}}}}
outputs:
  publish: {{endpoint: "tcp://127.0.0.1:{port}"}}
"""


def ring(replicas: list[int]) -> dict[str, int]:
    r = HashRing(nodes={str(i): {"vnodes": 160} for i in replicas})
    return {s: int(r.get_node(s)) for s in STREAMS}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def test_a_killed_replica_moves_its_streams_and_reports_the_gap(tmp_path: Path, port: int) -> None:
    yaml = tmp_path / "sharded.yaml"
    yaml.write_text(pipeline(port))
    out, status = tmp_path / "out.jsonl", tmp_path / "status.jsonl"
    run = start_run(str(yaml), "--quiet", "--jsonl", str(out), "--status-json", str(status))
    try:
        deadline = time.monotonic() + 60
        while True:  # every stream has results from its first owner
            results = [m for m in read_jsonl(out) if m["kind"] == "highlight"]
            if all(sum(1 for m in results if m["stream"] == s) >= 4 for s in STREAMS):
                break
            assert run.poll() is None and time.monotonic() < deadline, run.stderr.read() if run.stderr else ""
            time.sleep(0.05)
        victim = worker_pid(run.pid, "score#1")
        # Stopped first, so windows pile up in its sockets and queue: the kill then surely loses some.
        os.kill(victim, signal.SIGSTOP)
        time.sleep(0.5)
        os.kill(victim, signal.SIGKILL)
        killed_at = time.time()
        assert run.wait(120) == 0, run.stderr.read() if run.stderr else ""
    finally:
        _, err = stop(run)
    assert not psutil.pid_exists(victim) or psutil.Process(victim).status() == psutil.STATUS_ZOMBIE

    first = ring([0, 1, 2])
    assert sorted(set(first.values())) == [0, 1, 2], f"the ring leaves a replica idle: {first}"
    lines = read_jsonl(out)
    snapshots = [json.loads(line) for line in status.read_text().splitlines()]
    assert snapshots[0]["shards"]["score"]["owners"] == first  # the engine's assignment is the ring's

    moves = [m for m in lines if m["kind"] == "event" and m["name"] == "streams_moved"]
    lost = [m for m in moves if m["detail"]["reason"] == "replica_lost"]
    assert len(lost) == 1 and lost[0]["detail"]["replica"] == 1, moves
    without = ring([0, 2])
    victims = sorted(s for s, r in first.items() if r == 1)
    assert victims, "replica 1 had no stream to lose"
    assert lost[0]["detail"]["moved"] == {s: without[s] for s in victims}
    assert all(without[s] == first[s] for s in STREAMS if s not in victims)  # only its streams moved
    back = [m for m in moves if m["detail"]["reason"] == "replica_up"]
    assert back and back[0]["detail"]["moved"] == {s: 1 for s in victims}, "the restarted replica took its streams back"
    assert any(m["kind"] == "event" and m["name"] == "node_restarted" and m["detail"]["node"] == "score#1" for m in lines)

    drops = [m for m in lines if m["kind"] == "event" and m["name"] == "results_dropped"]
    final_dropped = {s["id"]: s["dropped"].get("highlight", 0) for s in snapshots[-1]["streams"]}
    for stream in STREAMS:
        mine = [m for m in lines if m["stream"] == stream and m["kind"] == "highlight"]
        assert [m["seq"] for m in mine] == list(range(len(mine)))  # seq: +1 per message, no gap
        t1 = [m["t1"] for m in mine]
        assert t1 == sorted(set(t1)), f"{stream}: media time went back or repeated"
        assert any(m["wall"] > killed_at + 0.5 for m in mine), f"{stream}: no results after the kill"
        missing = sum(round(b - a) - 1 for a, b in zip(t1, t1[1:], strict=False))
        reported = sum(m["detail"]["windows"] for m in drops if m["stream"] == stream)
        assert final_dropped[stream] == reported
        if stream in victims:
            gaps = [(a, b) for a, b in zip(t1, t1[1:], strict=False) if round(b - a) > 1]
            assert missing == reported, f"{stream}: {missing} windows missing, {reported} reported; gaps {gaps}, " \
                                        f"{[m for m in lines if m['kind'] == 'event']}"
        else:  # untouched by the loss: every window, no drop
            assert missing == 0 and reported == 0, f"{stream} lost {missing} windows"
            assert len(mine) == SECONDS  # one window per hop, the last one flushed at the end
    assert sum(final_dropped[s] for s in victims) > 0, "the killed replica's queued windows were lost, yet no drop was reported"
