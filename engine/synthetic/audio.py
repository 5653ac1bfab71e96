"""Sound design and rendering for the synthetic scene generator (see ``engine/synthetic/scene.py``).

Everything here is a pure function of absolute time, so a scene's audio can be rendered chunk by
chunk in any order and always gives the same samples (no filter state between chunks):

- a sounding object's *sound* is a JSON-serialisable dict (class, parameters, onsets or an activity
  curve) made once by :func:`design_sound`;
- its *envelope* (activity in [0, 1]) is :meth:`Sound.envelope`, used by the audio and by the video
  (brightness / size pulses) so both follow the same curve;
- white noise comes from :func:`block_noise`, seeded per fixed block of samples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

SOUND_CLASSES = ("bell", "drum", "engine", "siren", "voice")

# Onset-driven classes: (attack s, decay time constant s, base onsets per second).
_ONSET_SHAPE = {"bell": (0.005, 0.35, 1.2), "drum": (0.002, 0.10, 2.5), "voice": (0.03, 0.07, 4.0)}
_ACTIVITY_RATE = 4.0  # control points per second of the continuous classes' activity curve
_NOISE_BLOCK = 4096
_BANG_DECAY = 0.045

Array = np.ndarray
Boost = Callable[[Array], Array]


def block_noise(seed: int, salt: int, start: int, count: int) -> Array:
    """Uniform white noise in [-1, 1) for samples [start, start+count), independent of chunking."""
    out = np.empty(count, dtype=np.float64)
    pos = 0
    while pos < count:
        n = start + pos
        block, offset = divmod(n, _NOISE_BLOCK)
        rng = np.random.default_rng([seed & 0xFFFFFFFF, salt, block])
        data = rng.uniform(-1.0, 1.0, _NOISE_BLOCK)
        take = min(_NOISE_BLOCK - offset, count - pos)
        out[pos : pos + take] = data[offset : offset + take]
        pos += take
    return out


def design_sound(cls: str, rng: np.random.Generator, duration: float, boost: Boost) -> dict[str, Any]:
    """Parameters of one sounding object of class ``cls`` over ``duration`` seconds.

    ``boost(t)`` is the highlight factor in [0, 1]: during highlights onsets come faster and louder
    and the activity of continuous classes rises towards 1.
    """
    if cls not in SOUND_CLASSES:
        raise ValueError(f"unknown sound class {cls!r}; known: {', '.join(SOUND_CLASSES)}")
    sound: dict[str, Any] = {"class": cls, "gain": 0.55}
    if cls == "bell":
        f0 = float(rng.uniform(440.0, 880.0))
        sound["partials"] = [[f0 * k, a] for k, a in ((1, 1.0), (2, 0.5), (3, 0.3), (4, 0.15))]
    elif cls == "drum":
        sound["f_low"] = float(rng.uniform(70.0, 130.0))
    elif cls == "engine":
        sound["f0"] = float(rng.uniform(45.0, 90.0))
        sound["wobble_hz"] = float(rng.uniform(0.2, 0.6))
        # band noise as many random-phase sinusoids: smooth across chunk borders, no filter state
        sound["band"] = [
            [float(f), float(p)]
            for f, p in zip(rng.uniform(300, 1500, 24), rng.uniform(0, 6.283, 24), strict=True)
        ]
    elif cls == "siren":
        sound["fc"] = float(rng.uniform(700.0, 1000.0))
        sound["fd"] = float(rng.uniform(200.0, 350.0))
        sound["fm"] = float(rng.uniform(0.3, 0.8))
    else:  # voice
        f0 = float(rng.uniform(110.0, 220.0))
        formants = (rng.uniform(600, 800), rng.uniform(1100, 1600), 2500.0)
        ks = np.arange(1, int(3500 / f0) + 1)
        w = np.zeros(len(ks))
        for f in formants:
            w += 1.0 / (1.0 + ((ks * f0 - f) / 120.0) ** 2)
        sound["partials"] = [[float(k * f0), float(a)] for k, a in zip(ks, w / w.max(), strict=True)]
    if cls in _ONSET_SHAPE:
        sound["onsets"] = _make_onsets(cls, rng, duration, boost)
    else:
        sound["activity"] = _make_activity(rng, duration, boost)
    return sound


def _make_onsets(cls: str, rng: np.random.Generator, duration: float, boost: Boost) -> list[list[float]]:
    _, _, rate = _ONSET_SHAPE[cls]
    onsets: list[list[float]] = []
    t = float(rng.uniform(0.1, 0.5))
    since_pause = 0
    phrase = int(rng.integers(4, 9))
    while t < duration:
        h = float(boost(np.array([t]))[0])
        amp = (0.4 + 0.5 * h) * float(rng.uniform(0.85, 1.0))
        onsets.append([round(t, 5), round(amp, 4)])
        t += float(rng.uniform(0.7, 1.3)) / (rate * (1.0 + 1.5 * h))
        since_pause += 1
        if cls == "voice" and since_pause >= phrase:  # speech comes in phrases with pauses
            t += float(rng.uniform(0.3, 0.7)) * (1.0 - 0.6 * h)
            since_pause, phrase = 0, int(rng.integers(4, 9))
    return onsets


def _make_activity(rng: np.random.Generator, duration: float, boost: Boost) -> dict[str, Any]:
    n = int(np.ceil(duration * _ACTIVITY_RATE)) + 2
    walk = np.cumsum(rng.normal(0.0, 0.08, n))
    walk = (walk - walk.mean()) / (np.abs(walk - walk.mean()).max() + 1e-9)  # in [-1, 1]
    h = boost(np.arange(n) / _ACTIVITY_RATE)
    values = np.clip(0.4 + 0.12 * walk + 0.55 * h, 0.05, 1.0)
    return {"rate": _ACTIVITY_RATE, "values": [round(float(v), 4) for v in values]}


class Sound:
    """A designed sound (the dict from :func:`design_sound`) parsed once for fast rendering."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.cls: str = spec["class"]
        self.onsets = np.asarray(spec.get("onsets", []), dtype=np.float64).reshape(-1, 2)
        act = spec.get("activity")
        self.activity_rate = float(act["rate"]) if act else 0.0
        self.activity = np.asarray(act["values"] if act else [], dtype=np.float64)
        self.partials = np.asarray(spec.get("partials", []), dtype=np.float64).reshape(-1, 2)
        self.band = np.asarray(spec.get("band", []), dtype=np.float64).reshape(-1, 2)

    def envelope(self, t: Array) -> Array:
        """Activity of the sounding object in [0, 1] at the (sorted) times ``t`` in seconds."""
        t = np.asarray(t, dtype=np.float64)
        if self.activity_rate:
            return np.interp(t * self.activity_rate, np.arange(len(self.activity)), self.activity)
        attack, decay, _ = _ONSET_SHAPE[self.cls]
        return _percussive(self.onsets, t, attack, decay, 1.0)


def _percussive(onsets: Array, t: Array, attack: float, decay: float, ceiling: float) -> Array:
    """Sum of linear-attack / exponential-decay pulses, clipped to ``ceiling``; blocked for long t."""
    out = np.zeros(len(t), dtype=np.float64)
    if len(t) == 0 or len(onsets) == 0:
        return out
    times = onsets[:, 0]
    for b in range(0, len(t), 4096):
        tb = t[b : b + 4096]
        lo = np.searchsorted(times, tb[0] - attack - 10.0 * decay)
        hi = np.searchsorted(times, tb[-1], side="right")
        if hi <= lo:
            continue
        tau = tb[None, :] - times[lo:hi, None]
        pulse = np.where(tau < attack, tau / attack, np.exp(-(tau - attack) / decay))
        # cut at a fixed horizon so the result never depends on where a block starts
        pulse[(tau < 0) | (tau > attack + 10.0 * decay)] = 0.0
        out[b : b + 4096] = (onsets[lo:hi, 1:2] * pulse).sum(axis=0)
    return np.minimum(out, ceiling)


def _signal(sound: Sound, t: Array, noise: Array) -> Array:
    """The class's raw waveform (peak about 1) before the envelope."""
    cls, spec = sound.cls, sound.spec
    two_pi = 2.0 * np.pi
    if cls in ("bell", "voice"):
        partials = sound.partials
        sig = np.zeros(len(t))
        for f, a in partials:
            sig += a * np.sin(two_pi * f * t)
        return sig / partials[:, 1].sum()
    if cls == "drum":
        return 0.55 * noise + 0.45 * np.sin(two_pi * spec["f_low"] * t)
    if cls == "engine":
        f0, fm = spec["f0"], spec["wobble_hz"]
        phase = two_pi * (f0 * t - (0.05 * f0 / (two_pi * fm)) * np.cos(two_pi * fm * t))
        sig = sum(np.sin(k * phase) / k for k in range(1, 9))
        band = sound.band
        noise_band = np.zeros(len(t))
        for f, p in band:
            noise_band += np.sin(two_pi * f * t + p)
        return 0.45 * np.asarray(sig) / 2.7 + 0.55 * noise_band / np.sqrt(2.0 * len(band)) / 1.5
    # siren: analytic phase of a sinusoidally swept tone
    fc, fd, fm = spec["fc"], spec["fd"], spec["fm"]
    phase = two_pi * (fc * t - (fd / (two_pi * fm)) * np.cos(two_pi * fm * t))
    return (np.sin(phase) + 0.3 * np.sin(2.0 * phase)) / 1.3


def render(
    sound: Sound, bangs: Array, seed: int, rate: int, start: int, count: int, ambient: float = 0.01
) -> Array:
    """Samples [start, start+count) at ``rate`` Hz of the whole soundtrack, float32 in [-1, 1].

    ``bangs`` is an (N, 2) array of (time, amplitude) impulsive events (violence segments).
    """
    if count <= 0:
        return np.zeros(0, dtype=np.float32)
    t = (start + np.arange(count, dtype=np.float64)) / rate
    noise = block_noise(seed, 11, start, count)
    out = sound.spec["gain"] * sound.envelope(t) * _signal(sound, t, noise)
    if len(bangs):
        bang_env = _percussive(bangs, t, 1e-4, _BANG_DECAY, 1.0)
        if bang_env.any():
            thump = np.sin(2.0 * np.pi * 60.0 * t)
            out += bang_env * (0.75 * block_noise(seed, 13, start, count) + 0.25 * thump)
    out += ambient * block_noise(seed, 17, start, count)
    return np.clip(out, -1.0, 1.0).astype(np.float32)
