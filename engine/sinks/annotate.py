"""Annotated video: the ``annotate`` sink burns the results into a video of each stream.

Each annotated stream has a thread that opens the stream's input a second time with the engine's
own reader (``open_reader``, video only), draws what the results say about each frame's media time
(``engine/sinks/overlay.py``) and encodes it with PyAV (libx264, yuv420p) into
``<dir>/<stream>/<stream>-<UTC start YYYYmmddTHHMMSS>.mp4``, one file, or one per ``segment_s``.
A file is written as ``.mp4.part`` and renamed once finalised, so every ``.mp4`` plays.

Results come with latency, so a frame waits for the results covering its media time:

- files and generated inputs (``sample://``, ``synthetic://``) are read in step with the pipeline:
  a frame at media time ``t`` is drawn once every result kind of the stream has reached ``t`` (or
  the run closes, or the results stop for ``STALL_S``), so a run as fast as possible and a run
  paced in real time both hold only the frame being drawn;
- a live input's frames are held (at most ``hold_s``) in a short buffer; its own connection's capture
  wall times map to the pipeline's media time with the latest result (``capture_offset``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from avstream.engine.backoff import backoff_delay
from avstream.engine.capture.base import LIVE_SCHEMES, redact_uri
from avstream.engine.capture.schemes import open_reader, resolve_file, uri_scheme
from avstream.engine.errors import SourceError
from avstream.engine.items import AudioChunk, VideoFrame
from avstream.engine.sinks import Sink, SinkContext
from avstream.engine.sinks.overlay import Overlay, draw
from avstream.engine.sinks.streaminput import (
    REOPENABLE_NETWORK,
    capture_offset,
    input_options,
    input_uri,
    output_folder,
    safe_name,
)

log = logging.getLogger("avstream.annotate")

ResultKind = Literal["highlight", "violence", "localization", "caption"]
RESULT_KINDS: tuple[ResultKind, ...] = ("highlight", "violence", "localization", "caption")
STALL_S = 10.0  # a file's frames stop waiting for results that have not come for this long
KEEP_RESULTS_S = 30.0  # results kept behind the frame being drawn
CLOSE_WAIT_S = 30.0  # at close, how long a file's annotation may take to reach where the run ended
RETRY_S = 30.0  # after an encoder failure, the next try at a new file
_FILE_SCHEMES = ("file", "sample", "synthetic")


class AnnotateSettings(BaseModel):
    """``outputs.annotate`` of a pipeline (``annotate:`` of a serve config)."""

    model_config = ConfigDict(extra="forbid")

    dir: str | None = Field(None, description="where videos go (default <data_dir>/annotated; relative to the file)")
    fps: float = Field(0.0, ge=0.0, le=240.0, description="frame rate of the video; 0 = the input's own (else subsampled)")
    width: int = Field(640, ge=0, le=7680, description="video width, aspect kept (never upscaled); 0 = the input's size")
    segment_s: float = Field(0.0, ge=0.0, description="a new MP4 every this many seconds; 0 = one file per run")
    heatmap_alpha: float = Field(0.5, ge=0.0, le=1.0, description="opacity of the hottest localization heatmap cell")
    kinds: list[ResultKind] = Field(default_factory=lambda: list(RESULT_KINDS), description="result kinds to draw")
    hold_s: float = Field(3.0, gt=0.0, le=30.0, description="how long a live frame waits for its results")
    streams: list[str] | None = Field(None, description="stream ids to annotate (default: all)")
    crf: int = Field(23, ge=0, le=51, description="libx264 quality (lower is better and bigger)")
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = Field(
        "veryfast", description="libx264 speed preset")


@dataclass
class _Result:
    t0: float
    t1: float
    header: dict[str, Any]
    heatmap: np.ndarray | None = None


@dataclass
class _Results:
    """The results of one stream, for the frames still to draw. Guarded by the sink's condition."""

    by_kind: dict[str, deque[_Result]] = field(default_factory=dict)
    offset: float | None = None  # capture wall of media time 0, by the latest result
    last_at: float | None = None  # monotonic time of the latest result

    @property
    def progress(self) -> float:
        return max((d[-1].t1 for d in self.by_kind.values() if d), default=0.0)

    def add(self, kind: str, result: _Result) -> None:
        items = self.by_kind.setdefault(kind, deque())
        if items and result.t1 < items[-1].t1:  # a late one (a node restarted): keep the order
            return
        items.append(result)
        self.offset = capture_offset(result.header)
        self.last_at = time.monotonic()

    def ready(self, t: float) -> bool:
        """Every result kind seen has reached ``t``."""
        return bool(self.by_kind) and all(d and d[-1].t1 >= t - 1e-6 for d in self.by_kind.values())

    def overlay_at(self, t: float | None) -> Overlay:
        """Per kind, the latest window holding ``t``, else the latest before it."""
        overlay = Overlay(t)
        if t is None:
            return overlay
        for kind, items in self.by_kind.items():
            holding = [r for r in items if r.t0 - 1e-6 <= t <= r.t1 + 1e-6]
            before = [r for r in items if r.t1 < t]
            chosen = max(holding, key=lambda r: r.t0) if holding else (before[-1] if before else None)
            if chosen is None:
                continue
            h = chosen.header
            if isinstance(h.get("score"), (int, float)):
                overlay.scores[kind] = float(h["score"])
            if kind == "violence":
                overlay.alert = bool(h.get("alert"))
            elif kind == "caption" and h.get("text"):
                overlay.caption = str(h["text"])
            elif kind == "localization":
                overlay.heatmap = chosen.heatmap
                peak = h.get("peak")
                if isinstance(peak, list) and len(peak) == 2:
                    overlay.peak = (float(peak[0]), float(peak[1]))
        return overlay

    def trim(self, t: float) -> None:
        for items in self.by_kind.values():
            while len(items) > 1 and items[0].t1 < t - KEEP_RESULTS_S:
                items.popleft()


class AnnotateSink(Sink):
    name = "annotate"

    def __init__(self, settings: AnnotateSettings, context: SinkContext):
        self.settings = settings
        self.dir = output_folder(settings.dir, "annotated", context)
        self.base_dir = context.base_dir
        self.kinds = frozenset(settings.kinds)
        self.frames_written: dict[str, int] = {}
        self.files_written: dict[str, int] = {}
        self.dropped = 0
        self.cond = threading.Condition()
        self.closing = False
        self.results: dict[str, _Results] = {}
        self._annotators: dict[str, _StreamAnnotator] = {}
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=10000)
        for sid, entry in context.streams.items():
            self._add(sid, entry)
        self._thread = threading.Thread(target=self._run, name="annotate", daemon=True)
        self._thread.start()

    # --- the publisher's side: never blocks ---
    def send(self, header: dict[str, Any], arrays: list[np.ndarray]) -> None:
        if header.get("kind") not in self.kinds or not isinstance(header.get("t1"), (int, float)):
            return
        try:
            self._queue.put_nowait(("msg", (header, arrays)))
        except queue.Full:
            self.dropped += 1

    def add_stream(self, stream: str, entry: dict[str, Any]) -> None:
        """Annotate a stream added at run time; ``entry`` as in :class:`SinkContext` ``streams``."""
        self._queue.put(("add", (stream, entry)))

    def remove_stream(self, stream: str) -> None:
        self._queue.put(("remove", stream))

    def metric_families(self) -> list[Any]:
        from avstream.engine.sinks.metrics import counter_family

        return [counter_family("avstream_annotated_frames_total", "Annotated video frames written", ["stream"],
                               [((stream,), n) for stream, n in list(self.frames_written.items())])]

    def close(self, timeout_s: float = 2.0) -> None:
        self._queue.put(("close", None))
        self._thread.join(timeout_s)  # the results still queued reach the annotators first
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        deadline = time.monotonic() + max(timeout_s, CLOSE_WAIT_S)
        for annotator in list(self._annotators.values()):
            annotator.join(max(0.0, deadline - time.monotonic()))
        for annotator in list(self._annotators.values()):
            annotator.stop(2.0)  # out of time: finalise what is written

    # --- the sink's thread ---
    def _run(self) -> None:
        while True:
            what, value = self._queue.get()
            try:
                if what == "msg":
                    self._message(*value)
                elif what == "add":
                    self._remove(value[0])
                    self._add(*value)
                elif what == "remove":
                    self._remove(value)
                elif what == "close":
                    return
            except Exception as exc:  # noqa: BLE001 - a bug here must not stop annotating for good
                log.error("annotate: %s", exc)

    def _message(self, header: dict[str, Any], arrays: list[np.ndarray]) -> None:
        stream = str(header.get("stream", ""))
        if stream not in self._annotators:
            return
        heatmap = None
        names = [p.get("name") for p in header.get("payloads") or [] if isinstance(p, dict)]
        if "heatmap" in names and names.index("heatmap") < len(arrays):
            heatmap = np.array(arrays[names.index("heatmap")], dtype=np.float32)  # a copy: the buffer is reused
        t1 = float(header["t1"])
        t0 = float(header["t0"]) if isinstance(header.get("t0"), (int, float)) else t1
        with self.cond:
            self.results.setdefault(stream, _Results()).add(str(header["kind"]), _Result(t0, t1, header, heatmap))
            self.cond.notify_all()

    def _add(self, stream: str, entry: dict[str, Any]) -> None:
        if self.settings.streams is not None and stream not in self.settings.streams:
            return
        uri = input_uri(entry)
        if not uri:
            return
        if uri_scheme(uri) not in (*_FILE_SCHEMES, *REOPENABLE_NETWORK):
            log.warning("annotate %r: %s cannot be opened a second time (a device, UDP or SRT input); "
                        "no annotated video of it", stream, redact_uri(uri))
            return
        with self.cond:
            self.results[stream] = _Results()
        self.frames_written.setdefault(stream, 0)
        annotator = _StreamAnnotator(self, stream, resolve_file(uri, self.base_dir), entry)
        self._annotators[stream] = annotator
        annotator.start()

    def _remove(self, stream: str) -> None:
        annotator = self._annotators.pop(stream, None)
        if annotator is not None:
            annotator.stop(5.0)
        with self.cond:
            self.results.pop(stream, None)


class _StreamAnnotator:
    """One stream: its reader, the frames waiting for results, the encoder."""

    def __init__(self, sink: AnnotateSink, stream: str, uri: str, entry: dict[str, Any]):
        self.sink, self.stream, self.uri = sink, stream, uri
        self.settings = sink.settings
        self.live = uri_scheme(uri) in LIVE_SCHEMES
        self.loop = bool(entry.get("loop")) and not self.live
        self.options = input_options(entry)
        self.pending: deque[tuple[np.ndarray, float, float]] = deque()  # live: (image, capture wall, arrived)
        self.encoder = _Encoder(sink, stream)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"annotate-{stream}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)

    def stop(self, timeout_s: float) -> None:
        self._stop.set()
        with self.sink.cond:
            self.sink.cond.notify_all()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        offset, attempt, reported = 0.0, 0, None
        try:
            while not self._stop.is_set():
                end = 0.0
                try:
                    reader = open_reader(self.uri, stream=self.stream, audio=self.loop, fps=self.settings.fps,
                                         options=self.options, min_size=(self.settings.width, 1) if self.settings.width else None)
                    with reader:
                        self.encoder.fps = reader.info.fps or self.encoder.fps
                        end, done = self._read(reader, offset)
                    attempt, reported = 0, None
                    if done:
                        return
                except (SourceError, OSError, ValueError) as exc:
                    why = " ".join(str(exc).split())
                    if why != reported:  # the same failure over and over is said once
                        log.warning("annotate %r: %s%s", self.stream, why.replace(self.uri, redact_uri(self.uri)),
                                    "; retrying" if self.live else "")
                    reported = why
                except Exception as exc:  # noqa: BLE001 - av errors while decoding: this pass only
                    log.warning("annotate %r: %s: decoding stopped: %s", self.stream, redact_uri(self.uri),
                                " ".join(str(exc).split()))
                if not self.live:
                    if self.loop and end > 0.0 and not self.sink.closing:
                        offset += end  # the next pass continues media time, as the source node does
                        continue
                    return
                self._drain(force=True)
                attempt += 1
                self._stop.wait(backoff_delay(attempt, initial=0.5, cap=30.0, jitter=0.25))
        finally:
            self._drain(force=True)
            self.encoder.close()

    def _read(self, reader: Any, offset: float) -> tuple[float, bool]:
        """One pass over the input; returns (its media end, whether annotating is over)."""
        end = 0.0
        frame_s = 1.0 / reader.info.fps if reader.info.fps > 0 else 0.0
        for item in reader.read():
            if self._stop.is_set():
                return end, True
            if isinstance(item, AudioChunk):
                end = max(end, item.t_end)
                continue
            if not isinstance(item, VideoFrame):
                continue
            end = max(end, item.t + frame_s)
            if self.live:
                self.pending.append((item.image, item.wall, time.monotonic()))
                self._drain(force=False)
            elif not self._file_frame(item.image, item.t + offset):
                return end, True
        return end, False

    def _file_frame(self, image: np.ndarray, t: float) -> bool:
        """Waits for the results of ``t``, then draws the frame; False once the run is over past ``t``."""
        cond = self.sink.cond
        with cond:
            while True:
                results = self.sink.results.get(self.stream)
                if results is None or self._stop.is_set():
                    return False
                if results.ready(t):
                    break
                if self.sink.closing:
                    if t > results.progress + 1e-6:
                        return False  # where the run's results end: what comes after was never analysed
                    break
                if results.last_at is not None and time.monotonic() - results.last_at > STALL_S:
                    break
                cond.wait(0.2)
            overlay = results.overlay_at(t)
            wall = t + results.offset if results.offset is not None else time.time()
            results.trim(t)
        self.encoder.write(draw(self._sized(image), overlay, self.sink.kinds, self.settings.heatmap_alpha), t, wall)
        return True

    def _drain(self, force: bool) -> None:
        """Draws the live frames whose results have come, or that have waited ``hold_s``."""
        while self.pending:
            image, wall, arrived = self.pending[0]
            with self.sink.cond:
                results = self.sink.results.get(self.stream) or _Results()
                t = wall - results.offset if results.offset is not None else None
                ready = t is not None and results.ready(t)
                if not (force or ready or time.monotonic() - arrived > self.settings.hold_s):
                    return
                overlay = results.overlay_at(t)
                if t is not None:
                    results.trim(t)
            self.pending.popleft()
            self.encoder.write(draw(self._sized(image), overlay, self.sink.kinds, self.settings.heatmap_alpha),
                               wall, wall)

    def _sized(self, image: np.ndarray) -> np.ndarray:
        """The frame at the video's size: ``width`` wide (never upscaled), even sides for yuv420p."""
        h, w = image.shape[:2]
        target = self.encoder.size
        if target is None:
            tw = min(self.settings.width, w) if self.settings.width else w
            th = h * tw / w
            target = (max(2, int(tw) // 2 * 2), max(2, int(round(th)) // 2 * 2))
            self.encoder.size = target
        if (w, h) == target:
            return np.ascontiguousarray(image)
        return cv2.resize(image, target, interpolation=cv2.INTER_AREA if w > target[0] else cv2.INTER_LINEAR)


class _Encoder:
    """H.264 MP4 files of one stream, one per ``segment_s`` of its clock (media time for files, capture
    wall time for live inputs). Fails alone: reported once, tried again on a new file after RETRY_S."""

    def __init__(self, sink: AnnotateSink, stream: str):
        self.sink, self.stream = sink, stream
        self.settings = sink.settings
        self.fps = 25.0
        self.size: tuple[int, int] | None = None
        self._container: Any = None
        self._video: Any = None
        self._part: Path | None = None
        self._start = 0.0  # the clock of the current file's first frame
        self._last_pts = -1
        self._failed_at: float | None = None
        self._reported = False

    def write(self, image: np.ndarray, clock: float, wall: float) -> None:
        import av

        try:
            if self._container is not None and self.settings.segment_s > 0 and \
                    clock - self._start >= self.settings.segment_s - 0.5 / self._rate():
                self.close()
            if self._container is None:
                if self._failed_at is not None and time.monotonic() - self._failed_at < RETRY_S:
                    return
                self._open(clock, wall, image)
            pts = max(self._last_pts + 1, round((clock - self._start) * self._rate()))
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = pts, self._time_base
            self._last_pts = pts
            for packet in self._video.encode(frame):
                self._container.mux(packet)
            self.sink.frames_written[self.stream] = self.sink.frames_written.get(self.stream, 0) + 1
            if self._reported:
                self._reported = False
                log.warning("annotate %r: writing video again", self.stream)
        except Exception as exc:  # noqa: BLE001 - disk full, codec errors: this stream's video only
            self._fail(exc)

    def _rate(self) -> float:
        return self.settings.fps if self.settings.fps > 0 else self.fps

    def _open(self, clock: float, wall: float, image: np.ndarray) -> None:
        import av

        folder = self.sink.dir / safe_name(self.stream)
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{safe_name(self.stream)}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(wall))}"
        name, n = stem, 1
        while (folder / f"{name}.mp4").exists() or (folder / f"{name}.mp4.part").exists():
            name, n = f"{stem}-{n}", n + 1
        self._part = folder / f"{name}.mp4.part"
        rate = Fraction(self._rate()).limit_denominator(1001)
        self._time_base = 1 / rate
        self._container = av.open(str(self._part), mode="w", format="mp4")
        self._video = self._container.add_stream("libx264", rate=rate)
        self._video.width, self._video.height = image.shape[1], image.shape[0]
        self._video.pix_fmt = "yuv420p"
        self._video.codec_context.time_base = self._time_base
        self._video.options = {"crf": str(self.settings.crf), "preset": self.settings.preset}
        self._start, self._last_pts, self._failed_at = clock, -1, None

    def close(self) -> None:
        """Flushes the encoder and finalises the file (the ``.part`` becomes the ``.mp4``)."""
        if self._container is None:
            return
        container, part = self._container, self._part
        self._container = self._video = self._part = None
        try:
            for packet in self._video_flush(container):
                container.mux(packet)
            container.close()
            if part is not None:
                if self._last_pts < 0:
                    part.unlink(missing_ok=True)
                else:
                    part.replace(part.with_suffix(""))
                    self.sink.files_written[self.stream] = self.sink.files_written.get(self.stream, 0) + 1
        except Exception as exc:  # noqa: BLE001 - the file is lost, the stream goes on
            if part is not None:
                part.unlink(missing_ok=True)
            self._fail(exc)

    @staticmethod
    def _video_flush(container: Any) -> list[Any]:
        return list(container.streams.video[0].encode(None)) if container.streams.video else []

    def _fail(self, exc: Exception) -> None:
        if not self._reported:
            self._reported = True
            why = getattr(exc, "strerror", None) or " ".join(str(exc).split())
            log.error("annotate %r: cannot write the video: %s (tried again on a new file every %.0f s)",
                      self.stream, why, RETRY_S)
        if self._container is not None:
            container, part = self._container, self._part
            self._container = self._video = self._part = None
            try:
                container.close()
            except Exception:  # noqa: BLE001,S110 - a broken container: its file goes below
                pass
            if part is not None:
                part.unlink(missing_ok=True)
        self._failed_at = time.monotonic()


def make_annotate_sink(settings: AnnotateSettings, context: SinkContext) -> AnnotateSink:
    return AnnotateSink(settings, context)
