"""The media source node ``avstream/source@v1``: files, ``sample://``, ``synthetic://``, network
streams, cameras and microphones.

One node feeds one stream (``ctx.streams[0]``), from one URI carrying video and/or audio, or from a
video-only URI paired with an audio-only URI. The readers live in ``avstream.engine.capture``
(``files``: files and generated inputs, ``network``, ``camera``, ``microphone``); the live-input
params are ``capture.settings.LiveSettings``, which :class:`SourceParams` extends. For files this
node adds pacing, looping, ``--duration`` and resume after a restart. Live readers capture in
threads of their own; this node merges them through a jitter buffer (``avclock``), passes their ``stream_down`` /
``stream_up`` events on, and reports skew, drift, drops and reconnects in its status. A file or
network stream keeps its own A/V timestamps; a camera + microphone pair is aligned by capture wall time.
"""

from __future__ import annotations

import heapq
import math
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, cast

from pydantic import Field, model_validator

from avstream.engine.capture.avclock import JitterBuffer
from avstream.engine.capture.base import LIVE_SCHEMES, MediaItem, MediaReader, redact_uri
from avstream.engine.capture.fit import FrameFitter, frame_fits
from avstream.engine.capture.live import LiveReader, WallClock
from avstream.engine.capture.preview import is_preview_only
from avstream.engine.capture.schemes import check_uri, open_reader, resolve_file, uri_scheme
from avstream.engine.capture.settings import LiveSettings
from avstream.engine.capture.skipping import SkipMode, ThreadingMode
from avstream.engine.errors import SourceError
from avstream.engine.items import AudioChunk, Event, Item, StreamInfo, VideoFrame
from avstream.engine.node import CheckContext, Params, SourceNode


class InputParams(Params):
    """The source node's own params: what to read and how to deliver it."""

    uri: str | None = Field(
        default=None,
        description="Input URI carrying video and/or audio: a file path (relative to the pipeline file) or "
        "file://, sample://<name>, synthetic://scene?seed=N&duration=S&... Leave out when video/audio are given.",
    )
    video: str | None = Field(
        default=None, description="Video-only input URI, paired with `audio` as one stream."
    )
    audio: str | None = Field(
        default=None, description="Audio-only input URI, paired with `video` as one stream."
    )
    realtime: bool = Field(
        default=True,
        description="Pace output at media speed (a file plays like a live camera; wall is stamped at "
        "release). False: as fast as possible, nothing dropped.",
    )
    loop: bool = Field(
        default=False, description="Restart the input at its end; media time keeps increasing."
    )
    fps: float = Field(
        default=0.0, ge=0.0, le=1000.0,
        description="Video frames per second to keep (0: native rate, each window node sent only the frames "
        "on its model's grid, made at its model's size). Setting it turns that off: window nodes resize.",
    )
    min_size: tuple[int, int] | None = Field(
        default=None,
        description="Files: deliver frames scaled down (aspect kept) to the smallest size covering [W, H] "
        "(default: native size, or each window node's model size). Setting it makes window nodes resize.",
    )
    sample_rate: int = Field(
        default=16000, gt=0, le=192000,
        description="Audio sample rate in Hz (mono float32); default: the rate the window nodes' models take.",
    )
    audio_chunk_s: float = Field(
        default=0.04, gt=0.0, le=1.0, description="Length of one audio chunk in seconds."
    )
    options: dict[str, str] = Field(
        default_factory=dict,
        description="FFmpeg options for file and network inputs (e.g. {probesize: '500000'}); override the defaults.",
    )
    skip: SkipMode = Field(
        default="auto",
        description="Video decoding when `fps` keeps fewer frames than the input has. auto: lossless, frames "
        "no kept frame depends on are not decoded (non-reference frames skipped, GOP tails after the last kept "
        "frame not decoded; files in H.264, HEVC, MPEG-2 or MPEG-4); nonref: lossless, non-reference frames "
        "only; keyframes: approximate, key frames only (the first at or after each sample time; files and live "
        "inputs); none: decode every frame. Live inputs decode every frame unless keyframes.",
    )
    decode_threading: ThreadingMode = Field(
        default="auto",
        description="Video decoder threading. frame: several frames at once, the most throughput, (threads - 1) "
        "frames of delay; slice: parts of one frame at once, no delay, but one core for streams coded with one "
        "slice per frame. auto: frame for files; for live inputs FFmpeg's choice (frame where the decoder has "
        "it: slice threading fell behind under CPU load).",
    )


# the input params, then the live-input settings: pydantic orders fields from the last base first
class SourceParams(LiveSettings, InputParams):
    @model_validator(mode="after")
    def _one_input(self) -> SourceParams:
        if self.uri and (self.video or self.audio):
            raise ValueError("give either `uri` or `video`/`audio`, not both")
        if not (self.uri or self.video or self.audio):
            raise ValueError("give `uri`, or `video` and/or `audio`")
        return self


class FileSource(SourceNode[SourceParams]):
    """Reads a file, sample, synthetic scene, network stream or device; emits StreamInfo, frames, chunks."""

    type_id = "avstream/source@v1"
    summary = (
        "Media input (video + audio): files, sample://, synthetic://, network streams with reconnect, "
        "v4l2 cameras, microphones"
    )
    Params = SourceParams
    output_kind = "media"

    @classmethod
    def check(cls, params: Any, ctx: CheckContext) -> list[tuple[str, str]]:
        problems = []
        uris = {}
        for key in ("uri", "video", "audio"):
            uri = params.get(key) if isinstance(params, dict) else getattr(params, key, None)
            if uri:
                uris[key] = uri
                problem = check_uri(uri, ctx.base_dir)
                if problem:
                    problems.append((key, problem))
        if "video" in uris and "audio" in uris and len({uri_scheme(u) in LIVE_SCHEMES for u in uris.values()}) == 2:
            problems.append(("audio", "a live input can only be paired with another live input (not a file)"))
        return problems

    @property
    def fitter(self) -> FrameFitter | None:
        """Gates and scalers for what the consumers take (``ctx.output_fits``); one for the whole run."""
        if not hasattr(self, "_fitter"):
            fits = frame_fits(self.ctx.output_fits)
            self._fitter = FrameFitter(fits) if fits else None
        return self._fitter

    def _open(self, uri: str, video: bool, audio: bool) -> MediaReader:
        p = self.params
        reader = open_reader(
            resolve_file(uri, self.ctx.base_dir),
            stream=self.ctx.streams[0],
            video=video,
            audio=audio,
            fps=p.fps,
            sample_rate=p.sample_rate,
            audio_chunk_s=p.audio_chunk_s,
            options=p.options or None,
            live=p,  # the params are LiveSettings
            min_size=p.min_size,
            skip=p.skip,
            threading=p.decode_threading,
            fitter=self.fitter if video else None,
        )
        reader.preview = self.ctx.preview
        if not getattr(reader, "live", False):  # live readers count through bind()
            reader.counter = self.ctx.count  # frames decoded, skipped, dropped
        return reader

    def _open_all(self) -> list[MediaReader]:
        p = self.params
        if p.uri:
            return [self._open(p.uri, True, True)]
        readers: list[MediaReader] = []
        problems: list[str] = []
        stream = self.ctx.streams[0]
        # Open both halves of a pair even when one fails, so the error names every missing device.
        for uri, video, audio in ((p.video, True, False), (p.audio, False, True)):
            if not uri:
                continue
            try:
                reader = self._open(uri, video, audio)
            except SourceError as exc:
                problems.append(str(exc).removeprefix(f"stream {stream!r}: "))
                continue
            readers.append(reader)
            if (video and not reader.info.has_video) or (audio and not reader.info.has_audio):
                problems.append(f"{redact_uri(uri)}: no {'video' if video else 'audio'} track")
        if problems:
            for r in readers:
                r.close()
            raise SourceError(f"stream {stream!r}: " + "; ".join(problems))
        return readers

    @staticmethod
    def _combined_info(readers: Sequence[MediaReader | _Info]) -> StreamInfo:
        if len(readers) == 1:
            return readers[0].info
        v = next((r.info for r in readers if r.info.has_video), None)
        a = next((r.info for r in readers if r.info.has_audio), None)
        return StreamInfo(
            stream=readers[0].info.stream,
            has_video=v is not None,
            has_audio=a is not None,
            fps=v.fps if v else 0.0,
            width=v.width if v else 0,
            height=v.height if v else 0,
            sample_rate=a.sample_rate if a else 0,
            uri=" + ".join(r.info.uri for r in readers),
        )

    def _passes(self, first: list[MediaReader], info: StreamInfo) -> Iterator[MediaItem]:
        """Items of every pass over the input, shifted so media time keeps increasing when looping."""
        readers = first
        offset = 0.0
        frame_s = 1.0 / info.fps if info.fps > 0 else 0.0
        while True:
            end = 0.0
            try:
                merged = heapq.merge(*(r.read() for r in readers), key=lambda item: item.t)
                for item in merged:
                    end = max(end, item.t_end if isinstance(item, AudioChunk) else item.t + frame_s)
                    item.t += offset
                    yield item
            finally:
                for r in readers:
                    r.close()
            if not self.params.loop or end <= 0.0 or self.ctx.stopping:
                return
            offset += end
            self.ctx.logger.info("stream %r: looping input at media time %.2f s", info.stream, offset)
            if self.fitter is not None:
                self.fitter.offset = offset  # the consumers' frame grids go on in media time
            readers = self._open_all()  # the previous pass's readers are closed above

    def produce(self) -> Iterator[Item]:
        stream = self.ctx.streams[0]
        readers = self._open_all()
        if any(getattr(r, "live", False) for r in readers):
            yield from self._produce_live(readers)
            return
        info = self._combined_info(readers)
        yield info
        limit = self.ctx.duration
        resume = self.ctx.resume_after.get(stream, -math.inf)
        pending = {k for k, on in (("video", info.has_video), ("audio", info.has_audio)) if on}
        realtime = self.params.realtime
        origin: float | None = None  # monotonic time of media time 0 of this run
        for item in self._passes(readers, info):
            if self.ctx.stopping:
                return
            kind = "video" if isinstance(item, VideoFrame) else "audio"
            if limit is not None and item.t >= limit:
                pending.discard(kind)  # this track is done; the other may still be behind
                if not pending:
                    return
                continue
            if item.t <= resume:
                continue
            if isinstance(item, AudioChunk) and limit is not None and item.t_end > limit:
                keep = max(1, round((limit - item.t) * item.sample_rate))
                item.samples = item.samples[:keep]
            if realtime:
                now = time.monotonic()
                if origin is None:
                    origin = now - item.t  # start pacing at the first emitted item (also after resume)
                delay = origin + item.t - now
                # behind schedule: emit at once; ahead: wait, but wake up at once on stop
                if delay > 0 and self.ctx.stop_event.wait(delay):
                    return
                item.wall = time.time()  # a paced file behaves like a live capture
            if not is_preview_only(item):
                self.ctx.count("frames_out" if kind == "video" else "audio_chunks_out")
            yield item


    # --- live inputs ---
    def _produce_live(self, readers: list[MediaReader]) -> Iterator[Item]:
        stream = self.ctx.streams[0]
        if not all(getattr(r, "live", False) for r in readers):
            for r in readers:
                r.close()
            uris = " + ".join(r.info.uri for r in readers)
            raise SourceError(f"stream {stream!r}: {uris}: a live input can only be paired with another live input")
        p = self.params
        resume = self.ctx.resume_after.get(stream)
        start = resume + 1e-3 if resume is not None else 0.0  # after a restart: media time continues
        resumed_at = time.time() if resume is not None else None
        wall = WallClock(start, wait_for_video=any(r.info.has_video for r in readers)) if len(readers) > 1 else None
        for r in readers:
            cast(LiveReader, r).bind(start=start, wall=wall, count=self.ctx.count,  # all live, checked above
                                     resumed_at=resumed_at)
        self._live = readers
        combined = self._combined_info(readers)
        self._jitter = jb = JitterBuffer(stream, video=combined.has_video, audio=combined.has_audio,
                                         sample_rate=p.sample_rate, hold_s=p.jitter_buffer,
                                         conceal_s=max(1.0, 4 * p.jitter_buffer))
        hand: queue.Queue[tuple[str, int, Any]] = queue.Queue(maxsize=8)
        for i, r in enumerate(readers):
            threading.Thread(target=_pump, args=(r, i, hand, self.ctx.stop_event), name=f"pump:{stream}:{i}",
                             daemon=True).start()
        infos: dict[int, StreamInfo] = {}
        announced: StreamInfo | None = None
        ended = 0
        limit = self.ctx.duration
        try:
            while not self.ctx.stopping:
                try:
                    kind, i, item = hand.get(timeout=0.05)
                except queue.Empty:
                    kind, item = "", None
                if kind == "error":
                    raise item
                if kind == "end":
                    ended += 1
                    if ended == len(readers):
                        break
                elif isinstance(item, StreamInfo):
                    infos[i] = item
                    if len(infos) == len(readers):
                        info = self._combined_info([_Info(infos[k]) for k in sorted(infos)])
                        if info != announced:
                            announced = info
                            jb.configure(video=info.has_video, audio=info.has_audio, sample_rate=info.sample_rate)
                            yield info
                elif isinstance(item, Event):
                    self.ctx.count(item.name)
                    yield item
                elif item is not None:
                    jb.push(item)
                    if announced is None and len(jb) > 256:  # the other input is not up yet: keep it bounded
                        self.ctx.count("dropped_before_start", len(jb.flush()))
                if announced is None:
                    continue
                for out in jb.pop():
                    if limit is not None and out.t >= limit:
                        return
                    self.ctx.count("frames_out" if isinstance(out, VideoFrame) else "audio_chunks_out")
                    yield out
            for out in jb.flush() if announced is not None and not self.ctx.stopping else []:
                yield out
        finally:
            for r in readers:
                r.close()

    def status(self) -> dict[str, Any]:
        fitter = getattr(self, "_fitter", None)
        made = {"frames_made": dict(fitter.made)} if fitter is not None else {}
        readers = getattr(self, "_live", None)
        if not readers:
            return made
        per = [r.stats() for r in readers]
        out: dict[str, Any] = dict(per[0]) if len(per) == 1 else {r.info.uri: st for r, st in zip(readers, per, strict=True)}
        jb = getattr(self, "_jitter", None)
        if jb is not None:
            out["audio_concealed_s"] = round(jb.concealed_s, 2)
            out["late_audio_s"] = round(jb.late_audio_s, 2)
        if len(per) > 1:
            skews = [st["av_skew_ms"] for st in per if "av_skew_ms" in st]
            if skews:
                out["av_skew_ms"] = skews[0]
        return {**out, **made}


class _Info:
    """A StreamInfo in the shape ``_combined_info`` reads (``reader.info``)."""

    def __init__(self, info: StreamInfo):
        self.info = info


def _pump(reader: MediaReader, index: int, hand: queue.Queue[tuple[str, int, Any]], stop: threading.Event) -> None:
    """One live reader's items into the node's hand-over queue (blocks when the node is behind:
    the reader's own queue then drops its oldest media)."""
    try:
        for item in reader.read():
            while not stop.is_set():
                try:
                    hand.put(("item", index, item), timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return
        hand.put(("end", index, None))
    except BaseException as exc:  # handed to the node's thread, which reports it
        hand.put(("error", index, exc))


def source_node_types() -> list[type]:
    """The source node types of this module, for the builtin entry point."""
    return [FileSource]
