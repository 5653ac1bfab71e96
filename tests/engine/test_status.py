"""The run's status: the object the tracker builds, the rich table, plain key=value lines, PUB messages."""

from __future__ import annotations

import io
import json
import re
import shlex
from pathlib import Path
from typing import Any

import zmq
from rich.console import Console

from avstream.engine.items import Event, Result
from avstream.engine.runtime.config import load_pipeline
from avstream.engine.runtime.outputs import ResultPublisher
from avstream.engine.runtime.snapshot import StatusTracker
from avstream.engine.runtime.status import StatusView, plain_lines, render
from avstream.engine.runtime.supervisor import WorkerProc


def workers(spec: Any, n_in: int, at: float) -> dict[str, WorkerProc]:
    """The supervisor's workers after a status report with ``n_in`` items through every node."""
    out = {}
    for name, nodes in spec.processes().items():
        status = {n: {"type": spec.nodes[n].type_id, "state": "running", "in": n_in, "out": n_in, "queue": 2,
                      "drops": 5, "latency_ms": 12.0, "counters": {"frames_out": float(n_in)},
                      "extra": {"av_skew_ms": 12.5, "reconnects": 1, "state": "connected", "log": [1]}}
                  for n in nodes}
        out[name] = WorkerProc(name, nodes, status=status, status_at=at)
    return out


class Outputs:
    def __init__(self, tmp_path: Path, jsonl: str | None = None):
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.endpoint = f"ipc://{tmp_path}/pub"
        self.pub = ResultPublisher(self.ctx, self.endpoint, jsonl)

    def close(self) -> None:
        self.pub.close()
        self.ctx.destroy(linger=0)


def test_status_object_has_rates_states_and_latest_results(tmp_path: Path) -> None:
    spec = load_pipeline("highlight")
    outputs = Outputs(tmp_path)
    outputs.pub.publish_result(Result("highlight", "cam0", 0.0, 2.0, 0.0, "m@1", {"score": 0.731}))
    tracker = StatusTracker(spec, "run1")
    first = tracker.snapshot(workers(spec, 10, at=100.0), outputs.pub)
    assert [n["id"] for n in first["nodes"]] == ["cam0", "window", "score"]
    assert first["nodes"][0]["fps_out"] == 0.0  # one report: no rate yet
    status = tracker.snapshot(workers(spec, 30, at=100.5), outputs.pub)
    node = status["nodes"][1]
    assert node["fps_in"] == 40.0 and node["fps_out"] == 40.0  # 20 items in 0.5 s between the two reports
    assert node["items_in"] == 30 and node["queue"] == 2 and node["drops"] == 5 and node["latency_ms"] == 12.0
    assert node["process"] == "window" and node["state"] == "running" and node["restarts"] == 0
    assert node["counters"] == {"frames_out": 30.0} and node["extra"]["av_skew_ms"] == 12.5
    assert status["run"] == "highlight" and status["run_id"] == "run1" and status["final"] is False
    (stream,) = status["streams"]
    assert stream["id"] == "cam0" and stream["state"] == "running"
    assert stream["latest"]["highlight"]["score"] == 0.731 and stream["latest"]["highlight"]["seq"] == 0
    assert "payloads" not in stream["latest"]["highlight"]
    outputs.pub.publish_event(Event("stream_down", "cam0", {"error": "gone"}))
    assert tracker.snapshot(workers(spec, 30, at=101.0), outputs.pub)["streams"][0]["state"] == "down"
    outputs.pub.publish_event(Event("stream_up", "cam0", {}))
    restarted = workers(spec, 3, at=101.5)  # counters start again after a restart: no negative rates
    restarted["cam0"].restart_count = 1
    after = tracker.snapshot(restarted, outputs.pub)
    assert after["streams"][0]["state"] == "running"
    assert after["nodes"][0]["restarts"] == 1 and after["nodes"][0]["fps_out"] == 0.0
    outputs.close()


def test_rich_table_has_a_row_per_node_and_the_latest_results(tmp_path: Path) -> None:
    spec = load_pipeline("highlight")
    outputs = Outputs(tmp_path)
    outputs.pub.publish_result(Result("highlight", "cam0", 0.0, 2.0, 0.0, "m@1", {"score": 0.731}))
    tracker = StatusTracker(spec, "run1")
    tracker.snapshot(workers(spec, 10, at=100.0), outputs.pub)
    console = Console(record=True, width=160)
    console.print(render(tracker.snapshot(workers(spec, 30, at=101.0), outputs.pub)))
    text = console.export_text()
    for column in ("node", "fps in", "fps out", "queue", "drops", "lat ms", "restarts", "extras"):
        assert column in text
    rows = [re.split(r"\s{2,}", line.strip()) for line in text.splitlines()]
    assert [r[0] for r in rows if r[0] in ("cam0", "window", "score")] == ["cam0", "window", "score", "cam0"]
    window = next(r for r in rows if r[0] == "window")
    assert window[:9] == ["window", "avstream/av_window@v1", "running", "20.0", "20.0", "2", "5", "12", "0"]
    assert "av_skew_ms=12.5" in window[9] and "reconnects=1" in window[9]
    assert rows[-2] == ["cam0", "running", "highlight=0.73"]  # the stream table
    narrow = Console(record=True, width=80)  # an 80-column terminal: no type column, every number shown
    narrow.print(render(tracker.snapshot(workers(spec, 30, at=101.0), outputs.pub), narrow.width))
    header = next(line for line in narrow.export_text().splitlines() if "fps in" in line).split()
    assert header == ["node", "state", "fps", "in", "fps", "out", "queue", "drops", "lat", "ms", "restarts", "extras"]
    outputs.close()


def test_terminal_view_redraws_in_place_with_log_lines_above(tmp_path: Path) -> None:
    spec = load_pipeline("highlight")
    outputs = Outputs(tmp_path)
    tracker = StatusTracker(spec, "run1")
    out = io.StringIO()
    view = StatusView(tty=True, out=out, console=Console(file=out, force_terminal=True, width=160))
    view.update(tracker.snapshot(workers(spec, 10, at=1.0), outputs.pub))
    first = out.getvalue()
    assert "fps in" in first and "window" in first
    view.line("[score] info: a [bold]log[/bold] line")
    view.update(tracker.snapshot(workers(spec, 20, at=2.0), outputs.pub), final=True)
    text = out.getvalue()[len(first):]
    assert "\x1b[" in text.split("[score]")[0]  # the table is erased before the log line is printed
    assert "[score] info: a [bold]log[/bold] line" in text  # printed as is: no rich markup
    assert view.live is None  # stopped after the final table
    outputs.close()


def test_plain_lines_name_their_fields(tmp_path: Path) -> None:
    spec = load_pipeline("highlight")
    outputs = Outputs(tmp_path)
    outputs.pub.publish_result(Result("caption", "cam0", 0.0, 2.0, 0.0, "c@1", {"text": 'a "loud" bang'}))
    status = StatusTracker(spec, "run1").snapshot(workers(spec, 1, at=1.0), outputs.pub)
    lines = plain_lines(status)
    assert all(line.startswith("status: ") for line in lines)
    fields = [dict(pair.split("=", 1) for pair in shlex.split(line[len("status: "):])) for line in lines]
    assert fields[0] == {"node": "cam0", "type": "avstream/source@v1", "state": "running", "fps_in": "0.0",
                         "fps_out": "0.0", "queue": "2", "drops": "5", "latency_ms": "12", "restarts": "0",
                         "av_skew_ms": "12.5", "reconnects": "1", "extra.state": "connected"}
    assert fields[-1] == {"stream": "cam0", "state": "running", "caption": 'a "loud" bang'}
    out = io.StringIO()
    StatusView(tty=False, out=out).update(status, final=True)
    assert "\x1b[" not in out.getvalue() and out.getvalue().splitlines() == lines
    quiet = io.StringIO()
    view = StatusView(tty=True, quiet=True, out=quiet)
    view.update(status, final=True)
    view.line("info")
    view.line("warning: kept", important=True)
    assert quiet.getvalue() == "warning: kept\n"
    outputs.close()


def test_status_messages_go_to_pub_only(tmp_path: Path) -> None:
    """Topic "status."; kind-prefix subscribers do not see it; the JSONL sink and ``latest`` do not get it."""
    jsonl = tmp_path / "out.jsonl"
    outputs = Outputs(tmp_path, str(jsonl))
    subs = {}
    for prefix in (b"status.", b"highlight.", b"event."):
        subs[prefix] = outputs.ctx.socket(zmq.SUB)
        subs[prefix].setsockopt(zmq.SUBSCRIBE, prefix)
        subs[prefix].connect(outputs.endpoint)
    assert outputs.pub.wait_for_subscribers(3, 5)
    spec = load_pipeline("highlight")
    header = outputs.pub.publish_status(StatusTracker(spec, "r").snapshot(workers(spec, 1, at=1.0), outputs.pub))
    second = outputs.pub.publish_status({"run": "highlight", "nodes": [], "streams": []})
    outputs.pub.publish_result(Result("highlight", "cam0", 0.0, 2.0, 0.0, "m@1", {"score": 0.5}))
    topic, raw = subs[b"status."].recv_multipart()
    got = json.loads(raw)
    assert topic == b"status." and got == header
    assert got["schema_version"] == 1 and got["kind"] == "status" and got["stream"] == "" and got["payloads"] == []
    assert json.loads(subs[b"status."].recv_multipart()[1])["seq"] == second["seq"] == got["seq"] + 1
    assert subs[b"highlight."].recv_multipart()[0] == b"highlight.cam0"  # the first thing it gets
    assert not subs[b"event."].poll(100)
    outputs.close()
    assert [json.loads(line)["kind"] for line in jsonl.read_text().splitlines()] == ["highlight"]
    assert "status" not in outputs.pub.latest.get("", {}) and outputs.pub.published == 1
