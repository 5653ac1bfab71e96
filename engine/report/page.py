"""The report's ``index.html``: self-contained (inline CSS, no script, no CDN) apart from the PNGs
next to it, so the folder can be copied, mailed or served as it is."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

from avstream.engine.report.analysis import StreamSummary, clock
from avstream.engine.report.figures import FigureInfo
from avstream.engine.report.reader import RunData
from avstream.engine.report.thumbnails import Thumbnail

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1240px; color: #222; padding: 0 12px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 36px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin: 20px 0 6px; }
table { border-collapse: collapse; margin: 8px 0 16px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
img.figure { max-width: 100%; display: block; margin: 6px 0 14px; }
.thumbs { display: flex; flex-wrap: wrap; gap: 12px; } .thumbs figure { margin: 0; }
.thumbs img { display: block; max-width: 320px; } figcaption { font-size: 12px; color: #555; }
.warn { color: #8a5300; } .muted { color: #777; } details { margin: 8px 0; }
"""


@dataclass
class StreamSection:
    summary: StreamSummary
    figures: list[FigureInfo] = field(default_factory=list)
    thumbnails: list[Thumbnail] = field(default_factory=list)
    video: str = ""  # the --video file the thumbnails come from
    captions: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


def _cell(value: Any, numeric: bool = False) -> str:
    return f'<td class="n">{escape(str(value))}</td>' if numeric else f"<td>{escape(str(value))}</td>"


def _summary_table(sections: list[StreamSection]) -> str:
    head = ("<tr><th>stream</th><th>media time</th><th>wall time</th><th>results per kind</th><th>alerts</th>"
            "<th>events</th><th>latency median / p95 (ms)</th><th>drops</th></tr>")
    rows = []
    for section in sections:
        s = section.summary
        alert_s = sum(a.t1 - a.t0 for a in s.alerts)
        alerts = f"{len(s.alerts)} ({alert_s:.1f} s)" if s.alerts else "0"
        latency = "<br>".join(f"{escape(k)}: {v.median_ms:.1f} / {v.p95_ms:.1f}" for k, v in s.latency.items()) or "-"
        missing = [f"{escape(k)}: {n} missing by seq" for k, n in s.seq_missing.items() if n]
        nodes = [f"{escape(n)}: {d}" for n, d in s.node_drops.items() if d]
        drops = "<br>".join(missing + nodes) or "none"
        if s.node_drops and not nodes:
            drops += " (status: 0 at every node)"
        rows.append(
            f"<tr><td><a href=\"#stream-{escape(s.id)}\">{escape(s.id)}</a></td>"
            f"<td>{clock(s.media_start)} – {clock(s.media_end)} ({s.media_end - s.media_start:.1f} s)</td>"
            f"<td class=\"n\">{s.wall_span_s:.1f} s</td>"
            f"<td>{'<br>'.join(f'{escape(k)}: {n}' for k, n in s.results.items()) or '-'}</td>"
            f"<td>{alerts}</td>"
            f"<td>{'<br>'.join(f'{escape(k)}: {n}' for k, n in s.events.items()) or '-'}</td>"
            f"<td>{latency}</td><td>{drops}</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _event_rows(events: list[dict[str, Any]]) -> str:
    rows = []
    for event in events:
        when = f"{clock(float(event['t0']))} – {clock(float(event['t1']))}" if "t0" in event else "-"
        wall = datetime.fromtimestamp(float(event["wall"]), tz=timezone.utc).strftime("%H:%M:%S.%f")[:-3]
        rows.append(f"<tr>{_cell(event['name'])}{_cell(when)}{_cell(wall + ' UTC')}"
                    f"{_cell(json.dumps(event.get('detail', {}), sort_keys=True)[:300])}</tr>")
    return ("<table><tr><th>event</th><th>media time</th><th>wall</th><th>detail</th></tr>"
            + "".join(rows) + "</table>")


def _stream_section(section: StreamSection) -> str:
    s = section.summary
    parts = [f'<h2 id="stream-{escape(s.id)}">Stream {escape(s.id)}</h2>']
    if s.alerts:
        spans = ", ".join(f"{clock(a.t0)} – {clock(a.t1)}{' (still on at the end)' if a.open_end else ''}"
                          for a in s.alerts)
        parts.append(f"<p>Violence alerts: {escape(spans)}</p>")
    titles = {"scores": "Scores", "captions": "Captions", "latency": "Latency per kind", "drops": "Drops"}
    for figure in section.figures:
        series = ", ".join(sorted({x.label for a in figure.axes for x in a.series}))
        parts.append(f"<h3>{titles.get(figure.what, figure.what)}</h3>")
        parts.append(f'<img class="figure" src="{escape(figure.file)}" alt="{escape(s.id)} {escape(figure.what)}: '
                     f'{escape(series)}" width="1200">')
    if not any(f.what == "scores" for f in section.figures):
        parts.append('<p class="muted">No scored results (highlight, violence, localization) in this stream.</p>')
    if section.thumbnails:
        parts.append(f"<h3>Top highlights</h3><p class=\"muted\">Frames of {escape(section.video)} at each window's "
                     "middle.</p><div class=\"thumbs\">")
        for thumb in section.thumbnails:
            parts.append(f'<figure><img src="{escape(thumb.file)}" width="{thumb.width}" height="{thumb.height}" '
                         f'alt="highlight at {clock(thumb.t)}"><figcaption>{clock(thumb.t)} · score '
                         f"{thumb.score:.3f} · window {clock(thumb.t0)} – {clock(thumb.t1)}</figcaption></figure>")
        parts.append("</div>")
    if section.events:
        parts.append(f"<details><summary>Events ({len(section.events)})</summary>{_event_rows(section.events)}</details>")
    if section.captions:
        rows = "".join(f"<tr>{_cell(clock(float(c['t0'])) + ' – ' + clock(float(c['t1'])))}{_cell(c.get('source', ''))}"
                       f"{_cell(c['text'])}</tr>" for c in section.captions)
        parts.append(f"<details><summary>Captions ({len(section.captions)})</summary><table><tr><th>media time</th>"
                     f"<th>source</th><th>text</th></tr>{rows}</table></details>")
    return "\n".join(parts)


def write_page(path: Path, run: RunData, sections: list[StreamSection]) -> None:
    files = ", ".join(escape(str(f)) for f in run.files)
    warnings = "".join(f'<li class="warn">{escape(w)}</li>' for w in run.warnings)
    graph = (f"<h2>Graph events</h2>{_event_rows(run.graph_events)}" if run.graph_events else "")
    status = (f"{len(run.status)} status messages" if run.status else "no status messages (node drop counters come "
              "with <code>--status-json</code>)")
    body = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>avstream report</title>",
        "<link rel=\"icon\" href=\"data:,\">",
        f"<style>{STYLE}</style></head><body>",
        "<h1>avstream run report</h1>",
        f"<p>{files}: {run.lines} messages, {len(sections)} stream(s), {status}.</p>",
        f"<ul>{warnings}</ul>" if warnings else "",
        _summary_table(sections),
        graph,
        *(_stream_section(section) for section in sections),
        "</body></html>",
    ]
    path.write_text("\n".join(b for b in body if b) + "\n", encoding="utf-8")
