"""Export-safe log-mel front end.

``torch.stft`` exports badly or not at all at many opsets, so the STFT here is a strided Conv1d whose
fixed weights are the Hann-windowed Fourier basis; it exports to one Conv node at any opset and matches
``torch.stft`` to float32 precision. Bins above the top mel band are dropped from the basis: they would
only be multiplied by zero filterbank weights.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """Triangular HTK mel filters, shape (n_mels, n_fft // 2 + 1), unnormalised peaks of 1."""
    freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None, :] - lower) / (center - lower)
    down = (upper - freqs[None, :]) / (upper - center)
    return np.maximum(0.0, np.minimum(up, down)).astype(np.float32)


def hann_window(n: int) -> np.ndarray:
    """Periodic Hann window (``torch.hann_window(n)``'s default)."""
    return (0.5 - 0.5 * np.cos(2.0 * math.pi * np.arange(n) / n)).astype(np.float64)


class LogMel(nn.Module):
    """Raw mono samples (B, N) → log-mel (B, n_mels, frames), frames = 1 + (N - n_fft) // hop.

    No centre padding: a streaming window holds exactly the samples it covers.
    """

    basis: torch.Tensor  # buffers, registered in __init__
    fb: torch.Tensor

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 400,
        hop: int = 320,
        n_mels: int = 64,
        f_min: float = 125.0,
        f_max: float = 7500.0,
        eps: float = 1e-6,
    ):
        super().__init__()
        self.n_fft, self.hop, self.eps = n_fft, hop, eps
        fb = mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max)
        n_bins = int(np.nonzero(fb.any(axis=0))[0].max()) + 1  # bins past the top band carry no weight
        k = np.arange(n_bins)[:, None]
        n = np.arange(n_fft)[None, :]
        w = hann_window(n_fft)[None, :]
        real = np.cos(2.0 * math.pi * k * n / n_fft) * w
        imag = -np.sin(2.0 * math.pi * k * n / n_fft) * w
        basis = np.concatenate([real, imag])[:, None, :].astype(np.float32)  # (2K, 1, n_fft)
        self.n_bins = n_bins
        self.register_buffer("basis", torch.from_numpy(basis))
        self.register_buffer("fb", torch.from_numpy(np.ascontiguousarray(fb[:, :n_bins].T)))  # (K, n_mels)

    def frames(self, n_samples: int) -> int:
        return 1 + (n_samples - self.n_fft) // self.hop

    def power(self, audio: torch.Tensor) -> torch.Tensor:
        """|STFT|^2 of (B, N) → (B, K, frames)."""
        spec = nn.functional.conv1d(audio.unsqueeze(1), self.basis, stride=self.hop)
        real, imag = spec[:, : self.n_bins], spec[:, self.n_bins :]
        return real * real + imag * imag

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        mel = torch.matmul(self.power(audio).transpose(1, 2), self.fb).transpose(1, 2)
        return torch.log(mel + self.eps)
