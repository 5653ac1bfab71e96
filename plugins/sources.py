"""The media source node ``avstream/source@v1``: files, ``sample://`` and ``synthetic://`` inputs.

One node feeds one stream (``ctx.streams[0]``), from one URI carrying video and/or audio, or from a
video-only URI paired with an audio-only URI (joined by media time). The readers live in
``avstream.engine.capture``; this node adds pacing, looping, ``--duration`` and resume after a restart.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Iterator
from typing import Any

from avstream.engine.capture import MediaItem, MediaReader, check_uri, open_reader, redact_uri, resolve_file
from avstream.engine.errors import SourceError
from avstream.engine.items import AudioChunk, Item, StreamInfo, VideoFrame
from avstream.engine.node import CheckContext, Params, SourceNode
from pydantic import Field, model_validator


class SourceParams(Params):
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
        default=0.0, ge=0.0, le=1000.0, description="Video frames per second to keep (0: native rate)."
    )
    sample_rate: int = Field(
        default=16000, gt=0, le=192000, description="Audio sample rate in Hz (mono float32)."
    )
    audio_chunk_s: float = Field(
        default=0.04, gt=0.0, le=1.0, description="Length of one audio chunk in seconds."
    )
    options: dict[str, str] = Field(
        default_factory=dict, description="FFmpeg demuxer options for file inputs."
    )

    @model_validator(mode="after")
    def _one_input(self) -> SourceParams:
        if self.uri and (self.video or self.audio):
            raise ValueError("give either `uri` or `video`/`audio`, not both")
        if not (self.uri or self.video or self.audio):
            raise ValueError("give `uri`, or `video` and/or `audio`")
        return self


class FileSource(SourceNode[SourceParams]):
    """Reads a file, a bundled sample or a synthetic scene and emits StreamInfo, frames and chunks."""

    type_id = "avstream/source@v1"
    summary = (
        "File, sample:// and synthetic:// input (video + audio), paced at media speed or as fast as possible"
    )
    Params = SourceParams
    output_kind = "media"

    @classmethod
    def check(cls, params: Any, ctx: CheckContext) -> list[tuple[str, str]]:
        problems = []
        for key in ("uri", "video", "audio"):
            uri = params.get(key) if isinstance(params, dict) else getattr(params, key, None)
            if uri:
                problem = check_uri(uri, ctx.base_dir)
                if problem:
                    problems.append((key, problem))
        return problems

    def _open(self, uri: str, video: bool, audio: bool) -> MediaReader:
        p = self.params
        return open_reader(
            resolve_file(uri, self.ctx.base_dir),
            stream=self.ctx.streams[0],
            video=video,
            audio=audio,
            fps=p.fps,
            sample_rate=p.sample_rate,
            audio_chunk_s=p.audio_chunk_s,
            options=p.options or None,
        )

    def _open_all(self) -> list[MediaReader]:
        p = self.params
        if p.uri:
            return [self._open(p.uri, True, True)]
        readers: list[MediaReader] = []
        try:
            if p.video:
                readers.append(self._open(p.video, True, False))
                if not readers[-1].info.has_video:
                    raise SourceError(
                        f"stream {self.ctx.streams[0]!r}: {redact_uri(p.video)}: no video track"
                    )
            if p.audio:
                readers.append(self._open(p.audio, False, True))
                if not readers[-1].info.has_audio:
                    raise SourceError(
                        f"stream {self.ctx.streams[0]!r}: {redact_uri(p.audio)}: no audio track"
                    )
        except BaseException:
            for r in readers:
                r.close()
            raise
        return readers

    @staticmethod
    def _combined_info(readers: list[MediaReader]) -> StreamInfo:
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
            readers = self._open_all()  # the previous pass's readers are closed above

    def produce(self) -> Iterator[Item]:
        stream = self.ctx.streams[0]
        readers = self._open_all()
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
            self.ctx.count("frames_out" if kind == "video" else "audio_chunks_out")
            yield item


def source_node_types() -> list[type]:
    """The source node types of this module, for the builtin entry point."""
    return [FileSource]
