"""The PANNs (torchlibrosa) log-mel front end: as exportable modules, and as a float64 numpy reference.

What ``Cnn14`` does to a waveform before its first convolution (``torchlibrosa.stft.Spectrogram`` and
``LogmelFilterBank`` as PANNs configures them):

1. centre-pads ``n_fft // 2`` samples on each side by reflection;
2. frames of ``n_fft`` samples every ``hop``: two strided Conv1d whose weights are the periodic-Hann
   windowed DFT basis (``conv_real`` = ``cos * w``, ``conv_imag`` = ``-sin * w``), ``real² + imag²``;
3. ``@ melW``: ``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax).T`` (Slaney scale, Slaney norm);
4. ``10 * log10(max(x, 1e-10))`` with reference 1.0 and no ``top_db`` clipping.

The STFT weights and the mel bank are parameters of the checkpoint, so the graph uses the checkpoint's
own values; :func:`check_frontend` verifies they are what the stated sample rate, window and mel range
build, which catches a checkpoint of another variant (the 16 kHz CNN14, another mel range) early.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from avstream.engine.errors import ModelError

AMIN = 1e-10  # power_to_db's amin in PANNs: the floor of the mel power
# A checkpoint's front end vs the one built here: float32 weights vs a float64 construction
FRONTEND_WEIGHT_ATOL = 1e-4


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa ``hz_to_mel(htk=False)``): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    linear = f / (200.0 / 3)
    logstep = math.log(6.4) / 27.0
    log_part = 15.0 + np.log(np.maximum(f, 1e-12) / 1000.0) / logstep
    return np.where(f >= 1000.0, log_part, linear)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    logstep = math.log(6.4) / 27.0
    return np.where(m >= 15.0, 1000.0 * np.exp(logstep * (m - 15.0)), m * (200.0 / 3))


def slaney_mel(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangles on the Slaney mel scale, area-normalised ('slaney' norm):
    ``librosa.filters.mel(sr=, n_fft=, n_mels=, fmin=, fmax=)`` with its defaults, in float64."""
    freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(fmin)), _hz_to_mel(np.array(fmax)), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


def dft_weights(n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """torchlibrosa's ``conv_real`` / ``conv_imag`` weights, (n_fft // 2 + 1, 1, n_fft) each."""
    window = 0.5 - 0.5 * np.cos(2.0 * math.pi * np.arange(n_fft) / n_fft)  # periodic Hann (fftbins=True)
    k = np.arange(n_fft // 2 + 1)[:, None]
    n = np.arange(n_fft)[None, :]
    angle = 2.0 * math.pi * k * n / n_fft
    return (np.cos(angle) * window)[:, None, :], (-np.sin(angle) * window)[:, None, :]


class STFT(nn.Module):
    """The strided DFT convolutions; named like torchlibrosa's so checkpoint keys load unchanged."""

    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        bins = n_fft // 2 + 1
        self.conv_real = nn.Conv1d(1, bins, kernel_size=n_fft, stride=hop, bias=False)
        self.conv_imag = nn.Conv1d(1, bins, kernel_size=n_fft, stride=hop, bias=False)


class Spectrogram(nn.Module):
    """(B, N) samples → (B, 1, frames, n_fft // 2 + 1) power spectrogram, frames = 1 + N // hop."""

    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        self.stft = STFT(n_fft, hop)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        half = self.stft.n_fft // 2
        x = nn.functional.pad(audio.unsqueeze(1), (half, half), mode="reflect")
        real, imag = self.stft.conv_real(x), self.stft.conv_imag(x)  # (B, bins, frames)
        return (real * real + imag * imag).transpose(1, 2).unsqueeze(1)


class LogmelFilterBank(nn.Module):
    """(B, 1, frames, bins) power → (B, 1, frames, n_mels) dB, ``melW`` (bins, n_mels) from the checkpoint."""

    def __init__(self, n_bins: int, n_mels: int) -> None:
        super().__init__()
        self.melW = nn.Parameter(torch.zeros(n_bins, n_mels), requires_grad=False)

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        return 10.0 * torch.log10(torch.clamp(power @ self.melW, min=AMIN))


def check_frontend(state: dict[str, Any], source: str, *, sample_rate: int, window_size: int,
                   mel_bins: int, fmin: float, fmax: float) -> None:
    """ModelError naming what differs when the checkpoint's STFT or mel weights are not the ones these
    settings build (hop is not in the weights: it is taken on trust)."""
    real = state["spectrogram_extractor.stft.conv_real.weight"]
    mel = state["logmel_extractor.melW"]
    n_fft = int(real.shape[-1])
    if n_fft != window_size:
        raise ModelError(f"{source}: the checkpoint's STFT window is {n_fft} samples, not --window-size "
                         f"{window_size}")
    if tuple(mel.shape) != (n_fft // 2 + 1, mel_bins):
        raise ModelError(f"{source}: logmel_extractor.melW is {tuple(mel.shape)}, expected "
                         f"({n_fft // 2 + 1}, {mel_bins}) for window {n_fft} and {mel_bins} mel bins "
                         f"(--mel-bins {int(mel.shape[1])}?)")
    want_real, want_imag = dft_weights(n_fft)
    imag = state["spectrogram_extractor.stft.conv_imag.weight"]
    for name, got, want in (("conv_real", real, want_real), ("conv_imag", imag, want_imag)):
        err = float(np.abs(got.detach().cpu().double().numpy() - want).max())
        if err > FRONTEND_WEIGHT_ATOL:
            raise ModelError(f"{source}: spectrogram_extractor.stft.{name}.weight is not a Hann-windowed DFT "
                             f"of {n_fft} points (max diff {err:.2e})")
    want_mel = slaney_mel(sample_rate, n_fft, mel_bins, fmin, fmax).T
    err = float(np.abs(mel.detach().cpu().double().numpy() - want_mel).max())
    if err > FRONTEND_WEIGHT_ATOL:
        raise ModelError(f"{source}: logmel_extractor.melW is not the Slaney mel bank of sample rate "
                         f"{sample_rate} Hz, window {n_fft}, {mel_bins} bins, {fmin:g}-{fmax:g} Hz (max diff "
                         f"{err:.2e}): pass the checkpoint's --sample-rate/--fmin/--fmax")


def reference_logmel(audio: np.ndarray, mel_w: np.ndarray, *, n_fft: int, hop: int) -> np.ndarray:
    """(B, N) → (B, frames, n_mels) in float64 with numpy's FFT: what librosa.stft + the checkpoint's
    mel bank + PANNs' power_to_db compute, for the export-time parity check (no librosa needed)."""
    x = np.asarray(audio, dtype=np.float64)
    half = n_fft // 2
    x = np.pad(x, ((0, 0), (half, half)), mode="reflect")
    frames = 1 + (x.shape[1] - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2.0 * math.pi * np.arange(n_fft) / n_fft)
    spec = np.fft.rfft(x[:, idx] * window, axis=-1)  # (B, frames, bins)
    power = spec.real ** 2 + spec.imag ** 2
    return 10.0 * np.log10(np.maximum(power @ np.asarray(mel_w, dtype=np.float64), AMIN))
