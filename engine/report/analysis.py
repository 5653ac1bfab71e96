"""What the report derives from a stream's messages: alert intervals, sequence gaps, latency figures,
node drops on the media clock, the top highlights.

A result is placed at its window's end (``t1``): the media time at which it is known (the scores are
causal). Thumbnails show the window's middle, where its content is.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from avstream.engine.report.reader import RunData, StreamRecord


@dataclass(frozen=True)
class Interval:
    t0: float
    t1: float
    open_end: bool = False  # the run ended (or the file was cut) during the alert


@dataclass(frozen=True)
class LatencyStats:
    count: int
    median_ms: float
    p95_ms: float
    max_ms: float


@dataclass(frozen=True)
class Series:
    t: np.ndarray
    y: np.ndarray


def alert_intervals(record: StreamRecord) -> list[Interval]:
    """Violence alerts: from the ``violence_start``/``violence_end`` events where the run has them,
    else from the ``alert`` flag of the violence results (a JSONL filtered to one kind)."""
    starts = [e for e in record.events if e["name"] == "violence_start" and "t0" in e]
    ends = [e for e in record.events if e["name"] == "violence_end" and "t0" in e]
    violence = record.results.get("violence", [])
    last_t = max((r["t1"] for r in violence), default=0.0)
    if starts or ends:
        out = [Interval(float(e["t0"]), float(e["t1"])) for e in ends]
        closed_up_to = max((i.t1 for i in out), default=float("-inf"))
        open_starts = [e for e in starts if float(e["t0"]) > closed_up_to]
        if open_starts:  # an alert still on when the run stopped
            t0 = float(open_starts[0]["t0"])
            out.append(Interval(t0, max(last_t, t0), open_end=True))
        return sorted(out, key=lambda i: i.t0)
    out = []
    start: float | None = None
    previous_t1 = 0.0
    for result in sorted(violence, key=lambda r: r["t1"]):
        on = bool(result.get("alert"))
        if on and start is None:
            start = float(result["t1"])
        elif not on and start is not None:
            out.append(Interval(start, previous_t1))
            start = None
        previous_t1 = float(result["t1"])
    if start is not None:
        out.append(Interval(start, previous_t1, open_end=True))
    return out


def score_series(results: list[dict[str, Any]], key: str = "score") -> Series | None:
    points = sorted((float(r["t1"]), float(r[key])) for r in results
                    if isinstance(r.get(key), int | float) and not isinstance(r.get(key), bool))
    if not points:
        return None
    arr = np.asarray(points, dtype=np.float64)
    return Series(arr[:, 0], arr[:, 1])


def latency_stats(results: list[dict[str, Any]]) -> LatencyStats | None:
    values = np.asarray([float(r["latency_ms"]) for r in results], dtype=np.float64)
    if values.size == 0:
        return None
    return LatencyStats(int(values.size), float(np.median(values)), float(np.percentile(values, 95)),
                        float(values.max()))


def seq_gaps(messages: list[dict[str, Any]], time_key: str = "t1") -> tuple[Series, int]:
    """Results missing by ``seq`` (SPEC §4: a gap means results were dropped), cumulative over media time.

    A seq that goes back (a second run appended to the file) starts counting afresh, not as a gap.
    """
    times: list[float] = []
    missing: list[int] = []
    total = 0
    previous: int | None = None
    for message in messages:
        seq = int(message["seq"])
        if previous is not None and seq > previous + 1:
            total += seq - previous - 1
        previous = seq
        times.append(float(message.get(time_key, message.get("t0", 0.0))))
        missing.append(total)
    return Series(np.asarray(times), np.asarray(missing, dtype=np.float64)), total


def media_clock(record: StreamRecord) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (wall, media time) of the stream's results, to place ``status`` samples (wall clock only)."""
    pairs = sorted((float(r["wall"]), float(r["t1"])) for results in record.results.values() for r in results)
    if not pairs:
        return np.zeros(0), np.zeros(0)
    arr = np.asarray(pairs, dtype=np.float64)
    return arr[:, 0], arr[:, 1]


def node_drops(run: RunData, record: StreamRecord) -> dict[str, Series]:
    """Per node serving this stream, its drop counter from the ``status`` messages, over media time.

    Status messages carry only wall time: each is placed at the media time the stream's results had
    reached at that wall time (interpolated; clamped to the run's first and last result).
    """
    walls, media = media_clock(record)
    out: dict[str, tuple[list[float], list[float]]] = {}
    for sample in run.status:
        if walls.size:
            t = float(np.interp(sample.wall, walls, media))
        else:
            t = sample.wall - run.status[0].wall
        for node, drops in sample.drops.items():
            served = sample.streams_of.get(node)
            if served and record.id not in served:
                continue
            ts, ys = out.setdefault(node, ([], []))
            ts.append(t)
            ys.append(float(drops))
    return {node: Series(np.asarray(ts), np.asarray(ys)) for node, (ts, ys) in out.items()}


def top_highlights(results: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """The ``count`` best-scoring highlight windows, no two overlapping (neighbours share content)."""
    chosen: list[dict[str, Any]] = []
    for result in sorted(results, key=lambda r: -float(r.get("score", 0.0))):
        if len(chosen) >= count:
            break
        if all(result["t1"] <= c["t0"] or result["t0"] >= c["t1"] for c in chosen):
            chosen.append(result)
    return sorted(chosen, key=lambda r: r["t0"])


@dataclass(frozen=True)
class StreamSummary:
    id: str
    media_start: float
    media_end: float
    wall_span_s: float
    results: dict[str, int]
    latency: dict[str, LatencyStats]
    alerts: list[Interval]
    events: dict[str, int]
    seq_missing: dict[str, int]  # kind (events included) -> results missing by seq
    node_drops: dict[str, int]  # node -> drops at the last status message


def summarize(run: RunData, record: StreamRecord) -> StreamSummary:
    results = [r for rs in record.results.values() for r in rs]
    walls = [float(m["wall"]) for m in [*results, *record.events]]
    latency = {kind: s for kind, rs in record.results.items() if (s := latency_stats(rs)) is not None}
    missing = {kind: seq_gaps(rs)[1] for kind, rs in record.results.items()}
    if record.events:
        missing["event"] = seq_gaps(record.events, "wall")[1]
    drops = {node: int(series.y[-1]) for node, series in node_drops(run, record).items() if series.y.size}
    return StreamSummary(
        id=record.id,
        media_start=min((float(r["t0"]) for r in results), default=0.0),
        media_end=max((float(r["t1"]) for r in results), default=0.0),
        wall_span_s=(max(walls) - min(walls)) if walls else 0.0,
        results={kind: len(rs) for kind, rs in sorted(record.results.items())},
        latency=latency,
        alerts=alert_intervals(record),
        events=dict(sorted(Counter(e["name"] for e in record.events).items())),
        seq_missing=missing,
        node_drops=drops,
    )


def clock(seconds: float) -> str:
    """Media time as h:mm:ss.s (m:ss.s under an hour): readable on runs of any length."""
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    hours, rest = divmod(seconds, 3600.0)
    minutes, secs = divmod(rest, 60.0)
    if hours >= 1:
        return f"{sign}{int(hours)}:{int(minutes):02d}:{secs:04.1f}"
    return f"{sign}{int(minutes)}:{secs:04.1f}"
