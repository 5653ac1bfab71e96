"""Writes one event clip: encoded packets remuxed into MP4 with PyAV, nothing re-encoded.

Each output track copies its codec parameters from the input track (``add_stream_from_template``),
and timestamps are rebased so the clip starts at 0 with the tracks still in step (one offset in
seconds for both). A codec MP4 cannot carry (PCM audio, for one) is said in one log line; its track is
transcoded (audio to AAC, only when configured: the one place recording decodes) or left out.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from avstream.engine.capture.packets import Packet

log = logging.getLogger("avstream.clips")

# What the MP4 muxer takes as stream copy (FFmpeg's mov/mp4 codec tags); others are refused by it.
MP4_VIDEO = frozenset({"h264", "hevc", "av1", "vp9", "mpeg4", "mpeg2video", "mpeg1video", "mjpeg", "png"})
MP4_AUDIO = frozenset({"aac", "mp3", "mp2", "opus", "flac", "ac3", "eac3", "alac", "dts"})


@dataclass
class ClipResult:
    path: Path
    media_start: float  # ring clock of the first packet (media time for files, wall for live inputs)
    media_end: float
    duration_s: float  # length of the written clip
    tracks: list[str] = field(default_factory=list)  # e.g. ["video:h264", "audio:aac"]
    notes: list[str] = field(default_factory=list)  # what was left out or transcoded, and why


def _seconds(ts: int | None, tb: Any) -> float | None:
    return None if ts is None else float(ts * tb)


def write_clip(path: Path, packets: list[Packet], transcode_audio: str | None) -> ClipResult:
    """``packets`` (from a keyframe, one segment) as an MP4 at ``path``, written to a temporary name
    and renamed, so a listed clip is always complete. Raises OSError (disk full...) or av errors."""
    import av

    if not packets:
        raise ValueError("no packets in the clip's span")
    segment = packets[0].segment
    notes: list[str] = []
    video_in, audio_in = segment.video, segment.audio
    if video_in is not None and video_in.codec_context.name not in MP4_VIDEO:
        raise ValueError(f"video codec {video_in.codec_context.name} cannot go into MP4 as is")
    audio_mode = "none"
    if audio_in is not None and any(p.kind == "audio" for p in packets):
        name = audio_in.codec_context.name
        if name in MP4_AUDIO:
            audio_mode = "copy"
        elif transcode_audio:
            audio_mode = "transcode"
            notes.append(f"audio {name} cannot go into MP4: transcoded to {transcode_audio}")
        else:
            notes.append(f"audio {name} cannot go into MP4: video only (set record.transcode_audio: aac to keep it)")
    tmp = path.with_name(path.name + ".part")
    path.parent.mkdir(parents=True, exist_ok=True)
    kinds = {"video"} | ({"audio"} if audio_mode != "none" else set())
    chosen = [p for p in packets if p.kind in kinds]
    firsts = [s for s in (_seconds(p.dts if p.dts is not None else p.pts, p.time_base) for p in _firsts(chosen))
              if s is not None]
    base_s = min(firsts) if firsts else 0.0
    out = av.open(str(tmp), "w", format="mp4")
    try:
        tracks: dict[str, Any] = {}
        if video_in is not None:
            tracks["video"] = out.add_stream_from_template(video_in)
        encoder = None
        if audio_mode == "copy" and audio_in is not None:
            tracks["audio"] = out.add_stream_from_template(audio_in)
        elif audio_mode == "transcode":
            encoder = _AudioTranscoder(out, audio_in, transcode_audio or "aac")
        end_s = base_s
        for p in chosen:
            if p.kind == "audio" and encoder is not None:
                encoder.push(p, base_s)
                continue
            track = tracks.get(p.kind)
            if track is None:
                continue
            offset = round(base_s / p.time_base)
            packet = av.Packet(p.data)
            packet.time_base = p.time_base
            packet.pts = None if p.pts is None else p.pts - offset
            packet.dts = None if p.dts is None else p.dts - offset
            packet.duration = p.duration
            packet.is_keyframe = p.keyframe
            packet.stream = track
            out.mux(packet)
            stamp = _seconds(p.pts if p.pts is not None else p.dts, p.time_base) or 0.0
            end_s = max(end_s, stamp + float(p.duration * p.time_base))
        if encoder is not None:
            encoder.flush()
    except BaseException:
        out.close()
        tmp.unlink(missing_ok=True)
        raise
    out.close()
    os.replace(tmp, path)
    names = [f"video:{video_in.codec_context.name}"] if video_in is not None else []
    if audio_mode == "copy" and audio_in is not None:
        names.append(f"audio:{audio_in.codec_context.name}")
    elif audio_mode == "transcode":
        names.append(f"audio:{transcode_audio}")
    last = chosen[-1]
    return ClipResult(path, chosen[0].t, last.t + float(last.duration * last.time_base), max(0.0, end_s - base_s),
                      names, notes)


def _firsts(packets: list[Packet]) -> list[Packet]:
    seen: dict[str, Packet] = {}
    for p in packets:
        seen.setdefault(p.kind, p)
    return list(seen.values())


class _AudioTranscoder:
    """Decodes the span's audio with the input track's decoder and encodes it (AAC): used only where
    MP4 cannot carry the audio as is and the configuration asks for it."""

    def __init__(self, out: Any, audio_in: Any, codec: str):
        import av

        self.decoder = av.CodecContext.create(audio_in.codec_context.name, "r")
        params = audio_in.codec_context
        self.decoder.sample_rate = params.sample_rate
        self.decoder.layout = params.layout
        self.decoder.format = params.format
        if params.extradata:
            self.decoder.extradata = params.extradata
        # a layout without channel order ("2 channels", as PCM in MKV has) is refused by the encoder
        layout = {1: "mono", 2: "stereo"}.get(params.channels, params.layout.name)
        self.stream = out.add_stream(codec, rate=params.sample_rate, layout=layout)
        self.out = out
        self.samples = 0
        self.started = False

    def push(self, p: Packet, base_s: float) -> None:
        import av

        packet = av.Packet(p.data)
        packet.time_base = p.time_base
        packet.pts, packet.dts = p.pts, p.dts
        for frame in self.decoder.decode(packet):
            if not self.started:  # the first sample's place in the clip keeps audio in step with video
                self.started = True
                self.samples = max(0, round(((frame.time or base_s) - base_s) * frame.sample_rate))
            frame.pts = self.samples
            frame.time_base = Fraction(1, frame.sample_rate)
            self.samples += frame.samples
            for out_packet in self.stream.encode(frame):
                self.out.mux(out_packet)

    def flush(self) -> None:
        for out_packet in self.stream.encode(None):
            self.out.mux(out_packet)
