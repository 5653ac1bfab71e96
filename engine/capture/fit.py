"""Frames made once per size the consumers need, on each consumer's own frame grid.

The pipeline compiler gives every edge from a source to a window node a
:class:`~avstream.engine.items.MediaFit` (the model's frame size, frame rate and sample rate). A
reader with a :class:`FrameFitter` keeps a decoded frame only when some fit's :class:`GridGate`
takes it, converts it once per distinct size inside the swscale colour conversion (one persistent
scaler per size: a single one would be set up again at every change of size) and hands the images
over in ``VideoFrame.fitted``, keyed by ``MediaFit.frame_key``. The output port sends each edge the
image of its fit, and nothing when its fit did not take the frame.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from avstream.engine.capture.base import FpsGate
from avstream.engine.items import NATIVE_FIT, MediaFit, VideoFrame

FIT_INTERPOLATION = "AREA"  # downscaling to a model's size: area averaging keeps detail
_EPS = 1e-6


class FittedGate:
    """The source's own rate gate, then the consumers' gates (as MediaDecoder applies them): keeps
    a frame that the source keeps and at least one consumer takes."""

    def __init__(self, source_gate: FpsGate, gates: list[GridGate], offset: float):
        self.source_gate, self.gates, self.offset = source_gate, gates, offset

    def keep(self, t: float) -> bool:
        if not self.source_gate.keep(t):
            return False
        taken = [g.keep(t + self.offset) for g in self.gates]  # every gate moves on, as in wanted()
        return any(taken)


class GridGate:
    """Keeps the first frame at or after each point ``k / fps`` of media time (fps 0: every frame).

    The window node samples with the same rule, so a window fed through a gate of its own rate keeps
    every frame it is sent and picks the frames it would pick from the full stream.
    """

    def __init__(self, fps: float):
        self.fps = fps
        self.next = 0.0

    def keep(self, t: float) -> bool:
        if self.fps <= 0:
            return True
        if t + _EPS < self.next:
            return False
        self.next = (math.floor(t * self.fps + _EPS) + 1) / self.fps
        return True

    def next_time(self) -> float:
        """The earliest media time of a frame this gate takes next (-inf: every frame)."""
        return self.next - _EPS if self.fps > 0 else -math.inf


def frame_fits(edge_fits: Iterable[MediaFit | None]) -> list[MediaFit]:
    """The distinct frame fits of a source's edges (an edge without one takes every frame as made);
    empty when no edge has a fit, so the source delivers plain frames as before."""
    fits = list(edge_fits)
    if not any(f is not None for f in fits):
        return []
    return list(dict.fromkeys(MediaFit(f.width, f.height, f.fps) if f else NATIVE_FIT for f in fits))


class FrameFitter:
    """The per-fit gates and per-size scalers of one source (kept across reconnects and loop passes).

    ``offset`` is added to the reader's media times before gating: a looping source's later passes
    start at the end of the earlier ones.
    """

    def __init__(self, fits: Sequence[MediaFit]):
        self.fits = list(dict.fromkeys(fits))
        self.gates = [GridGate(f.fps) for f in self.fits]
        self.offset = 0.0
        self.made: dict[str, int] = {}  # images made per size ("WxH"), for the source's status
        self._scalers: dict[tuple[int, int, str | None], Any] = {}

    def wanted(self, t: float) -> list[MediaFit]:
        """The fits that take a frame at media time ``t`` (each gate moves on when it takes it)."""
        t += self.offset
        return [fit for fit, gate in zip(self.fits, self.gates, strict=True) if gate.keep(t)]

    def simulation(self, source_gate: FpsGate) -> FittedGate:
        """A copy of the source's gate followed by these gates, from their current state: what a
        decode planner runs ahead of the decoder to know which frames will be taken."""
        return FittedGate(source_gate, [copy.copy(g) for g in self.gates], self.offset)

    def subsamples(self, native: float) -> bool:
        """Whether every consumer takes fewer frames per second than the stream has."""
        return native > 0 and all(0 < g.fps < native for g in self.gates)

    def next_time(self) -> float:
        """The earliest (reader) media time at which some consumer takes a frame next."""
        return min(g.next_time() for g in self.gates) - self.offset

    def convert(self, frame: Any, wanted: Sequence[MediaFit], native_size: Callable[[], tuple[int, int]],
                native_interpolation: str | None = FIT_INTERPOLATION) -> dict[str, np.ndarray]:
        """A decoded ``av.VideoFrame`` as BGR images for the ``wanted`` fits: each distinct size made
        once, scaled inside the colour conversion. ``native_size()`` is the size of fits without one."""
        images: dict[str, np.ndarray] = {}
        by_size: dict[tuple[int, int], np.ndarray] = {}
        for fit in wanted:
            size = fit.size or native_size()
            image = by_size.get(size)
            if image is None:
                interpolation = FIT_INTERPOLATION if fit.size else native_interpolation
                image = by_size[size] = self._scale(frame, size, interpolation)
            images[fit.frame_key] = image
        return images

    def fit_array(self, image: np.ndarray, wanted: Sequence[MediaFit]) -> dict[str, np.ndarray]:
        """The same for a BGR array (generated inputs, OpenCV cameras): the array itself where no
        size is asked for, else swscale from it."""
        native = (image.shape[1], image.shape[0])
        frame: Any = None
        images: dict[str, np.ndarray] = {}
        by_size: dict[tuple[int, int], np.ndarray] = {native: image}
        for fit in wanted:
            size = fit.size or native
            out = by_size.get(size)
            if out is None:
                if frame is None:
                    import av

                    frame = av.VideoFrame.from_ndarray(image, format="bgr24")
                out = by_size[size] = self._scale(frame, size, FIT_INTERPOLATION)
            images[fit.frame_key] = out
        return images

    def frame(self, stream: str, t: float, wall: float, images: dict[str, np.ndarray]) -> VideoFrame:
        """The item carrying ``images`` (its ``image`` is the first of them)."""
        return VideoFrame(stream, t, wall, next(iter(images.values())), fitted=images)

    def _scale(self, frame: Any, size: tuple[int, int], interpolation: str | None) -> np.ndarray:
        key = (*size, interpolation)
        scaler = self._scalers.get(key)
        if scaler is None:
            import av

            scaler = self._scalers[key] = av.video.reformatter.VideoReformatter()
        image = scaler.reformat(frame, format="bgr24", width=size[0], height=size[1],
                                interpolation=interpolation, threads=1).to_ndarray()
        name = f"{size[0]}x{size[1]}"
        self.made[name] = self.made.get(name, 0) + 1
        return np.ascontiguousarray(image)
