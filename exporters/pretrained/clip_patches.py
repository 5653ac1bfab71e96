"""CLIP patch tokens over the whole frame, for sound-source localization (see ``localization.py``).

The image tower of a Hugging Face ``CLIPModel`` folder, run on the whole frame rather than the
processor's centre crop: the contract asks for frames whose height is the processor's shortest edge
and whose width is the nearest multiple of the patch size to 16:9, and the position embeddings are
interpolated to that grid (``interpolate_pos_encoding``, as the library does for other image sizes).
Every patch token goes through the final layer norm and the visual projection, the dense-feature
reading of CLIP (MaskCLIP): each patch lands in the joint image-text space. The module outputs
``(B, h, w, D)``: per patch, the mean over the window's frames of the normalised embeddings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from avstream.engine.errors import ModelError
from avstream.exporters.export import import_torch
from avstream.exporters.pretrained.clip import (
    WIDE_ASPECT,
    _image_processor_class,
    _import_transformers,
    _read_model_type,
    normalisation,
)
from avstream.exporters.pretrained.frame_front_end import build_frame_front_end
from avstream.exporters.pretrained.tower import Tower


def _grid_frame(processor: Any, patch: int) -> tuple[int, int]:
    """(height, width) of the contract's frame: shortest edge x 16:9, both multiples of the patch."""
    size = dict(processor.size)
    if "shortest_edge" in size:
        height = int(size["shortest_edge"])
    elif "height" in size:
        height = int(size["height"])
    else:
        raise ModelError(f"preprocessor size {size!r}: expected shortest_edge or height/width")
    height -= height % patch
    width = max(patch, int(round(height * WIDE_ASPECT / patch)) * patch)
    return height, width


def load_clip_patches(path: Path, *, frames: int = 8, fps: float = 2.0) -> Tower:
    """The patch-token tower of a ``CLIPModel`` folder: (B, T, H, W, 3) uint8 BGR -> (B, h, w, D)."""
    path = Path(path)
    if _read_model_type(path) != "clip":
        raise ModelError(f"{path}: localization needs a CLIP folder (config.json model_type 'clip')")
    torch = import_torch()
    tf = _import_transformers()
    from torch import nn

    try:
        model = tf.CLIPModel.from_pretrained(str(path), attn_implementation="eager").eval()
        processor = _image_processor_class(tf).from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot load the CLIP model: {str(exc).splitlines()[0]}") from None
    patch = int(model.config.vision_config.patch_size)
    height, width = _grid_frame(processor, patch)
    grid = (height // patch, width // patch)

    def patch_embeddings(pixels: Any) -> Any:
        """(N, 3, H, W) normalised pixels -> (N, h*w, D) normalised patch embeddings."""
        hidden = model.vision_model(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state
        tokens = model.visual_projection(model.vision_model.post_layernorm(hidden[:, 1:]))
        return nn.functional.normalize(tokens, dim=-1)

    class ClipPatchEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.pixels = build_frame_front_end(0, 0, height, width, *normalisation(processor))  # no crop

        def forward(self, video: Any) -> Any:
            b, t = video.shape[0], video.shape[1]
            emb = patch_embeddings(self.pixels(video))
            return emb.reshape(b, t, grid[0], grid[1], -1).mean(dim=1)

    def reference(inputs: dict[str, np.ndarray]) -> np.ndarray:
        """The library's own path: its rescale and normalisation (no resize: the frame is the contract's)."""
        video = np.asarray(inputs["video"])
        b, t = video.shape[:2]
        rgb = [np.ascontiguousarray(f[..., ::-1]) for f in video.reshape(b * t, *video.shape[2:])]
        pixels = processor(images=rgb, do_resize=False, do_center_crop=False, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            emb = patch_embeddings(pixels).numpy()
        return np.asarray(emb.reshape(b, t, grid[0], grid[1], -1).mean(axis=1), dtype=np.float32)

    def no_texts(_: Any) -> np.ndarray:
        raise ModelError("the patch tower has no text prompts")

    inputs = {"video": {"name": "video", "layout": "NTHWC", "dtype": "uint8", "pixel_format": "bgr24",
                        "fps": float(fps), "frames": int(frames), "height": height, "width": width}}
    return Tower(name=f"{path.name} (clip patches)", modality="video", module=ClipPatchEncoder().eval(),
                 reference=reference, embed_texts=no_texts, logit_scale=float(model.logit_scale.exp().item()),
                 inputs=inputs, dim=int(model.config.projection_dim), source=str(path),
                 extra={"grid": list(grid), "patch": patch})
