"""Drawing the results onto a frame (OpenCV): the localization heatmap, score bars, the violence alert
banner, the caption and the media time. Pure functions of a frame and what is known at its time."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

BANNER_FRACTION = 0.1  # the alert banner: the top tenth of the frame
SCORE_KINDS = ("highlight", "violence", "localization")
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_LABELS = {"highlight": "highlight", "violence": "violence", "localization": "sound"}


@dataclass
class Overlay:
    """What the results say about one frame's media time."""

    t: float | None  # media time; None when not known yet (a live input before its first result)
    scores: dict[str, float] = field(default_factory=dict)  # result kind -> score
    alert: bool = False
    caption: str | None = None
    heatmap: np.ndarray | None = None  # (h, w) float
    peak: tuple[float, float] | None = None  # normalised [x, y]


def draw(frame: np.ndarray, overlay: Overlay, kinds: frozenset[str], heatmap_alpha: float) -> np.ndarray:
    """``frame`` (BGR uint8, H x W x 3) with ``overlay`` burned in, as a new array."""
    out = frame.copy()
    if "localization" in kinds and overlay.heatmap is not None and heatmap_alpha > 0:
        blend_heatmap(out, overlay.heatmap, heatmap_alpha)
        if overlay.peak is not None:
            _marker(out, overlay.peak)
    if "violence" in kinds and overlay.alert:
        _banner(out, overlay.scores.get("violence"))
    _panel(out, overlay, kinds)
    return out


def blend_heatmap(image: np.ndarray, heatmap: np.ndarray, alpha: float) -> None:
    """Blends the heatmap (min-max normalised, JET colormap) onto ``image`` in place, weighted by the
    heat itself, so cold regions keep the picture and the hottest is ``alpha`` colormap."""
    h, w = image.shape[:2]
    heat = np.nan_to_num(np.asarray(heatmap, dtype=np.float32))
    lo, hi = float(heat.min()), float(heat.max())
    if hi - lo < 1e-6:
        return  # a flat map points nowhere
    scaled = np.clip(cv2.resize((heat - lo) / (hi - lo), (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
    colours = cv2.applyColorMap((scaled * 255.0).astype(np.uint8), cv2.COLORMAP_JET)
    weight = (scaled * alpha)[..., None]
    image[:] = (image * (1.0 - weight) + colours * weight).astype(np.uint8)


def _scale(image: np.ndarray) -> tuple[float, int]:
    w = image.shape[1]
    return max(0.35, w / 640 * 0.5), 2 if w >= 1280 else 1


def _marker(image: np.ndarray, peak: tuple[float, float]) -> None:
    h, w = image.shape[:2]
    x, y = int(round(peak[0] * (w - 1))), int(round(peak[1] * (h - 1)))
    r = max(4, w // 80)
    cv2.drawMarker(image, (x, y), (255, 255, 255), cv2.MARKER_CROSS, 2 * r, 1 + w // 1280, cv2.LINE_AA)


def _banner(image: np.ndarray, score: float | None) -> None:
    h, w = image.shape[:2]
    bottom = max(8, int(h * BANNER_FRACTION))
    cv2.rectangle(image, (0, 0), (w - 1, bottom - 1), (0, 0, 220), cv2.FILLED)
    scale, thick = _scale(image)
    text = "ALERT  violence" + (f" {score:.2f}" if score is not None else "")
    (tw, th), _ = cv2.getTextSize(text, _FONT, scale * 1.3, thick + 1)
    cv2.putText(image, text, ((w - tw) // 2, (bottom + th) // 2), _FONT, scale * 1.3, (255, 255, 255), thick + 1,
                cv2.LINE_AA)


def _panel(image: np.ndarray, overlay: Overlay, kinds: frozenset[str]) -> None:
    """The bottom panel: the media time and a bar per score on one line, the caption on the next."""
    h, w = image.shape[:2]
    scale, thick = _scale(image)
    (_, th), base = cv2.getTextSize("Ag", _FONT, scale, thick)
    line = th + base + 6
    caption = overlay.caption if "caption" in kinds else None
    rows = 2 if caption else 1
    top = h - rows * line - 4
    shade = image[top:].astype(np.float32) * 0.4  # a darkened band keeps the text readable on any picture
    image[top:] = shade.astype(np.uint8)
    y = top + th + 4
    x = 6
    stamp = f"t {overlay.t:7.2f} s" if overlay.t is not None else "t    -   "
    x = _text(image, stamp, x, y, scale, thick, (255, 255, 255)) + 14
    bar_w, bar_h = int(60 * scale / 0.5), th
    for kind in SCORE_KINDS:
        score = overlay.scores.get(kind)
        if kind not in kinds or score is None:
            continue
        if x + bar_w > w - 4:
            break
        x = _text(image, _LABELS[kind], x, y, scale, thick, (230, 230, 230)) + 4
        colour = (0, 0, 255) if kind == "violence" and overlay.alert else (0, 200, 255)
        cv2.rectangle(image, (x, y - bar_h), (x + bar_w, y), (160, 160, 160), 1)
        fill = int(round(bar_w * min(1.0, max(0.0, score))))
        if fill:
            cv2.rectangle(image, (x, y - bar_h), (x + fill, y), colour, cv2.FILLED)
        x = _text(image, f"{score:.2f}", x + bar_w + 4, y, scale, thick, (255, 255, 255)) + 14
    if caption:
        _text(image, _fit(caption, w - 12, scale, thick), 6, y + line, scale, thick, (255, 255, 200))


def _text(image: np.ndarray, text: str, x: int, y: int, scale: float, thick: int, colour: tuple[int, int, int]) -> int:
    """Draws ``text`` with its left baseline at (x, y); returns the x after it."""
    cv2.putText(image, text, (x, y), _FONT, scale, colour, thick, cv2.LINE_AA)
    return x + cv2.getTextSize(text, _FONT, scale, thick)[0][0]


def _fit(text: str, width: int, scale: float, thick: int) -> str:
    """``text`` in the characters the Hershey font draws, cut with '...' to fit ``width`` pixels."""
    text = "".join(c if 32 <= ord(c) < 127 else "?" for c in " ".join(text.split()))
    if cv2.getTextSize(text, _FONT, scale, thick)[0][0] <= width:
        return text
    while text and cv2.getTextSize(text + "...", _FONT, scale, thick)[0][0] > width:
        text = text[:-1]
    return text + "..."
