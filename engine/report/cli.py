"""``avstream report RUN.jsonl [--video FILE] --out DIR``: an HTML + PNG report of a finished run.

Imports matplotlib (through ``figures``) at module level on purpose: ``avstream report`` is a lazily
loaded command with ``extra="report"``, so a missing matplotlib names the extra and exits 2, and no
other command ever loads it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

from avstream.engine.cli_common import examples, reports_errors
from avstream.engine.report.build import Progress, make_report


class TerminalProgress(Progress):
    """Progress bars on standard error while the lines are read and the figures drawn."""

    def __init__(self, bars: RichProgress):
        self.bars = bars

    def reading(self, total_bytes: int) -> Callable[[int], None]:
        task = self.bars.add_task("reading", total=total_bytes)
        return lambda size: self.bars.advance(task, size)

    def rendering(self, total_steps: int) -> Callable[[str], None]:
        task = self.bars.add_task("drawing", total=total_steps)
        return lambda what: self.bars.update(task, advance=1, description=f"drawing {what}")


@contextmanager
def progress_for_terminal() -> Iterator[Progress]:
    console = Console(stderr=True)
    if not console.is_terminal:
        yield Progress()  # a pipe or a log file: only the summary line at the end
        return
    columns = (TextColumn("{task.description:<28}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with RichProgress(*columns, console=console, transient=True) as bars:
        yield TerminalProgress(bars)


@click.command("report", epilog=examples("avstream run monitor --input clip.mp4 --jsonl run.jsonl",
                                         "avstream report run.jsonl --video clip.mp4 --out report/",
                                         "avstream report run.jsonl status.jsonl --out report/"))
@click.argument("jsonl", nargs=-1, required=True, type=click.Path(dir_okay=True, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="folder for index.html, the PNGs and manifest.json (made if missing)")
@click.option("--video", "videos", multiple=True, metavar="[STREAM=]FILE",
              help="the run's input video: thumbnails of the top highlights (STREAM= when the run has several)")
@click.option("--top", default=5, show_default=True, type=click.IntRange(0, 50),
              help="how many highlight thumbnails per stream")
@reports_errors("avstream report")
def report_command(jsonl: tuple[Path, ...], out_dir: Path, videos: tuple[str, ...], top: int) -> int:
    """Write an HTML + PNG report of a finished run.

    JSONL is the run's JSONL output (``avstream run ... --jsonl PATH``); more files may follow, such
    as the run's ``--status-json`` file, whose drop counters are then drawn. The report has score
    timelines with the violence alerts and events, a caption timeline, latency histograms per kind,
    drops over time and, with --video, thumbnails of the top highlights.
    """
    started = time.perf_counter()
    with progress_for_terminal() as progress:
        outcome = make_report(list(jsonl), list(videos), out_dir, top, progress)
    for warning in outcome.run.warnings:
        click.echo(f"avstream report: warning: {warning}", err=True)
    streams = len(outcome.sections)
    click.echo(f"report: {outcome.run.lines} messages, {streams} stream{'s' * (streams != 1)}, "
               f"{len(outcome.figures)} figures, {outcome.thumbnails} thumbnails in "
               f"{time.perf_counter() - started:.1f} s -> {outcome.page}")
    sys.stdout.flush()
    return 0
