"""A Hugging Face ``CLIPModel`` folder as an avstream video tower (see ``tower.py``).

Frame size of the contract: the engine resizes every frame to the contract's H x W before the model
sees it. We ask for frames whose height is the processor's ``shortest_edge`` and whose width is
16:9 of it (224 x 398 for ViT-B/32): a 16:9 camera keeps its aspect ratio, and the processor's own
"resize the shortest side to ``shortest_edge``" is then the identity, so the graph only has to do
the centre crop (a slice) to ``crop_size``. No interpolation is inside the graph, which is why the
exported model matches ``CLIPImageProcessor`` to float rounding on the same frames (the parity
check measures it; ~1e-6 on the normalised embedding). Sources of another aspect ratio are
stretched to 16:9 by the engine's resize before the crop: that part differs from the processor
applied to the original frame, and no tolerance is claimed for it. A processor configured with a
fixed ``size: {height, width}`` gets exactly that frame size in the contract.

The graph: BGR -> RGB, centre crop, x/255, (x - mean)/std, vision tower + projection, L2 norm per
frame, mean over the T frames, L2 norm again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from avstream.engine.errors import ModelError
from avstream.exporters.export import import_torch
from avstream.exporters.pretrained.frame_front_end import build_frame_front_end
from avstream.exporters.pretrained.tower import Tower

WIDE_ASPECT = 16 / 9  # the frame shape the contract asks the engine for


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        from avstream.engine.errors import MissingDependencyError

        raise MissingDependencyError("importing a CLIP folder needs transformers: pip install 'avstream[export]'") from None
    transformers.utils.logging.disable_progress_bar()  # our own progress lines say what is loading
    return transformers


def _image_processor_class(tf: Any) -> Any:
    """The PIL implementation of the CLIP processor: transformers >= 5 names it ``CLIPImageProcessorPil``
    (its ``CLIPImageProcessor`` needs torchvision); before 5 the PIL one is ``CLIPImageProcessor``."""
    return getattr(tf, "CLIPImageProcessorPil", None) or tf.CLIPImageProcessor


def _read_model_type(path: Path) -> str:
    config = path / "config.json"
    if not path.is_dir():
        raise ModelError(f"{path}: not a folder (expected a Hugging Face model folder)")
    if not config.is_file():
        raise ModelError(f"{path}: no config.json (expected a Hugging Face model folder)")
    try:
        data = json.loads(config.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{config}: cannot read it as JSON: {exc}") from None
    kind = data.get("model_type") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) else ""


def frame_geometry(processor: Any) -> tuple[int, int, int, int]:
    """(contract height, contract width, crop height, crop width) for a ``CLIPImageProcessor``."""
    size = dict(processor.size) if processor.do_resize else {}
    crop = dict(processor.crop_size) if processor.do_center_crop else {}
    if "shortest_edge" in size:
        height = int(size["shortest_edge"])
        width = int(round(height * WIDE_ASPECT))
    elif "height" in size and "width" in size:
        height, width = int(size["height"]), int(size["width"])
    else:
        raise ModelError(f"preprocessor size {size or processor.size!r}: expected shortest_edge or height/width")
    crop_h, crop_w = (int(crop["height"]), int(crop["width"])) if crop else (height, height)
    if crop_h > height or crop_w > width:
        raise ModelError(f"crop {crop_h}x{crop_w} is larger than the resized frame {height}x{width}")
    return height, width, crop_h, crop_w


def normalisation(processor: Any) -> tuple[float, list[float], list[float]]:
    """(rescale factor, mean, std) as a ``CLIPImageProcessor`` applies them."""
    scale = float(processor.rescale_factor) if processor.do_rescale else 1.0
    mean = list(processor.image_mean) if processor.do_normalize else [0.0, 0.0, 0.0]
    std = list(processor.image_std) if processor.do_normalize else [1.0, 1.0, 1.0]
    return scale, mean, std


def _build_video_module(model: Any, processor: Any, height: int, width: int, crop_h: int, crop_w: int) -> Any:
    import_torch()  # names the extra when torch is missing
    from torch import nn

    class ClipVideoEncoder(nn.Module):
        """(B, T, H, W, 3) uint8 BGR -> (B, D) L2-normalised mean of the per-frame CLIP image embeddings."""

        def __init__(self) -> None:
            super().__init__()
            self.vision = model.vision_model
            self.projection = model.visual_projection
            # the crop offsets the processor uses: floor of the margin halves
            self.pixels = build_frame_front_end((height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w,
                                                *normalisation(processor))

        def forward(self, video: Any) -> Any:
            b, t = video.shape[0], video.shape[1]
            pooled = self.vision(pixel_values=self.pixels(video)).pooler_output
            emb = nn.functional.normalize(self.projection(pooled), dim=-1)
            mean = emb.reshape(b, t, -1).mean(dim=1)
            return nn.functional.normalize(mean, dim=-1)

    return ClipVideoEncoder().eval()


def _image_features(model: Any, pixel_values: Any) -> Any:
    """``get_image_features`` as a tensor (some transformers versions wrap it in an output object)."""
    out = model.get_image_features(pixel_values=pixel_values)
    return out if hasattr(out, "shape") else out.pooler_output


def _text_features(model: Any, **tokens: Any) -> Any:
    out = model.get_text_features(**tokens)
    return out if hasattr(out, "shape") else out.pooler_output


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def load_clip(path: Path, *, frames: int = 8, fps: float = 2.0) -> Tower:
    """Load a Hugging Face ``CLIPModel`` folder (config, weights, tokenizer, preprocessor config)."""
    path = Path(path)
    kind = _read_model_type(path)
    if kind != "clip":
        raise ModelError(f"{path}: config.json model_type is {kind!r}, not 'clip'")
    if frames <= 0 or fps <= 0:
        raise ModelError(f"frames ({frames}) and fps ({fps:g}) must be positive")
    torch = import_torch()
    tf = _import_transformers()
    try:
        model = tf.CLIPModel.from_pretrained(str(path), attn_implementation="eager").eval()
        processor = _image_processor_class(tf).from_pretrained(str(path))
        tokenizer = tf.AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot load the CLIP model: {str(exc).splitlines()[0]}") from None
    height, width, crop_h, crop_w = frame_geometry(processor)
    module = _build_video_module(model, processor, height, width, crop_h, crop_w)

    def reference(inputs: dict[str, np.ndarray]) -> np.ndarray:
        video = np.asarray(inputs["video"])
        b, t = video.shape[:2]
        rgb = [np.ascontiguousarray(f[..., ::-1]) for f in video.reshape(b * t, *video.shape[2:])]
        pixels = processor(images=rgb, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            emb = _image_features(model, pixels).numpy().astype(np.float64)
        return _normalise(_normalise(emb).reshape(b, t, -1).mean(axis=1)).astype(np.float32)

    max_tokens = int(model.config.text_config.max_position_embeddings)

    def embed_texts(texts: Sequence[str]) -> np.ndarray:
        # truncate at the text tower's positions: a tokenizer config may leave model_max_length unset
        tokens = tokenizer(list(texts), padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
        with torch.no_grad():
            emb = _text_features(model, input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return _normalise(emb.numpy().astype(np.float64)).astype(np.float32)

    inputs = {"video": {"name": "video", "layout": "NTHWC", "dtype": "uint8", "pixel_format": "bgr24",
                        "fps": float(fps), "frames": int(frames), "height": height, "width": width}}
    return Tower(
        name=f"{path.name} (clip image)", modality="video", module=module, reference=reference,
        embed_texts=embed_texts, logit_scale=float(model.logit_scale.exp().item()), inputs=inputs,
        dim=int(model.config.projection_dim), source=str(path),
        extra={"image_size": int(model.config.vision_config.image_size), "crop": [crop_h, crop_w],
               "mean": list(processor.image_mean), "std": list(processor.image_std)},
    )
