"""Media readers: files (anything PyAV opens), ``sample://<name>`` and ``synthetic://`` inputs.

``open_reader(uri, stream=...)`` returns a :class:`MediaReader` whose ``read()`` yields
:class:`VideoFrame` and :class:`AudioChunk` items in (approximately) media-time order:

- ``t`` is media time in seconds from the start of the input (the earliest start time over the
  tracks is subtracted, each track's PTS converted with its own time base); ``wall`` is the
  ``time.time()`` at which the item was decoded or generated;
- video is C-contiguous BGR uint8 (H, W, 3); ``fps > 0`` subsamples by media time (never duplicates);
- audio is mono float32 in [-1, 1] at ``sample_rate``, in contiguous chunks of about
  ``audio_chunk_s`` whose ``t`` is computed from the sample count (no drift).

Other modules add schemes (live inputs) with :func:`register_scheme`. No torch here.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SourceError
from .items import AudioChunk, StreamInfo, VideoFrame
from .synthetic import SceneConfig, scene_for, sync_audio, sync_frame, sync_truth

log = logging.getLogger("avstream.capture")

MediaItem = VideoFrame | AudioChunk
_SECRET_KEYS = re.compile(r"(?i)^(pass(word|wd)?|pwd|token|secret|api[_-]?key|key|auth|sig(nature)?)$")


def redact_uri(uri: str) -> str:
    """``uri`` with the password of ``user:password@`` and secret-looking query values masked."""
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)(.*)$", uri, re.S)
    if not m:
        return uri
    scheme, authority, rest = m.groups()
    if "@" in authority:
        userinfo, host = authority.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        authority = f"{user}:***@{host}" if ":" in userinfo else f"{userinfo}@{host}"
    if "?" in rest:
        path, _, query = rest.partition("?")
        query, hash_sep, fragment = query.partition("#")
        parts = []
        for part in query.split("&"):
            key, eq, _ = part.partition("=")
            parts.append(f"{key}=***" if eq and _SECRET_KEYS.match(key) else part)
        rest = f"{path}?{'&'.join(parts)}{hash_sep}{fragment}"
    return scheme + authority + rest


def _why(exc: BaseException) -> str:
    """FFmpeg's reason without the file name it appends (the caller names the redacted URI)."""
    return str(getattr(exc, "strerror", None) or exc)


def source_error(stream: str, uri: str, reason: str) -> SourceError:
    """A one-line SourceError naming the stream and the redacted URI."""
    reason = " ".join(str(reason).split())  # one line, whatever FFmpeg said
    return SourceError(f"stream {stream!r}: {redact_uri(uri)}: {reason}")


class MediaReader:
    """An opened input. ``read()`` may be called once; ``close()`` is safe to call twice."""

    info: StreamInfo
    truth: dict[str, Any] | None = None  # ground truth of generated inputs (tests, benchmarks)

    def read(self) -> Iterator[MediaItem]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the input (file handles, decoders)."""

    def __enter__(self) -> MediaReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FpsGate:
    """Keep a frame when its timestamp reaches the next slot of ``fps``; never duplicates.

    ``native`` (the source rate, if known) sets a tolerance of just under half a source frame, so a
    target equal to the native rate keeps every frame despite PTS rounding.
    """

    def __init__(self, fps: float, native: float = 0.0):
        self.fps = fps
        self.off = fps <= 0 or (native > 0 and fps >= native * 0.999)
        self.tol = 0.49 * fps / native if native > 0 and not self.off else 1e-3
        self.slot = 0

    def keep(self, t: float) -> bool:
        if self.off:
            return True
        pos = t * self.fps
        if pos + self.tol < self.slot:
            return False
        self.slot = math.floor(pos + self.tol) + 1
        return True


class AudioChunker:
    """Collects mono float32 samples and cuts them into chunks of ``chunk`` samples.

    Chunk times come from the sample count since ``t0`` so consecutive chunks are contiguous.
    """

    def __init__(self, stream: str, rate: int, chunk: int):
        self.stream, self.rate, self.chunk = stream, rate, max(1, chunk)
        self.t0: float | None = None
        self.emitted = 0
        self._parts: list[np.ndarray] = []
        self._held = 0

    def push(self, samples: np.ndarray, t: float) -> Iterator[AudioChunk]:
        if self.t0 is None:
            self.t0 = max(0.0, t)
        if len(samples):
            self._parts.append(samples)
            self._held += len(samples)
        while self._held >= self.chunk:
            yield self._cut(self.chunk)

    def flush(self) -> Iterator[AudioChunk]:
        if self._held:
            yield self._cut(self._held)

    def _cut(self, n: int) -> AudioChunk:
        data = np.concatenate(self._parts) if len(self._parts) > 1 else self._parts[0]
        out, rest = data[:n], data[n:]
        self._parts, self._held = ([rest] if len(rest) else []), len(rest)
        t = (self.t0 or 0.0) + self.emitted / self.rate
        self.emitted += n
        samples = np.clip(out, -1.0, 1.0).astype(np.float32, copy=False)
        return AudioChunk(self.stream, t, time.time(), np.ascontiguousarray(samples), self.rate)


# --------------------------------------------------------------------------------------------------
# files


def file_path(uri: str) -> str:
    """The filesystem path of a plain path or ``file://`` URI."""
    if uri.startswith("file://"):
        return urllib.parse.unquote(uri[len("file://") :])
    return uri


def scaled_size(width: int, height: int, min_size: tuple[int, int] | None) -> tuple[int, int]:
    """The smallest size with ``width:height``'s aspect that still covers ``min_size`` (never upscales)."""
    if not min_size or min_size[0] <= 0 or min_size[1] <= 0:
        return width, height
    scale = max(min_size[0] / width, min_size[1] / height)
    if scale >= 1.0:
        return width, height
    # even sizes keep chroma-subsampled conversions exact
    return max(2, math.ceil(width * scale / 2) * 2), max(2, math.ceil(height * scale / 2) * 2)


class FileReader(MediaReader):
    """Any container/codec PyAV opens; the first video and the first audio track."""

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
    ):
        import av  # heavy import kept out of module import time

        self.uri, self.stream = uri, stream
        self._min_size = min_size
        path = file_path(uri)
        if not os.path.exists(path):
            raise source_error(stream, uri, "file not found")
        if os.path.isdir(path):
            raise source_error(stream, uri, "is a directory, not a media file")
        try:
            self._container = av.open(path, options={str(k): str(v) for k, v in (options or {}).items()})
        except (av.FFmpegError, OSError, ValueError) as exc:
            why = _why(exc)
            raise source_error(
                stream, uri, f"cannot open ({why}): not a media file, or corrupt or truncated"
            ) from None
        c = self._container
        self._vs = c.streams.video[0] if video and c.streams.video else None
        self._as = c.streams.audio[0] if audio and c.streams.audio else None
        if self._vs is None and self._as is None:
            has = [k for k, s in (("video", c.streams.video), ("audio", c.streams.audio)) if s]
            wanted = " or ".join(k for k, on in (("video", video), ("audio", audio)) if on) or "no track"
            c.close()
            raise source_error(
                stream, uri, f"no usable track (wanted {wanted}; file has {', '.join(has) or 'none'})"
            )
        native = 0.0
        width = height = 0
        if self._vs is not None:
            # Slice threading (PyAV's default): on 720p H.264 it decoded 1.4x faster than frame
            # threading on 2 cores (bench/pipeline.py), and adds no frames of delay.
            self._vs.thread_type = "SLICE"
            rate = self._vs.average_rate or self._vs.guessed_rate
            native = float(rate) if rate else 0.0
            width, height = self._vs.codec_context.width, self._vs.codec_context.height
        starts = [
            float(s.start_time * s.time_base)
            for s in (self._vs, self._as)
            if s is not None and s.start_time is not None and s.time_base
        ]
        self._t0 = min(starts) if starts else 0.0
        self._native = native
        self._gate = FpsGate(fps, native)
        self._rate = sample_rate
        self._chunk = max(1, round(audio_chunk_s * sample_rate))
        self._duration = float(c.duration) / 1e6 if c.duration else 0.0
        eff_fps = min(fps, native) if fps > 0 and native > 0 else (fps or native)
        self.info = StreamInfo(
            stream=stream,
            has_video=self._vs is not None,
            has_audio=self._as is not None,
            fps=eff_fps if self._vs is not None else 0.0,
            width=width,
            height=height,
            sample_rate=sample_rate if self._as is not None else 0,
            uri=redact_uri(uri),
        )

    def read(self) -> Iterator[MediaItem]:
        import av

        streams = [s for s in (self._vs, self._as) if s is not None]
        resampler = (
            av.AudioResampler(format="flt", layout="mono", rate=self._rate) if self._as is not None else None
        )
        chunker = AudioChunker(self.stream, self._rate, self._chunk)
        # one converter for the whole input: a frame's own would set up swscale again for every frame
        bgr = av.video.reformatter.VideoReformatter()
        delivered = 0
        last_t = 0.0
        frame_count = 0
        bad_packets = 0
        try:
            for packet in self._container.demux(*streams):
                try:
                    frames = packet.decode()
                except av.FFmpegError as exc:  # a corrupt packet: skip it, give up after many in a row
                    bad_packets += 1
                    if bad_packets > 25:
                        raise
                    log.debug("stream %r: skipping undecodable packet: %s", self.stream, exc)
                    continue
                bad_packets = 0
                for frame in frames:
                    if isinstance(frame, av.VideoFrame):
                        if frame.time is not None:
                            t = frame.time - self._t0
                        else:  # no PTS: count frames at the nominal rate
                            t = frame_count / (self._native or 25.0)
                        frame_count += 1
                        t = max(0.0, t)
                        if not self._gate.keep(t):
                            continue
                        w, h = scaled_size(frame.width, frame.height, self._min_size)
                        # Scaling inside the colour conversion costs a quarter of converting at full size
                        # and then resizing, and the frame crosses processes at the size consumers use.
                        image = np.ascontiguousarray(bgr.reformat(
                            frame, format="bgr24", width=w, height=h, interpolation="AREA", threads=1).to_ndarray())
                        last_t = max(last_t, t)
                        delivered += 1
                        yield VideoFrame(self.stream, t, time.time(), image)
                    elif resampler is not None and isinstance(frame, av.AudioFrame):
                        for chunk in self._resample(resampler, chunker, frame):
                            last_t = max(last_t, chunk.t)
                            delivered += 1
                            yield chunk
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
        if resampler is not None:
            yield from self._resample(resampler, chunker, None)
            yield from chunker.flush()
        if not delivered and not chunker.emitted:
            raise source_error(self.stream, self.uri, "no decodable media (empty or corrupt input)")
        if self._duration and last_t < self._duration - 0.5:
            log.warning(
                "stream %r: %s: input ended at t=%.2f s of a stated %.2f s (truncated?)",
                self.stream,
                redact_uri(self.uri),
                last_t,
                self._duration,
            )

    def _resample(self, resampler: Any, chunker: AudioChunker, frame: Any) -> Iterator[AudioChunk]:
        for out in resampler.resample(frame):
            samples = out.to_ndarray().reshape(-1)
            t = (
                out.time
                if out.time is not None
                else (frame.time if frame is not None and frame.time else 0.0)
            ) - self._t0
            yield from chunker.push(samples, t)

    def close(self) -> None:
        self._container.close()


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
    ):
        if not video and not audio:
            raise source_error(stream, uri, "no usable track (neither video nor audio wanted)")
        self.truth = truth
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
                    yield VideoFrame(self._stream, tv, time.time(), self._frame_fn(vi))
                vi += 1
            else:
                n = min(self._chunk, self._samples - ai)
                yield AudioChunk(self._stream, ta, time.time(), self._audio_fn(ai, n, self._rate), self._rate)
                ai += n


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


# --------------------------------------------------------------------------------------------------
# entry point

ReaderFactory = Callable[..., MediaReader]
UriCheck = Callable[[str], "str | None"]
_SCHEMES: dict[str, ReaderFactory] = {}
_CHECKS: dict[str, UriCheck] = {}


def register_scheme(scheme: str, factory: ReaderFactory, check: UriCheck | None = None) -> None:
    """Make ``open_reader`` hand ``scheme://`` URIs to ``factory(uri, **open_reader kwargs)``.

    ``check(uri)`` (optional) returns a problem found without opening the input, for validation.
    """
    _SCHEMES[scheme.lower()] = factory
    if check is not None:
        _CHECKS[scheme.lower()] = check


def _lazy(module: str, name: str) -> Callable[..., Any]:
    """``module.name``, imported on first call (live readers need the capture module first)."""

    def call(*args: Any, **kw: Any) -> Any:
        return getattr(importlib.import_module(f".{module}", __package__), name)(*args, **kw)

    return call


for _scheme in ("rtsp", "rtsps", "rtmp", "http", "https", "srt", "udp", "tcp"):
    register_scheme(_scheme, _lazy("netcapture", "NetworkReader"), _lazy("netcapture", "check_net_uri"))
register_scheme("v4l2", _lazy("devices", "open_v4l2"), _lazy("devices", "check_v4l2_uri"))
register_scheme("mic", _lazy("devices", "MicReader"), _lazy("devices", "check_mic_uri"))


def uri_scheme(uri: str) -> str:
    """The lower-case scheme of ``uri``, ``"file"`` for a plain path."""
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", uri)
    return m.group(1).lower() if m else "file"


def open_reader(
    uri: str,
    *,
    stream: str,
    video: bool = True,
    audio: bool = True,
    fps: float = 0.0,
    sample_rate: int = 16000,
    audio_chunk_s: float = 0.04,
    options: dict[str, Any] | None = None,
    live: Any = None,
    min_size: tuple[int, int] | None = None,
) -> MediaReader:
    """Open ``uri`` for ``stream``: a path or ``file://``, ``sample://<name>``, ``synthetic://...``,
    or a scheme added with :func:`register_scheme`. Raises SourceError when it cannot be opened.

    ``video``/``audio`` = False ignore that track; ``fps`` > 0 subsamples video; audio comes mono at
    ``sample_rate`` in chunks of about ``audio_chunk_s``; ``options`` go to FFmpeg (files, network);
    ``live`` (``netcapture.LiveSettings``) goes to the readers of live schemes; ``min_size`` (W, H)
    lets a file reader deliver frames scaled down to the smallest size covering it.
    """
    if sample_rate <= 0 or audio_chunk_s <= 0 or fps < 0:
        raise source_error(
            stream,
            uri,
            f"bad reader settings: fps={fps} sample_rate={sample_rate} audio_chunk_s={audio_chunk_s}",
        )
    kw: dict[str, Any] = {
        "video": video,
        "audio": audio,
        "fps": fps,
        "sample_rate": sample_rate,
        "audio_chunk_s": audio_chunk_s,
    }
    scheme = uri_scheme(uri)
    if scheme == "file":
        return FileReader(uri, stream=stream, options=options, min_size=min_size, **kw)
    if scheme == "sample":
        name = uri[len("sample://") :].strip("/")
        sample = SAMPLES.get(name)
        if sample is None:
            raise source_error(stream, uri, f"unknown sample {name!r}; available: {', '.join(SAMPLES)}")
        kind = "sync" if sample.scene is None else "scene"
        cfg = sample.scene or SceneConfig(duration=sample.duration)
        return _generated(uri, kind, cfg, cfg.duration, stream, **kw)
    if scheme == "synthetic":
        kind, cfg = parse_synthetic(uri, stream)
        return _generated(uri, kind, cfg, cfg.duration, stream, **kw)
    factory = _SCHEMES.get(scheme)
    if factory is None:
        known = ", ".join(sorted({"file", "sample", "synthetic", *_SCHEMES}))
        raise source_error(stream, uri, f"input scheme {scheme!r} is not supported here (supported: {known})")
    if live is not None:
        kw["live"] = live
    return factory(uri, stream=stream, options=options, **kw)


def check_uri(uri: str, base_dir: Path | None = None) -> str | None:
    """A problem with ``uri`` found without opening it (bad sample name, query key, missing file)."""
    scheme = uri_scheme(uri)
    try:
        if scheme == "sample":
            name = uri[len("sample://") :].strip("/")
            if name not in SAMPLES:
                return f"unknown sample {name!r}; available: {', '.join(SAMPLES)}"
        elif scheme == "synthetic":
            parse_synthetic(uri)
        elif scheme == "file":
            path = resolve_file(uri, base_dir)
            if not os.path.exists(file_path(path)):
                return f"file not found: {redact_uri(path)}"
        elif scheme in _CHECKS:
            return _CHECKS[scheme](uri)
    except SourceError as exc:
        return str(exc).split(": ", 2)[-1]
    return None


def resolve_file(uri: str, base_dir: Path | None) -> str:
    """A relative file path resolved against ``base_dir`` (the pipeline YAML's folder); others as is."""
    if base_dir is None or uri_scheme(uri) != "file":
        return uri
    path = file_path(uri)
    if os.path.isabs(path):
        return uri
    return str(Path(base_dir) / path)
