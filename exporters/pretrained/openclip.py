"""An open_clip checkpoint as an avstream video tower (see ``tower.py``).

Two layouts are read:

- a Hub-layout folder (what ``open_clip.push_to_hf_hub`` writes and ``laion/*`` repositories hold):
  ``open_clip_config.json`` (``model_cfg`` and ``preprocess_cfg``) beside the weights
  (``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``);
- a bare checkpoint file (``.pt``, ``.pth``, ``.bin``, ``.safetensors``, as open_clip's training writes
  or its ``pretrained`` tags download), with ``arch``: a built-in architecture name (``ViT-B-32``) or
  a JSON file, either an ``open_clip_config.json`` or a bare model config (``embed_dim``,
  ``vision_cfg``, ``text_cfg``).

As for Hugging Face folders (``clip.py``), the contract asks the engine for frames whose height is
the preprocessing size and whose width is 16:9 of it. open_clip's inference transform
(resize the shortest side, centre crop, to tensor, normalise) then resizes nothing, and the graph
only crops (torchvision's offsets) and normalises. So the export matches open_clip's own transform
plus ``encode_image`` to float rounding on frames of the contract's size. ``squash`` models get
frames of exactly their size. ``longest`` (letterbox) models are refused: the pad colour would have
to be baked in and no published CLIP uses it.

SigLIP-style models (a ``logit_bias``, sigmoid scores) are refused: the zero-shot head is a softmax
over ``logit_scale`` times the cosine similarities, which is not what those models were trained for.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from avstream.engine.errors import MissingDependencyError, ModelError
from avstream.exporters.export import import_torch
from avstream.exporters.pretrained.clip import WIDE_ASPECT
from avstream.exporters.pretrained.frame_front_end import build_frame_front_end
from avstream.exporters.pretrained.registry import OPEN_CLIP_CONFIG as HUB_CONFIG
from avstream.exporters.pretrained.registry import OPEN_CLIP_WEIGHT_FILES
from avstream.exporters.pretrained.tower import Tower

# weights a local folder may hold beside its config: the Hub's names, and two that open_clip also reads
LOCAL_WEIGHT_FILES = (*OPEN_CLIP_WEIGHT_FILES, "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.pth")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


def is_open_clip(path: Path) -> bool:
    """A Hub-layout open_clip folder, or a checkpoint file (which needs an architecture)."""
    path = Path(path)
    if path.is_dir():
        return (path / HUB_CONFIG).is_file() and not (path / "config.json").is_file()
    return path.is_file() and path.suffix.lower() in CHECKPOINT_SUFFIXES


def _import_open_clip() -> Any:
    try:
        import open_clip
    except ImportError:
        raise MissingDependencyError("importing an open_clip checkpoint needs open_clip: "
                                     "pip install 'avstream[openclip]'") from None
    return open_clip


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ModelError(f"{path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: cannot read it as JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return data


def _check_weights_in(folder: Path) -> None:
    """open_clip itself would load a folder without weights with random ones, and say nothing."""
    if not any((folder / name).is_file() for name in LOCAL_WEIGHT_FILES):
        raise ModelError(f"{folder}: has {HUB_CONFIG} but no weights ({' or '.join(OPEN_CLIP_WEIGHT_FILES)})")


def _hub_folder_for(checkpoint: Path, config_file: Path, staging: Path) -> Path:
    """A Hub-layout folder made of a bare checkpoint and a config file, so that both layouts load the
    same way (``local-dir:``). The weights are linked, not copied."""
    config = _read_json(config_file)
    if "model_cfg" not in config:  # a bare model config: embed_dim, vision_cfg, text_cfg
        config = {"model_cfg": config}
    model_cfg = config["model_cfg"]
    if not isinstance(model_cfg, dict) or "vision_cfg" not in model_cfg or "embed_dim" not in model_cfg:
        raise ModelError(f"{config_file}: not an open_clip model config (expected embed_dim, vision_cfg and text_cfg)")
    (staging / HUB_CONFIG).write_text(json.dumps(config))
    name = "open_clip_model.safetensors" if checkpoint.suffix.lower() == ".safetensors" else "open_clip_pytorch_model.bin"
    (staging / name).symlink_to(checkpoint.resolve())
    return staging


def _create(open_clip: Any, path: Path, arch: str | None, staging: Path) -> tuple[Any, Any, Any, str]:
    """(model, inference transform, tokenizer, what it was loaded from) for either layout."""
    if path.is_dir():
        if arch is not None:
            raise ModelError(f"--arch is for a bare checkpoint file; {path} is a folder with its own {HUB_CONFIG}")
        _check_weights_in(path)
        name, pretrained = f"local-dir:{path}", None
    elif arch is None:
        raise ModelError(f"{path}: a bare open_clip checkpoint needs --arch NAME (e.g. ViT-B-32) or --arch "
                         "CONFIG.json (its model config)")
    elif arch.lower().endswith(".json"):
        name, pretrained = f"local-dir:{_hub_folder_for(path, Path(arch), staging)}", None
    elif arch in open_clip.list_models():
        name, pretrained = arch, str(path)
    else:
        raise ModelError(f"--arch {arch!r}: not an open_clip architecture (see open_clip.list_models()) "
                         "nor a .json model config")
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))  # open_clip narrates every step on the root logger at INFO
    try:
        model, _, transform = open_clip.create_model_and_transforms(name, pretrained=pretrained, device="cpu")
        tokenizer = open_clip.get_tokenizer(name)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, AssertionError) as exc:
        # a checkpoint that does not fit the architecture surfaces as load_state_dict's RuntimeError
        first = " ".join(line.strip() for line in str(exc).splitlines()[:2]) or type(exc).__name__
        raise ModelError(f"{path}: cannot load the open_clip model{f' as {arch}' if arch else ''}: {first}") from None
    finally:
        root.setLevel(level)
    return model.eval(), transform, tokenizer, name


def _frame_geometry(preprocess: dict[str, Any], path: Path) -> tuple[int, int, int, int]:
    """(contract height, contract width, crop height, crop width) for open_clip's inference transform."""
    size = preprocess.get("size", 224)
    mode = preprocess.get("resize_mode", "shortest")
    h, w = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if mode == "squash":  # resized to exactly (h, w), no crop: the engine's resize does it
        return h, w, h, w
    if mode == "shortest" and h == w:
        return h, int(round(h * WIDE_ASPECT)), h, w
    raise ModelError(f"{path}: preprocessing resize_mode {mode!r} with size {size!r} is not supported "
                     "(supported: shortest with a square size, squash)")


def _build_video_module(model: Any, preprocess: dict[str, Any], height: int, width: int, crop_h: int,
                        crop_w: int) -> Any:
    import_torch()  # names the extra when torch is missing
    from torch import nn

    class OpenClipVideoEncoder(nn.Module):
        """(B, T, H, W, 3) uint8 BGR -> (B, D) L2-normalised mean of the per-frame open_clip image embeddings."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            # ToTensor's /255 and Normalize; torchvision's CenterCrop offsets: the margin halves, rounded half to even
            self.pixels = build_frame_front_end(int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0)),
                                                crop_h, crop_w, 1.0 / 255.0, preprocess["mean"], preprocess["std"])

        def forward(self, video: Any) -> Any:
            b, t = video.shape[0], video.shape[1]
            x = self.pixels(video)
            emb = self.model.encode_image(x, normalize=True)
            mean = emb.reshape(b, t, -1).mean(dim=1)
            return nn.functional.normalize(mean, dim=-1)

    return OpenClipVideoEncoder().eval()


def _channels(values: Any, default: Sequence[float]) -> list[float]:
    """Per-channel mean or std; open_clip allows one number for all three channels."""
    if values is None:
        values = default
    seq = list(values) if isinstance(values, list | tuple) else [float(values)] * 3
    return [float(v) for v in seq]


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def load_open_clip(path: Path, *, arch: str | None = None, frames: int = 8, fps: float = 2.0) -> Tower:
    """Load an open_clip model (a Hub-layout folder, or a checkpoint file with ``arch``) as a video tower."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file or folder")
    if frames <= 0 or fps <= 0:
        raise ModelError(f"frames ({frames}) and fps ({fps:g}) must be positive")
    torch = import_torch()
    open_clip = _import_open_clip()
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="avstream-open-clip-") as staging:
        model, transform, tokenizer, loaded_as = _create(open_clip, path, arch, Path(staging))
    if getattr(model, "logit_bias", None) is not None:
        raise ModelError(f"{path}: a SigLIP-style model (it has a logit_bias and scores with a sigmoid); the zero-shot "
                         "head is a softmax over CLIP's cosine similarities, so it is not supported")
    preprocess = dict(model.visual.preprocess_cfg)
    height, width, crop_h, crop_w = _frame_geometry(preprocess, path)
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD  # open_clip's own defaults

    preprocess["mean"] = _channels(preprocess.get("mean"), OPENAI_DATASET_MEAN)
    preprocess["std"] = _channels(preprocess.get("std"), OPENAI_DATASET_STD)
    module = _build_video_module(model, preprocess, height, width, crop_h, crop_w)

    def reference(inputs: dict[str, np.ndarray]) -> np.ndarray:
        video = np.asarray(inputs["video"])
        b, t = video.shape[:2]
        frames_rgb = video.reshape(b * t, *video.shape[2:])[..., ::-1]
        pixels = torch.stack([transform(Image.fromarray(np.ascontiguousarray(f))) for f in frames_rgb])
        with torch.no_grad():
            emb = model.encode_image(pixels, normalize=True).numpy().astype(np.float64)
        return _normalise(emb.reshape(b, t, -1).mean(axis=1)).astype(np.float32)

    def embed_texts(texts: Sequence[str]) -> np.ndarray:
        with torch.no_grad():
            emb = model.encode_text(tokenizer(list(texts)), normalize=True)
        return _normalise(emb.numpy().astype(np.float64)).astype(np.float32)

    inputs = {"video": {"name": "video", "layout": "NTHWC", "dtype": "uint8", "pixel_format": "bgr24",
                        "fps": float(fps), "frames": int(frames), "height": height, "width": width}}
    dim = int(embed_texts(["a"]).shape[1])
    label = arch if arch and not arch.lower().endswith(".json") else path.name
    return Tower(
        name=f"{label} (open_clip image)", modality="video", module=module, reference=reference,
        embed_texts=embed_texts, logit_scale=float(model.logit_scale.exp().item()), inputs=inputs, dim=dim,
        source=str(path),
        extra={"library": "open_clip", "loaded_as": loaded_as if path.is_dir() else f"{arch} + {path.name}",
               "crop": [crop_h, crop_w], "resize_mode": preprocess.get("resize_mode", "shortest"),
               "mean": preprocess["mean"], "std": preprocess["std"]},
    )
