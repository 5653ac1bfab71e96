"""``avstream/av_window@v1``: aligns a stream's video frames and audio into fixed windows by media time.

Window length, hop, frame rate, frame size and sample rate come from the consuming model's metadata
(SPEC §5) unless set here. The compiler passes them to the source, which sends this node only the
frames on the model's frame grid, already at the model's size, and audio at the model's rate: the
node checks shapes and copies the small frames it keeps, handing shared-memory slots straight back.
A source that does not fit them (a plugin source, or a user's own ``fps``/``min_size``/``sample_rate``)
is fitted here, counted as ``resized`` / ``resampled``, with one warning per stream.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from pydantic import Field

from avstream.engine.capture.fit import GridGate
from avstream.engine.items import AudioChunk, AVWindow, Item, StreamInfo, VideoFrame
from avstream.engine.node import Node, NodeContext, Params, WindowRequirement


class WindowParams(Params):
    seconds: float | None = Field(None, gt=0, le=600, description="window length in seconds (default: the model's)")
    hop: float | None = Field(None, gt=0, le=600, description="seconds between window starts (default: the model's)")
    fps: float | None = Field(None, gt=0, le=240, description="frames per second inside a window when no model says")
    width: int | None = Field(None, gt=0, le=8192, description="frame width when no model says (default: native)")
    height: int | None = Field(None, gt=0, le=8192, description="frame height when no model says (default: native)")
    sample_rate: int | None = Field(None, gt=0, le=192000, description="audio rate when no model says (default: native)")


class _AudioTimeline:
    """A stream's recent audio as the chunks it came in, by sample index at the window rate.

    Kept as chunks rather than one array grown per chunk: that re-copied the whole buffer (up to a
    window and a hop of audio) for every 0.1 s chunk, a churn of large blocks that fragments the
    allocator of a process left running for months. Missing samples (a gap) read as silence.
    """

    def __init__(self) -> None:
        self.chunks: list[tuple[int, np.ndarray]] = []  # (index of the first sample, samples), in order

    @property
    def end(self) -> int:
        """One past the index of the latest sample held (0 when empty)."""
        if not self.chunks:
            return 0
        start, samples = self.chunks[-1]
        return start + len(samples)

    def add(self, start: int, samples: np.ndarray) -> None:
        """Samples from index ``start``; where they overlap audio already held, that is kept."""
        end = self.end
        if self.chunks and start < end:
            samples, start = samples[end - start:], end
        if len(samples):
            self.chunks.append((start, np.array(samples, np.float32)))  # a copy: the input may be a ring slot

    def read(self, first: int, count: int) -> np.ndarray:
        """Samples ``first`` .. ``first + count``; silence where none are held."""
        out = np.zeros(count, np.float32)
        for start, samples in self.chunks:
            lo, hi = max(first, start), min(first + count, start + len(samples))
            if hi > lo:
                out[lo - first:hi - first] = samples[lo - start:hi - start]
        return out

    def drop_before(self, index: int) -> None:
        """Forget the chunks that end at or before ``index``."""
        keep = 0
        while keep < len(self.chunks) and self.chunks[keep][0] + len(self.chunks[keep][1]) <= index:
            keep += 1
        del self.chunks[:keep]


@dataclass
class _StreamState:
    gate: GridGate  # the model's frame grid: the first frame at or after each point
    has_video: bool | None = None
    has_audio: bool | None = None
    next_t0: float | None = None  # set by the stream's first media item
    frames: list[tuple[float, float, np.ndarray]] = field(default_factory=list)  # (t, wall, small image)
    audio: _AudioTimeline = field(default_factory=_AudioTimeline)
    audio_wall: float = 0.0
    video_t: float = -math.inf  # latest media time seen per modality
    audio_t: float = -math.inf
    native_rate: int = 0
    gap: tuple[float, float] | None = None  # media time with no data (a live source was down)


class AVWindowNode(Node[WindowParams]):
    type_id = "avstream/av_window@v1"
    summary = "Aligns video frames and audio into windows of fixed length and hop, by media time."
    Params = WindowParams
    input_kinds = ("media",)
    output_kind = "av_window"

    def __init__(self, ctx: NodeContext, params: WindowParams):
        super().__init__(ctx, params)
        req = ctx.window or WindowRequirement(seconds=params.seconds or 2.0, hop=params.hop or 1.0)
        self.req = req
        self.fps = req.fps or (params.fps or 0.0)
        self.frames_per_window = req.frames or (int(round(self.fps * req.seconds)) if self.fps else 0)
        self.size = (req.width, req.height) if req.width else ((params.width, params.height) if params.width and params.height else None)
        self.rate = req.sample_rate or (params.sample_rate or 0)
        self.streams: dict[str, _StreamState] = {}
        self._warned: set[tuple[str, str]] = set()

    def _state(self, stream: str) -> _StreamState:
        st = self.streams.get(stream)
        if st is None:
            st = self.streams[stream] = _StreamState(GridGate(self.fps))
        return st

    def process(self, item: Item) -> Iterable[Item]:
        if isinstance(item, StreamInfo):
            st = self._state(item.stream)
            st.has_video, st.has_audio = item.has_video, item.has_audio
            return ()
        if isinstance(item, VideoFrame):
            self._add_frame(item)
            return self._ready(item.stream, final=False)
        if isinstance(item, AudioChunk):
            self._add_audio(item)
            return self._ready(item.stream, final=False)
        return ()

    def on_eos(self, stream: str) -> Iterable[Item]:
        out = list(self._ready(stream, final=True))
        self.streams.pop(stream, None)
        return out

    def _start_at(self, st: _StreamState, t: float) -> None:
        """The first window starts on the hop grid at or before the stream's first media item: 0 for a
        stream from its start; for a node restarted mid-stream, where its data begins, not back at 0
        (windows it cannot fill would otherwise be emitted again for media time already covered)."""
        if st.next_t0 is None:
            hop = self.req.hop
            st.next_t0 = max(0.0, round(math.floor(t / hop + 1e-6) * hop, 9))

    def _note_gap(self, st: _StreamState, t: float) -> None:
        """Remember a hole longer than a window, so windows holding no data are not emitted."""
        latest = max(st.video_t, st.audio_t)
        if latest > -math.inf and t - latest > self.req.seconds:
            st.gap = (latest, t)

    def _add_frame(self, frame: VideoFrame) -> None:
        st = self._state(frame.stream)
        self._start_at(st, frame.t)
        self._note_gap(st, frame.t)
        st.video_t = max(st.video_t, frame.t)
        if st.has_video is None:
            st.has_video = True
        if not st.gate.keep(frame.t):
            return  # between grid points of the model's frame rate: not needed
        image = frame.image
        if self.size is not None and (image.shape[1], image.shape[0]) != self.size:
            image = self._resize(frame.stream, image, self.size)
        else:
            image = image.copy()  # the shared-memory slot goes back to the writer
        st.frames.append((frame.t, frame.wall, image))

    def _resize(self, stream: str, image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """The fallback for a source that does not deliver the model's size."""
        import cv2  # here only: with a source that fits frames the node never loads OpenCV

        self.ctx.count("resized")
        self._warn_once(stream, "size", f"frames come at {image.shape[1]}x{image.shape[0]}, the model takes "
                                        f"{size[0]}x{size[1]}: resizing them here (counted as 'resized')")
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)

    def _warn_once(self, stream: str, what: str, message: str) -> None:
        if (stream, what) not in self._warned:
            self._warned.add((stream, what))
            self.ctx.logger.warning("%s: stream %r: %s", self.ctx.node_id, stream, message)

    def _add_audio(self, chunk: AudioChunk) -> None:
        st = self._state(chunk.stream)
        self._start_at(st, chunk.t)
        self._note_gap(st, chunk.t)
        if st.has_audio is None:
            st.has_audio = True
        rate = self.rate or chunk.sample_rate
        self.rate = rate
        samples = chunk.samples.astype(np.float32, copy=False)
        if chunk.sample_rate != rate:  # the fallback for a source that does not deliver the model's rate
            self.ctx.count("resampled")
            self._warn_once(chunk.stream, "rate", f"audio comes at {chunk.sample_rate} Hz, the model takes {rate} Hz: "
                                                  "resampling it here (counted as 'resampled')")
            n = int(round(len(samples) * rate / chunk.sample_rate))
            samples = np.interp(np.arange(n) * chunk.sample_rate / rate, np.arange(len(samples)), samples).astype(np.float32)
        st.audio.add(int(round(chunk.t * rate)), samples)
        st.audio_t = max(st.audio_t, chunk.t_end)
        st.audio_wall = chunk.wall

    def _ready(self, stream: str, final: bool) -> Iterable[Item]:
        st = self._state(stream)
        out: list[Item] = []
        while st.next_t0 is not None:
            t0 = st.next_t0
            t1 = t0 + self.req.seconds
            need = []
            if st.has_video:
                need.append(st.video_t + (1.0 / self.fps if self.fps else 0.0) >= t1 - 1e-6)
            if st.has_audio:
                need.append(st.audio_t >= t1 - 1e-6)
            if not need:
                break
            if not all(need):
                latest = max(st.video_t, st.audio_t)
                if not (final and t0 < latest):  # at the end, a partial last window is padded
                    break
            if st.gap is not None and t0 >= st.gap[0] and t1 <= st.gap[1]:
                self.ctx.count("gap_windows_skipped")
            else:
                out.append(self._window(stream, st, t0, t1))
            st.next_t0 = round(t0 + self.req.hop, 9)
            self._trim(st)
        return out

    def _window(self, stream: str, st: _StreamState, t0: float, t1: float) -> AVWindow:
        walls = [0.0]
        frames = None
        if st.has_video and st.frames:
            inside = [f for f in st.frames if t0 - 1e-6 <= f[0] < t1 - 1e-6] or [min(st.frames, key=lambda f: abs(f[0] - t0))]
            count = self.frames_per_window or len(inside)
            picks = []
            for k in range(count):
                want = t0 + k / self.fps if self.fps else inside[min(k, len(inside) - 1)][0]
                # the first kept frame at or after the grid point (the one the grid kept for it)
                later = [f for f in inside if f[0] >= want - 1e-6]
                picks.append(later[0] if later else inside[-1])
            frames = np.stack([p[2] for p in picks])
            walls.append(max(p[1] for p in picks))
        audio = None
        if st.has_audio and self.rate:
            n = self.req.audio_samples or int(round(self.req.seconds * self.rate))
            audio = st.audio.read(int(round(t0 * self.rate)), n)
            walls.append(st.audio_wall)
        self.ctx.count("windows")
        return AVWindow(stream, t0, t1, max(walls), frames, audio, self.fps, self.rate)

    def _trim(self, st: _StreamState) -> None:
        t0 = st.next_t0 or 0.0
        keep_from = 0
        for i, f in enumerate(st.frames):
            if f[0] < t0 - 1e-6:
                keep_from = i  # keep the last frame before t0 to fill a window start
        st.frames = st.frames[keep_from:]
        if self.rate:
            st.audio.drop_before(int(round(t0 * self.rate)))
