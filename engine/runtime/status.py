"""What a run shows: a live status table on a terminal, plain log lines otherwise.

Per node: fps in/out, queue depth, drops, latency; per stream: the latest result of each kind.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from avstream.engine.runtime.graph import PipelineSpec
    from avstream.engine.runtime.outputs import ResultPublisher

LOG_EVERY_S = 10.0


def _summary(header: dict[str, Any]) -> str:
    kind = header.get("kind")
    if kind == "caption":
        return repr(str(header.get("text", ""))[:40])
    if kind == "violence":
        return f"{header.get('score', 0):.2f}{' ALERT' if header.get('alert') else ''}"
    if kind == "event":
        return str(header.get("name"))
    if "score" in header:
        return f"{header['score']:.2f}"
    return "-"


class StatusView:
    def __init__(self, spec: PipelineSpec, *, tty: bool | None = None, quiet: bool = False, out: TextIO | None = None):
        self.spec = spec
        self.out = out or sys.stderr
        self.tty = (self.out.isatty() if tty is None else tty) and not quiet
        self.quiet = quiet
        self.prev: dict[str, tuple[float, int, int]] = {}
        self.lines_drawn = 0
        self.last_log = time.monotonic()

    def line(self, text: str, important: bool = False) -> None:
        """A log line; on a terminal it goes above the status table. --quiet keeps only important ones."""
        if self.quiet and not important:
            return
        self._erase()
        print(text, file=self.out, flush=True)

    def _erase(self) -> None:
        if self.tty and self.lines_drawn:
            self.out.write(f"\x1b[{self.lines_drawn}F\x1b[J")
            self.lines_drawn = 0

    def rows(self, workers: dict[str, Any]) -> list[str]:
        now = time.monotonic()
        rows = [f"{'node':<16}{'type':<26}{'state':<9}{'fps in':>7}{'fps out':>8}{'queue':>6}{'drops':>6}{'lat ms':>8}"]
        for worker in workers.values():
            for node_id in worker.nodes:
                st = worker.status.get(node_id, {})
                n_in, n_out = int(st.get("in", 0)), int(st.get("out", 0))
                t_prev, in_prev, out_prev = self.prev.get(node_id, (now, n_in, n_out))
                dt = max(now - t_prev, 1e-6)
                fps_in = (n_in - in_prev) / dt if dt > 0.2 else 0.0
                fps_out = (n_out - out_prev) / dt if dt > 0.2 else 0.0
                self.prev[node_id] = (now, n_in, n_out)
                state = "done" if worker.done and not worker.fatal else ("failed" if worker.fatal else st.get("state", "starting"))
                rows.append(f"{node_id[:15]:<16}{st.get('type', self.spec.nodes[node_id].type_id)[:25]:<26}{state[:8]:<9}"
                            f"{fps_in:7.1f}{fps_out:8.1f}{st.get('queue', 0):6d}{st.get('drops', 0):6d}{st.get('latency_ms', 0):8.0f}")
        return rows

    def extra_rows(self, workers: dict[str, Any]) -> list[str]:
        """Node-specific status (A/V skew, reconnects, model backend...): scalars only, one line a node."""
        rows = []
        for worker in workers.values():
            for node_id in worker.nodes:
                extra = worker.status.get(node_id, {}).get("extra") or {}
                parts = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items()
                         if isinstance(v, (int, float, bool)) or (isinstance(v, str) and len(v) < 40)]
                if parts:
                    rows.append(f"  {node_id}: " + " ".join(parts[:8]))
        return rows

    def stream_rows(self, publisher: ResultPublisher) -> list[str]:
        rows = []
        for stream, kinds in sorted(publisher.latest.items()):
            parts = [f"{kind}={_summary(h)}" for kind, h in sorted(kinds.items())]
            rows.append(f"stream {stream or '(graph)'}: " + "  ".join(parts))
        return rows

    def update(self, workers: dict[str, Any], publisher: ResultPublisher, final: bool = False) -> None:
        if self.quiet:
            return
        rows = self.rows(workers) + self.extra_rows(workers) + self.stream_rows(publisher)
        if self.tty:
            self._erase()
            self.out.write("\n".join(rows) + "\n")
            self.out.flush()
            self.lines_drawn = len(rows)
            if final:
                self.lines_drawn = 0
        elif final or time.monotonic() - self.last_log >= LOG_EVERY_S:
            self.last_log = time.monotonic()
            for row in rows[1:]:
                print(f"status: {' '.join(row.split())}", file=self.out, flush=True)

    def close(self) -> None:
        self.lines_drawn = 0
