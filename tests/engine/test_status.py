"""The status view: a redrawn table on a terminal, plain lines otherwise."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import zmq

from avstream.engine.items import Result
from avstream.engine.runtime.config import load_pipeline
from avstream.engine.runtime.outputs import ResultPublisher
from avstream.engine.runtime.status import StatusView


def workers(spec: Any, n_in: int) -> dict[str, Any]:
    out = {}
    for name, nodes in spec.processes().items():
        status = {n: {"type": spec.nodes[n].type_id, "state": "running", "in": n_in, "out": n_in, "queue": 2,
                      "drops": 5, "latency_ms": 12.0, "extra": {"av_skew_ms": 12.5, "reconnects": 1, "log": [1]}}
                  for n in nodes}
        out[name] = SimpleNamespace(nodes=nodes, status=status, done=False, fatal=None)
    return out


def test_terminal_view_redraws_in_place_and_shows_latest_results(tmp_path: Path) -> None:
    spec = load_pipeline("highlight")
    ctx: zmq.Context[Any] = zmq.Context()
    pub = ResultPublisher(ctx, f"ipc://{tmp_path}/pub")
    pub.publish_result(Result("highlight", "cam0", 0.0, 2.0, 0.0, "m@1", {"score": 0.731}))
    out = io.StringIO()
    view = StatusView(spec, tty=True, out=out)
    view.update(workers(spec, 10), pub)
    first = out.getvalue()
    assert "fps in" in first and "drops" in first
    assert "stream cam0: highlight=0.73" in first
    assert "  cam0: av_skew_ms=12.5 reconnects=1" in first
    view.line("a log line")
    view.update(workers(spec, 20), pub)
    text = out.getvalue()[len(first):]
    assert text.startswith("\x1b[")  # cursor up + clear: the table is redrawn, not appended
    assert "a log line" in text
    pub.close()
    ctx.destroy(linger=0)


def test_plain_and_quiet_output(tmp_path: Path) -> None:
    spec = load_pipeline("highlight")
    ctx: zmq.Context[Any] = zmq.Context()
    pub = ResultPublisher(ctx, f"ipc://{tmp_path}/pub")
    out = io.StringIO()
    view = StatusView(spec, tty=False, out=out)
    view.update(workers(spec, 1), pub, final=True)
    assert "\x1b[" not in out.getvalue()
    assert "status: cam0 avstream/source@v1 running" in out.getvalue()
    quiet = io.StringIO()
    view = StatusView(spec, tty=True, quiet=True, out=quiet)
    view.update(workers(spec, 1), pub, final=True)
    view.line("info")
    view.line("warning: kept", important=True)
    assert quiet.getvalue() == "warning: kept\n"
    pub.close()
    ctx.destroy(linger=0)
