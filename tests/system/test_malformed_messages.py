"""Garbage on every socket of a running pipeline: the supervisor's control and results sockets and
every data edge get malformed frames, bad JSON, wrong types, absurd shapes and dtypes, shared-memory
descriptors outside the ring, and control messages from a stranger posing as a worker. The run
keeps producing the same results as an undisturbed one and exits 0."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq

from tests.conftest import run_cli
from tests.system.helpers import children, start_run, stop
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(180)

INPUT = "synthetic://scene?seed=11&duration=10"


def _j(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def data_garbage() -> list[list[bytes]]:
    """Messages no encoder makes, for a data edge or the results socket."""
    desc = {"ring": "../../../etc/passwd.ring", "slots": 4, "readers": 1, "slot_bytes": 64, "slot": 0, "gen": 1,
            "shape": [4, 4, 3], "dtype": "|u1"}
    frame = {"type": "VideoFrame", "stream": "cam0", "t": 0.5, "wall": time.time(), "arrays": []}
    return [
        [b""], [b"\xff\xfe\x00"], [b"{" * 200000], [b"[1, 2, 3]"], [b"null"], [_j({"type": "Nope", "arrays": []})],
        [_j({"type": "Event", "name": 7, "arrays": []})],
        [_j({"type": "EndOfStream", "stream": ["cam0"], "arrays": []})],
        [_j({"type": "AudioChunk", "stream": "cam0", "t": 0.0, "wall": 0.0, "sample_rate": 16000,
             "arrays": [{"field": "samples", "dtype": "<f4", "shape": [1 << 30]}]}), b"\0" * 64],
        [_j({"type": "Result", "kind": "highlight", "stream": "cam0", "t0": 0, "t1": 1, "capture_wall": 0,
             "model": "m", "arrays": [{"payload": "x", "dtype": "|O", "shape": [2]}]}), b"\0" * 16],
        [_j({**frame, "arrays": [{"field": "image", "dtype": "|u1", "shape": [2, 2, 3]}]})],  # frame count
        [_j({**frame, "shm": desc})],
        [_j({**frame, "shm": {**desc, "ring": "x.1.1.ring", "slot": 1 << 40}})],
        [_j({**frame, "shm": {**desc, "ring": "cam0.1.1.ring", "shape": [1 << 20, 1 << 20, 3]}})],
        [_j({**frame, "t": "NaN"})],
        [os.urandom(512), os.urandom(4096), os.urandom(7)],
    ]


def control_garbage(worker_names: list[str]) -> list[list[bytes]]:
    """For the control ROUTER (a DEALER adds nothing: the ROUTER prefixes the identity)."""
    name = worker_names[0]
    return [
        [b"not json"], [b"{" * 200000], [_j([1])], [_j({"type": "status", "process": name, "nodes": "x"})],
        [_j({"type": "hello", "process": name, "pid": 1})],  # a pid that is not the spawned worker's
        [_j({"type": "drained", "process": name})],  # would stop a real worker early if believed
        [_j({"type": "error", "process": name, "node": name, "fatal": True, "message": "X: forged"})],
        [_j({"type": "log", "process": name, "level": 3, "message": None})],
        [_j({"type": "status", "process": name, "nodes": {"n": {"in": "many"}}})],
        [b"a", b"b", b"c"], [os.urandom(300)],
    ]


def bound_sockets(pid: int) -> dict[str, str]:
    """ipc socket paths bound by the supervisor and its workers, by file name."""
    out: dict[str, str] = {}
    for proc in [psutil.Process(pid), *children(pid)]:
        try:
            for conn in proc.net_connections(kind="unix"):
                if isinstance(conn.laddr, str) and conn.laddr.startswith("/") and "/avs-" in conn.laddr:
                    out[Path(conn.laddr).name] = conn.laddr
        except psutil.NoSuchProcess:
            continue
    return out


def results_of(jsonl: Path) -> list[tuple[str, float, float, float]]:
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    return [(h["kind"], h["t0"], h["t1"], round(h["score"], 5)) for h in lines if h["kind"] == "highlight"]


def test_garbage_on_every_socket_leaves_the_run_correct(tmp_path: Path) -> None:
    clean = tmp_path / "clean.jsonl"
    ref = run_cli("run", "highlight", "--input", INPUT, "--set", "streams.cam0.realtime=false",
                  "--publish", f"ipc://{tmp_path}/clean.pub", "--jsonl", str(clean), "--quiet", timeout=120)
    assert ref.returncode == 0, ref.stderr
    expected = results_of(clean)
    assert len(expected) >= 9

    attacked = tmp_path / "attacked.jsonl"
    run = start_run("highlight", "--input", INPUT, "--set", "streams.cam0.realtime=true",
                    "--publish", f"ipc://{tmp_path}/attacked.pub", "--jsonl", str(attacked), "--quiet")
    ctx = zmq.Context()
    try:
        wait_until(lambda: attacked.exists() and attacked.read_text().count("\n") >= 1, "a first result", 60)
        sockets = wait_until(lambda: (s := bound_sockets(run.pid)) and {"control", "results"} <= s.keys() and
                             any(k.startswith("e") for k in s) and s, "the run's sockets", 30)
        edges = [p for name, p in sockets.items() if name.startswith("e")]
        workers = sorted({p.name()[4:] for p in children(run.pid) if p.name().startswith("avs:")})
        for path in [sockets["results"], *edges]:
            push = ctx.socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 2000)
            push.connect(f"ipc://{path}")
            for msg in data_garbage():
                push.send_multipart(msg)
            push.close()
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 2000)
        dealer.connect(f"ipc://{sockets['control']}")
        for msg in control_garbage(workers):
            dealer.send_multipart(msg)
        dealer.close()
        out, err = run.communicate(timeout=120)
    finally:
        ctx.destroy(linger=0)
        stop(run)
    assert run.returncode == 0, err
    assert "Traceback" not in err
    got = results_of(attacked)
    assert [r[1:3] for r in got] == [r[1:3] for r in expected]  # every window, once, in order
    assert [r[3] for r in got] == pytest.approx([r[3] for r in expected], abs=1e-4)
    for where in ("the control socket", "the results socket", "edge socket"):
        assert f"on {where}" in err, f"nothing was dropped on {where}: {err[-2000:]}"
    assert "forged" not in err  # the stranger's 'fatal error' was not believed
    assert "dropped malformed messages: " in err  # and the counts are reported at the end
