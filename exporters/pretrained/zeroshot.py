"""Zero-shot heads baked into ONNX: prompts are embedded once, at export time.

For each tower (a CLIP image tower, a CLAP audio tower), a label's vector is the mean of its
normalised prompt embeddings, re-normalised; the tower's label probabilities are the softmax over
labels of ``logit_scale * cos(embedding, label)``. The graph then turns them into a task's outputs,
so the task's own node runs it with nothing but ONNX Runtime (no text tower, no tokenizer):

- ``zero_shot`` (one tower): ``probabilities`` (B, L) in the order of the metadata's ``labels``; the
  generic encoder node publishes them as a payload.
- ``violence`` (a video and/or an audio tower): ``visual_score`` / ``audio_score``, the probability
  of the prompt set's positive labels under each tower (0 for a tower the model lacks), and ``score``,
  the larger of the two: a fight seen or a gunshot heard is enough. ``avstream/violence@v1`` runs it
  (its ``fusion`` param can fuse the two scores otherwise).
- ``highlight`` (one or two towers): ``prompt_score``, the probability of the positive ("interesting
  moment") labels, averaged over the towers, and ``activation``, its log-odds. ``avstream/highlight@v1``
  normalises the activation per stream over its rolling horizon (the stream-relative, unsupervised
  score) and mixes in the absolute prompt score.
- ``captions`` (one tower): ``caption_scores`` (B, K), the softmax over a caption bank; the bank is
  the metadata's ``labels``. ``avstream/retrieval_captions@v1`` publishes the best caption.

Every output is checked twice: ONNX against the torch module, and against the towers run by their
own libraries (``Tower.reference``) followed by the same head arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avstream.engine.errors import ModelError
from avstream.exporters.export import ExportReport, ParityError, export_onnx, import_torch, random_inputs
from avstream.exporters.pretrained.prompts import BUILTIN_PROMPTS, PromptSet, load_prompts
from avstream.exporters.pretrained.tower import Tower

__all__ = ["BUILTIN_PROMPTS", "TASKS", "HeadSpec", "PromptSet", "check_task", "export_zero_shot", "load_prompts", "plan_head"]

TASKS = ("zero_shot", "violence", "highlight", "captions")
# ONNX vs the original library: logit_scale (up to 100) multiplies cosine differences of ~1e-6
REFERENCE_ATOL = 1e-3
EPS = 1e-6  # keeps the highlight log-odds finite


@dataclass
class HeadSpec:
    """What gets baked: the towers in graph-input order (video first) and each one's label matrix."""

    task: str
    prompts: PromptSet
    towers: list[Tower]
    labels: list[list[str]]  # per tower
    texts: list[np.ndarray]  # per tower: (L, D) label vectors
    positive: list[list[int]]  # per tower: indices of the positive labels

    def modality_index(self, modality: str) -> int | None:
        return next((i for i, t in enumerate(self.towers) if t.modality == modality), None)


def label_matrix(tower: Tower, labels: Mapping[str, list[str]]) -> np.ndarray:
    """(L, D): each label's mean normalised prompt embedding, re-normalised."""
    rows = []
    for texts in labels.values():
        mean = tower.embed_texts(texts).astype(np.float64).mean(axis=0)
        rows.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
    return np.stack(rows).astype(np.float32)


def check_task(task: str, modalities: Sequence[str], prompts: PromptSet) -> None:
    """That the task, the encoders' modalities and the prompts fit together (before loading anything)."""
    if task not in TASKS:
        raise ModelError(f"unknown task {task!r} (known: {', '.join(TASKS)})")
    if len(set(modalities)) != len(modalities):
        raise ModelError("give at most one video encoder (CLIP) and one audio encoder (CLAP)")
    if task in ("zero_shot", "captions") and len(modalities) != 1:
        raise ModelError(f"task {task} takes one encoder (got {len(modalities)})")
    if task == "captions" and not prompts.captions:
        raise ModelError(f"{prompts.source}: task captions needs a caption bank ('captions: [...]'); "
                         "try --prompts captions")
    if task in ("violence", "highlight") and not prompts.positive:
        raise ModelError(f"{prompts.source}: task {task} needs 'positive:' labels (which labels count as "
                         f"{task}); the built-in set is --prompts {task}")
    for modality in modalities:
        prompts.for_modality(modality)


def plan_head(task: str, towers: Sequence[Tower], prompts: PromptSet,
              progress: Callable[[str], None] = print) -> HeadSpec:
    """Check that the task, towers and prompts fit together, and embed the prompts."""
    check_task(task, [t.modality for t in towers], prompts)
    order = sorted(towers, key=lambda t: t.modality != "video")  # graph inputs: video, then audio
    spec = HeadSpec(task, prompts, order, [], [], [])
    for tower in order:
        labels = prompts.for_modality(tower.modality)
        progress(f"embedding {sum(len(p) for p in labels.values())} prompts for {len(labels)} labels "
                 f"({tower.modality}: {tower.name})")
        spec.labels.append(list(labels))
        spec.texts.append(label_matrix(tower, labels))
        spec.positive.append([i for i, name in enumerate(labels) if name in prompts.positive])
    return spec


def output_names(spec: HeadSpec) -> list[str]:
    per_tower = [f"{t.modality}_probabilities" for t in spec.towers]
    return {"zero_shot": ["probabilities"], "captions": ["caption_scores"],
            "violence": ["score", "audio_score", "visual_score", *per_tower],
            "highlight": ["activation", "prompt_score", *per_tower]}[spec.task]


def build_head_math(spec: HeadSpec) -> Any:
    """A torch module: per-tower embeddings (B, D_i) -> the task's outputs (see ``output_names``)."""
    import_torch()  # names the extra when torch is missing
    import torch

    class HeadMath(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for i, text in enumerate(spec.texts):
                self.register_buffer(f"text{i}", torch.from_numpy(text.T.copy()))  # (D, L)
                self.register_buffer(f"scale{i}", torch.tensor(float(spec.towers[i].logit_scale)))

        def forward(self, *embeddings: Any) -> Any:
            probs = [torch.softmax(getattr(self, f"scale{i}") * (e @ getattr(self, f"text{i}")), dim=-1)
                     for i, e in enumerate(embeddings)]
            if spec.task in ("zero_shot", "captions"):
                return probs[0]
            positive = [p[:, idx].sum(dim=-1) for p, idx in zip(probs, spec.positive, strict=True)]
            if spec.task == "violence":
                zero = torch.zeros_like(positive[0])
                v, a = spec.modality_index("video"), spec.modality_index("audio")
                visual = positive[v] if v is not None else zero
                audio = positive[a] if a is not None else zero
                return (torch.maximum(visual, audio), audio, visual, *probs)
            p = torch.stack(positive, dim=0).mean(dim=0).clamp(EPS, 1.0 - EPS)
            return (torch.log(p) - torch.log1p(-p), p, *probs)

    return HeadMath().eval()


def build_model(spec: HeadSpec) -> Any:
    import_torch()  # names the extra when torch is missing
    import torch
    math = build_head_math(spec)
    towers = torch.nn.ModuleList([t.module for t in spec.towers])

    class ZeroShotModel(torch.nn.Module):
        """Engine inputs (video, then audio) -> towers -> the baked head."""

        def __init__(self) -> None:
            super().__init__()
            self.towers = towers
            self.head = math

        def forward(self, *inputs: Any) -> Any:
            return self.head(*(tower(x) for tower, x in zip(self.towers, inputs, strict=True)))

    return ZeroShotModel().eval()


OUTPUT_MEANINGS = {
    "probabilities": "softmax over labels of logit_scale * cosine similarity; the order is 'labels'",
    "caption_scores": "softmax over the caption bank ('labels') of logit_scale * cosine similarity",
    "score": "violence score: the larger of visual_score and audio_score",
    "audio_score": "probability of the positive labels under the audio encoder (0: no audio encoder)",
    "visual_score": "probability of the positive labels under the video encoder (0: no video encoder)",
    "activation": "log-odds of prompt_score (normalised per stream by the highlight node)",
    "prompt_score": "probability of the positive ('interesting') labels, mean over the encoders",
}


def contract_for(spec: HeadSpec, model_id: str, version: str, hop: float | None = None) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for tower in spec.towers:
        inputs.update(tower.inputs)
    outputs: dict[str, Any] = {}
    for name in output_names(spec):
        if name.endswith("_probabilities") and name != "probabilities":
            i = [f"{t.modality}_probabilities" for t in spec.towers].index(name)
            outputs[name] = {"name": name, "meaning": f"softmax over the {spec.towers[i].modality} labels",
                             "labels": spec.labels[i]}
        else:
            outputs[name] = {"name": name, "meaning": OUTPUT_MEANINGS[name]}
    names = " + ".join(t.name for t in spec.towers)
    contract: dict[str, Any] = {
        "schema": 1, "id": model_id, "version": version, "task": spec.task,
        "description": f"zero-shot {spec.task}: {names} with the {spec.prompts.name!r} prompts",
        "inputs": inputs, "outputs": outputs, "labels": spec.labels[0],
        "preprocessing": "inside the graph",
        "zero_shot": {"encoders": [{"name": t.name, "modality": t.modality, "source": t.source,
                                    "logit_scale": float(t.logit_scale), "labels": labels}
                                   for t, labels in zip(spec.towers, spec.labels, strict=True)],
                      "prompts": spec.prompts.source, "positive": list(spec.prompts.positive),
                      "prompt_texts": spec.prompts.sections},
    }
    if hop is not None:
        contract["window"] = {"hop": float(hop)}
    return contract


def reference_parity(spec: HeadSpec, onnx_path: Path, inputs: Mapping[str, np.ndarray],
                     atol: float = REFERENCE_ATOL) -> float:
    """Max |ONNX - (original libraries + head)| over every output; ParityError above ``atol``."""
    from avstream.engine.inference.runners import import_onnxruntime

    torch = import_torch()
    ort = import_onnxruntime()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = output_names(spec)
    got = sess.run(names, dict(inputs))
    embeddings = [torch.from_numpy(t.reference(dict(inputs)).astype(np.float32)) for t in spec.towers]
    with torch.no_grad():
        want = build_head_math(spec)(*embeddings)
    want = [want] if not isinstance(want, tuple) else list(want)
    worst = 0.0
    for name, g, w in zip(names, got, want, strict=True):
        g64, w64 = np.asarray(g, np.float64), w.numpy().astype(np.float64)
        if name == "activation":  # log-odds blow rounding up near p = 0 or 1: compare the probabilities
            g64, w64 = 1.0 / (1.0 + np.exp(-g64)), 1.0 / (1.0 + np.exp(-w64))
        diff = float(np.abs(g64 - w64).max())
        worst = max(worst, diff)
        if diff > atol:
            raise ParityError(f"{onnx_path}: {name} differs from the encoders run by their own libraries by "
                              f"{diff:.3e} (atol {atol:g})")
    return worst


def default_model_id(task: str, prompts_name: str) -> str:
    """zeroshot-violence (task violence, its own prompts), zeroshot-sound_events (zero_shot), ..."""
    return f"zeroshot-{prompts_name}" if task in ("zero_shot", prompts_name) else f"zeroshot-{task}-{prompts_name}"


def export_zero_shot(towers: Tower | Sequence[Tower], prompts: PromptSet, out: Path, *, task: str = "zero_shot",
                     model_id: str | None = None, version: str = "1", hop: float | None = None,
                     opset: int = 17, atol: float = 1e-4, rtol: float = 1e-3,
                     reference_atol: float = REFERENCE_ATOL,
                     progress: Callable[[str], None] = print) -> ExportReport:
    """Embed the prompts, bake the head on the towers, export, and check parity twice: ONNX vs the
    torch module (``atol``/``rtol``, in ``export_onnx``) and ONNX vs ``Tower.reference`` + the head
    (``reference_atol``)."""
    spec = plan_head(task, [towers] if isinstance(towers, Tower) else list(towers), prompts, progress)
    contract = contract_for(spec, model_id or default_model_id(task, prompts.name), version, hop)
    report = export_onnx(build_model(spec), None, contract, Path(out), opset=opset, atol=atol, rtol=rtol,
                         progress=progress)
    from avstream.engine.inference.contract import contract_from_dict

    sample = random_inputs(contract_from_dict(contract, "contract"), batch=2, seed=2)
    progress("parity check: ONNX Runtime vs the encoders through their own libraries ...")
    worst = reference_parity(spec, Path(out), sample, reference_atol)
    progress(f"  reference outputs max abs {worst:.3e}  ok (atol {reference_atol:g})")
    return report
