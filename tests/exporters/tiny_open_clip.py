"""Tiny, randomly initialised open_clip models saved the two ways users have them, for the open_clip
importer's tests. Run by the interpreter that has open_clip (``$AVSTREAM_OPENCLIP_PYTHON``):

    python tests/exporters/tiny_open_clip.py hub OUT_DIR     # Hub layout: open_clip_config.json + safetensors
    python tests/exporters/tiny_open_clip.py squash OUT_DIR  # the same, preprocessed with resize_mode squash
    python tests/exporters/tiny_open_clip.py bare OUT_DIR    # tiny.pt (a state_dict) + tiny.json (model config)
    python tests/exporters/tiny_open_clip.py parity PATH [ARCH]  # load_open_clip's tower vs open_clip, as JSON

Both are built with ``open_clip.create_model`` from a small ViT config; the hub folder carries its
own normalisation (not OpenAI's), so the test sees that the graph uses the folder's preprocessing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

MODEL_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 30, "layers": 2, "width": 32, "head_width": 16, "patch_size": 10},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
HUB_PREPROCESS = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "interpolation": "bicubic",
                  "resize_mode": "shortest"}


def build(seed: int) -> Any:
    import open_clip
    import torch

    torch.manual_seed(seed)
    open_clip.add_model_config(_write_arch(Path(_scratch()) / "tiny-vit.json"))
    model = open_clip.create_model("tiny-vit", device="cpu")
    with torch.no_grad():  # a learned temperature, not the init's, so the test sees it is read
        model.logit_scale.fill_(float(torch.log(torch.tensor(20.0))))
    return model


def _scratch() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="tiny-open-clip-")


def _write_arch(path: Path) -> Path:
    path.write_text(json.dumps(MODEL_CFG))
    return path


def parity(path: Path, arch: str | None, scratch: Path) -> dict[str, object]:
    """The importer's tower against open_clip's own transform + ``encode_image``, in torch and in ONNX."""
    import numpy as np
    import torch

    from avstream.engine.inference.runners import import_onnxruntime
    from avstream.exporters.export import export_onnx
    from avstream.exporters.pretrained.openclip import load_open_clip

    tower = load_open_clip(path, arch=arch, frames=2, fps=2.0)
    video = tower.inputs["video"]
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 2, video["height"], video["width"], 3), dtype=np.uint8)
    want = tower.reference({"video": frames})
    ours = tower.module(torch.from_numpy(frames)).detach().numpy()
    swapped = tower.reference({"video": np.ascontiguousarray(frames[..., ::-1])})
    contract = {"schema": 1, "id": "tiny-open-clip", "version": "1", "task": "embedding", "inputs": tower.inputs,
                "outputs": {"embedding": {"name": "embedding", "meaning": "open_clip image embedding"}}}
    export_onnx(tower.module, None, contract, scratch / "tower.onnx", progress=lambda _: None)
    sess = import_onnxruntime().InferenceSession(str(scratch / "tower.onnx"), providers=["CPUExecutionProvider"])
    (got,) = sess.run(["embedding"], {"video": frames})
    texts = tower.embed_texts(["a dog", "a cat", "a dog"])
    return {"height": video["height"], "width": video["width"], "dim": tower.dim, "logit_scale": tower.logit_scale,
            "mean": tower.extra["mean"], "std": tower.extra["std"],
            "torch_vs_open_clip": float(np.abs(ours - want).max()), "onnx_vs_open_clip": float(np.abs(got - want).max()),
            "norms": np.linalg.norm(got, axis=1).tolist(), "colour_swap_changes": float(np.abs(swapped - want).max()),
            "text_norms": np.linalg.norm(texts, axis=1).tolist(), "same_text_same_vector": float(np.abs(texts[0] - texts[2]).max())}


def main(layout: str, out: Path) -> None:
    import torch

    out.mkdir(parents=True, exist_ok=True)
    if layout in ("hub", "squash"):
        from safetensors.torch import save_file

        model = build(seed=1)
        preprocess = dict(HUB_PREPROCESS, resize_mode="squash") if layout == "squash" else HUB_PREPROCESS
        (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": MODEL_CFG, "preprocess_cfg": preprocess}))
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "open_clip_model.safetensors"))
    elif layout == "bare":
        model = build(seed=2)
        torch.save(model.state_dict(), out / "tiny.pt")
        _write_arch(out / "tiny.json")
    else:
        raise SystemExit(f"unknown layout {layout!r} (hub, squash or bare)")


if __name__ == "__main__":
    if sys.argv[1] == "parity":
        print(json.dumps(parity(Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None, Path(_scratch()))))
    else:
        main(sys.argv[1], Path(sys.argv[2]))
