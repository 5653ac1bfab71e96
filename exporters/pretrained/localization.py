"""Sound-source localization from pretrained towers: CLIP patch tokens against a CLAP audio embedding.

CLIP's image space and CLAP's audio space are different spaces, so the map needs a projection that
takes an audio embedding into the image space: a ``(D_audio, D_video)`` matrix the user supplies
(``.npy``), e.g. fit on their own paired clips, or ``identity`` for an audio tower trained into CLIP's
space. The graph: audio embedding @ projection, L2 norm; per patch, its cosine with that vector,
``heatmap`` ``(B, h, w)`` over the whole frame; ``score`` the largest cosine clipped to [0, 1].
``avstream/localization@v1`` runs it (peak, smoothing, payload).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from avstream.engine.errors import ModelError
from avstream.exporters.export import ExportReport, ParityError, export_onnx, import_torch, random_inputs
from avstream.exporters.pretrained.tower import Tower

REFERENCE_ATOL = 1e-3  # cosines in [-1, 1]: ONNX vs the libraries' own forward passes


def load_projection(spec: str, audio_dim: int, video_dim: int) -> np.ndarray:
    """``identity`` (equal dimensions only) or a ``.npy`` file of shape (audio_dim, video_dim)."""
    if spec == "identity":
        if audio_dim != video_dim:
            raise ModelError(f"--projection identity needs equal embedding sizes (audio {audio_dim}, video {video_dim})")
        return np.eye(audio_dim, dtype=np.float32)
    path = Path(spec)
    try:
        matrix = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot read the projection as a .npy array: {exc}") from None
    if matrix.shape != (audio_dim, video_dim) or not np.issubdtype(matrix.dtype, np.floating):
        raise ModelError(f"{path}: projection of shape {matrix.shape} ({matrix.dtype}); expected a float array "
                         f"({audio_dim}, {video_dim}): audio embedding size x video embedding size")
    if not np.isfinite(matrix).all():
        raise ModelError(f"{path}: the projection has NaN or infinite values")
    return matrix.astype(np.float32)


def build_map(projection: np.ndarray) -> Any:
    import_torch()  # names the extra when torch is missing
    import torch

    class AudioVisualMap(torch.nn.Module):
        """(B, h, w, D) patch embeddings, (B, D_a) audio embedding -> heatmap (B, h, w), score (B,)."""

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("projection", torch.from_numpy(projection.copy()))

        def forward(self, patches: Any, audio: Any) -> Any:
            query = torch.nn.functional.normalize(audio @ self.projection, dim=-1)
            heat = (patches * query[:, None, None, :]).sum(dim=-1)
            return heat, heat.flatten(1).amax(dim=1).clamp(0.0, 1.0)

    return AudioVisualMap().eval()


def build_model(patches: Tower, audio: Tower, projection: np.ndarray) -> Any:
    import_torch()  # names the extra when torch is missing
    import torch
    av_map = build_map(projection)

    class LocalizationModel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.video_tower, self.audio_tower, self.map = patches.module, audio.module, av_map

        def forward(self, video: Any, sound: Any) -> Any:
            return self.map(self.video_tower(video), self.audio_tower(sound))

    return LocalizationModel().eval()


def contract_for(patches: Tower, audio: Tower, model_id: str, version: str, hop: float | None,
                 projection_source: str) -> dict[str, Any]:
    contract: dict[str, Any] = {
        "schema": 1, "id": model_id, "version": version, "task": "localization",
        "description": f"sound-source localization: {patches.name} patches against {audio.name}",
        "inputs": {**patches.inputs, **audio.inputs},
        "outputs": {"heatmap": {"name": "heatmap", "meaning": "per patch of the whole frame, cosine similarity "
                                "with the projected audio embedding"},
                    "score": {"name": "score", "meaning": "the largest cosine of the map, clipped to [0, 1]"}},
        "preprocessing": "inside the graph",
        "localization": {"grid": patches.extra.get("grid"), "projection": projection_source,
                         "encoders": [{"name": t.name, "modality": t.modality, "source": t.source}
                                      for t in (patches, audio)]},
    }
    if hop is not None:
        contract["window"] = {"hop": float(hop)}
    return contract


def export_localization(patches: Tower, audio: Tower, projection: str, out: Path, *, model_id: str = "zeroshot-localization",
                        version: str = "1", hop: float | None = None, opset: int = 17, atol: float = 1e-4,
                        rtol: float = 1e-3, progress: Callable[[str], None] = print) -> ExportReport:
    """Export the two towers and the map; check ONNX against torch and against the libraries."""
    matrix = load_projection(projection, audio.dim, patches.dim)
    contract = contract_for(patches, audio, model_id, version, hop, projection)
    report = export_onnx(build_model(patches, audio, matrix), None, contract, Path(out), opset=opset, atol=atol,
                         rtol=rtol, progress=progress)
    from avstream.engine.inference.contract import contract_from_dict
    from avstream.engine.inference.runners import import_onnxruntime

    torch = import_torch()
    sample = random_inputs(contract_from_dict(contract, "contract"), batch=2, seed=2)
    progress("parity check: ONNX Runtime vs the encoders through their own libraries ...")
    sess = import_onnxruntime().InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(["heatmap", "score"], sample)
    with torch.no_grad():
        want = build_map(matrix)(torch.from_numpy(patches.reference(sample)), torch.from_numpy(audio.reference(sample)))
    worst = max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want, strict=True))
    if worst > REFERENCE_ATOL:
        raise ParityError(f"{out}: the map differs from the encoders run by their own libraries by {worst:.3e} "
                          f"(atol {REFERENCE_ATOL:g})")
    progress(f"  reference outputs max abs {worst:.3e}  ok (atol {REFERENCE_ATOL:g})")
    return report
