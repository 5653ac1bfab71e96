"""The video towers' shared front end: engine frames -> the pixel tensor an image tower takes.

Both CLIP importers (``clip.py`` for Hugging Face folders, ``openclip.py`` for open_clip checkpoints)
ask the engine for frames at a size where the library's own resize is the identity, so what is left
inside the graph is the same arithmetic: a centre crop (a slice), BGR -> RGB, and the rescale and
normalisation folded into one multiply-add per channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from avstream.exporters.export import import_torch


def build_frame_front_end(top: int, left: int, crop_h: int, crop_w: int, scale: float, mean: Sequence[float],
                          std: Sequence[float]) -> Any:
    """A torch module: (B, T, H, W, 3) uint8 BGR -> (B*T, 3, crop_h, crop_w) float, ``(x*scale - mean)/std``."""
    import_torch()  # names the extra when torch is missing
    import torch
    from torch import nn

    class FrameFrontEnd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.top, self.left, self.crop_h, self.crop_w = top, left, crop_h, crop_w
            self.register_buffer("gain", torch.tensor([scale / s for s in std]).view(1, 3, 1, 1))
            self.register_buffer("offset", torch.tensor([-m / s for m, s in zip(mean, std, strict=True)]).view(1, 3, 1, 1))

        def forward(self, video: Any) -> Any:
            b, t = video.shape[0], video.shape[1]
            frames = video[:, :, self.top:self.top + self.crop_h, self.left:self.left + self.crop_w, :]
            frames = frames.flip(-1)  # BGR -> RGB
            x = frames.reshape(b * t, self.crop_h, self.crop_w, 3).permute(0, 3, 1, 2).float()
            return x * self.gain + self.offset

    return FrameFrontEnd()
