"""The run's status as data: what the status view draws, ``--status-json`` writes and PUB sends.

Once a second the supervisor turns the workers' latest counters into one JSON object (its fields are
documented in docs/messages.md, kind ``status``). Rates come from the difference of the counters
between two reports of a worker, over the time between their arrival; nothing here touches a node.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from avstream.engine.runtime.graph import PipelineSpec
    from avstream.engine.runtime.outputs import ResultPublisher

# header fields every message has; the status object keeps only what says something about the result
_HEADER_ONLY = ("schema_version", "kind", "stream", "payloads")
_NOT_STARTED = ("", "created", "starting")


def node_state(worker: Any, status: dict[str, Any]) -> str:
    if worker.fatal or worker.loop.failed:  # an input error, or a crash loop (retried slowly)
        return "failed"
    if worker.done:
        return "done"
    if worker.popen is None and worker.restart_at is not None:
        return "restarting"
    return str(status.get("state", "starting"))


class NodeEntries:
    """The ``nodes`` entries of the status object, with rates kept between reports (run and serve)."""

    def __init__(self) -> None:
        # node -> (arrival of the report, items in, items out) and the rates computed from it
        self.prev: dict[str, tuple[float, int, int]] = {}
        self.fps: dict[str, tuple[float, float]] = {}

    def _rates(self, node_id: str, at: float, n_in: int, n_out: int, running: bool) -> tuple[float, float]:
        prev = self.prev.get(node_id)
        if prev is None or n_in < prev[1] or n_out < prev[2]:  # first report, or counters reset by a restart
            self.prev[node_id] = (at, n_in, n_out)
            self.fps[node_id] = (0.0, 0.0)
        elif at - prev[0] >= 0.2:  # a newer report than the one the rates came from
            dt = at - prev[0]
            self.fps[node_id] = ((n_in - prev[1]) / dt, (n_out - prev[2]) / dt)
            self.prev[node_id] = (at, n_in, n_out)
        return self.fps[node_id] if running else (0.0, 0.0)

    def entry(self, worker: Any, node_id: str, type_id: str, streams: list[str]) -> dict[str, Any]:
        """One node's entry from its worker's latest report (``type_id`` until the report names it)."""
        st = worker.status.get(node_id, {})
        n_in, n_out = int(st.get("in", 0)), int(st.get("out", 0))
        state = node_state(worker, st)
        fps_in, fps_out = self._rates(node_id, worker.status_at, n_in, n_out,
                                      running=state not in ("done", "failed", "restarting"))
        return {
            "id": node_id, "type": st.get("type", type_id), "process": worker.name,
            "state": state, "fps_in": round(fps_in, 2), "fps_out": round(fps_out, 2),
            "items_in": n_in, "items_out": n_out, "queue": int(st.get("queue", 0)),
            "drops": int(st.get("drops", 0)), "latency_ms": float(st.get("latency_ms", 0.0)),
            "restarts": worker.restart_count, "failures": worker.loop.failures, "counters": st.get("counters", {}), "extra": st.get("extra") or {},
            "timings": st.get("timings", {}), "streams": streams,
        }


class StatusTracker(NodeEntries):
    """Builds the status object from the supervisor's workers and the publisher's latest results."""

    def __init__(self, spec: PipelineSpec, run_id: str):
        super().__init__()
        self.spec = spec
        self.run_id = run_id
        self.started = time.monotonic()
        self.sources: dict[str, list[str]] = {}  # stream -> its source nodes
        for node in spec.nodes.values():
            if node.is_source:
                for stream in node.streams:
                    self.sources.setdefault(stream, []).append(node.id)

    def snapshot(self, workers: dict[str, Any], publisher: ResultPublisher, final: bool = False,
                 replayed: Callable[[str], dict[str, int]] | None = None) -> dict[str, Any]:
        """The status object (without the header fields the publisher stamps: seq, wall...)."""
        nodes = []
        states: dict[str, str] = {}
        for worker in workers.values():
            for node_id in worker.nodes:
                node = self.spec.nodes[node_id]
                nodes.append(self.entry(worker, node_id, node.type_id, list(node.streams)))
                states[node_id] = nodes[-1]["state"]
        streams = []
        for stream, sources in self.sources.items():
            latest = {kind: {k: v for k, v in header.items() if k not in _HEADER_ONLY}
                      for kind, header in sorted(publisher.latest.get(stream, {}).items())}
            streams.append({"id": stream, "state": self._stream_state(stream, [states[n] for n in sources], publisher),
                            "latest": latest, "replayed": replayed(stream) if replayed else {}})
        return {"run": self.spec.name, "run_id": self.run_id, "uptime_s": round(time.monotonic() - self.started, 3),
                "final": final, "nodes": nodes, "streams": streams, "outputs": publisher.outputs_status()}

    def _stream_state(self, stream: str, sources: list[str], publisher: ResultPublisher) -> str:
        """starting, running, down (reconnecting or its source restarting), failed or stopped (SPEC §6)."""
        if "failed" in sources:
            return "failed"
        if publisher.stream_down.get(stream) or "restarting" in sources:
            return "down"
        if all(s in ("done", "stopped") for s in sources):
            return "stopped"
        if any(s in ("running", "draining") for s in sources):
            return "running"
        return "starting"

    @staticmethod
    def all_started(workers: dict[str, Any]) -> bool:
        """Every node has left start-up (model loads and the like are over)."""
        return all(worker.done or worker.status.get(n, {}).get("state", "") not in _NOT_STARTED
                   for worker in workers.values() for n in worker.nodes)


class StatusJsonSink:
    """``--status-json PATH`` (``-``: standard output): one status object a line, flushed whole."""

    def __init__(self, path: str):
        self.path = path
        self.reader_gone = False
        self.out: IO[str] | None
        if path == "-":
            self.out = sys.stdout
        else:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self.out = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, status: dict[str, Any]) -> None:
        if self.out is None:
            return
        try:
            self.out.write(json.dumps(status) + "\n")  # one write per line: a reader never sees a torn one
            self.out.flush()
        except BrokenPipeError:  # `--status-json - | head`: the reader is gone; the run stops like the JSONL sink's
            self.reader_gone = True
            self.out = None
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush stays quiet

    def close(self) -> None:
        if self.out is not None and self.out is not sys.stdout:
            self.out.close()
        self.out = None
