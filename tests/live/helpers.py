"""In-process harness: the real source node in a thread, its items fed to the real window node.

``LiveRun`` records events, media times and windows' sync measurements (flash onsets against beep
onsets) as they arrive; tests wait on conditions over what was recorded, with deadlines.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avstream.engine.items import AudioChunk, AVWindow, Event, Item, StreamInfo, VideoFrame
from avstream.engine.node import NodeContext, WindowRequirement
from avstream.plugins.sources import FileSource, SourceParams
from avstream.plugins.window import AVWindowNode, WindowParams

FPS = 25
RATE = 16000
WINDOW = WindowRequirement(seconds=2.0, hop=1.0, fps=FPS, frames=2 * FPS, height=60, width=80, sample_rate=RATE,
                           audio_samples=2 * RATE, source="test")


def onsets(window: AVWindow) -> tuple[list[float], list[float]]:
    """Media times of flash onsets (frame grid) and beep onsets (samples) inside one window."""
    flashes: list[float] = []
    beeps: list[float] = []
    if window.frames is not None:
        bright = window.frames.reshape(len(window.frames), -1).mean(axis=1) > 128
        flashes = [window.t0 + i / window.fps for i in range(1, len(bright)) if bright[i] and not bright[i - 1]]
    if window.audio is not None:
        loud = np.abs(window.audio) > 0.1
        quiet = int(0.05 * window.sample_rate)
        idx = np.flatnonzero(loud)
        prev = np.concatenate([[-(10**9)], idx[:-1]])
        starts = idx[(idx - prev > quiet) & (idx >= quiet)]
        beeps = [window.t0 + int(j) / window.sample_rate for j in starts]
    return flashes, beeps


def pair_offsets(flashes: list[float], beeps: list[float], within: float = 0.5) -> list[float]:
    """Beep minus flash time for each flash that has a beep within ``within`` seconds."""
    out = []
    for f in flashes:
        near = [b - f for b in beeps if abs(b - f) < within]
        if near:
            out.append(min(near, key=abs))
    return out


@dataclass
class Record:
    info: list[StreamInfo] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    video_t: list[float] = field(default_factory=list)
    video_wall: list[float] = field(default_factory=list)
    audio_t: list[tuple[float, float]] = field(default_factory=list)  # (t, t_end)
    windows: list[tuple[float, float, list[float]]] = field(default_factory=list)  # (t0, wall made, offsets)
    arrivals: list[float] = field(default_factory=list)  # wall of each media item's arrival


class LiveRun:
    """``FileSource(params).produce()`` in a thread, windows from ``AVWindowNode``."""

    def __init__(self, params: dict[str, Any], stream: str = "cam0", windows: bool = True,
                 consume: Callable[[Item], None] | None = None):
        self.stop_event = threading.Event()
        ctx = NodeContext(node_id="src", streams=(stream,), base_dir=Path("."), stop_event=self.stop_event,
                          logger=logging.getLogger("test.live"))
        self.node = FileSource(ctx, SourceParams(**params))
        wctx = NodeContext(node_id="window", streams=(stream,), base_dir=Path("."), stop_event=self.stop_event,
                           logger=logging.getLogger("test.window"), window=WINDOW)
        self.window = AVWindowNode(wctx, WindowParams()) if windows else None
        self.rec = Record()
        self.error: BaseException | None = None
        self.done = False
        self.consume = consume
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for item in self.node.produce():
                self._take(item)
                if self.stop_event.is_set():
                    break
        except BaseException as exc:  # reported to the test
            self.error = exc
        finally:
            with self.cond:
                self.done = True
                self.cond.notify_all()

    def _take(self, item: Item) -> None:
        if self.consume is not None:
            self.consume(item)
        outs: list[Item] = []
        if self.window is not None and isinstance(item, (StreamInfo, VideoFrame, AudioChunk)):
            outs = list(self.window.process(item))
        with self.cond:
            r = self.rec
            if isinstance(item, StreamInfo):
                r.info.append(item)
            elif isinstance(item, Event):
                r.events.append(item)
            elif isinstance(item, VideoFrame):
                r.video_t.append(item.t)
                r.video_wall.append(item.wall)
                r.arrivals.append(time.time())
            elif isinstance(item, AudioChunk):
                r.audio_t.append((item.t, item.t_end))
                r.arrivals.append(time.time())
            for w in outs:
                assert isinstance(w, AVWindow)
                fl, bp = onsets(w)
                r.windows.append((w.t0, time.time(), pair_offsets(fl, bp)))
            self.cond.notify_all()

    def wait(self, pred: Callable[[Record], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred(self.rec):
                if self.error is not None:
                    raise AssertionError(f"source failed while waiting for {what}: {self.error}")
                left = deadline - time.monotonic()
                if left <= 0 or self.done:
                    raise AssertionError(f"{'source ended' if self.done else 'timed out'} waiting for {what}; "
                                         f"events: {[(e.name, e.detail) for e in self.rec.events]}, "
                                         f"video items: {len(self.rec.video_t)}, audio items: {len(self.rec.audio_t)}")
                self.cond.wait(min(left, 0.2))

    def wait_done(self, timeout: float) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.done, timeout)
        assert self.done, "source did not end"

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(10)
        assert not self.thread.is_alive(), "source thread did not stop within 10 s"

    def events(self, name: str) -> list[Event]:
        with self.cond:
            return [e for e in self.rec.events if e.name == name]

    def offsets_after(self, t: float) -> list[float]:
        with self.cond:
            return [o for t0, _, offs in self.rec.windows if t0 >= t for o in offs]


QUICK = "stall_timeout: 1.5, open_timeout: 3.0, backoff_initial: 0.2, backoff_max: 1.0"


def live_pipeline(path: Path, streams: dict[str, str], port: int) -> Path:
    """A window and a highlight node over live ``streams`` with quick reconnects, publishing on ``port``."""
    lines = ["version: 1", "name: live-test", "streams:"]
    lines += [f"  {sid}: {{uri: \"{uri}\", {QUICK}}}" for sid, uri in streams.items()]
    lines += ["nodes:", f"  window: {{type: avstream/av_window@v1, inputs: [{', '.join(streams)}]}}",
              "  score: {type: avstream/highlight@v1, inputs: [window], params: {model: \"builtin:highlight\"}}",
              "outputs:",
              # the test's subscriber must see the first events (a 401 fails within a second)
              f"  publish: {{endpoint: \"tcp://127.0.0.1:{port}\", wait_for_subscribers: 1}}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def is_message(kind: str, stream: str, name: str | None = None) -> Any:
    """A predicate: a message of ``kind`` on ``stream`` (an event of that ``name``)."""
    def pred(m: dict[str, Any]) -> bool:
        h = m["header"]
        return bool(h["kind"] == kind and h["stream"] == stream and (name is None or h.get("name") == name))
    return pred
