"""Zero-shot classification heads baked into ONNX: prompts are embedded once, at export time.

The exported graph takes the tower's engine input and outputs ``probabilities`` ``(B, L)``: the
softmax over labels of ``logit_scale * cos(embedding, label)``, where a label's vector is the mean of
its normalised prompt embeddings, re-normalised. Labels are in the metadata (``labels``), so the
generic encoder node (``avstream/onnx_encoder@v1``) publishes the probabilities as a payload whose
order is ``labels``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from avstream.engine.errors import ModelError
from avstream.exporters.export import ExportReport, ParityError, export_onnx, import_torch, random_inputs
from avstream.exporters.pretrained.tower import Tower

BUILTIN_PROMPTS = ("violence", "highlight", "sound_events")
PROMPTS_PACKAGE = "avstream.exporters.prompts"
TASK = "zero_shot"
# ONNX vs the original library: logit_scale (up to 100) multiplies cosine differences of ~1e-6
REFERENCE_ATOL = 1e-3


@dataclass(frozen=True)
class PromptSet:
    name: str  # file stem: "violence"
    labels: dict[str, list[str]]  # label -> prompt texts, in file order
    source: str  # where it was read from, for messages and the metadata


def _parse_prompts(text: str, source: str, name: str) -> PromptSet:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ModelError(f"{source}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or not data:
        raise ModelError(f"{source}: expected a mapping of label -> list of prompt texts")
    labels: dict[str, list[str]] = {}
    for label, prompts in data.items():
        if not isinstance(label, str) or not label.strip():
            raise ModelError(f"{source}: label {label!r} is not a non-empty string")
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise ModelError(f"{source}: {label}: expected a non-empty list of prompt texts")
        labels[label] = list(prompts)
    if len(labels) < 2:
        raise ModelError(f"{source}: needs at least two labels (a softmax over one label is always 1)")
    return PromptSet(name=name, labels=labels, source=source)


def load_prompts(spec: str | Path) -> PromptSet:
    """A prompts YAML file, or the name of a built-in set (``violence``, ``highlight``, ``sound_events``)."""
    if isinstance(spec, str) and spec in BUILTIN_PROMPTS:
        text = resources.files(PROMPTS_PACKAGE).joinpath(f"{spec}.yaml").read_text(encoding="utf-8")
        return _parse_prompts(text, f"builtin:{spec}", spec)
    path = Path(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the prompts file: {exc.strerror or exc} "
                         f"(or name a built-in set: {', '.join(BUILTIN_PROMPTS)})") from None
    return _parse_prompts(text, str(path), path.stem)


def label_matrix(tower: Tower, prompts: PromptSet) -> np.ndarray:
    """(L, D): each label's mean normalised prompt embedding, re-normalised."""
    rows = []
    for texts in prompts.labels.values():
        mean = tower.embed_texts(texts).astype(np.float64).mean(axis=0)
        rows.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
    return np.stack(rows).astype(np.float32)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def build_head(tower: Tower, text: np.ndarray) -> Any:
    import_torch()  # names the extra when torch is missing
    import torch

    class ZeroShotHead(torch.nn.Module):
        """Tower embedding (B, D) -> softmax(logit_scale * emb @ text.T) (B, L)."""

        def __init__(self) -> None:
            super().__init__()
            self.tower = tower.module
            self.register_buffer("text", torch.from_numpy(text.T.copy()))  # (D, L)
            self.register_buffer("scale", torch.tensor(float(tower.logit_scale)))

        def forward(self, *inputs: Any) -> Any:
            emb = self.tower(*inputs)
            return torch.softmax(self.scale * (emb @ self.text), dim=-1)

    return ZeroShotHead().eval()


def contract_for(tower: Tower, prompts: PromptSet, model_id: str, version: str) -> dict[str, Any]:
    labels = list(prompts.labels)
    contract: dict[str, Any] = {
        "schema": 1, "id": model_id, "version": version, "task": TASK,
        "description": f"zero-shot {tower.modality} classifier: {tower.name} with the {prompts.name!r} prompts",
        "inputs": tower.inputs,
        "outputs": {"probabilities": {"name": "probabilities",
                                      "meaning": "softmax over labels of logit_scale * cosine similarity; "
                                                 "the order is 'labels'"}},
        "labels": labels,
        "preprocessing": "inside the graph",
        "zero_shot": {"encoder": tower.name, "source": tower.source, "prompts": prompts.source,
                      "logit_scale": float(tower.logit_scale), "prompt_texts": prompts.labels},
    }
    return contract


def reference_parity(tower: Tower, text: np.ndarray, onnx_path: Path, inputs: Mapping[str, np.ndarray],
                     atol: float = REFERENCE_ATOL) -> float:
    """Max |ONNX - original library| of the probabilities on ``inputs``; ParityError above ``atol``."""
    from avstream.engine.inference.runners import import_onnxruntime

    ort = import_onnxruntime()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(["probabilities"], dict(inputs))
    emb = tower.reference(dict(inputs)).astype(np.float64)
    want = _softmax(float(tower.logit_scale) * emb @ text.astype(np.float64).T)
    worst = float(np.abs(got.astype(np.float64) - want).max())
    if worst > atol:
        raise ParityError(f"{onnx_path}: probabilities differ from {tower.name} run by its own library by "
                          f"{worst:.3e} (atol {atol:g})")
    return worst


def export_zero_shot(tower: Tower, prompts: PromptSet, out: Path, *, model_id: str | None = None,
                     version: str = "1", opset: int = 17, atol: float = 1e-4, rtol: float = 1e-3,
                     reference_atol: float = REFERENCE_ATOL,
                     progress: Callable[[str], None] = print) -> ExportReport:
    """Embed the prompts, bake the head on ``tower.module``, export, and check parity twice: ONNX vs the
    torch module (``atol``/``rtol``, in ``export_onnx``) and ONNX vs ``tower.reference`` + the text
    matrix (``reference_atol`` on the probabilities)."""
    progress(f"embedding {sum(len(p) for p in prompts.labels.values())} prompts for {len(prompts.labels)} labels")
    text = label_matrix(tower, prompts)
    head = build_head(tower, text)
    contract = contract_for(tower, prompts, model_id or f"zeroshot-{prompts.name}", version)
    report = export_onnx(head, None, contract, Path(out), opset=opset, atol=atol, rtol=rtol, progress=progress)
    from avstream.engine.inference.contract import contract_from_dict

    sample = random_inputs(contract_from_dict(contract, "contract"), batch=2, seed=2)
    progress(f"parity check: ONNX Runtime vs {tower.name} through its own library ...")
    worst = reference_parity(tower, text, Path(out), sample, reference_atol)
    progress(f"  reference probabilities max abs {worst:.3e}  ok (atol {reference_atol:g})")
    return report
