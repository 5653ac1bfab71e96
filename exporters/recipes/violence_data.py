"""Training data of the violence recipe: procedural scenes, real clip windows, augmentation, batches.

Augmentations match surveillance footage rather than curated video: mirror, random resized crop and
zoom-out (people far from the camera), blur and JPEG compression (cheap cameras, re-encoded streams),
dropped/held frames (10-30 fps sources on the model's 8 fps grid), brightness/contrast, time reversal,
audio gain.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..violence_clips import ClipData

FPS, FRAMES, SIZE = 8.0, 16, 112
SNIPPET = 4  # frames per snippet: 0.5 s
SNIPPETS = FRAMES // SNIPPET
SAMPLE_RATE, SAMPLES = 16000, 32000
TOPK = 2
SYNTH_TRAIN = (0, 96)  # procedural scene seeds [a, b), all < 1,000,000 (held-out seeds are above)
SYNTH_SECONDS = 16.0


@dataclass
class SynthPool:
    """Procedural scenes on the model's frame grid: frames (S, F, 112, 112, 3), audio (S, N), violence (S, F)."""

    frames: np.ndarray
    audio: np.ndarray
    violence: np.ndarray

    def windows(self) -> list[tuple[int, int, int]]:
        """(scene, first frame, label) of every window with a clear weak label (k violent snippets, or none)."""
        out = []
        for s in range(len(self.frames)):
            for k0 in range(0, self.frames.shape[1] - FRAMES + 1, 2):
                v = self.violence[s, k0 : k0 + FRAMES].reshape(SNIPPETS, SNIPPET)
                violent_snippets = int((v.mean(axis=1) >= 0.5).sum())
                if violent_snippets >= TOPK:
                    out.append((s, k0, 1))
                elif not v.any():
                    out.append((s, k0, 0))
        return out

    def window(self, s: int, k0: int) -> tuple[np.ndarray, np.ndarray]:
        a0 = int(round(k0 / FPS * SAMPLE_RATE))
        return self.frames[s, k0 : k0 + FRAMES], self.audio[s, a0 : a0 + SAMPLES]


def render_synth(seeds: Sequence[int], cache_dir: Path | None = None) -> SynthPool:
    """Scenes as ``sample://demo`` looks (640x360) on the 8 fps grid, resized like the window node; cached."""
    from avstream.engine.synthetic.scene import SceneConfig, generate_truth, render_audio, render_video_frame

    if any(s >= 1_000_000 for s in seeds):
        raise ValueError("training scenes must have seeds < 1,000,000 (the held-out ones are above)")
    cache = None
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache = cache_dir / f"violence_synth_{seeds[0]}_{len(seeds)}_{SIZE}.npz"
        if cache.exists():
            z = np.load(cache)
            return SynthPool(z["frames"], z["audio"], z["violence"])
    n_frames = int(SYNTH_SECONDS * FPS)
    frames = np.zeros((len(seeds), n_frames, SIZE, SIZE, 3), np.uint8)
    audio = np.zeros((len(seeds), int(SYNTH_SECONDS * SAMPLE_RATE)), np.float32)
    viol = np.zeros((len(seeds), n_frames), np.float32)
    t = np.arange(n_frames) / FPS
    for i, seed in enumerate(seeds):
        cfg = SceneConfig(seed=int(seed), duration=SYNTH_SECONDS, fps=FPS, sample_rate=SAMPLE_RATE,
                          violence=bool(seed % 2 == 0))
        truth = generate_truth(cfg)
        for k in range(n_frames):
            frames[i, k] = cv2.resize(render_video_frame(cfg, truth, k), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        audio[i] = render_audio(cfg, truth, 0, audio.shape[1])
        for e in truth["events"]:
            if e["kind"] == "violence":
                viol[i][(t >= e["t0"]) & (t < e["t1"])] = 1.0
    if cache is not None:
        np.savez(cache, frames=frames, audio=audio, violence=viol)
    return SynthPool(frames, audio, viol)


def real_frames(frames: np.ndarray) -> int:
    """Frames of a window before the padding the window node adds at a stream's end (repeats of the last)."""
    n = len(frames)
    while n > 1 and np.array_equal(frames[n - 1], frames[n - 2]):
        n -= 1
    return n


def _resized_crop(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random resized crop (scale 0.7-1, aspect within ±20 %) of a (T, H, W, 3) window."""
    scale, aspect = rng.uniform(0.7, 1.0), math.exp(rng.uniform(-0.2, 0.2))
    h = min(SIZE, int(SIZE * scale * math.sqrt(aspect)))
    w = min(SIZE, int(SIZE * scale / math.sqrt(aspect)))
    if h >= SIZE and w >= SIZE:
        return v
    y0, x0 = int(rng.integers(0, SIZE - h + 1)), int(rng.integers(0, SIZE - w + 1))
    crop = np.ascontiguousarray(v[:, y0 : y0 + h, x0 : x0 + w].transpose(1, 2, 0, 3).reshape(h, w, -1))
    out = cv2.resize(crop, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    return np.asarray(out.reshape(SIZE, SIZE, len(v), 3).transpose(2, 0, 1, 3))


def _zoom_out(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shrink the scene to 60-90 % inside a border of replicated edges: people further from the camera."""
    k = int(SIZE * rng.uniform(0.6, 0.9))
    y0, x0 = int(rng.integers(0, SIZE - k + 1)), int(rng.integers(0, SIZE - k + 1))
    out = np.empty_like(v)
    for i, frame in enumerate(v):
        small = cv2.resize(frame, (k, k), interpolation=cv2.INTER_AREA)
        out[i] = cv2.copyMakeBorder(small, y0, SIZE - k - y0, x0, SIZE - k - x0, cv2.BORDER_REPLICATE)
    return out


def _degrade(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur and/or JPEG compression, the same strength over the window (one camera, one encoder)."""
    sigma = rng.uniform(0.5, 1.5) if rng.random() < 0.3 else 0.0
    quality = int(rng.integers(15, 60)) if rng.random() < 0.3 else 0
    if not sigma and not quality:
        return v
    out = np.empty_like(v)
    for i, frame in enumerate(v):
        f = cv2.GaussianBlur(frame, (0, 0), sigma) if sigma else frame
        if quality:
            ok, buf = cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, quality])
            f = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else f
        out[i] = f
    return out


def _hold_frames(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Repeat some frames: a 10-15 fps source sampled on the 8 fps grid, or a camera dropping frames."""
    if rng.random() >= 0.2:
        return v
    held = rng.random(len(v)) < rng.uniform(0.1, 0.35)
    held[0] = False
    idx = np.arange(len(v))
    for i in range(1, len(v)):
        if held[i]:
            idx[i] = idx[i - 1]
    return v[idx]


def augment_video(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Surveillance-footage augmentation of one (T, H, W, 3) uint8 window (see the module docstring)."""
    if rng.random() < 0.5:
        v = v[:, :, ::-1]
    if rng.random() < 0.25:
        v = v[::-1]
    v = _zoom_out(np.ascontiguousarray(v), rng) if rng.random() < 0.2 else _resized_crop(v, rng)
    v = _hold_frames(_degrade(np.ascontiguousarray(v), rng), rng)
    c, b = rng.uniform(0.7, 1.3), rng.uniform(-25, 25)
    return np.clip(v.astype(np.float32) * c + b + (1 - c) * 110.0, 0, 255).astype(np.uint8)


class Sampler:
    """Balanced batches of real clip windows (augmented) and procedural scene windows."""

    def __init__(self, clips: Sequence[ClipData], synth: SynthPool | None, synth_share: float, silence: float):
        self.clips = clips
        self.items: dict[int, list[tuple[int, int]]] = {0: [], 1: []}  # label -> (clip, window)
        for ci, d in enumerate(clips):
            w = d.windows
            full = [i for i in range(len(w.t0)) if real_frames(w.frames[i]) >= FRAMES // 2]
            for i in full or [0]:
                self.items[d.clip.label].append((ci, i))
        self.synth = synth
        self.synth_items: dict[int, list[tuple[int, int]]] = {0: [], 1: []}
        if synth is not None:
            for s, k0, lab in synth.windows():
                self.synth_items[lab].append((s, k0))
        self.synth_share = synth_share if synth is not None else 0.0
        self.silence = silence

    def batch(self, rng: np.random.Generator, size: int,
              synth_share: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``size`` windows, alternately labels 0 and 1; ``synth_share`` overrides the sampler's own."""
        share = self.synth_share if synth_share is None or self.synth is None else synth_share
        vids, auds, labels = [], [], []
        for j in range(size):
            lab = j % 2
            if rng.random() < share:
                assert self.synth is not None
                s, k0 = self.synth_items[lab][int(rng.integers(len(self.synth_items[lab])))]
                v, a = self.synth.window(s, k0)
                v = v[:, :, ::-1] if rng.random() < 0.5 else v
            else:
                ci, wi = self.items[lab][int(rng.integers(len(self.items[lab])))]
                w = self.clips[ci].windows
                v, a = augment_video(w.frames[wi], rng), w.audio[wi]
            a = np.clip(a * np.float32(rng.uniform(0.5, 2.0)), -1, 1)
            if rng.random() < self.silence:
                a = np.zeros_like(a)
            vids.append(np.ascontiguousarray(v))
            auds.append(a)
            labels.append(lab)
        return (torch.from_numpy(np.stack(vids)), torch.from_numpy(np.stack(auds).astype(np.float32)),
                torch.tensor(labels, dtype=torch.float32))


