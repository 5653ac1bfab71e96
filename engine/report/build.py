"""Putting a report together: read the run, draw each stream's figures and thumbnails, write the page
and ``manifest.json`` (what each PNG shows: its axes, their pixel boxes, the series and colours)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from avstream.engine.report.analysis import summarize, top_highlights
from avstream.engine.report.figures import FigureInfo, draw_captions, draw_drops, draw_latency, draw_scores
from avstream.engine.report.page import StreamSection, write_page
from avstream.engine.report.reader import ReportInputError, RunData, StreamRecord, read_run
from avstream.engine.report.thumbnails import VideoFile, write_thumbnails

Drawer = Callable[[RunData, StreamRecord, Path], "FigureInfo | None"]
DRAWERS: dict[str, Drawer] = {
    "scores": lambda _run, record, path: draw_scores(record, path),
    "captions": lambda _run, record, path: draw_captions(record, path),
    "latency": lambda _run, record, path: draw_latency(record, path),
    "drops": draw_drops,
}


class Progress:
    """Where the work stands; the command line shows it as progress bars, tests pass this silent one."""

    def reading(self, total_bytes: int) -> Callable[[int], None] | None:
        return None

    def rendering(self, total_steps: int) -> Callable[[str], None] | None:
        return None


@dataclass
class Outcome:
    page: Path
    run: RunData
    sections: list[StreamSection] = field(default_factory=list)

    @property
    def figures(self) -> list[FigureInfo]:
        return [f for s in self.sections for f in s.figures]

    @property
    def thumbnails(self) -> int:
        return sum(len(s.thumbnails) for s in self.sections)


def file_prefix(index: int, stream: str) -> str:
    """File names of a stream's PNGs: stream ids may hold characters a file name cannot."""
    return f"{index:02d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', stream)[:40] or 'stream'}"


def assign_videos(specs: list[str], streams: list[str]) -> dict[str, Path]:
    """``--video FILE`` (a run of one stream) or ``--video STREAM=FILE`` (repeatable) -> stream: file."""
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, rest = spec.partition("=")
        if sep and not Path(spec).exists() and name in streams:
            stream, path = name, Path(rest)
        elif len(streams) == 1:
            stream, path = streams[0], Path(spec)
        else:
            raise ReportInputError(f"--video {spec}: the run has streams {', '.join(streams)}; "
                                   "name one as --video STREAM=FILE")
        if stream in out:
            raise ReportInputError(f"--video {spec}: stream {stream} has a video already ({out[stream]})")
        out[stream] = path
    return out


def make_report(paths: list[Path], video_specs: list[str], out_dir: Path, top: int,
                progress: Progress | None = None) -> Outcome:
    progress = progress or Progress()
    total = sum(p.stat().st_size for p in paths if p.is_file())  # read_run names a missing one
    run = read_run(paths, progress.reading(total))
    streams = sorted(run.streams)
    videos = {stream: VideoFile(path) for stream, path in assign_videos(video_specs, streams).items()}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportInputError(f"--out {out_dir}: cannot create the folder ({exc.strerror or exc})") from exc
    outcome = Outcome(out_dir / "index.html", run)
    step = progress.rendering(len(streams) * 5)
    try:
        for index, stream in enumerate(streams):
            record = run.streams[stream]
            prefix = file_prefix(index, stream)
            section = StreamSection(summarize(run, record), captions=record.results.get("caption", []),
                                    events=record.events)
            for what, draw in DRAWERS.items():
                figure = draw(run, record, out_dir / f"{prefix}-{what}.png")
                if figure is not None:
                    section.figures.append(figure)
                if step is not None:
                    step(f"{stream}: {what}")
            video = videos.get(stream)
            if video is not None and top > 0:
                best = top_highlights(record.results.get("highlight", []), top)
                section.thumbnails = write_thumbnails(video, best, out_dir, prefix)
                section.video = str(video.path)
            if step is not None:
                step(f"{stream}: thumbnails")
            outcome.sections.append(section)
    finally:
        for video in videos.values():
            video.close()
    manifest = {"files": [str(p) for p in paths], "lines": run.lines, "warnings": run.warnings,
                "figures": [f.as_json() for f in outcome.figures],
                "thumbnails": [asdict(t) | {"stream": s.summary.id} for s in outcome.sections for t in s.thumbnails]}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    write_page(outcome.page, run, outcome.sections)
    return outcome
