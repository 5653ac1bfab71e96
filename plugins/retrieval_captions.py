"""``avstream/retrieval_captions@v1``: a caption every ``every_s`` seconds per stream, retrieved from a bank.

The model is one graph with a ``caption_scores`` output (B, K): how well each of K caption texts
fits the window, a softmax over the bank whose texts are the metadata's ``labels``. Such a model is
what ``avstream export zero-shot --task captions`` bakes from a CLAP (or CLIP) folder: the bank is
embedded once at export time, so no text tower or tokenizer runs here. The result is the SPEC §4
``caption``: ``text`` (the best caption), ``source`` (the modality the model hears or sees) and
``confidence`` (its share of the softmax).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from avstream.engine.errors import ModelError
from avstream.engine.inference.contract import ModelContract, read_contract, resolve_model
from avstream.engine.items import AVWindow, Item, Result
from avstream.engine.node import CheckContext, NodeContext, Params, WindowRequirement

from .captions import caption_due, model_sources, paced_requirement
from .encoders import ModelNode, ModelParams

SCORES = "caption_scores"


def bank_problems(contract: ModelContract) -> list[str]:
    """Why ``contract`` is not a caption-retrieval model (empty when it is one)."""
    if SCORES not in contract.outputs:
        return [f"{contract.ref} has no {SCORES!r} output (outputs: {', '.join(contract.outputs)}); export one "
                "with  avstream export zero-shot --task captions"]
    if len(contract.labels) < 2 or not all(isinstance(t, str) and t.strip() for t in contract.labels):
        return [f"{contract.ref}: its metadata 'labels' (the caption bank) needs at least two non-empty texts"]
    return []


class RetrievalCaptionParams(ModelParams):
    model: str = Field(description="caption-retrieval model (path or builtin:NAME) with a 'caption_scores' output "
                       "and its caption bank as 'labels'")
    every_s: float = Field(default=2.5, gt=0, le=3600, description="a caption every this many seconds of media "
                           "time per stream; the window node's hop (the window length is the model's)")
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0, description="publish no caption for a window whose "
                                  "best caption has less than this share of the softmax")


class RetrievalCaptionNode(ModelNode[RetrievalCaptionParams]):
    """The best-matching caption of a bank for each stream's window, one every ``every_s`` seconds."""

    type_id: ClassVar[str] = "avstream/retrieval_captions@v1"
    summary: ClassVar[str] = "caption text every N seconds per stream, retrieved from the model's caption bank"
    Params: ClassVar[type[Params]] = RetrievalCaptionParams
    required_outputs: ClassVar[tuple[str, ...]] = (SCORES,)

    def __init__(self, ctx: NodeContext, params: RetrievalCaptionParams):
        super().__init__(ctx, params)
        self.next_t1: dict[str, float] = {}
        self.latest: dict[str, str] = {}
        self.source = "audio"

    @classmethod
    def window_requirement(cls, params: Any, base_dir: Path) -> WindowRequirement | None:
        p = cls.parse_params(params)
        return paced_requirement(read_contract(resolve_model(p.model, base_dir)), p.every_s)

    @classmethod
    def check(cls, params: Any, ctx: CheckContext) -> list[tuple[str, str]]:
        p = cls.parse_params(params)
        problems = super().check(p, ctx)
        if problems:
            return problems
        try:
            contract = read_contract(resolve_model(p.model, ctx.base_dir))
        except ModelError as exc:
            return [("model", str(exc))]
        return [("model", m) for m in bank_problems(contract)]

    def on_start(self) -> None:
        super().on_start()
        problems = bank_problems(self.contract)
        if problems:
            raise ModelError(f"{self.path}: {problems[0]}")
        self.source = model_sources(self.contract)[0]  # the model hears (audio) or sees (video) only
        self.ctx.logger.info("%s: %d captions in the bank, a caption every %g s", self.ctx.node_id,
                             len(self.contract.labels), self.params.every_s)

    def process_batch(self, windows: Sequence[Any]) -> list[Any]:
        due = [w for w in windows if isinstance(w, AVWindow) and caption_due(self.next_t1, w, self.params.every_s)]
        if not due:
            return []
        self._arrived(due)
        bank = self.contract.labels
        out: list[Any] = []
        for w, outputs in zip(due, self.infer(due), strict=True):
            scores = np.asarray(outputs[self.contract.outputs[SCORES].name], dtype=np.float64).reshape(-1)
            best = int(np.argmax(scores))
            if scores[best] < self.params.min_confidence:
                self.ctx.count("below_min_confidence")
                continue
            self.latest[w.stream] = bank[best]
            out.append(Result(kind="caption", stream=w.stream, t0=w.t0, t1=w.t1, capture_wall=w.wall,
                              model=self.contract.ref, fields={"text": bank[best], "source": self.source,
                                                               "confidence": round(float(scores[best]), 4)}))
        return out

    def on_eos(self, stream: str) -> Iterable[Item]:
        self.next_t1.pop(stream, None)
        return ()

    def status(self) -> dict[str, Any]:
        return {"caption": dict(self.latest)}


def retrieval_caption_node_types() -> list[type[RetrievalCaptionNode]]:
    return [RetrievalCaptionNode]
