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

import logging
import math
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np

from avstream.engine.errors import SourceError
from avstream.engine.items import AudioChunk, StreamInfo, VideoFrame

log = logging.getLogger("avstream.capture")

MediaItem = VideoFrame | AudioChunk

# The URI schemes of live inputs, written here only (this module imports nothing of the engine's
# readers, so the config compiler and the source node can import it without a cycle).
NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "srt", "udp", "tcp")
RTSP_SCHEMES = ("rtsp", "rtsps")
DEVICE_SCHEMES = ("v4l2", "mic")
LIVE_SCHEMES = frozenset(NETWORK_SCHEMES + DEVICE_SCHEMES)
# query keys whose values are secrets (SRT's passphrase, tokens, signatures of signed URLs)
_SECRET_KEYS = re.compile(r"(?i)(pass|pwd|token|secret|key|auth|sig|credential)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")


def redact_uri(uri: str) -> str:
    """``uri`` with the password of ``user:password@`` and secret-looking query values masked.

    A password may hold ``@``, ``/``, ``:``, ``?``, ``&`` or ``#`` unescaped, and a query value may hold
    ``@``, so the URI is read every way it could be meant and whatever any reading takes for a secret is
    masked: from the first ``:`` of the user info to the *last* ``@``, and the values of secret keys in
    the query from the first ``?`` and in the one after the last ``@``. This can mask more than the
    secret (``host:port/path@x`` shows as ``host:***@x``), never less.
    """
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*://)(.*)$", uri, re.S)
    if not m:
        return uri
    scheme, rest = m.groups()
    masked = [False] * len(rest)

    def mask(begin: int, end: int) -> None:
        masked[begin:end] = [True] * (end - begin)

    head, at, _ = rest.rpartition("@")
    if at:
        user, colon, _ = head.partition(":")
        if colon and not re.search(r"[/?#]", user):
            mask(len(user) + 1, len(head))
    for query_at in {rest.find("?"), rest.find("?", len(head) + 1 if at else 0)} - {-1}:
        pos = query_at + 1
        end = rest.find("#", pos)
        for part in rest[pos : len(rest) if end < 0 else end].split("&"):
            key, eq, value = part.partition("=")
            if eq and value and _SECRET_KEYS.search(key):
                mask(pos + len(key) + 1, pos + len(part))
            pos += len(part) + 1
    out, i = [scheme], 0
    while i < len(rest):
        if masked[i]:
            while i < len(rest) and masked[i]:
                i += 1
            out.append("***")
        else:
            out.append(rest[i])
            i += 1
    return "".join(out)


def redact_text(text: str) -> str:
    """``text`` (a log line, FFmpeg's stderr, an error message) with every URL in it redacted."""
    return _URL_IN_TEXT.sub(lambda m: redact_uri(m.group(0)), text)


def _why(exc: BaseException) -> str:
    """FFmpeg's reason without the file name it appends (the caller names the redacted URI)."""
    return str(getattr(exc, "strerror", None) or exc)


def printable(text: str) -> str:
    """``text`` with control characters escaped (``\\n``), so that it stays on one line."""
    return _CONTROL.sub(lambda m: repr(m.group(0))[1:-1], text)


def source_error(stream: str, uri: str, reason: str) -> SourceError:
    """A one-line SourceError naming the stream and the redacted URI."""
    reason = " ".join(str(reason).split())  # one line, whatever FFmpeg said
    return SourceError(f"stream {stream!r}: {printable(redact_uri(uri))}: {reason}")


class PreviewWatch(Protocol):
    """What a reader asks the source's live preview (``capture.preview.PreviewTap``)."""

    def watching(self, stream: str) -> bool:
        """Whether a viewer watches ``stream`` now."""
        ...

    def due(self, stream: str) -> bool:
        """Whether a frame of ``stream`` offered now would be taken."""
        ...


class MediaReader:
    """An opened input. ``read()`` may be called once; ``close()`` is safe to call twice."""

    info: StreamInfo
    truth: dict[str, Any] | None = None  # ground truth of generated inputs (tests, benchmarks)
    counter: Callable[[str, float], None] | None = None  # also counts into this (a node's counters)
    preview: PreviewWatch | None = None  # the source's live preview (engine/capture/preview.py), set after opening

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

    The frame kept for slot k is the first at or after ``k / fps``, up to ``TIMESTAMP_SLACK_S`` of
    timestamp rounding (a millisecond time base). Models are trained on exactly that grid; a wider
    tolerance (half a source frame) kept the frame before a grid point, which the window node then
    skips, so windows got the same frame twice.
    """

    TIMESTAMP_SLACK_S = 0.002

    def __init__(self, fps: float, native: float = 0.0):
        self.fps = fps
        self.off = fps <= 0 or (native > 0 and fps >= native * 0.999)
        slack = self.TIMESTAMP_SLACK_S * fps
        self.tol = min(0.49 * fps / native, slack) if native > 0 and not self.off else slack
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


