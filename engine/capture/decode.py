"""The one PyAV decode loop of files, network streams and cameras.

:class:`MediaDecoder` demuxes the first video and audio track of an opened container, decodes the
packets (skipping undecodable ones, up to a limit), subsamples video by media time
(:class:`~avstream.engine.capture.base.FpsGate`), converts frames to BGR at the size asked for
(scaling inside the colour conversion; with a :class:`~avstream.engine.capture.fit.FrameFitter`,
once per size its consumers need, on each one's frame grid) and resamples audio to mono float32. What differs per
source is a :class:`Timeline`: how decoded media is placed in media time (a file's own timestamps;
a live stream's clock mapping, lag and stall checks) and how audio becomes chunks. A source that
subsamples decodes only what it keeps (:mod:`~avstream.engine.capture.skipping`).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import numpy as np

from avstream.engine.capture.base import FpsGate, MediaItem, PreviewWatch, log
from avstream.engine.capture.fit import FrameFitter
from avstream.engine.capture.preview import preview_only
from avstream.engine.capture.skipping import DRAIN, DROP, Count, SkipPlanner
from avstream.engine.items import AudioChunk, VideoFrame


def first_tracks(container: Any, video: bool, audio: bool) -> tuple[Any | None, Any | None]:
    """The container's first video and first audio track, each only when wanted."""
    vs = container.streams.video[0] if video and container.streams.video else None
    aus = container.streams.audio[0] if audio and container.streams.audio else None
    return vs, aus


def track_kinds(container: Any) -> str:
    """The kinds of track the container has ("video, audio"), for an error message."""
    kinds = [k for k, tracks in (("video", container.streams.video), ("audio", container.streams.audio)) if tracks]
    return ", ".join(kinds) or "none"


def native_rate(video_track: Any | None) -> float:
    """The frame rate a video track states (0: unknown, or no video)."""
    if video_track is None:
        return 0.0
    rate = video_track.average_rate or video_track.guessed_rate
    return float(rate) if rate else 0.0


def effective_fps(fps: float, native: float) -> float:
    """The rate frames come out at: ``fps`` subsamples and never exceeds the native rate."""
    return min(fps, native) if fps > 0 and native > 0 else (fps or native)


class MonoResampler:
    """Decoded audio frames -> mono float32 samples at ``rate``, with each block's timestamp.

    A new FFmpeg resampler is set up when the input format changes (a live stream's codec change);
    one resampler cannot take frames of another format.
    """

    def __init__(self, rate: int):
        self.rate = rate
        self._resampler: Any = None
        self._input: tuple[Any, ...] = ()

    def resample(self, frame: Any) -> Iterator[tuple[np.ndarray, float | None]]:
        """``(samples, seconds)`` blocks for ``frame``; ``frame=None`` drains what the resampler holds."""
        import av

        if frame is not None:
            fmt = (frame.format.name, frame.layout.name, frame.sample_rate)
            if self._resampler is None or fmt != self._input:
                self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.rate)
                self._input = fmt
        elif self._resampler is None:
            return
        for out in self._resampler.resample(frame):
            yield out.to_ndarray().reshape(-1).astype(np.float32, copy=False), out.time


class Timeline(ABC):
    """What a source does differently around :class:`MediaDecoder` (files and live inputs each have one).

    ``interpolation`` is the scaler used when a frame is converted to another size;
    ``drains_resampler`` hands out the samples the resampler still holds at the end of the input.
    """

    max_bad_packets = 25  # undecodable packets in a row before :meth:`undecodable` is raised
    interpolation: str | None = None
    drains_resampler = True

    def packet(self, kind: str, packet: Any) -> bool:
        """A demuxed packet of track ``kind``, before decoding; False stops reading."""
        return True

    def decoded(self, kind: str) -> None:  # noqa: B027 - an optional hook
        """A packet of track ``kind`` decoded to at least one frame."""

    def undecodable(self, exc: Exception) -> Exception:
        """What to raise after more than ``max_bad_packets`` undecodable packets in a row."""
        return exc

    @abstractmethod
    def video_time(self, frame: Any, packet: Any, wall: float) -> float | None:
        """Media time of a decoded video frame; None drops it."""

    def packet_time(self, packet: Any) -> float | None:
        """The media time :meth:`video_time` will give the frame of a video ``packet`` with a pts,
        before it is decoded (the skip planner simulates the rate on it); None: not known before."""
        return None

    def video_size(self, frame: Any) -> tuple[int, int]:
        """The (width, height) to deliver ``frame`` at."""
        return frame.width, frame.height

    def kept_video(self, t: float, wall: float) -> None:  # noqa: B027 - an optional hook
        """A video frame at ``t`` passed the rate gate and is about to be delivered."""

    @abstractmethod
    def audio(self, samples: np.ndarray, pts: float | None, frame: Any, wall: float) -> Iterator[AudioChunk]:
        """Chunks for resampled mono ``samples`` stamped ``pts`` (seconds) from the decoded ``frame``
        (None when the resampler is drained) that arrived at ``wall``."""

    def finish(self) -> Iterator[AudioChunk]:
        """The audio still held at the end of the input."""
        return iter(())


def _drain(video: Any) -> list[Any]:
    """The frames the decoder of ``video`` still holds; it is then reset for a new key frame."""
    import av

    end = av.Packet()
    end.time_base = video.time_base  # decoded frames take the packet's time base
    try:
        return video.codec_context.decode(end)
    finally:
        video.codec_context.flush_buffers()


class MediaDecoder:
    """Decodes the chosen tracks of ``container`` into VideoFrame and AudioChunk items.

    ``packets()`` runs until the input ends (or the timeline stops it); ``finish()`` then hands
    out the audio still held. They are separate so a reader can deal with a decoding error and still
    deliver what was decoded before it.
    """

    def __init__(self, container: Any, video: Any | None, audio: Any | None, timeline: Timeline, *,
                 stream: str, fps: float, native: float, sample_rate: int, skip: str = "none",
                 count: Count | None = None, fitter: FrameFitter | None = None):
        import av

        self.container, self.video, self.audio, self.timeline = container, video, audio, timeline
        self.stream = stream
        self.gate = FpsGate(fps, native)
        # ``skip`` as resolved by the reader (skipping.planned_mode): auto, nonref, keyframes or none
        self.planner: SkipPlanner | None = None
        self._skip = "DEFAULT"
        if video is not None and skip != "none":
            # the planner simulates what _video() will keep: the source's rate, then the consumers'
            source_gate = FpsGate(fps, native)
            gate = fitter.simulation(source_gate) if fitter is not None else source_gate
            self.planner = SkipPlanner(skip, video, gate, timeline.packet_time, stream=stream,
                                       native=native, count=count)
            if skip == "keyframes":
                video.codec_context.skip_frame = self._skip = "NONKEY"
        self.fitter = fitter  # the consumers' sizes and frame grids, when the pipeline gave them
        self.preview: PreviewWatch | None = None  # set by the reader when the source has a preview
        self.preview_between = False  # files: decoded frames no consumer takes may go to the preview
        self.resampler = MonoResampler(sample_rate) if audio is not None else None
        # one converter for the whole input: a frame's own would set up swscale again for every frame
        self._bgr = av.video.reformatter.VideoReformatter()

    def packets(self) -> Iterator[MediaItem]:
        import av

        timeline, planner, video = self.timeline, self.planner, self.video
        bad = 0
        demuxed = self.container.demux(*[s for s in (self.video, self.audio) if s is not None])
        planned = planner.plan(demuxed) if planner is not None else ((p, None) for p in demuxed)
        for packet, action in planned:
            kind = "video" if packet.stream is video else "audio"
            if not timeline.packet(kind, packet):
                return
            if action is not None and video is not None:  # a planned video packet: how to decode it
                if action == DROP:
                    continue
                if action != self._skip and action != DRAIN:
                    video.codec_context.skip_frame = self._skip = action
            try:
                frames = _drain(video) if action == DRAIN else packet.decode()
            except av.FFmpegError as exc:  # a corrupt packet: skip it, give up after many in a row
                bad += 1
                if bad > timeline.max_bad_packets:
                    raise timeline.undecodable(exc) from None
                log.debug("stream %r: skipping undecodable packet: %s", self.stream, exc)
                continue
            bad = 0
            if frames:
                timeline.decoded(kind)
            for frame in frames:
                wall = time.time()
                if isinstance(frame, av.VideoFrame):
                    if planner is not None:
                        planner.decoded(frame.pts)
                    item = self._video(frame, packet, wall)
                    if item is not None:
                        yield item
                elif self.resampler is not None and isinstance(frame, av.AudioFrame):
                    for samples, pts in self.resampler.resample(frame):
                        yield from timeline.audio(samples, pts, frame, wall)
        if planner is not None:
            planner.close()

    def finish(self) -> Iterator[AudioChunk]:
        if self.resampler is not None and self.timeline.drains_resampler:
            for samples, pts in self.resampler.resample(None):
                yield from self.timeline.audio(samples, pts, None, time.time())
        yield from self.timeline.finish()

    def _video(self, frame: Any, packet: Any, wall: float) -> VideoFrame | None:
        t = self.timeline.video_time(frame, packet, wall)
        if t is None or not self.gate.keep(t):
            return None
        fitter = self.fitter
        wanted = fitter.wanted(t) if fitter is not None else None
        watched = self.preview is not None and self.preview.watching(self.stream)
        if wanted is not None and not wanted:
            if watched and self.preview_between:  # decoded anyway: the preview may show it
                return preview_only(self.stream, t, wall, frame)
            return None  # no consumer takes a frame at this time: never converted
        self.timeline.kept_video(t, wall)
        if fitter is not None and wanted:
            # each size a consumer needs made once, scaled inside the colour conversion
            images = fitter.convert(frame, wanted, lambda: self.timeline.video_size(frame), self.timeline.interpolation)
            item = fitter.frame(self.stream, t, wall, images)
            item.native = frame if watched else None
            return item
        width, height = self.timeline.video_size(frame)
        # Scaling inside the colour conversion costs a quarter of converting at full size and then
        # resizing, and the frame crosses processes at the size consumers use.
        image = self._bgr.reformat(frame, format="bgr24", width=width, height=height,
                                   interpolation=self.timeline.interpolation, threads=1).to_ndarray()
        return VideoFrame(self.stream, t, wall, np.ascontiguousarray(image), native=frame if watched else None)
