"""Files (anything PyAV opens), ``sample://<name>`` and ``synthetic://`` inputs."""
from __future__ import annotations

import math
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from avstream.engine.capture.base import (
    AudioChunker,
    FpsGate,
    MediaItem,
    MediaReader,
    _why,
    file_path,
    log,
    redact_uri,
    scaled_size,
    source_error,
)
from avstream.engine.capture.decode import (
    MediaDecoder,
    Timeline,
    effective_fps,
    first_tracks,
    native_rate,
    track_kinds,
)
from avstream.engine.capture.fit import FrameFitter
from avstream.engine.capture.preview import preview_only
from avstream.engine.capture.skipping import planned_mode, set_threading, thread_type_for
from avstream.engine.items import AudioChunk, StreamInfo, VideoFrame
from avstream.engine.synthetic.scene import SceneConfig, scene_for, sync_audio, sync_frame, sync_truth


class FileReader(MediaReader):
    """Any container/codec PyAV opens; the first video and the first audio track.

    ``skip`` and ``threading`` are the source's ``skip`` and ``decode_threading``
    (:mod:`~avstream.engine.capture.skipping`); ``skip_mode`` and ``decode_threading`` tell what applies.
    """

    def __init__(
        self,
        uri: str,
        *,
        stream: str,
        video: bool = True,
        audio: bool = True,
        fps: float = 0.0,
        sample_rate: int = 16000,
        audio_chunk_s: float = 0.04,
        options: dict[str, Any] | None = None,
        min_size: tuple[int, int] | None = None,
        skip: str = "auto",
        threading: str = "auto",
        fitter: FrameFitter | None = None,
    ):
        import av  # heavy import kept out of module import time

        self.uri, self.stream = uri, stream
        self._min_size = min_size
        self._fitter = fitter
        path = file_path(uri)
        if not os.path.exists(path):
            raise source_error(stream, uri, "file not found")
        if os.path.isdir(path):
            raise source_error(stream, uri, "is a directory, not a media file")
        try:
            self._container = _open_telling_why(path, {str(k): str(v) for k, v in (options or {}).items()})
        except (av.FFmpegError, OSError, ValueError) as exc:
            why = _why(exc)
            raise source_error(
                stream, uri, f"cannot open ({why}): not a media file, or corrupt or truncated"
            ) from None
        c = self._container
        self._vs, self._as = first_tracks(c, video, audio)
        if self._vs is None and self._as is None:
            wanted = " or ".join(k for k, on in (("video", video), ("audio", audio)) if on) or "no track"
            has = track_kinds(c)
            c.close()
            raise source_error(stream, uri, f"no usable track (wanted {wanted}; file has {has})")
        width = height = 0
        self.decode_threading, self.skip_mode = "", "none"
        self._native = native_rate(self._vs)
        if self._vs is not None:
            # Frame threading: throughput, where its frames of delay do not matter. PyAV's default,
            # slice threading, uses one core on streams coded with one slice per frame, as libx264
            # and most cameras write them (60 s of 720p25 H.264 on 2 cores: 4.5 s frame, 6.7 s slice).
            self.decode_threading = set_threading(self._vs, thread_type_for(threading, live=False))
            subsampling = (fps > 0 and not FpsGate(fps, self._native).off) or (
                fitter is not None and fitter.subsamples(self._native))
            self.skip_mode = planned_mode(skip, live=False, codec=self._vs.codec_context.name, subsampling=subsampling)
            width, height = self._vs.codec_context.width, self._vs.codec_context.height
        starts = [
            float(s.start_time * s.time_base)
            for s in (self._vs, self._as)
            if s is not None and s.start_time is not None and s.time_base
        ]
        self._t0 = min(starts) if starts else 0.0
        self._fps = fps
        self.counters: dict[str, float] = {}
        self._rate = sample_rate
        self._chunk = max(1, round(audio_chunk_s * sample_rate))
        self._duration = float(c.duration) / 1e6 if c.duration else 0.0
        self.info = StreamInfo(
            stream=stream,
            has_video=self._vs is not None,
            has_audio=self._as is not None,
            fps=effective_fps(fps, self._native) if self._vs is not None else 0.0,
            width=width,
            height=height,
            sample_rate=sample_rate if self._as is not None else 0,
            uri=redact_uri(uri),
        )

    def read(self) -> Iterator[MediaItem]:
        import av

        timeline = _FileTimeline(self._t0, self._native, self._min_size, AudioChunker(self.stream, self._rate, self._chunk))
        timeline.label = f"stream {self.stream!r}: {redact_uri(self.uri)}"
        decoder = MediaDecoder(self._container, self._vs, self._as, timeline, stream=self.stream, fps=self._fps,
                               native=self._native, sample_rate=self._rate, skip=self.skip_mode, count=self._count,
                               fitter=self._fitter)
        decoder.preview, decoder.preview_between = self.preview, True
        delivered = 0
        last_t = 0.0
        video_span: list[float] = []  # first and latest video time delivered
        try:
            for item in decoder.packets():
                last_t = max(last_t, item.t)
                delivered += 1
                if isinstance(item, VideoFrame):
                    video_span[1:] = [item.t] if video_span else [item.t, item.t]
                yield item
        except av.FFmpegError as exc:
            if not delivered:
                raise source_error(self.stream, self.uri, f"cannot decode: {_why(exc)}") from None
            log.warning(
                "stream %r: %s: decoding stopped at t=%.2f s (truncated or corrupt input): %s",
                self.stream,
                redact_uri(self.uri),
                last_t,
                _why(exc),
            )
        yield from decoder.finish()
        if not delivered and not timeline.chunker.emitted:
            raise source_error(self.stream, self.uri, "no decodable media (empty or corrupt input)")
        if timeline.frames > 1 and len(video_span) == 2 and video_span[0] == video_span[1]:
            log.warning("stream %r: %s: %d video frames all at t=%.2f s: the timestamps do not advance, so no "
                        "window of it can be filled", self.stream, redact_uri(self.uri), timeline.frames, video_span[0])
        if decoder.planner is not None:  # frames not decoded still show how far the input went
            last_t = max(last_t, decoder.planner.demuxed_t)
        if self._duration and last_t < self._duration - 0.5 - (1.0 / self._fps if self._fps > 0 else 0.0):
            log.warning(
                "stream %r: %s: input ended at t=%.2f s of a stated %.2f s (truncated?)",
                self.stream,
                redact_uri(self.uri),
                last_t,
                self._duration,
            )

    def close(self) -> None:
        self._container.close()

    def _count(self, name: str, amount: float) -> None:
        self.counters[name] = self.counters.get(name, 0.0) + amount
        if self.counter is not None:
            self.counter(name, amount)


# Serialises the error path's log capture, so that each capture restores the level it found.
_LOG_CAPTURE = threading.Lock()


def _open_telling_why(path: str, options: dict[str, str]) -> Any:
    """``av.open``, whose error then names FFmpeg's own reason: an open that fails on a bad header
    often returns a code that says little ("Device or resource busy" for a 16384x16384 raw video).

    FFmpeg's log goes to Python only on that error path, and only for the retried open. A frame-threaded
    decoder's threads log through PyAV's callback, which takes the GIL, while PyAV frees a decoder
    holding the GIL and waiting for those threads: with the callback installed, a stream that ends
    (or loops) while another stream's decoder logs deadlocks the whole capture process. Earlier, every
    open installed the callback and restored the level it had read, so two opens at once could leave it
    installed for good.
    """
    import av
    import av.logging

    try:
        return av.open(path, options=options)
    except av.FFmpegError:
        pass  # open it again, this time hearing what FFmpeg says
    with _LOG_CAPTURE:
        level, skip = av.logging.get_level(), av.logging.get_skip_repeated()
        av.logging.set_level(av.logging.ERROR)
        av.logging.set_skip_repeated(False)  # the same reason as the last failed open's is still the reason
        try:
            with av.logging.Capture() as logs:
                try:
                    return av.open(path, options=options)
                except av.FFmpegError as exc:
                    said = [message.strip() for _, _, message in logs if message.strip()]
                    if said:
                        exc.strerror = f"{said[-1]}; {exc.strerror}" if exc.strerror else said[-1]
                    raise
        finally:
            av.logging.set_skip_repeated(skip)
            av.logging.set_level(level)


class _FileTimeline(Timeline):
    """A file's own timestamps from the start of the input; frames scaled down to cover ``min_size``."""

    interpolation = "AREA"  # downscaling to what consumers use: area averaging keeps detail

    JUMP_BACK_S = 0.5  # a video timestamp this far before the latest one is a jump back, told once
    JUMP_FORWARD_S = 60.0  # and one this far after it a jump forward (a gap no window can span)

    def __init__(self, t0: float, native: float, min_size: tuple[int, int] | None, chunker: AudioChunker):
        self.t0, self.native, self.min_size, self.chunker = t0, native, min_size, chunker
        self.frames = 0
        self.label = ""  # "stream 'x': URI", for the warnings
        self.latest: float | None = None
        self.told: set[str] = set()

    def video_time(self, frame: Any, packet: Any, wall: float) -> float:
        if frame.time is not None:
            t = frame.time - self.t0
        else:  # no PTS: count frames at the nominal rate
            t = self.frames / (self.native or 25.0)
        self.frames += 1
        if self.latest is not None:
            if t < self.latest - self.JUMP_BACK_S:
                self._tell("back", f"video timestamps jump back from {self.latest:.2f} s to {t:.2f} s: frames "
                                   "before the furthest time reached are dropped")
            elif t > self.latest + self.JUMP_FORWARD_S:
                self._tell("forward", f"video timestamps jump forward from {self.latest:.2f} s to {t:.2f} s")
        self.latest = t if self.latest is None else max(self.latest, t)
        return max(0.0, t)

    def _tell(self, kind: str, what: str) -> None:
        if kind not in self.told:
            self.told.add(kind)
            log.warning("%s: %s", self.label, what)

    def packet_time(self, packet: Any) -> float:
        tb = packet.time_base  # decoded frames carry the packet's time base; same arithmetic as Frame.time
        return max(0.0, float(packet.pts) * tb.numerator / tb.denominator - self.t0)

    def video_size(self, frame: Any) -> tuple[int, int]:
        return scaled_size(frame.width, frame.height, self.min_size)

    def audio(self, samples: np.ndarray, pts: float | None, frame: Any, wall: float) -> Iterator[AudioChunk]:
        if pts is None:
            pts = frame.time if frame is not None and frame.time else 0.0
        return self.chunker.push(samples, pts - self.t0)

    def finish(self) -> Iterator[AudioChunk]:
        return self.chunker.flush()


# --------------------------------------------------------------------------------------------------
# generated inputs: synthetic scenes and sample://


class GeneratedReader(MediaReader):
    """Frames and audio from render functions; video at ``native_fps``, audio rendered at any rate."""

    def __init__(
        self,
        uri: str,
        *,
        stream: str,
        frame_fn: Callable[[int], np.ndarray],
        audio_fn: Callable[[int, int, int], np.ndarray],
        duration: float,
        native_fps: float,
        width: int,
        height: int,
        video: bool,
        audio: bool,
        fps: float,
        sample_rate: int,
        audio_chunk_s: float,
        truth: dict[str, Any] | None = None,
        fitter: FrameFitter | None = None,
    ):
        if not video and not audio:
            raise source_error(stream, uri, "no usable track (neither video nor audio wanted)")
        self.truth = truth
        self._fitter = fitter
        self._frame_fn, self._audio_fn = frame_fn, audio_fn
        self._video, self._audio = video, audio
        self._native, self._fps = native_fps, fps
        self._rate = sample_rate
        self._chunk = max(1, round(audio_chunk_s * sample_rate))
        self._frames = max(1, round(duration * native_fps))
        self._samples = max(1, round(duration * sample_rate))
        self._stream = stream
        eff_fps = min(fps, native_fps) if fps > 0 else native_fps
        self.info = StreamInfo(
            stream=stream,
            has_video=video,
            has_audio=audio,
            fps=eff_fps if video else 0.0,
            width=width if video else 0,
            height=height if video else 0,
            sample_rate=sample_rate if audio else 0,
            uri=redact_uri(uri),
        )

    def read(self) -> Iterator[MediaItem]:
        gate = FpsGate(self._fps, self._native)
        vi = 0 if self._video else self._frames
        ai = 0 if self._audio else self._samples
        while vi < self._frames or ai < self._samples:
            tv = vi / self._native if vi < self._frames else math.inf
            ta = ai / self._rate if ai < self._samples else math.inf
            if tv <= ta:
                if gate.keep(tv):
                    frame = self._frame(vi, tv)
                    if frame is not None:
                        yield frame
                vi += 1
            else:
                n = min(self._chunk, self._samples - ai)
                yield AudioChunk(self._stream, ta, time.time(), self._audio_fn(ai, n, self._rate), self._rate)
                ai += n

    def _frame(self, index: int, t: float) -> VideoFrame | None:
        """Frame ``index`` at ``t``, rendered only when a consumer takes it, in the sizes they take."""
        fitter = self._fitter
        watched = self.preview is not None and self.preview.watching(self._stream)
        if fitter is None:
            image = self._frame_fn(index)
            return VideoFrame(self._stream, t, time.time(), image, native=image if watched else None)
        wanted = fitter.wanted(t)
        if not wanted:
            # rendered for the preview only while it is watched and a preview frame is due
            if watched and self.preview is not None and self.preview.due(self._stream):
                return preview_only(self._stream, t, time.time(), self._frame_fn(index))
            return None
        image = self._frame_fn(index)
        item = fitter.frame(self._stream, t, time.time(), fitter.fit_array(image, wanted))
        item.native = image if watched else None
        return item


@dataclass(frozen=True)
class Sample:
    description: str
    scene: SceneConfig | None = None  # None: the A/V sync pattern
    duration: float = 10.0


SAMPLES: dict[str, Sample] = {
    "demo": Sample(
        "20 s synthetic scene (seed 0, 640x360, 25 fps, 16 kHz) with highlights and a violence segment",
        SceneConfig(seed=0, duration=20.0, violence=True),
    ),
    "short": Sample(
        "5 s synthetic scene (seed 1, 640x360, 25 fps, 16 kHz)", SceneConfig(seed=1, duration=5.0)
    ),
    "sync": Sample(
        "10 s A/V sync pattern: white flash + 1 kHz beep for 0.1 s at every whole second", None, 10.0
    ),
}

_SCENE_KEYS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "seed": ("seed", int),
    "duration": ("duration", float),
    "fps": ("fps", float),
    "width": ("width", int),
    "height": ("height", int),
    "rate": ("sample_rate", int),
    "objects": ("objects", int),
    "sound": ("sound", str),
    "violence": ("violence", lambda v: {"1": True, "true": True, "0": False, "false": False}[v.lower()]),
}
_SYNC_KEYS = ("duration", "fps", "width", "height", "rate")


def parse_synthetic(uri: str, stream: str = "") -> tuple[str, SceneConfig]:
    """``synthetic://scene?...`` or ``synthetic://sync?...`` -> (kind, config); SourceError if invalid."""
    parts = urllib.parse.urlsplit(uri)
    kind = parts.netloc or parts.path.strip("/")
    if kind not in ("scene", "sync"):
        raise source_error(stream, uri, f"unknown synthetic input {kind!r}; available: scene, sync")
    allowed = _SCENE_KEYS if kind == "scene" else {k: _SCENE_KEYS[k] for k in _SYNC_KEYS}
    values: dict[str, Any] = {}
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key not in allowed:
            raise source_error(stream, uri, f"unknown query key {key!r}; known: {', '.join(allowed)}")
        field, conv = allowed[key]
        try:
            values[field] = conv(value)
        except (ValueError, KeyError):
            raise source_error(stream, uri, f"bad value {value!r} for {key!r}") from None
    try:
        return kind, SceneConfig(**values)
    except ValueError as exc:
        raise source_error(stream, uri, str(exc)) from None


def _generated(uri: str, kind: str, cfg: SceneConfig, duration: float, stream: str, **kw: Any) -> MediaReader:
    if kind == "sync":
        w, h = cfg.width, cfg.height
        fps = cfg.fps
        return GeneratedReader(
            uri, stream=stream, duration=duration, native_fps=fps, width=w, height=h,
            frame_fn=lambda i: sync_frame(w, h, i / fps),
            audio_fn=lambda start, n, rate: sync_audio(rate, start, n),
            truth=sync_truth(duration), **kw,
        )  # fmt: skip
    scene = scene_for(cfg)
    return GeneratedReader(
        uri, stream=stream, duration=cfg.duration, native_fps=cfg.fps, width=cfg.width, height=cfg.height,
        frame_fn=scene.frame, audio_fn=scene.audio, truth=scene.truth, **kw,
    )  # fmt: skip


