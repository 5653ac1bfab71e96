"""Procedural audio-visual scenes with known ground truth (``synthetic://scene`` and ``sample://``).

A scene is a textured background with 1-3 coloured shapes moving smoothly. Exactly one of them makes
a class-specific sound and pulses (brightness and size) with its sound envelope; the others are
silent distractors. Some *highlight* segments raise the sounding object's activity, loudness and
speed; optional *violence* segments add fast erratic motion of every object and loud bangs.

Usage::

    cfg = SceneConfig(seed=3, duration=10)
    truth = generate_truth(cfg)                        # JSON-serialisable ground truth
    frame = render_video_frame(cfg, truth, 0)          # (H, W, 3) uint8 BGR
    audio = render_audio(cfg, truth, 0, 16000)         # first second, float32 mono

Rendering is chunk-independent (any frame index, any sample range) and deterministic per seed, so
a reader streams a long scene without holding it in memory. See ``docs/synthetic.md``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from avstream.engine.synthetic.audio import SOUND_CLASSES, Sound, design_sound, render

GENERATOR_VERSION = "1.0"

# class -> (shape, BGR colour, colour name, caption verb, highlight verb). Saturated colours on a
# low-saturation background make each object findable by colour alone.
LOOKS: dict[str, tuple[str, tuple[int, int, int], str, str, str]] = {
    "bell": ("circle", (0, 215, 255), "yellow", "a yellow bell rings", "rings rapidly and loudly"),
    "drum": ("square", (40, 40, 225), "red", "a red drum beats", "beats fast and loud"),
    "engine": ("wide_rect", (225, 110, 30), "blue", "a blue engine hums", "roars at full power"),
    "siren": ("triangle", (210, 50, 210), "magenta", "a magenta siren wails", "wails loudly"),
    "voice": ("ellipse", (60, 205, 60), "green", "a green figure speaks", "shouts excitedly"),
}
_BG_VARIANTS = 8  # precomputed camera-noise variants of the background
_HIGHLIGHT_RAMP = 0.3  # s, fade in/out of a highlight
_VIOLENCE_RAMP = 0.1


@dataclass(frozen=True)
class SceneConfig:
    """What a scene looks like; the same config always gives the same scene."""

    seed: int = 0
    """Random seed: every choice of the scene (objects, classes, sounds, events) derives from it."""
    duration: float = 10.0
    """Length in seconds."""
    fps: float = 25.0
    """Video frame rate; frame i is at t = i / fps."""
    width: int = 640
    """Frame width in pixels."""
    height: int = 360
    """Frame height in pixels."""
    sample_rate: int = 16000
    """Audio sample rate in Hz; sample n is at t = n / sample_rate."""
    objects: int = 0
    """Number of objects (1-5); 0 lets the seed pick 1-3."""
    violence: bool | None = None
    """Whether the scene has a violence segment; None lets the seed decide (scenes >= 8 s only)."""
    sound: str = ""
    """Class of the sounding object (one of ``SOUND_CLASSES``); empty lets the seed pick."""

    def __post_init__(self) -> None:
        if not 0 < self.duration <= 24 * 3600:
            raise ValueError(f"duration must be in (0, 86400] s, got {self.duration}")
        if not 0 < self.fps <= 240:
            raise ValueError(f"fps must be in (0, 240], got {self.fps}")
        if not (32 <= self.width <= 7680 and 32 <= self.height <= 4320):
            raise ValueError(
                f"frame size must be between 32x32 and 7680x4320, got {self.width}x{self.height}"
            )
        if not 1000 <= self.sample_rate <= 192000:
            raise ValueError(f"sample_rate must be in [1000, 192000] Hz, got {self.sample_rate}")
        if not 0 <= self.objects <= len(SOUND_CLASSES):
            raise ValueError(f"objects must be in [0, {len(SOUND_CLASSES)}], got {self.objects}")
        if self.sound and self.sound not in SOUND_CLASSES:
            raise ValueError(f"sound must be one of {', '.join(SOUND_CLASSES)}, got {self.sound!r}")

    @property
    def num_frames(self) -> int:
        return max(1, round(self.duration * self.fps))

    @property
    def num_samples(self) -> int:
        return max(1, round(self.duration * self.sample_rate))


# --------------------------------------------------------------------------------------------------
# ground truth


def _ramp_factor(intervals: list[tuple[float, float]], t: np.ndarray, ramp: float) -> np.ndarray:
    """1 inside the intervals, 0 outside, with linear ramps of ``ramp`` s inside the edges."""
    out = np.zeros(len(t))
    for t0, t1 in intervals:
        r = min(ramp, (t1 - t0) / 2)
        out = np.maximum(out, np.clip(np.minimum(t - t0, t1 - t) / r, 0.0, 1.0))
    return out


def _place_events(rng: np.random.Generator, cfg: SceneConfig) -> list[dict[str, Any]]:
    """Non-overlapping highlight and violence intervals, at least 1 s apart and from the ends."""
    d = cfg.duration
    n_high = 0 if d < 4 else max(1, min(3, int(d // 8)))
    want_violence = cfg.violence if cfg.violence is not None else (d >= 8 and bool(rng.random() < 0.5))
    kinds = ["highlight"] * n_high + (["violence"] if want_violence and d >= 3 else [])
    rng.shuffle(kinds)
    events: list[dict[str, Any]] = []
    slot = d / max(1, len(kinds))  # one event per slot keeps them apart without rejection loops
    for i, kind in enumerate(kinds):
        lo, hi = i * slot + 0.5, (i + 1) * slot - 0.5
        length = min(float(rng.uniform(2.0, 4.0) if kind == "highlight" else rng.uniform(1.5, 3.0)), hi - lo)
        if length < 0.5:
            continue
        t0 = float(rng.uniform(lo, hi - length))
        events.append({"kind": kind, "t0": round(t0, 3), "t1": round(t0 + length, 3)})
    return events


def _captions(
    objects: list[dict[str, Any]], sounding: int, events: list[dict[str, Any]], d: float
) -> list[dict[str, Any]]:
    cls = objects[sounding]["class"]
    shape, _, colour, calm, excited = LOOKS[cls]
    others = [o for o in objects if o["id"] != sounding]
    tail = ""
    if others:
        names = [
            f"a {LOOKS[o['class']][2]} {LOOKS[o['class']][0].replace('wide_rect', 'rectangle')}"
            for o in others
        ]
        tail = " while " + " and ".join(names) + (" drift" if len(names) > 1 else " drifts") + " silently"
    texts = {
        "normal": calm + tail,
        "highlight": f"{calm.rsplit(' ', 1)[0]} {excited} and moves quickly" + tail,
        "violence": f"objects shake violently amid loud bangs while {calm}",
    }
    segments: list[dict[str, Any]] = []
    t = 0.0
    for ev in sorted(events, key=lambda e: e["t0"]):
        if ev["t0"] > t:
            segments.append({"kind": "normal", "t0": round(t, 3), "t1": ev["t0"], "text": texts["normal"]})
        segments.append({"kind": ev["kind"], "t0": ev["t0"], "t1": ev["t1"], "text": texts[ev["kind"]]})
        t = ev["t1"]
    if t < d:
        segments.append({"kind": "normal", "t0": round(t, 3), "t1": round(d, 3), "text": texts["normal"]})
    return segments


def generate_truth(cfg: SceneConfig) -> dict[str, Any]:
    """The scene's ground truth (and everything the renderers need), JSON-serialisable.

    Keys: ``generator_version``, ``config``, ``num_frames``, ``num_samples``, ``objects`` (id,
    class, shape, colour, sounding), ``sounding_object`` (id), ``sound_class``, ``events``
    (``{"kind": "highlight"|"violence", "t0", "t1"}``), ``captions`` (``{"kind", "t0", "t1",
    "text"}`` covering the whole scene), ``frames`` (per frame ``t``, ``boxes`` — one normalised
    ``[x0, y0, x1, y1]`` per object, in object id order — and ``envelope``, the sounding object's
    activity), ``audio`` (sound design, bang times).
    """
    rng = np.random.default_rng(cfg.seed)
    w, h, d = cfg.width, cfg.height, cfg.duration
    n_obj = cfg.objects or int(rng.integers(1, 4))
    classes = [str(c) for c in rng.choice(SOUND_CLASSES, size=n_obj, replace=False)]
    sounding = int(rng.integers(n_obj))
    if cfg.sound and classes[sounding] != cfg.sound:  # forced class: swap it in, keep the rest
        if cfg.sound in classes:
            classes[classes.index(cfg.sound)] = classes[sounding]
        classes[sounding] = cfg.sound
    events = _place_events(rng, cfg)
    highs = [(e["t0"], e["t1"]) for e in events if e["kind"] == "highlight"]
    viols = [(e["t0"], e["t1"]) for e in events if e["kind"] == "violence"]

    def boost(t: np.ndarray) -> np.ndarray:
        return _ramp_factor(highs, t, _HIGHLIGHT_RAMP)

    spec = design_sound(classes[sounding], rng, d, boost)
    sound = Sound(spec)
    bangs: list[list[float]] = []
    for t0, t1 in viols:
        t = t0 + float(rng.exponential(0.2))
        while t < t1:
            bangs.append([round(t, 4), round(float(rng.uniform(0.75, 1.0)), 3)])
            t += float(rng.exponential(0.22)) + 0.05

    tf = np.arange(cfg.num_frames) / cfg.fps
    env = sound.envelope(tf)
    hf = boost(tf)
    vf = _ramp_factor(viols, tf, _VIOLENCE_RAMP)
    jitter_rng = np.random.default_rng([cfg.seed, 7])  # own stream: more objects don't shift the rest
    m = min(w, h)
    objects: list[dict[str, Any]] = []
    boxes = np.zeros((cfg.num_frames, n_obj, 4))
    for i, cls in enumerate(classes):
        shape, colour, cname, _, _ = LOOKS[cls]
        radius = float(rng.uniform(0.07, 0.11)) * m
        cx0, cy0 = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
        amps = rng.uniform(0.08, 0.2, 4) * np.array([w, w, h, h])
        freqs = rng.uniform(0.04, 0.15, 4)
        phases = rng.uniform(0, 2 * np.pi, 4)
        # time warp: the sounding object moves faster during highlights
        warp = tf + (1.5 * np.cumsum(hf) / cfg.fps if i == sounding else 0.0)
        x = cx0 + amps[0] * np.sin(2 * np.pi * freqs[0] * warp + phases[0])
        x += amps[1] * np.sin(2 * np.pi * freqs[1] * 2.3 * warp + phases[1])
        y = cy0 + amps[2] * np.sin(2 * np.pi * freqs[2] * warp + phases[2])
        y += amps[3] * np.sin(2 * np.pi * freqs[3] * 1.7 * warp + phases[3])
        jitter = jitter_rng.normal(0.0, 0.05 * m, (2, len(tf))) * vf
        x, y = x + jitter[0], y + jitter[1]
        scale = 1.0 + 0.25 * env if i == sounding else np.ones(len(tf))
        hw = np.maximum(2, np.round(radius * scale * (1.5 if shape == "wide_rect" else 1.0))).astype(int)
        hh = np.maximum(2, np.round(radius * scale * (1.3 if shape == "ellipse" else 1.0))).astype(int)
        hw, hh = np.minimum(hw, (w - 1) // 2), np.minimum(hh, (h - 1) // 2)
        xi = np.clip(np.round(x).astype(int), hw, w - 1 - hw)
        yi = np.clip(np.round(y).astype(int), hh, h - 1 - hh)
        # pixel i covers [i, i+1): the box of pixels xi-hw..xi+hw is [xi-hw, xi+hw+1) / w
        boxes[:, i] = np.stack([(xi - hw) / w, (yi - hh) / h, (xi + hw + 1) / w, (yi + hh + 1) / h], axis=1)
        objects.append(
            {
                "id": i,
                "class": cls,
                "shape": shape,
                "color": cname,
                "color_bgr": list(colour),
                "sounding": i == sounding,
            }
        )
    boxes = np.round(boxes, 6)
    frames = [
        {"t": round(float(tf[k]), 6), "boxes": boxes[k].tolist(), "envelope": round(float(env[k]), 4)}
        for k in range(cfg.num_frames)
    ]
    return {
        "generator_version": GENERATOR_VERSION,
        "config": asdict(cfg),
        "num_frames": cfg.num_frames,
        "num_samples": cfg.num_samples,
        "objects": objects,
        "sounding_object": sounding,
        "sound_class": classes[sounding],
        "events": sorted(events, key=lambda e: e["t0"]),
        "captions": _captions(objects, sounding, events, d),
        "frames": frames,
        "audio": {"sound": spec, "bangs": bangs, "ambient": 0.01},
    }


# --------------------------------------------------------------------------------------------------
# rendering


def _background(seed: int, width: int, height: int) -> np.ndarray:
    """(_BG_VARIANTS, H, W, 3) uint8: a low-saturation texture with per-variant camera noise."""
    import cv2  # only where scenes are drawn: a pipeline that reads a file never maps OpenCV

    rng = np.random.default_rng([seed, 1])
    base = np.zeros((height, width, 3), dtype=np.float32)
    for cells, amp in ((4, 30.0), (9, 15.0), (20, 6.0)):  # octaves of smooth noise
        gh, gw = max(2, cells), max(2, round(cells * width / height))
        grid = rng.normal(0.0, 1.0, (gh, gw, 1)).astype(np.float32)
        up = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        base += amp * up[:, :, None] if up.ndim == 2 else amp * up
    tint = rng.uniform(-8.0, 8.0, 3).astype(np.float32)  # a slight colour cast, kept grey-ish
    base = 110.0 + base + tint
    noise = rng.normal(0.0, 2.0, (_BG_VARIANTS, height, width, 1)).astype(np.float32)
    flicker = rng.uniform(-2.0, 2.0, (_BG_VARIANTS, 1, 1, 1)).astype(np.float32)
    return np.clip(base[None] + noise + flicker, 0, 255).astype(np.uint8)


class Scene:
    """A scene prepared for fast rendering: the background and the sound are precomputed once."""

    def __init__(self, cfg: SceneConfig, truth: dict[str, Any] | None = None):
        self.cfg = cfg
        self.truth = truth if truth is not None else generate_truth(cfg)
        if self.truth.get("generator_version") != GENERATOR_VERSION:
            raise ValueError(
                f"ground truth of generator version {self.truth.get('generator_version')!r}, "
                f"this generator is {GENERATOR_VERSION!r}"
            )
        self._bg = _background(cfg.seed, cfg.width, cfg.height)
        self._variant = np.random.default_rng([cfg.seed, 2]).integers(0, _BG_VARIANTS, 997)
        self._sound = Sound(self.truth["audio"]["sound"])
        self._bangs = np.asarray(self.truth["audio"]["bangs"], dtype=np.float64).reshape(-1, 2)
        self._looks = [LOOKS[o["class"]] for o in self.truth["objects"]]
        sounding = self.truth["sounding_object"]
        # draw the sounding object last so it is never hidden by a distractor
        self._order = [i for i in range(len(self._looks)) if i != sounding] + [sounding]
        self._sounding = sounding

    @property
    def num_frames(self) -> int:
        return int(self.truth["num_frames"])

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` (t = index / fps) as a new C-contiguous (H, W, 3) uint8 BGR array."""
        if not 0 <= index < self.num_frames:
            raise IndexError(f"frame {index} outside the scene's {self.num_frames} frames")
        import cv2

        w, h = self.cfg.width, self.cfg.height
        img = self._bg[self._variant[index % len(self._variant)]].copy()
        rec = self.truth["frames"][index]
        for i in self._order:
            shape, colour, _, _, _ = self._looks[i]
            x0, y0, x1, y1 = rec["boxes"][i]
            px0, py0 = round(x0 * w), round(y0 * h)
            px1, py1 = round(x1 * w) - 1, round(y1 * h) - 1  # inclusive pixel corners
            gain = 0.55 + 0.45 * rec["envelope"] if i == self._sounding else 0.85
            col = tuple(int(c * gain) for c in colour)
            cx, cy, rx, ry = (px0 + px1) // 2, (py0 + py1) // 2, (px1 - px0) // 2, (py1 - py0) // 2
            if shape in ("square", "wide_rect"):
                cv2.rectangle(img, (px0, py0), (px1, py1), col, thickness=-1)
            elif shape == "circle":
                cv2.circle(img, (cx, cy), rx, col, thickness=-1)
            elif shape == "ellipse":
                cv2.ellipse(img, (cx, cy), (rx, ry), 0.0, 0.0, 360.0, col, thickness=-1)
            else:  # triangle
                pts = np.array([[cx, py0], [px0, py1], [px1, py1]], dtype=np.int32)
                cv2.fillPoly(img, [pts], col)
        return img

    def audio(self, start_sample: int, count: int, sample_rate: int | None = None) -> np.ndarray:
        """``count`` float32 samples from ``start_sample`` at ``sample_rate`` (default: the scene's).

        Rendering is procedural, so another rate gives the same sound without resampling. Samples past
        the scene's end are silent.
        """
        rate = sample_rate or self.cfg.sample_rate
        end = round(self.cfg.duration * rate)
        out = np.zeros(max(0, count), dtype=np.float32)
        n = max(0, min(count, end - start_sample))
        if n > 0:
            out[:n] = render(
                self._sound, self._bangs, self.cfg.seed, rate, start_sample, n, self.truth["audio"]["ambient"]
            )
        return out


_CACHE: list[tuple[SceneConfig, dict[str, Any], Scene]] = []


def scene_for(cfg: SceneConfig, truth: dict[str, Any] | None = None) -> Scene:
    """A cached :class:`Scene` for this config (and this truth object, when given)."""
    for c, t, s in _CACHE:
        if c == cfg and (truth is None or t is truth):
            return s
    s = Scene(cfg, truth)
    _CACHE.append((cfg, s.truth, s))
    del _CACHE[:-4]  # a few scenes at most: a background is W*H*3*8 bytes
    return s


def render_video_frame(cfg: SceneConfig, truth: dict[str, Any], index: int) -> np.ndarray:
    """Frame ``index`` of the scene as (H, W, 3) uint8 BGR."""
    return scene_for(cfg, truth).frame(index)


def render_audio(cfg: SceneConfig, truth: dict[str, Any], start_sample: int, count: int) -> np.ndarray:
    """``count`` mono float32 samples in [-1, 1] from ``start_sample`` at ``cfg.sample_rate``."""
    return scene_for(cfg, truth).audio(start_sample, count)


def write_scene(
    cfg: SceneConfig, path_mp4: str | Path, path_json: str | Path | None = None, *, crf: int = 20
) -> dict[str, Any]:
    """Encode the scene to an MP4 (H.264 + AAC) and its ground truth to a JSON sidecar.

    Returns the ground truth. Width and height must be even (yuv420p).
    """
    import av  # the generator itself needs no PyAV

    if cfg.width % 2 or cfg.height % 2:
        raise ValueError(f"H.264 needs an even frame size, got {cfg.width}x{cfg.height}")
    scene = scene_for(cfg)
    rate = Fraction(cfg.fps).limit_denominator(1001)
    with av.open(str(path_mp4), "w") as out:
        vs = out.add_stream("libx264", rate=rate, options={"preset": "veryfast", "crf": str(crf)})
        vs.width, vs.height, vs.pix_fmt = cfg.width, cfg.height, "yuv420p"
        aus = out.add_stream("aac", rate=cfg.sample_rate, layout="mono")
        step = 1024
        next_sample = 0
        for i in range(cfg.num_frames):
            vf = av.VideoFrame.from_ndarray(scene.frame(i), format="bgr24")
            vf.pts = i
            vf.time_base = Fraction(1) / rate
            out.mux(vs.encode(vf))
            # keep audio up to this frame's time so the muxer interleaves without large buffers
            while next_sample < min(cfg.num_samples, (i + 1) / cfg.fps * cfg.sample_rate):
                n = min(step, cfg.num_samples - next_sample)
                af = av.AudioFrame.from_ndarray(
                    scene.audio(next_sample, n)[None, :], format="fltp", layout="mono"
                )
                af.sample_rate, af.pts = cfg.sample_rate, next_sample
                af.time_base = Fraction(1, cfg.sample_rate)
                out.mux(aus.encode(af))
                next_sample += n
        while next_sample < cfg.num_samples:
            n = min(step, cfg.num_samples - next_sample)
            af = av.AudioFrame.from_ndarray(
                scene.audio(next_sample, n)[None, :], format="fltp", layout="mono"
            )
            af.sample_rate, af.pts, af.time_base = cfg.sample_rate, next_sample, Fraction(1, cfg.sample_rate)
            out.mux(aus.encode(af))
            next_sample += n
        out.mux(vs.encode(None))
        out.mux(aus.encode(None))
    if path_json is not None:
        Path(path_json).write_text(json.dumps(scene.truth, indent=1))
    return scene.truth


# --------------------------------------------------------------------------------------------------
# A/V sync pattern (sample://sync): a white flash and a 1 kHz beep at every whole second


def sync_frame(width: int, height: int, t: float, flash_s: float = 0.1) -> np.ndarray:
    """Dark grey frame, white during the first ``flash_s`` of every second."""
    value = 255 if (t % 1.0) < flash_s - 1e-9 else 16
    return np.full((height, width, 3), value, dtype=np.uint8)


def sync_audio(rate: int, start_sample: int, count: int, flash_s: float = 0.1) -> np.ndarray:
    """Silence with a 1 kHz beep (amplitude 0.5) during the first ``flash_s`` of every second."""
    n = start_sample + np.arange(count, dtype=np.int64)
    on = (n % rate) < round(flash_s * rate)
    return (0.5 * on * np.sin(2 * np.pi * 1000.0 * n / rate)).astype(np.float32)


def sync_truth(duration: float, flash_s: float = 0.1) -> dict[str, Any]:
    """Ground truth of the sync pattern: flash/beep onsets."""
    onsets = [float(k) for k in range(math.ceil(duration))]
    return {"generator_version": GENERATOR_VERSION, "pattern": "sync", "onsets": onsets, "flash_s": flash_s}
