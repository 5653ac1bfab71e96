"""The report's figures, drawn by matplotlib's Agg canvas (no pyplot: no GUI backend, no global state).

Each figure is described as it is saved (``FigureInfo``): its axes, their pixel boxes in the PNG and
the series each shows with its colour, so a reader (or a test) can check a PNG shows what it claims.
Colours are fixed per kind and per event name, and distinct within a figure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from avstream.engine.report.analysis import (
    Interval,
    Series,
    alert_intervals,
    clock,
    latency_stats,
    media_clock,
    node_drops,
    score_series,
    seq_gaps,
)
from avstream.engine.report.reader import RunData, StreamRecord

DPI = 100
WIDTH_IN = 12.0
KIND_COLORS = {"highlight": "#1f77b4", "violence": "#d62728", "localization": "#2ca02c", "caption": "#8c564b",
               "event": "#555555"}
SUB_SCORE_COLORS = {"audio_score": "#ff7f0e", "visual_score": "#9467bd"}  # the violence node's two branches
OTHER_COLORS = ["#17becf", "#bcbd22", "#e377c2", "#7f3c8d", "#005f5f", "#a05a00"]  # a user model's kinds
EVENT_COLORS = {"violence_start": "#b8860b", "violence_end": "#6b8e23", "stream_down": "#000000",
                "stream_up": "#4682b4", "node_restarted": "#ff1493"}
OTHER_EVENT_COLOR = "#708090"
ALERT_COLOR = "#d62728"
SOURCE_COLORS = {"audio": "#ff7f0e", "video": "#1f77b4", "av": "#2ca02c"}
NODE_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#000000"]
SCORE_ORDER = ["highlight", "violence", "localization"]


@dataclass
class SeriesInfo:
    label: str
    color: str
    points: int


@dataclass
class AxesInfo:
    title: str
    bbox: list[int]  # [left, top, right, bottom] in PNG pixels
    series: list[SeriesInfo] = field(default_factory=list)


@dataclass
class FigureInfo:
    file: str
    stream: str
    what: str  # "scores", "captions", "latency", "drops"
    axes: list[AxesInfo] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def kind_color(kind: str, others: list[str]) -> str:
    if kind in KIND_COLORS:
        return KIND_COLORS[kind]
    return OTHER_COLORS[others.index(kind) % len(OTHER_COLORS)] if kind in others else OTHER_COLORS[0]


def score_kinds(record: StreamRecord) -> list[str]:
    """Kinds with a numeric ``score``: the three built-in ones first, then any other (a user's model)."""
    scored = [k for k in record.kinds() if any("score" in r for r in record.results[k])]
    return [k for k in SCORE_ORDER if k in scored] + [k for k in scored if k not in SCORE_ORDER]


def _new_figure(rows: int, row_height: float) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(WIDTH_IN, max(2.2, rows * row_height)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    return fig, list(axes)


def _media_axis(ax: Axes, label: bool) -> None:
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: clock(x)))
    ax.grid(True, color="#e6e6e6", linewidth=0.6)
    ax.set_axisbelow(True)
    if label:
        ax.set_xlabel("media time")


def _save(fig: Figure, path: Path, info: FigureInfo, axes: list[Axes]) -> FigureInfo:
    fig.canvas.draw()  # lays the figure out, so the boxes below are those of the saved PNG
    height = fig.bbox.height
    for ax, ax_info in zip(axes, info.axes, strict=True):
        box = ax.get_window_extent()
        ax_info.bbox = [int(box.x0), int(height - box.y1), int(np.ceil(box.x1)), int(np.ceil(height - box.y0))]
    fig.savefig(path, dpi=DPI, facecolor="white")
    return info


def _event_times(record: StreamRecord) -> list[tuple[float, str]]:
    """Events on the media clock: their ``t0`` where they have one (``t1`` for an ``..._end`` event, whose
    span is the episode it closes), else their wall time mapped onto it."""
    walls, media = media_clock(record)
    out = []
    for event in record.events:
        if "t0" in event:
            name = str(event["name"])
            out.append((float(event["t1"] if name.endswith("_end") else event["t0"]), name))
        elif walls.size:
            out.append((float(np.interp(float(event["wall"]), walls, media)), str(event["name"])))
    return out


def _mark_alerts_and_events(ax: Axes, alerts: list[Interval], events: list[tuple[float, str]]) -> None:
    for interval in alerts:
        ax.axvspan(interval.t0, interval.t1, color=ALERT_COLOR, alpha=0.12, linewidth=0, zorder=0)
    by_name: dict[str, list[float]] = {}
    for t, name in events:
        by_name.setdefault(name, []).append(t)
    for name, times in by_name.items():  # one collection per name: a long run has thousands of events
        ax.vlines(times, 0.0, 1.0, transform=ax.get_xaxis_transform(), colors=EVENT_COLORS.get(name, OTHER_EVENT_COLOR),
                  linewidth=1.0, linestyles="--", zorder=1)


def draw_scores(record: StreamRecord, path: Path) -> FigureInfo | None:
    """Score timelines, one row per kind, alert intervals shaded and events marked on every row."""
    kinds = score_kinds(record)
    if not kinds:
        return None
    others = [k for k in kinds if k not in KIND_COLORS]
    alerts = alert_intervals(record)
    events = _event_times(record)
    fig, axes = _new_figure(len(kinds), 2.1)
    info = FigureInfo(path.name, record.id, "scores")
    for row, (ax, kind) in enumerate(zip(axes, kinds, strict=True)):
        ax_info = AxesInfo(f"{kind} score", [])
        lines: list[tuple[str, str, Series]] = []
        main = score_series(record.results[kind])
        if main is not None:
            lines.append((f"{kind} score", kind_color(kind, others), main))
        if kind == "violence":
            for key, color in SUB_SCORE_COLORS.items():
                sub = score_series(record.results[kind], key)
                if sub is not None:
                    lines.append((key.replace("_", " "), color, sub))
        _mark_alerts_and_events(ax, alerts, events)
        for label, color, series in lines:
            width = 1.8 if label.endswith(" score") and label.startswith(kind) else 1.2
            ax.plot(series.t, series.y, color=color, linewidth=width, label=label, zorder=3)
            ax_info.series.append(SeriesInfo(label, color, int(series.t.size)))
        ax.set_ylim(-0.03, 1.03)
        ax.set_ylabel(kind)
        _media_axis(ax, row == len(kinds) - 1)
        handles: list[Any] = [Line2D([], [], color=c, linewidth=2, label=lab) for lab, c, _s in lines]
        if alerts:
            handles.append(Patch(color=ALERT_COLOR, alpha=0.12, label="violence alert"))
        for name in sorted({n for _t, n in events}):
            handles.append(Line2D([], [], color=EVENT_COLORS.get(name, OTHER_EVENT_COLOR), linestyle="--", label=name))
        ax.legend(handles=handles, loc="upper left", fontsize=7, ncols=min(4, len(handles)), framealpha=0.85)
        info.axes.append(ax_info)
    axes[0].set_title(f"{record.id}: scores (each result at its window's end)", fontsize=10, loc="left")
    return _save(fig, path, info, axes)


def _caption_rows(captions: list[dict[str, Any]]) -> list[tuple[dict[str, Any], float]]:
    """Each caption with its row offset in its source's lane: overlapping spans alternate rows."""
    out: list[tuple[dict[str, Any], float]] = []
    last_end: dict[tuple[str, float], float] = {}
    for caption in sorted(captions, key=lambda c: (c["t0"], c["t1"])):
        source = str(caption.get("source", ""))
        offset = 0.0 if last_end.get((source, 0.0), float("-inf")) <= caption["t0"] + 1e-6 else 0.5
        last_end[(source, offset)] = float(caption["t1"])
        out.append((caption, offset))
    return out


def draw_captions(record: StreamRecord, path: Path) -> FigureInfo | None:
    """The caption timeline: one lane per caption source, each caption a span with its text."""
    captions = record.results.get("caption", [])
    if not captions:
        return None
    order = ["audio", "video", "av"]
    present = {str(c.get("source", "")) for c in captions}
    sources = [s for s in order if s in present] + sorted(present - set(order))
    fig, axes = _new_figure(1, 0.55 * len(sources) + 1.3)
    ax = axes[0]
    span = max(float(c["t1"]) for c in captions) - min(float(c["t0"]) for c in captions)
    px_per_s = (WIDTH_IN * DPI * 0.9) / max(span, 1e-6)
    info = FigureInfo(path.name, record.id, "captions", [AxesInfo("captions", [])])
    counts = {s: 0 for s in sources}
    bars: dict[tuple[str, float], list[tuple[float, float]]] = {}  # one collection per row: fast on long runs
    for caption, offset in _caption_rows(captions):
        source = str(caption.get("source", ""))
        t0, t1 = float(caption["t0"]), float(caption["t1"])
        y = sources.index(source) + offset * 0.5
        bars.setdefault((source, y), []).append((t0, max(t1 - t0, 1e-3)))
        chars = int((t1 - t0) * px_per_s / 6.0)  # what fits in the span at this font size
        text = str(caption["text"])
        if chars >= 4:
            shown = text if len(text) <= chars else text[: chars - 1] + "…"
            ax.text(t0 + 0.01 * (t1 - t0), y, shown, fontsize=7, va="center", ha="left", color="white", clip_on=True, zorder=2)
        counts[source] += 1
    for (source, y), spans in bars.items():
        lane = sources.index(source)
        ax.broken_barh(spans, (y - 0.2, 0.4), facecolors=SOURCE_COLORS.get(source, OTHER_COLORS[lane % len(OTHER_COLORS)]),
                       edgecolors="white", linewidth=0.5, zorder=1)
    for lane, source in enumerate(sources):
        color = SOURCE_COLORS.get(source, OTHER_COLORS[lane % len(OTHER_COLORS)])
        info.axes[0].series.append(SeriesInfo(f"{source} captions", color, counts[source]))
    ax.set_yticks(range(len(sources)), [s or "?" for s in sources])
    ax.set_ylim(-0.6, len(sources) - 0.1)
    _media_axis(ax, True)
    ax.set_title(f"{record.id}: captions ({len(captions)})", fontsize=10, loc="left")
    return _save(fig, path, info, axes)


def draw_latency(record: StreamRecord, path: Path) -> FigureInfo | None:
    """A latency histogram per kind, its median and 95th percentile marked."""
    kinds = [k for k in record.kinds() if record.results[k]]
    if not kinds:
        return None
    others = [k for k in kinds if k not in KIND_COLORS]
    columns = 1 if len(kinds) == 1 else 2
    rows = (len(kinds) + columns - 1) // columns
    fig = Figure(figsize=(WIDTH_IN, 2.3 * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(rows, columns, squeeze=False).ravel()
    axes = list(grid[: len(kinds)])
    for spare in grid[len(kinds):]:
        spare.set_visible(False)
    info = FigureInfo(path.name, record.id, "latency")
    for ax, kind in zip(axes, kinds, strict=True):
        values = np.asarray([float(r["latency_ms"]) for r in record.results[kind]])
        stats = latency_stats(record.results[kind])
        assert stats is not None  # kinds with at least one result
        color = kind_color(kind, others)
        ax.hist(values, bins=min(40, max(5, values.size // 3)), color=color, histtype="stepfilled", alpha=1.0)
        ax.axvline(stats.median_ms, color="#000000", linewidth=1.2, label=f"median {stats.median_ms:.1f} ms")
        ax.axvline(stats.p95_ms, color="#000000", linewidth=1.2, linestyle=":", label=f"p95 {stats.p95_ms:.1f} ms")
        ax.set_title(f"{kind}: latency_ms ({stats.count} results)", fontsize=9, loc="left")
        ax.set_xlabel("latency (ms)")
        ax.legend(loc="upper right", fontsize=7)
        ax.grid(True, color="#e6e6e6", linewidth=0.6)
        ax.set_axisbelow(True)
        info.axes.append(AxesInfo(f"{kind} latency", [], [SeriesInfo(f"{kind} latency", color, int(values.size))]))
    return _save(fig, path, info, axes)


def draw_drops(run: RunData, record: StreamRecord, path: Path) -> FigureInfo | None:
    """Results missing by seq per kind, and the drop counters of the ``status`` messages where present."""
    gaps: list[tuple[str, Series]] = [(kind, seq_gaps(rs)[0]) for kind, rs in sorted(record.results.items()) if rs]
    if record.events:
        walls, media = media_clock(record)
        events = [dict(e, t1=e["t1"] if "t1" in e else (float(np.interp(e["wall"], walls, media)) if walls.size else 0.0))
                  for e in record.events]
        gaps.append(("event", seq_gaps(events)[0]))
    nodes = node_drops(run, record)
    if not gaps and not nodes:
        return None
    rows = 1 + bool(nodes)
    fig, axes = _new_figure(rows, 2.2)
    info = FigureInfo(path.name, record.id, "drops")
    others = [k for k, _s in gaps if k not in KIND_COLORS]
    plotted: list[tuple[Axes, str, list[tuple[str, str, Series]]]] = [
        (axes[0], "results missing by seq (cumulative)", [(k, kind_color(k, others), s) for k, s in gaps])]
    if nodes:
        plotted.append((axes[1], "node drops from status (cumulative)",
                        [(n, NODE_COLORS[i % len(NODE_COLORS)], s) for i, (n, s) in enumerate(sorted(nodes.items()))]))
    for row, (ax, title, lines) in enumerate(plotted):
        ax_info = AxesInfo(title, [])
        top = 1.0
        for label, color, series in lines:
            order = np.argsort(series.t, kind="stable")
            few = series.t.size < 30  # a short run's few status samples: a marker each, or nothing shows
            ax.step(series.t[order], series.y[order], where="post", color=color, linewidth=1.6, label=label,
                    marker="o" if few else None, markersize=3)
            ax_info.series.append(SeriesInfo(label, color, int(series.t.size)))
            top = max(top, float(series.y.max()) if series.y.size else 0.0)
        ax.set_ylim(-0.06 * top, top * 1.25 + 0.2)
        ax.set_title(title, fontsize=9, loc="left")
        ax.legend(loc="upper left", fontsize=7, ncols=min(6, len(lines)), framealpha=0.85)
        _media_axis(ax, row == rows - 1)
        info.axes.append(ax_info)
    return _save(fig, path, info, axes)
