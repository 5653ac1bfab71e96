"""The status of real runs: --status-json (file and stdout), PUB status messages, the terminal view,
plain key=value lines, and the execution-provider fallback in one line per run."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli
from tests.system.helpers import Subscriber, start_run, stop

pytestmark = pytest.mark.timeout(120)

NODE_FIELDS = {"id", "type", "process", "state", "fps_in", "fps_out", "items_in", "items_out", "queue", "drops",
               "latency_ms", "restarts", "failures", "counters", "extra", "timings", "streams"}


def endpoint(port: int) -> str:
    return f"tcp://127.0.0.1:{port}"


def check_status(status: dict[str, Any]) -> None:
    assert {"schema_version", "kind", "stream", "seq", "wall", "run", "run_id", "uptime_s", "final", "nodes",
            "streams", "outputs", "payloads"} == set(status)
    assert status["kind"] == "status" and status["stream"] == "" and status["run"] == "highlight"
    assert [n["id"] for n in status["nodes"]] == ["cam0", "window", "score"]
    assert all(set(n) == NODE_FIELDS for n in status["nodes"])
    (stream,) = status["streams"]
    assert set(stream) == {"id", "state", "latest", "replayed"} and stream["id"] == "cam0"
    assert stream["state"] in ("starting", "running", "stopped")


def test_status_json_file_and_status_messages_once_a_second(port: int, tmp_path: Path) -> None:
    path = tmp_path / "status" / "run.jsonl"
    sub = Subscriber(endpoint(port), "status.")
    run = start_run("highlight", "--input", "synthetic://scene?seed=3&duration=5", "--publish", endpoint(port),
                    "--set", "outputs.publish.wait_for_subscribers=1", "--status-json", str(path))
    try:
        msgs = sub.until(lambda m: m["header"]["final"], timeout=60)
        _, err = run.communicate(timeout=30)
    finally:
        sub.close()
        stop(run)
    assert run.returncode == 0, err
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) >= 4  # a 5 s input at media speed
    assert lines == [m["header"] for m in msgs]  # the file holds the PUB messages' headers
    assert all(m["topic"] == "status." and m["payload_bytes"] == [] for m in msgs)
    seqs = [s["seq"] for s in lines]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    gaps = [b["wall"] - a["wall"] for a, b in zip(lines[:-2], lines[1:-1], strict=True)]  # the final one comes early
    assert all(0.8 <= g <= 2.0 for g in gaps), gaps
    for status in lines:
        check_status(status)
    assert [s["final"] for s in lines] == [False] * (len(lines) - 1) + [True]
    final = {n["id"]: n for n in lines[-1]["nodes"]}
    frames = final["cam0"]["counters"]["frames_out"]
    assert 18 <= frames <= 21 and final["cam0"]["items_out"] > frames  # 5 s at 4 fps, plus the audio chunks
    assert final["window"]["items_in"] == final["cam0"]["items_out"]  # every item the source sent got there
    assert final["score"]["items_out"] >= 5 and final["score"]["state"] == "done"
    rates = [s["nodes"][0]["fps_out"] for s in lines[1:-1]]  # the source's rate (items a second) while it ran
    assert max(rates) > 4 and sum(rates) / len(rates) < 2 * final["cam0"]["items_out"] / 5, rates
    assert lines[-1]["streams"][0]["state"] == "stopped"
    assert 0.0 <= lines[-1]["streams"][0]["latest"]["highlight"]["score"] <= 1.0
    # not a terminal: plain lines that name their fields
    assert re.search(r"^status: node=cam0 type=avstream/source@v1 state=done fps_in=\S+ fps_out=\S+ queue=\d+ "
                     r"drops=\d+ latency_ms=\d+ restarts=0", err, re.M), err
    assert re.search(r"^status: stream=cam0 state=stopped highlight=0\.\d\d$", err, re.M), err


def test_status_json_on_stdout_and_nothing_else_there(port: int) -> None:
    res = run_cli("run", "highlight", "--input", "synthetic://scene?seed=4&duration=3", "--publish", endpoint(port),
                  "--status-json", "-", timeout=90)
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]  # every stdout line is one status object
    assert len(lines) >= 2 and lines[-1]["final"]
    for status in lines:
        check_status(status)
    assert "status: node=cam0" in res.stderr and "{" not in res.stderr
    both = run_cli("run", "highlight", "--publish", endpoint(port), "--status-json", "-", "--jsonl", "-")
    assert both.returncode == 2 and both.stdout == ""
    assert "cannot both write to standard output" in both.stderr and "Traceback" not in both.stderr


def test_terminal_gets_the_live_table(port: int) -> None:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "avstream.engine.cli", "run", "highlight", "--input",
                             "synthetic://scene?seed=5&duration=3", "--publish", endpoint(port)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower,
                            env={k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")})
    os.close(follower)
    raw = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        raw += chunk
    os.close(leader)
    assert proc.wait(30) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw.decode())
    assert "\x1b[" in raw.decode()  # drawn in place, with colours
    assert "status: " not in text  # no plain lines on a terminal
    header = next(line for line in text.splitlines() if "fps in" in line).split()
    assert header == ["node", "type", "state", "fps", "in", "fps", "out", "queue", "drops", "lat", "ms", "restarts",
                      "extras"]  # the terminal's 160 columns: with the type column
    for node, type_id in (("cam0", "source"), ("window", "av_window"), ("score", "highlight")):
        assert re.search(rf"^ {node}\s+avstream/{type_id}@v1\s+(running|done)\s+\d+\.\d", text, re.M), text
    assert re.search(r"^ cam0\s+stopped\s+highlight=0\.\d\d", text, re.M), text
    assert "stopped (end of input)" in text


def test_provider_fallback_is_logged_once_per_run(port: int) -> None:
    unavailable = [f"nodes.{n}.params.providers=[rocm,cpu]" for n in ("highlight", "violence", "localization", "captions")]
    sets = [arg for s in unavailable for arg in ("--set", s)]
    res = run_cli("run", "monitor", "--input", "sample://demo", "--duration", "2", "--publish", endpoint(port),
                  "--set", "streams.cam0.realtime=false", *sets, timeout=90)
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stderr.splitlines() if "fallback" in line or "ROCM" in line or "rocm" in line]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("execution provider fallback: rocm for ") and "running on CPUExecutionProvider" in lines[0]
    for node, model in (("highlight", "highlight.onnx"), ("violence", "violence.onnx"),
                        ("localization", "localization.onnx"), ("captions", "captions_decoder_step.onnx")):
        assert f"{node} (" in lines[0] and model in lines[0]
