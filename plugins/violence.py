"""``avstream/violence@v1``: violence score and alert per window, with start/end events (SPEC §4).

The model (``builtin:violence``, MACIL-SD style) scores each 0.5 s snippet of a window from that
snippet and earlier ones only (causal attention). The node scores each snippet once: a window's
``score`` is the highest score among the snippets no earlier window of the stream contained (all of
them in the first window, the newest one afterwards at the model's hop), so a clip shorter than two
windows is judged on all its snippets. ``audio_score``/``visual_score`` are the modality heads of that
same snippet.

``alert`` has hysteresis, per stream: it turns on in the first window whose score reaches
``on_threshold`` (``violence_start`` event) and off once the score has stayed below ``off_threshold``
for ``hold_s`` seconds of media time (``violence_end`` event, also sent when the stream ends during an
alert). Each event is emitted once per episode.

The thresholds default to the model's calibrated operating point (metadata ``operating_points``,
chosen by grouped cross-validation; ``operating_point: accuracy`` or ``low_false_alarm``); a model
without them gets 0.5 / 0.35. An explicit ``on_threshold`` without ``off_threshold`` keeps the
point's off/on ratio.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from avstream.engine.errors import ModelError
from avstream.engine.items import AVWindow, Event, Item, Result
from avstream.engine.node import CheckContext, NodeContext, Params

from .encoders import ModelNode, ModelParams


# --------------------------------------------------------------------------------------------------
# pure helpers
def new_snippet_mask(t0: float, t1: float, n: int, prev_t1: float | None) -> np.ndarray:
    """(n,) True for the snippets of window [t0, t1) that start at or after ``prev_t1`` (all if None)."""
    starts = t0 + np.arange(n) * (t1 - t0) / n
    if prev_t1 is None:
        return np.ones(n, bool)
    mask = np.asarray(starts >= prev_t1 - 1e-6)
    if not mask.any():
        mask[-1] = True  # a window that adds no new media (hop shorter than a snippet): its newest snippet
    return mask


def snippet_window_scores(scores: np.ndarray, audio: np.ndarray, visual: np.ndarray, t0: float, t1: float,
                          prev_t1: float | None) -> tuple[float, float, float]:
    """(score, audio_score, visual_score) of a window: those of its best new snippet."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    mask = new_snippet_mask(t0, t1, len(s), prev_t1)
    idx = np.flatnonzero(mask)
    best = int(idx[np.argmax(s[idx])])
    return float(s[best]), float(np.asarray(audio).reshape(-1)[best]), float(np.asarray(visual).reshape(-1)[best])


def fuse_scores(fusion: str, score: float, audio: float, visual: float) -> float:
    """The window's score under the node's ``fusion`` param ("model": the model's own ``score``)."""
    if fusion == "max":
        return max(audio, visual)
    if fusion == "mean":
        return 0.5 * (audio + visual)
    return {"visual": visual, "audio": audio}.get(fusion, score)


@dataclass
class Hysteresis:
    """Alert state of one stream. ``update`` returns the alert and the event it causes, if any."""

    on: float
    off: float
    hold_s: float
    alert: bool = False
    start_t: float = 0.0  # media time the current episode started
    peak: float = 0.0
    under_since: float | None = None  # media time since which the score has stayed under ``off``

    def update(self, new_t0: float, t1: float, score: float) -> tuple[bool, Event | None]:
        """One window: ``[new_t0, t1)`` is the media time it added to the stream, ``score`` its score."""
        if not self.alert:
            if score >= self.on:
                self.alert, self.start_t, self.peak, self.under_since = True, new_t0, score, None
                return True, Event("violence_start", detail={"score": round(score, 4), "on_threshold": self.on},
                                   t0=new_t0, t1=t1)
            return False, None
        self.peak = max(self.peak, score)
        if score >= self.off:
            self.under_since = None
            return True, None
        if self.under_since is None:
            self.under_since = new_t0
        if t1 - self.under_since >= self.hold_s - 1e-6:
            return False, self.end(self.under_since, "score under off_threshold for hold_s")
        return True, None

    def end(self, t_end: float, reason: str) -> Event:
        """Close the current episode: its ``violence_end`` event (start..end in media time)."""
        self.alert, self.under_since = False, None
        return Event("violence_end", detail={"peak_score": round(self.peak, 4), "reason": reason,
                                             "duration_s": round(max(0.0, t_end - self.start_t), 3)},
                     t0=self.start_t, t1=t_end)


DEFAULT_ON, DEFAULT_OFF = 0.5, 0.35  # a model without calibrated operating points


def resolve_thresholds(params: ViolenceParams, metadata: dict[str, Any]) -> tuple[float, float]:
    """(on, off) thresholds: the params where set, else the model's operating point, else 0.5 / 0.35."""
    points = metadata.get("operating_points")
    point = points.get(params.operating_point) if isinstance(points, dict) else None
    on_default, off_default = DEFAULT_ON, DEFAULT_OFF
    if isinstance(point, dict) and isinstance(point.get("on_threshold"), int | float):
        on_default = float(point["on_threshold"])
        off_default = float(point.get("off_threshold", on_default * DEFAULT_OFF / DEFAULT_ON))
    on = params.on_threshold if params.on_threshold is not None else on_default
    if params.off_threshold is not None:
        off = params.off_threshold
    else:
        off = off_default if params.on_threshold is None else on * off_default / max(on_default, 1e-9)
    if off > on:
        raise ModelError(f"off_threshold {off:g} is above on_threshold {on:g} (the model's {params.operating_point} "
                         "operating point gives the one not set): set both")
    return on, off


# --------------------------------------------------------------------------------------------------
# the node
class ViolenceParams(ModelParams):
    model: str = Field(default="builtin:violence", description="violence model (path or builtin:NAME) with "
                       "'score', 'audio_score' and 'visual_score' outputs (per-snippet outputs optional)")
    operating_point: Literal["accuracy", "low_false_alarm"] = Field(
        default="accuracy", description="the model's calibrated thresholds to default to: the best alert "
        "accuracy, or the lowest threshold keeping false alarms to the model card's stated rate")
    on_threshold: float | None = Field(default=None, ge=0.0, le=1.0, description="the alert turns on in the first "
                                       "window whose score reaches this [default: the operating point's]")
    off_threshold: float | None = Field(default=None, ge=0.0, le=1.0, description="the alert turns off once the "
                                        "score stays below this for hold_s (must not exceed on_threshold) "
                                        "[default: the operating point's]")
    hold_s: float = Field(default=2.0, ge=0.0, le=3600.0, description="seconds of media time the score must "
                          "stay below off_threshold before the alert turns off")
    fusion: Literal["model", "max", "mean", "visual", "audio"] = Field(
        default="model", description="the window's score: the model's own (model), or the node's fusion of its "
        "audio_score and visual_score: the larger (max), their mean, or one modality alone")


@dataclass
class _Stream:
    alarm: Hysteresis
    prev_t1: float | None = None
    score: float = 0.0


class ViolenceNode(ModelNode[ViolenceParams]):
    """Violence score per window with a hysteresis alert and violence_start/violence_end events."""

    type_id: ClassVar[str] = "avstream/violence@v1"
    summary: ClassVar[str] = "violence score, audio/visual scores and a hysteresis alert per window, with events"
    Params: ClassVar[type[Params]] = ViolenceParams
    required_outputs: ClassVar[tuple[str, ...]] = ("score", "audio_score", "visual_score")

    def __init__(self, ctx: NodeContext, params: ViolenceParams):
        super().__init__(ctx, params)
        self.streams: dict[str, _Stream] = {}
        self.pending: list[Event] = []
        self.on_threshold, self.off_threshold = DEFAULT_ON, DEFAULT_OFF  # the model's, once loaded

    @classmethod
    def check(cls, params: Any, ctx: CheckContext) -> list[tuple[str, str]]:
        p = cls.parse_params(params)
        problems = super().check(p, ctx)
        if p.off_threshold is not None and p.on_threshold is not None and p.off_threshold > p.on_threshold:
            problems.append(("off_threshold", f"{p.off_threshold:g} is above on_threshold {p.on_threshold:g}"))
        return problems

    def on_start(self) -> None:
        super().on_start()
        self.on_threshold, self.off_threshold = resolve_thresholds(self.params, self.contract.raw)
        self.ctx.logger.info("%s: alert on %.3f / off %.3f (%s), hold %.1f s", self.ctx.node_id, self.on_threshold,
                             self.off_threshold, "set" if self.params.on_threshold is not None
                             else f"operating point {self.params.operating_point}", self.params.hold_s)

    def _new_state(self, stream: str) -> _Stream:
        st = self.streams[stream] = _Stream(Hysteresis(self.on_threshold, self.off_threshold, self.params.hold_s))
        return st

    def make_result(self, window: AVWindow, outputs: dict[str, np.ndarray]) -> Result:
        c = self.contract
        st = self.streams.get(window.stream) or self._new_state(window.stream)
        if st.prev_t1 is not None and window.t1 <= st.prev_t1 - 1e-6:
            # the stream restarted (media time went back): close an open episode, start over
            if st.alarm.alert:
                self.pending.append(self._stamp(st.alarm.end(st.prev_t1, "stream restarted"), window.stream))
            st = self._new_state(window.stream)

        def out(key: str) -> np.ndarray:
            return np.asarray(outputs[c.outputs[key].name], dtype=np.float64).reshape(-1)

        if all(k in c.outputs for k in ("snippet_scores", "snippet_audio_scores", "snippet_visual_scores")):
            score, audio, visual = snippet_window_scores(out("snippet_scores"), out("snippet_audio_scores"),
                                                         out("snippet_visual_scores"), window.t0, window.t1,
                                                         st.prev_t1)
        else:  # a model without per-snippet outputs: its window scalars
            score, audio, visual = float(out("score")[0]), float(out("audio_score")[0]), float(out("visual_score")[0])
        score = fuse_scores(self.params.fusion, score, audio, visual)
        new_t0 = window.t0 if st.prev_t1 is None else max(window.t0, st.prev_t1)
        alert, event = st.alarm.update(new_t0, window.t1, score)
        if event is not None:
            self.pending.append(self._stamp(event, window.stream))
        st.prev_t1, st.score = window.t1, score
        return Result(kind="violence", stream=window.stream, t0=window.t0, t1=window.t1, capture_wall=window.wall,
                      model=c.ref, fields={"score": score, "alert": alert, "audio_score": audio,
                                           "visual_score": visual})

    @staticmethod
    def _stamp(event: Event, stream: str) -> Event:
        event.stream = stream
        return event

    def process_batch(self, windows: Sequence[Any]) -> list[Any]:
        """Results of windows of any streams (one model call), each followed by the events it caused."""
        windows = [w for w in windows if isinstance(w, AVWindow)]
        if not windows:
            return []
        self._arrived(windows)
        items: list[Any] = []
        for window, outputs in zip(windows, self.infer(windows), strict=True):
            items.append(self.make_result(window, outputs))
            items += self.pending
            self.pending = []
        return items

    def on_eos(self, stream: str) -> Iterable[Item]:
        st = self.streams.pop(stream, None)
        if st is not None and st.alarm.alert and st.prev_t1 is not None:
            return [self._stamp(st.alarm.end(st.prev_t1, "end of stream"), stream)]
        return ()

    def status(self) -> dict[str, Any]:
        return {"score": {s: round(v.score, 3) for s, v in self.streams.items()},
                "alert": {s: v.alarm.alert for s, v in self.streams.items()}}


def violence_node_types() -> list[type[Any]]:
    return [ViolenceNode]
