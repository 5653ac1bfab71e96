"""What an importer hands the exporter: one tower of a pretrained contrastive model, ready to export.

An importer (``clip.py``, ``clap.py``) reads a checkpoint from disk and returns a :class:`Tower`:

- ``module``: a ``torch.nn.Module`` whose ``forward`` takes exactly what the engine delivers
  (SPEC §5: video ``(B, T, H, W, 3)`` uint8 frames in ``pixel_format`` at the contract's size, or
  audio ``(B, N)`` float32 mono samples in [-1, 1] at the contract's rate) and returns L2-normalised
  embeddings ``(B, D)`` in the model's joint space. Every preprocessing step the original model
  expects (resize, crop, normalise; resampling, the log-mel front end) is inside ``forward``, so
  the exported graph needs nothing but ONNX Runtime.
- ``reference``: the same computation done the way the original library does it (its own
  processor or transforms, then its own model), for the parity check of the export.
- ``embed_texts``: the text tower at export time: prompts -> L2-normalised ``(N, D)`` embeddings.
  Used only while exporting (zero-shot heads, caption banks); never at run time.
- ``logit_scale``: the model's learned temperature (already exponentiated).
- ``inputs``: the ``inputs`` part of the avstream metadata (SPEC §5) for ``module``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Tower:
    name: str  # e.g. "clip-vit-b-32 (image)": for messages and the model card
    modality: str  # "video" or "audio"
    module: Any  # torch.nn.Module, see the module docstring
    reference: Callable[[dict[str, np.ndarray]], np.ndarray]  # engine inputs -> (B, D) from the original library
    embed_texts: Callable[[Sequence[str]], np.ndarray]  # prompts -> (N, D), L2-normalised
    logit_scale: float
    inputs: dict[str, Any]  # avstream metadata "inputs" (SPEC §5)
    dim: int  # D, the joint embedding size
    source: str = ""  # where the weights came from (folder, checkpoint file), for the metadata
    extra: dict[str, Any] = field(default_factory=dict)  # importer-specific facts for the model card
