"""What a run shows: a live ``rich`` table on a terminal, plain log lines otherwise.

Per node: fps in/out, queue depth, drops, latency, restarts and the node's own extras (A/V skew,
reconnects...); per stream: its state and the latest result of each kind. The view draws the status
object of ``snapshot.py``; it writes to standard error only, so standard output stays free for
``--jsonl -`` and ``--status-json -``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

LOG_EVERY_S = 10.0
COLUMNS = ("node", "type", "state", "fps in", "fps out", "queue", "drops", "lat ms", "restarts", "extras")
WIDE = 110  # terminal columns from which the node table has a type column


def summary(kind: str, latest: dict[str, Any]) -> str:
    """A result in a few characters: score (and alert), caption text, event name."""
    if kind == "caption":
        return repr(str(latest.get("text", ""))[:40])
    if kind == "violence":
        return f"{latest.get('score', 0):.2f}{' ALERT' if latest.get('alert') else ''}"
    if kind == "event":
        return str(latest.get("name"))
    if "score" in latest:
        return f"{latest['score']:.2f}"
    return "-"


def scalar_extras(extra: dict[str, Any]) -> dict[str, Any]:
    """The extras worth a column: scalars and short strings (per-stream dicts repeat the results)."""
    return {k: v for k, v in extra.items()
            if isinstance(v, (int, float, bool)) or (isinstance(v, str) and len(v) < 40)}


def _logfmt_value(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    if not text or any(c in text for c in ' ="\\') or not text.isprintable():
        return json.dumps(text)  # logfmt quoting: "..." with backslash escapes
    return text


def logfmt(pairs: dict[str, Any]) -> str:
    return " ".join(f"{k}={_logfmt_value(v)}" for k, v in pairs.items())


def plain_lines(status: dict[str, Any]) -> list[str]:
    """The status as ``key=value`` lines (logfmt).

    Key=value rather than a column header because these lines go to logs (journald, docker, a file):
    worker log lines interleave with them, ``grep``/``tail`` cut them loose from any header line,
    and the node set changes as nodes restart. Each line names its own fields, which is what log
    tooling (Loki, Splunk, Vector's logfmt parser, ``hl``) reads without configuration.
    """
    lines = []
    for node in status["nodes"]:
        pairs: dict[str, Any] = {
            "node": node["id"], "type": node["type"], "state": node["state"], "fps_in": f"{node['fps_in']:.1f}",
            "fps_out": f"{node['fps_out']:.1f}", "queue": node["queue"], "drops": node["drops"],
            "latency_ms": f"{node['latency_ms']:.0f}", "restarts": node["restarts"],
        }
        for key, value in scalar_extras(node["extra"]).items():
            pairs[f"extra.{key}" if key in pairs else key] = value
        lines.append("status: " + logfmt(pairs))
    for stream in status["streams"]:
        pairs = {"stream": stream["id"], "state": stream["state"]}
        pairs.update({kind: str(latest.get("text", ""))[:60] if kind == "caption" else summary(kind, latest)
                      for kind, latest in stream["latest"].items()})
        lines.append("status: " + logfmt(pairs))
    return lines


def render(status: dict[str, Any], width: int = 200) -> Any:
    """The status as ``rich`` renderables: a node table and a stream table.

    Under ``WIDE`` columns the node type is left out (``avstream graph`` shows it), so that the
    numbers of a nine-node pipeline still fit an 80-column terminal.
    """
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    with_type = width >= WIDE
    nodes = Table(title=f"{status['run']}  ({status['uptime_s']:.0f} s)", title_justify="left", expand=False,
                  box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for name in COLUMNS if with_type else [c for c in COLUMNS if c != "type"]:
        nodes.add_column(name, justify="right" if name in COLUMNS[3:9] else "left", no_wrap=name != "extras")
    colours = {"running": "green", "failed": "red", "restarting": "yellow", "draining": "cyan"}
    for node in status["nodes"]:
        extras = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in list(scalar_extras(node["extra"]).items())[:8])
        nodes.add_row(node["id"], *([node["type"]] if with_type else []),
                      Text(node["state"], style=colours.get(node["state"], "")), f"{node['fps_in']:.1f}", f"{node['fps_out']:.1f}", str(node["queue"]),
                      Text(str(node["drops"]), style="yellow" if node["drops"] else ""), f"{node['latency_ms']:.0f}",
                      str(node["restarts"]), Text(extras))
    streams = Table(expand=False, box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for name in ("stream", "state", "latest results"):
        streams.add_column(name)
    for stream in status["streams"]:
        latest = Text()
        for kind, result in stream["latest"].items():
            alert = kind == "violence" and bool(result.get("alert"))
            latest.append(f"{kind}=", style="dim")
            latest.append(summary(kind, result) + "  ", style="bold red" if alert else "")
        streams.add_row(stream["id"], Text(stream["state"], style=colours.get(stream["state"], "")), latest)
    return Group(nodes, streams)


class StatusView:
    def __init__(self, *, tty: bool | None = None, quiet: bool = False, out: TextIO | None = None,
                 console: Any = None):
        self.out = out or sys.stderr
        self.tty = (self.out.isatty() if tty is None else tty) and not quiet
        self.quiet = quiet
        self.console = console
        self.live: Any = None
        self.last_log = time.monotonic()

    def line(self, text: str, important: bool = False) -> None:
        """A log line; on a terminal it goes above the status table. --quiet keeps only important ones."""
        if self.quiet and not important:
            return
        if self.live is not None:
            from rich.text import Text

            self.live.console.print(Text(text))  # Text: no markup or highlighting of "[node]" and the like
        else:
            print(text, file=self.out, flush=True)

    def _start_live(self) -> None:
        from rich.console import Console
        from rich.live import Live

        console = self.console or Console(file=self.out, force_terminal=True)
        # No redirection of stdout: it may carry --jsonl - or --status-json -; redrawn once a second.
        self.live = Live(console=console, auto_refresh=False, redirect_stdout=False, redirect_stderr=False)
        self.live.start()

    def update(self, status: dict[str, Any], final: bool = False) -> None:
        if self.quiet:
            return
        if self.tty:
            if self.live is None:
                self._start_live()
            self.live.update(render(status, self.live.console.width), refresh=True)
            if final:
                self.close()  # the last table stays on the screen
        elif final or time.monotonic() - self.last_log >= LOG_EVERY_S:
            self.last_log = time.monotonic()
            for row in plain_lines(status):
                print(row, file=self.out, flush=True)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
