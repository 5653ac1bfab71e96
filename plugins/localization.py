"""``avstream/localization@v1``: where in the frame the sound comes from (SPEC §4 ``localization``).

Runs a localization model (``builtin:localization`` or any model with a ``heatmap`` output of shape
(h, w) over the whole frame, and optionally a ``score`` output in [0, 1]) on each AV window and
publishes ``score``, ``peak`` [x, y] (normalised to [0, 1] in the frame) and the payload
``heatmap`` (float16 [h, w], cosine similarity clipped at 0). The map is smoothed over time per
stream (an exponential moving average), which steadies the peak of a slowly moving source; the math
is in :class:`MapSmoother` and :func:`heatmap_peak`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from avstream.engine.items import AVWindow, Item, Result
from avstream.engine.node import NodeContext, Params

from .encoders import ModelNode, ModelParams


def heatmap_peak(heatmap: np.ndarray) -> tuple[float, float]:
    """[x, y] in [0, 1] of the map's maximum, refined to sub-cell precision by the value-weighted
    centroid of its 3x3 neighbourhood (cell (i, j) covers [j, j+1) / w, [i, i+1) / h)."""
    h, w = heatmap.shape
    i, j = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    i0, i1, j0, j1 = max(i - 1, 0), min(i + 2, h), max(j - 1, 0), min(j + 2, w)
    patch = heatmap[i0:i1, j0:j1].astype(np.float64)
    weight = np.clip(patch - patch.min(), 0.0, None)
    if weight.sum() <= 0:
        return (j + 0.5) / w, (i + 0.5) / h
    rows, cols = np.mgrid[i0:i1, j0:j1]
    y = float((weight * (rows + 0.5)).sum() / weight.sum()) / h
    x = float((weight * (cols + 0.5)).sum() / weight.sum()) / w
    return min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0)


class MapSmoother:
    """Per-stream exponential moving average of maps: ``new * alpha + previous * (1 - alpha)``.

    Media time going back (a restarted stream) or a map of another shape starts over.
    """

    def __init__(self, alpha: float):
        self.alpha = alpha
        self.state: dict[str, tuple[float, np.ndarray]] = {}

    def update(self, stream: str, t: float, heatmap: np.ndarray) -> np.ndarray:
        heat = np.asarray(heatmap, dtype=np.float32)
        prev = self.state.get(stream)
        if prev is not None and t >= prev[0] - 1e-6 and prev[1].shape == heat.shape:
            heat = (self.alpha * heat + (1.0 - self.alpha) * prev[1]).astype(np.float32)
        self.state[stream] = (t, heat)
        return heat

    def reset(self, stream: str) -> None:
        self.state.pop(stream, None)


class LocalizationParams(ModelParams):
    model: str = Field(default="builtin:localization", description="localization model (path or builtin:NAME) "
                       "with a 'heatmap' output (h, w) over the whole frame")
    smoothing: float = Field(default=0.6, gt=0.0, le=1.0, description="weight of the newest map in the "
                             "per-stream moving average (1: no smoothing)")


class LocalizationNode(ModelNode[LocalizationParams]):
    """Sound-source localization per window: fields ``score``, ``peak`` [x, y]; payload ``heatmap``."""

    type_id: ClassVar[str] = "avstream/localization@v1"
    summary: ClassVar[str] = "where the sound comes from: score, peak [x,y] and a heatmap per window"
    Params: ClassVar[type[Params]] = LocalizationParams
    required_outputs: ClassVar[tuple[str, ...]] = ("heatmap",)

    def __init__(self, ctx: NodeContext, params: LocalizationParams):
        super().__init__(ctx, params)
        self.smoother = MapSmoother(params.smoothing)
        self.latest: dict[str, tuple[float, list[float]]] = {}

    def make_result(self, window: AVWindow, outputs: dict[str, np.ndarray]) -> Result:
        spec = self.contract.outputs
        heat = np.asarray(outputs[spec["heatmap"].name], dtype=np.float32)
        heat = heat.reshape(heat.shape[-2:])
        smooth = self.smoother.update(window.stream, window.t1, heat)
        x, y = heatmap_peak(smooth)
        if "score" in spec:
            score = float(np.asarray(outputs[spec["score"].name]).reshape(-1)[0])
        else:  # a model without a score: the peak similarity, clipped into [0, 1]
            score = float(heat.max())
        score = min(max(score, 0.0), 1.0)
        self.latest[window.stream] = (score, [round(x, 3), round(y, 3)])
        return Result(kind="localization", stream=window.stream, t0=window.t0, t1=window.t1,
                      capture_wall=window.wall, model=self.contract.ref,
                      fields={"score": score, "peak": [x, y]},
                      payloads={"heatmap": np.clip(smooth, 0.0, None).astype(np.float16)})

    def on_eos(self, stream: str) -> Iterable[Item]:
        self.smoother.reset(stream)
        return ()

    def status(self) -> dict[str, Any]:
        return {"score": {s: round(v[0], 3) for s, v in self.latest.items()},
                "peak": {s: v[1] for s, v in self.latest.items()}}


def localization_node_types() -> list[type[Any]]:
    """The node types of this module, for the builtin plugin entry point."""
    return [LocalizationNode]
