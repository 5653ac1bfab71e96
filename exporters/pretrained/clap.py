"""CLAP (a Hugging Face ``ClapModel`` folder): the audio tower as an exportable :class:`Tower`.

The exported graph takes raw mono samples at the feature extractor's ``sampling_rate`` (48 kHz for
the LAION checkpoints); the engine's audio decoder resamples every source to the contract's
``sample_rate``, so the graph never resamples. The log-mel front end (``clap_frontend``), the HTSAT
audio encoder, the audio projection and the L2 normalisation are all inside ``module``.

Supported extractor modes: ``truncation="rand_trunc"`` with any ``padding`` (``repeatpad``,
``repeat``, ``pad``) for windows up to ``max_length_s``. Refused: ``truncation="fusion"`` and
checkpoints with ``enable_fusion`` (the extractor then marks a random item of each batch as
"longer" and the model takes a different path for it, which one fixed graph cannot reproduce), and
windows longer than ``max_length_s`` (the extractor takes a random crop of them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from avstream.exporters.export import ExportError
from avstream.exporters.pretrained.clap_frontend import ClapLogMel, frontend_from_extractor
from avstream.exporters.pretrained.tower import Tower


def _embedding(out: Any) -> Any:
    """``get_*_features`` returns a tensor in older transformers, an output with ``pooler_output`` in newer."""
    return out if not hasattr(out, "pooler_output") else out.pooler_output


def _check_folder(path: Path) -> dict[str, Any]:
    """The folder's config.json, after checking that it describes a ClapModel."""
    config_file = path / "config.json"
    if not path.is_dir():
        raise ExportError(f"{path}: no such folder (expected a Hugging Face ClapModel folder)")
    if not config_file.is_file():
        raise ExportError(f"{path}: no config.json (expected a Hugging Face ClapModel folder)")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{config_file}: unreadable config: {exc}") from None
    if not isinstance(config, dict) or config.get("model_type") != "clap":
        kind = config.get("model_type") if isinstance(config, dict) else None
        raise ExportError(f"{config_file}: model_type is {kind!r}, not 'clap' (not a ClapModel checkpoint)")
    return config


def _check_modes(path: Path, extractor: Any, model: Any, seconds: float) -> None:
    if getattr(model.config.audio_config, "enable_fusion", False):
        raise ExportError(f"{path}: the checkpoint has enable_fusion=true; fused CLAP is not supported "
                          "(its extractor picks a random batch item for the fusion branch)")
    if extractor.truncation == "fusion":
        raise ExportError(f"{path}: the feature extractor uses truncation='fusion', which is not supported "
                          "(use a checkpoint whose preprocessor_config.json has truncation='rand_trunc')")
    if extractor.truncation != "rand_trunc":
        raise ExportError(f"{path}: unknown feature extractor truncation {extractor.truncation!r}")
    if extractor.padding not in ("repeatpad", "repeat", "pad"):
        raise ExportError(f"{path}: unknown feature extractor padding {extractor.padding!r}")
    if not 0 < seconds <= extractor.max_length_s:
        raise ExportError(f"{path}: a window of {seconds:g} s is outside (0, max_length_s = "
                          f"{extractor.max_length_s:g} s]; longer audio is randomly cropped by the extractor")


class ClapAudioTower(nn.Module):
    """(B, N) samples → (B, D) L2-normalised audio embeddings: front end, HTSAT, projection."""

    def __init__(self, frontend: ClapLogMel, model: Any) -> None:
        super().__init__()
        self.frontend = frontend
        self.audio_model = model.audio_model
        self.audio_projection = model.audio_projection

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        features = self.frontend(audio).unsqueeze(1)  # (B, 1, frames, mels), the extractor's input_features
        pooled = self.audio_model(input_features=features).pooler_output
        return nn.functional.normalize(self.audio_projection(pooled), dim=-1)


def load_clap(path: Path, *, seconds: float | None = None) -> Tower:
    """The audio tower of the ClapModel folder ``path`` for windows of ``seconds`` (default: the
    extractor's ``max_length_s``, the length the model was trained on)."""
    path = Path(path)
    _check_folder(path)
    try:
        from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel
    except ImportError:
        raise ExportError("importing CLAP needs transformers: pip install 'avstream[export]'") from None
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress lines say what is loading
    try:
        model = ClapModel.from_pretrained(str(path)).eval()
        extractor = ClapFeatureExtractor.from_pretrained(str(path))
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path}: cannot load the CLAP checkpoint: {str(exc).splitlines()[0]}") from None
    if seconds is None:
        seconds = float(extractor.max_length_s)
    _check_modes(path, extractor, model, seconds)
    rate = int(extractor.sampling_rate)

    module = ClapAudioTower(frontend_from_extractor(extractor, seconds), model).eval()

    def reference(inputs: dict[str, np.ndarray]) -> np.ndarray:
        audio = np.asarray(inputs["audio"], dtype=np.float32)
        feats = extractor(list(audio.astype(np.float64)), sampling_rate=rate, return_tensors="pt")
        with torch.no_grad():
            out = _embedding(model.get_audio_features(input_features=feats["input_features"]))
            out = torch.nn.functional.normalize(out, dim=-1)
        return np.asarray(out.cpu().numpy(), dtype=np.float32)

    # RoBERTa positions start after the padding index: two of them are never a token's
    max_tokens = int(model.config.text_config.max_position_embeddings) - 2

    def embed_texts(prompts: Sequence[str]) -> np.ndarray:
        tokens = tokenizer(list(prompts), padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
        with torch.no_grad():
            out = _embedding(model.get_text_features(input_ids=tokens["input_ids"],
                                                     attention_mask=tokens["attention_mask"]))
            out = torch.nn.functional.normalize(out, dim=-1)
        return np.asarray(out.cpu().numpy(), dtype=np.float32)

    dim = int(model.config.projection_dim)
    return Tower(
        name=f"clap-{path.name} (audio)",
        modality="audio",
        module=module,
        reference=reference,
        embed_texts=embed_texts,
        logit_scale=float(model.logit_scale_a.exp().item()),  # the audio-text temperature
        inputs={"audio": {"sample_rate": rate, "seconds": float(seconds)}},
        dim=dim,
        source=str(path),
        extra={"feature_extractor": {"n_fft": extractor.fft_window_size, "hop": extractor.hop_length,
                                     "n_mels": extractor.feature_size, "truncation": extractor.truncation,
                                     "padding": extractor.padding, "max_length_s": extractor.max_length_s}},
    )
