"""The items that travel between nodes.

Every sample carries a media timestamp ``t`` (seconds, per-stream clock) and the wall time at which
it was captured (or decoded, for a file). Alignment uses media time, latency uses wall time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# The kinds of data an edge carries; a node declares which it takes and which it makes.
MEDIA = "media"  # VideoFrame / AudioChunk / StreamInfo from a source
AV_WINDOW = "av_window"  # AVWindow from a window node
RESULT = "result"  # Result / Event for the outputs
KINDS = (MEDIA, AV_WINDOW, RESULT)


@dataclass
class StreamInfo:
    """First item of every source: what the stream carries."""

    stream: str
    has_video: bool
    has_audio: bool
    fps: float = 0.0
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    uri: str = ""


@dataclass(frozen=True)
class MediaFit:
    """What one consumer of a source takes: frames of ``width`` x ``height`` (0: the source's own
    size) on a grid of ``fps`` frames per second (0: every frame), audio at ``sample_rate`` Hz (0: the
    source's rate). The compiler puts one on every edge from a source to a window node."""

    width: int = 0
    height: int = 0
    fps: float = 0.0
    sample_rate: int = 0

    @property
    def size(self) -> tuple[int, int] | None:
        """The exact frame size asked for; None: as the source delivers it."""
        return (self.width, self.height) if self.width > 0 and self.height > 0 else None

    @property
    def frame_key(self) -> str:
        """Names the frames made for this fit in ``VideoFrame.fitted`` (consumers alike share them)."""
        size = self.size
        return f"{size[0]}x{size[1]}@{self.fps:g}" if size else f"native@{self.fps:g}"


NATIVE_FIT = MediaFit()  # what a consumer without a fit takes: every frame, as the source delivers it


@dataclass
class VideoFrame:
    """One BGR frame (H, W, 3) uint8. ``image`` may be a view into shared memory.

    ``fitted`` (producer side only, never on the wire): the frame as made for each consumer fit that
    takes it at this time, by ``MediaFit.frame_key`` (fits of one size share one array); the output
    port sends each edge the image of its fit, and nothing to an edge whose fit is absent. ``image``
    is then one of them. None: every consumer takes ``image``.
    """

    stream: str
    t: float
    wall: float
    image: np.ndarray
    release_hook: Callable[[], None] | None = field(default=None, repr=False)
    fitted: dict[str, np.ndarray] | None = field(default=None, repr=False)
    # producer side only: the decoded frame before fitting (an ``av.VideoFrame`` or a BGR array),
    # attached only while the stream's preview is watched (engine/capture/preview.py)
    native: Any = field(default=None, repr=False)

    def release(self) -> None:
        """Hand the shared-memory slot back to the writer; the image must not be used after."""
        hook, self.release_hook = self.release_hook, None
        if hook is not None:
            hook()


@dataclass
class AudioChunk:
    """Mono float32 samples in [-1, 1] starting at media time ``t``."""

    stream: str
    t: float
    wall: float
    samples: np.ndarray
    sample_rate: int

    @property
    def t_end(self) -> float:
        return self.t + len(self.samples) / self.sample_rate


@dataclass
class AVWindow:
    """Aligned audio and video of one stream over media time [t0, t1)."""

    stream: str
    t0: float
    t1: float
    wall: float  # capture wall time of the window's last sample
    frames: np.ndarray | None  # (T, H, W, 3) uint8 BGR, or None when the stream has no video
    audio: np.ndarray | None  # (N,) float32, or None when the stream has no audio
    fps: float = 0.0
    sample_rate: int = 0


@dataclass
class Result:
    """One result message (SPEC §4) before the publisher stamps seq and wall."""

    kind: str
    stream: str
    t0: float
    t1: float
    capture_wall: float
    model: str
    fields: dict[str, Any] = field(default_factory=dict)
    payloads: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Event:
    """A stream or graph event (``stream_down``, ``violence_start``...)."""

    name: str
    stream: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    t0: float | None = None
    t1: float | None = None


@dataclass
class PreviewFrame:
    """A JPEG of one source frame for a live viewer: media time ``t``, capture wall time ``wall``.
    Sent by the source's worker to the supervisor only while someone watches the stream; it never
    reaches the outputs (PUB, JSONL, sinks)."""

    stream: str
    t: float
    wall: float
    width: int
    height: int
    jpeg: bytes = field(repr=False)


@dataclass
class EndOfStream:
    """No more items will come from this stream on this edge."""

    stream: str


Item = StreamInfo | VideoFrame | AudioChunk | AVWindow | Result | Event | EndOfStream | PreviewFrame
