"""The ``ClapFeatureExtractor`` front end as an exportable module: one fixed-length window → log-mel.

What the extractor does for one waveform that is not longer than ``max_length_s`` (transformers'
``feature_extraction_clap`` and ``audio_utils.spectrogram``):

1. shorter than ``max_length_s``: ``repeatpad`` tiles it ``int(max / n)`` times, then zero-pads;
   ``repeat`` tiles it ``int(max / n) + 1`` times, then cuts; ``pad`` zero-pads;
2. centre-pads ``n_fft // 2`` samples on each side by reflection;
3. frames of ``n_fft`` samples every ``hop_length``, a periodic Hann window, ``|rfft|**2``;
4. the Slaney-normalised, Slaney-scale mel filter bank (``mel_filters_slaney``: the bank used by
   every truncation mode but ``fusion``), floored at 1e-10;
5. ``10 * log10`` with reference 1 and a 1e-10 floor (no ``top_db`` clipping: the extractor does not
   pass it on), transposed to ``(frames, mels)``.

The window length is fixed by the contract, so the padding is a fixed tiling and the random crop of
``rand_trunc`` (only for audio longer than ``max_length_s``) never happens. ``torch.stft`` does not
export to ONNX at opset 17, so the STFT is a strided conv1d whose weights are the windowed DFT basis.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

PADDING_MODES = ("repeatpad", "repeat", "pad")
DB_FLOOR = 1e-10  # audio_utils.spectrogram's mel_floor and power_to_db's min_value


class ClapLogMel(nn.Module):
    """(B, N) float32 samples → (B, frames, n_mels) dB log-mel, as ``ClapFeatureExtractor`` computes it."""

    basis: torch.Tensor
    mel: torch.Tensor

    def __init__(self, *, window_samples: int, max_samples: int, n_fft: int, hop: int,
                 mel_filters: np.ndarray, padding: str) -> None:
        super().__init__()
        if padding not in PADDING_MODES:
            raise ValueError(f"padding {padding!r} is not one of {PADDING_MODES}")
        if window_samples > max_samples:
            raise ValueError(f"a window of {window_samples} samples is longer than max_length ({max_samples})")
        self.window_samples, self.max_samples = window_samples, max_samples
        self.n_fft, self.hop, self.padding = n_fft, hop, padding
        # periodic Hann, as window_function(n, "hann") builds it: np.hanning(n + 1) without its last sample
        window = np.hanning(n_fft + 1)[:-1]
        n_bins = n_fft // 2 + 1
        k = np.arange(n_bins)[:, None]
        n = np.arange(n_fft)[None, :]
        real = np.cos(2.0 * math.pi * k * n / n_fft) * window
        imag = -np.sin(2.0 * math.pi * k * n / n_fft) * window
        basis = np.concatenate([real, imag])[:, None, :].astype(np.float32)  # (2K, 1, n_fft)
        self.n_bins = n_bins
        self.register_buffer("basis", torch.from_numpy(basis))
        # the extractor's own bank (num_frequency_bins, n_mels), so both sides share one filter definition
        self.register_buffer("mel", torch.from_numpy(np.ascontiguousarray(mel_filters, dtype=np.float32)))

    @property
    def frames(self) -> int:
        return 1 + self.max_samples // self.hop

    def fill(self, audio: torch.Tensor) -> torch.Tensor:
        """Bring one window to ``max_samples`` the way the extractor pads a short waveform."""
        n, total = self.window_samples, self.max_samples
        if n == total:
            return audio
        repeats = total // n
        if self.padding == "repeat":
            audio = audio.repeat(1, repeats + 1)[:, :total]
        elif self.padding == "repeatpad":
            audio = audio.repeat(1, repeats)
        return nn.functional.pad(audio, (0, total - audio.shape[1]))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = self.fill(audio).unsqueeze(1)
        half = self.n_fft // 2
        x = nn.functional.pad(x, (half, half), mode="reflect")
        spec = nn.functional.conv1d(x, self.basis, stride=self.hop)  # (B, 2K, frames)
        real, imag = spec[:, : self.n_bins], spec[:, self.n_bins :]
        power = (real * real + imag * imag).transpose(1, 2)  # (B, frames, K)
        mel = torch.clamp(power @ self.mel, min=DB_FLOOR)
        return 10.0 * torch.log10(mel)


def frontend_from_extractor(extractor: Any, seconds: float) -> ClapLogMel:
    """The in-graph front end for windows of ``seconds`` at the extractor's sampling rate."""
    rate = int(extractor.sampling_rate)
    return ClapLogMel(
        window_samples=int(round(seconds * rate)),
        max_samples=int(extractor.nb_max_samples),
        n_fft=int(extractor.fft_window_size),
        hop=int(extractor.hop_length),
        mel_filters=np.asarray(extractor.mel_filters_slaney),
        padding=str(extractor.padding),
    )
