"""Reading a run's JSONL (SPEC §4): results and events per stream, ``status`` messages where present.

Any run's file is accepted: one stream or several, any subset of kinds, results of kinds the engine
does not ship (a user's model), ``status`` lines (``--status-json`` writes the same objects). Payload
values (a localization heatmap) are dropped on reading: the report does not draw them, and a long
run's heatmaps would dominate the memory. A line that is not a JSON object, or lacks a key the
report needs, is an error naming the file, the line and the key; only a torn last line (a run
killed while writing, or a file copied while it grew) is skipped with a warning.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avstream.engine.errors import AvstreamError

SCHEMA_VERSION = 1


class ReportInputError(AvstreamError, ValueError):
    """The report's input cannot be used: a missing or malformed file, a video that does not open."""


@dataclass
class StatusSample:
    """What the report keeps of one ``status`` message: the drop counter of each node."""

    wall: float
    drops: dict[str, int]  # node id -> items its inputs dropped, cumulative
    streams_of: dict[str, list[str]]  # node id -> the streams it serves


@dataclass
class StreamRecord:
    """Everything one stream published, in file order."""

    id: str
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # kind -> headers
    events: list[dict[str, Any]] = field(default_factory=list)

    def kinds(self) -> list[str]:
        return sorted(self.results)


@dataclass
class RunData:
    files: list[Path]
    streams: dict[str, StreamRecord] = field(default_factory=dict)
    graph_events: list[dict[str, Any]] = field(default_factory=list)  # stream "": about the whole graph
    status: list[StatusSample] = field(default_factory=list)
    lines: int = 0
    warnings: list[str] = field(default_factory=list)

    def stream(self, stream_id: str) -> StreamRecord:
        record = self.streams.get(stream_id)
        if record is None:
            record = self.streams[stream_id] = StreamRecord(stream_id)
        return record


def _number(header: dict[str, Any], key: str, where: str, what: str) -> float:
    value = header.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        state = "is missing" if key not in header else f"is {json.dumps(value)[:40]}, not a number"
        raise ReportInputError(f"{where}: key '{key}' {state} ({what})")
    return float(value)


def _text(header: dict[str, Any], key: str, where: str, what: str) -> str:
    value = header.get(key)
    if not isinstance(value, str):
        state = "is missing" if key not in header else f"is {json.dumps(value)[:40]}, not a string"
        raise ReportInputError(f"{where}: key '{key}' {state} ({what})")
    return value


def _status_sample(header: dict[str, Any], where: str) -> StatusSample:
    wall = _number(header, "wall", where, "a status message")
    nodes = header.get("nodes", [])
    if not isinstance(nodes, list):
        raise ReportInputError(f"{where}: key 'nodes' is not a list (a status message)")
    drops: dict[str, int] = {}
    streams_of: dict[str, list[str]] = {}
    for node in nodes:
        if not isinstance(node, dict) or not isinstance(node.get("id"), str):
            raise ReportInputError(f"{where}: key 'nodes' holds an entry without an 'id' (a status message)")
        drops[node["id"]] = int(_number(node, "drops", where, f"node {node['id']} of a status message"))
        streams_of[node["id"]] = [str(s) for s in node.get("streams", []) if isinstance(s, str)]
    return StatusSample(wall, drops, streams_of)


class _SeqWatch:
    """Notices a ``seq`` going back: the JSONL sink appends, so a file may hold more than one run."""

    def __init__(self, run: RunData):
        self.run = run
        self.last: dict[tuple[str, str], int] = {}

    def see(self, stream: str, kind: str, seq: int, where: str) -> None:
        key = (stream, kind)
        previous = self.last.get(key)
        if previous is not None and seq <= previous:
            self.run.warnings.append(
                f"{where}: seq of {kind}.{stream} goes back from {previous} to {seq}: the file holds more "
                "than one run (the JSONL sink appends); they are drawn over each other")
        self.last[key] = seq


def _add(run: RunData, header: dict[str, Any], where: str, seqs: _SeqWatch) -> None:
    version = header.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise ReportInputError(f"{where}: schema_version {json.dumps(version)[:20]} is not {SCHEMA_VERSION}")
    kind = _text(header, "kind", where, "every message has one")
    if kind == "status":
        run.status.append(_status_sample(header, where))
        return
    stream = _text(header, "stream", where, f"a {kind} message")
    seq = _number(header, "seq", where, f"a {kind} message")
    seqs.see(stream, kind, int(seq), where)
    _number(header, "wall", where, f"a {kind} message")
    for payload in header.get("payloads") or []:
        if isinstance(payload, dict):
            payload.pop("data", None)
    if kind == "event":
        _text(header, "name", where, "an event")
        if "t0" in header:
            _number(header, "t0", where, "an event")
            header.setdefault("t1", header["t0"])
            _number(header, "t1", where, "an event")
        if stream:
            run.stream(stream).events.append(header)
        else:
            run.graph_events.append(header)
        return
    what = f"a {kind} result of stream {stream!r}"
    t0, t1 = _number(header, "t0", where, what), _number(header, "t1", where, what)
    if t1 < t0:
        raise ReportInputError(f"{where}: t1 {t1:g} is before t0 {t0:g} ({what})")
    _number(header, "latency_ms", where, what)
    if "score" in header:
        _number(header, "score", where, what)
    if kind == "caption":
        _text(header, "text", where, what)
    run.stream(stream).results.setdefault(kind, []).append(header)


def read_run(paths: list[Path], on_bytes: Callable[[int], None] | None = None) -> RunData:
    """Every message of ``paths`` (one run's JSONL, optionally with its ``--status-json`` file)."""
    run = RunData(files=list(paths))
    seqs = _SeqWatch(run)
    for path in paths:
        if not path.exists():
            raise ReportInputError(f"{path}: no such file")
        if not path.is_file():
            raise ReportInputError(f"{path}: not a file")
        _read_file(run, path, seqs, on_bytes)
    if run.lines == 0:
        names = ", ".join(str(p) for p in paths)
        raise ReportInputError(f"{names}: no messages (an empty file: did the run write any result?)")
    return run


def _read_file(run: RunData, path: Path, seqs: _SeqWatch, on_bytes: Callable[[int], None] | None) -> None:
    torn: tuple[int, str] | None = None  # a bad line: fatal unless it turns out to be the last one
    try:
        stream = path.open("rb")
    except OSError as exc:
        raise ReportInputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    with stream:
        for number, raw in enumerate(stream, start=1):
            if on_bytes is not None:
                on_bytes(len(raw))
            if not raw.strip():
                continue
            if torn is not None:
                raise ReportInputError(f"{path}:{torn[0]}: {torn[1]}")
            try:
                header = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                torn = (number, f"not a JSON line ({exc})")
                continue
            if not isinstance(header, dict):
                raise ReportInputError(f"{path}:{number}: not a JSON object (a line holds one message header)")
            _add(run, header, f"{path}:{number}", seqs)
            run.lines += 1
    if torn is not None:
        run.warnings.append(f"{path}:{torn[0]}: the last line is torn ({torn[1]}); skipped")
