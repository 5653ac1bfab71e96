"""``avstream/captions@v1``: a caption every ``every_s`` seconds per stream, over a rolling AV window.

The model is two ONNX graphs: an encoder (a self-describing model with a ``memory`` output, run like
any encoder on AV windows) and a decoder step (tokens so far + memory → next-token logits, with its
vocabulary in its metadata). Greedy or beam search runs in numpy (``avstream.plugins.caption_decoding``).

``ModelCaptioner`` is the runtime part without the node (the evaluation uses it too); the node adds
model lookup, validation, per-stream pacing and results ``caption`` with ``text``, ``source``
(``av``, ``audio`` or ``video``: the modalities the caption was made from) and ``confidence`` (the mean
probability of the chosen tokens).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from avstream.engine.errors import ModelError
from avstream.engine.inference.contract import (
    BUILTIN_PREFIX,
    DecoderSpec,
    ModelContract,
    read_contract,
    read_decoder_spec,
    resolve_model,
)
from avstream.engine.inference.runners import Runner, create_session
from avstream.engine.items import AVWindow, Item, Result
from avstream.engine.node import CheckContext, NodeContext, Params, WindowRequirement
from avstream.plugins.caption_decoding import search

from .encoders import ModelNode, ModelParams

SOURCES = ("av", "audio", "video")


def resolve_encoder(ref: str, base_dir: Path) -> Path:
    """``builtin:NAME`` is ``NAME.onnx`` or, for a two-graph model, ``NAME_encoder.onnx``; else a path."""
    try:
        return resolve_model(ref, base_dir)
    except ModelError:
        if ref.startswith(BUILTIN_PREFIX) and not ref.endswith("_encoder"):
            try:
                return resolve_model(f"{ref}_encoder", base_dir)
            except ModelError:
                pass
        raise


def resolve_decoder(encoder: Path, contract: ModelContract, ref: str, base_dir: Path) -> Path:
    """The decoder step: ``ref`` when given, else the file the encoder's metadata names (next to the
    encoder), else ``*_decoder_step.onnx`` next to a ``*_encoder.onnx``."""
    if ref:
        return resolve_model(ref, base_dir)
    named = contract.raw.get("decoder")
    if isinstance(named, str) and named:
        path = Path(named) if Path(named).is_absolute() else encoder.parent / named
        if not path.is_file():
            raise ModelError(f"{encoder}: its metadata names the decoder {named!r}, not found at {path}")
        return path
    if encoder.stem.endswith("_encoder"):
        path = encoder.with_name(encoder.stem[: -len("_encoder")] + "_decoder_step.onnx")
        if path.is_file():
            return path
    raise ModelError(f"{encoder}: no decoder step found (its metadata names none and no "
                     f"{encoder.stem.removesuffix('_encoder')}_decoder_step.onnx lies next to it): set 'decoder'")


def base_ref(ref: str) -> str:
    """``id@version`` without a variant suffix (``captions@1+int8`` -> ``captions@1``): a lower-precision
    variant of an encoder makes the memory its decoder step was trained on."""
    return ref.split("+", 1)[0]


def model_sources(contract: ModelContract) -> tuple[str, ...]:
    """The sources a caption model was trained for (metadata ``sources``; default: what its inputs allow)."""
    declared = contract.raw.get("sources")
    if isinstance(declared, list) and declared and all(s in SOURCES for s in declared):
        return tuple(declared)
    if contract.video and contract.audio:
        return ("av",)
    return ("video",) if contract.video else ("audio",)


def window_source(window: AVWindow, contract: ModelContract, wanted: str) -> str:
    """The source a window is captioned from: ``wanted`` unless ``auto``, then what the window carries."""
    if wanted != "auto":
        return wanted
    has_v = window.frames is not None and len(window.frames) > 0 and contract.video is not None
    has_a = window.audio is not None and len(window.audio) > 0 and contract.audio is not None
    return "av" if has_v and has_a else ("video" if has_v else "audio")


def paced_requirement(contract: ModelContract, every_s: float) -> WindowRequirement:
    """The model's window with the caption interval as its hop."""
    req = contract.window_requirement()
    return WindowRequirement(req.seconds, every_s, req.fps, req.frames, req.height, req.width, req.sample_rate,
                             req.audio_samples, req.source)


def caption_due(next_t1: dict[str, float], w: AVWindow, every_s: float) -> bool:
    """Pace per stream: a window is captioned when its end is ``every_s`` past the last caption's
    (``next_t1``: stream -> the end time the next caption waits for, updated here)."""
    nxt = next_t1.get(w.stream)
    if nxt is not None and w.t1 < nxt - every_s - 1e-6:
        nxt = None  # media time went back (the stream restarted): start over
    if nxt is not None and w.t1 < nxt - 1e-6:
        return False
    next_t1[w.stream] = w.t1 + every_s
    return True


@dataclass
class Caption:
    text: str
    confidence: float
    source: str


class ModelCaptioner:
    """Encoder runner + decoder step session + search settings: windows → captions."""

    def __init__(self, runner: Runner, decoder: Any, spec: DecoderSpec, *, beam: int = 3, max_tokens: int = 20,
                 min_tokens: int = 3, source: str = "auto", length_penalty: float = 1.0, name: str = "captions"):
        self.runner, self.decoder, self.spec = runner, decoder, spec
        self.beam, self.source, self.length_penalty, self.name = beam, source, length_penalty, name
        self.max_tokens = min(max_tokens, spec.length - 1)
        self.min_tokens = min(min_tokens, self.max_tokens)
        c = runner.contract
        if "memory" not in c.outputs:
            raise ModelError(f"{c.source}: {c.ref} has no 'memory' output: not a caption encoder")
        self.memory_name = c.outputs["memory"].name
        self.sources = model_sources(c)

    @classmethod
    def load(cls, model: str, *, decoder: str = "", base_dir: Path | None = None,
             providers: Sequence[str] = ("cpu",), threads: int = 0, node_id: str = "", **settings: Any) -> ModelCaptioner:
        base = base_dir or Path.cwd()
        enc = resolve_encoder(model, base)
        runner = Runner.open(enc, providers=providers, threads=threads, node_id=node_id)
        dec = resolve_decoder(enc, runner.contract, decoder, base)
        spec = read_decoder_spec(dec)
        session = create_session(dec, providers=providers, threads=threads, node_id=node_id)
        return cls(runner, session, spec, **settings)

    @property
    def contract(self) -> ModelContract:
        return self.runner.contract

    @property
    def requirement(self) -> WindowRequirement:
        return self.contract.window_requirement()

    def memories(self, windows: Sequence[AVWindow], sources: Sequence[str]) -> np.ndarray:
        """Encoder memory (B, M, D) of the windows; a modality outside a window's source is blanked
        (black frames / silence), as the model was trained for audio-only captions."""
        c, r = self.contract, self.runner
        video = audio = None
        if c.video is not None:
            videos = [r.prepare_video(w.frames if s in ("av", "video") else None, w.stream)
                      for w, s in zip(windows, sources, strict=True)]
            video = np.stack([v for v in videos if v is not None])
        if c.audio is not None:
            audios = [r.prepare_audio(w.audio if s in ("av", "audio") else None, w.sample_rate, w.stream)
                      for w, s in zip(windows, sources, strict=True)]
            audio = np.stack([a for a in audios if a is not None])
        out = r.run(video, audio)
        return np.asarray(out[self.memory_name], dtype=np.float32)

    def decode(self, memory: np.ndarray) -> tuple[str, float]:
        """Caption text and confidence from one window's memory (M, D)."""
        spec = self.spec
        cache: dict[int, np.ndarray] = {}

        def step(tokens: np.ndarray) -> np.ndarray:
            n = len(tokens)
            if n not in cache:
                cache[n] = np.ascontiguousarray(np.repeat(memory[None], n, axis=0))
            return np.asarray(self.decoder.run([spec.logits_name], {spec.tokens_name: tokens,
                                                                    spec.memory_name: cache[n]})[0])

        hyp = search(step, spec.vocab, spec.length, self.beam, self.max_tokens, self.min_tokens, self.length_penalty)
        return spec.vocab.decode(hyp.ids), hyp.confidence

    def caption_windows(self, windows: Sequence[AVWindow], sources: Sequence[str] | None = None) -> list[Caption]:
        """One caption per window, each from the source given (default: ``window_source``)."""
        if not windows:
            return []
        srcs = list(sources) if sources is not None else [window_source(w, self.contract, self.source) for w in windows]
        mem = self.memories(windows, srcs)
        out = []
        for m, s in zip(mem, srcs, strict=True):
            text, conf = self.decode(m)
            out.append(Caption(text, conf, s))
        return out

    def caption(self, windows: Sequence[AVWindow]) -> list[str]:
        """Texts only (the evaluation's captioner interface)."""
        return [c.text for c in self.caption_windows(windows)]


# --------------------------------------------------------------------------------------------------
# the node
class CaptionParams(ModelParams):
    model: str = Field(default="builtin:captions", description="caption encoder with a 'memory' output: a path "
                       "(relative to the pipeline file) or builtin:NAME (NAME.onnx or NAME_encoder.onnx)")
    decoder: str = Field(default="", description="decoder step model (path or builtin:NAME); default: the one "
                         "the encoder's metadata names, next to the encoder")
    every_s: float = Field(default=2.5, gt=0, le=3600, description="a caption every this many seconds of media "
                           "time per stream; the window node's hop (the window length is the model's)")
    beam: int = Field(default=3, ge=1, le=16, description="beam width (1: greedy decoding)")
    max_tokens: int = Field(default=20, ge=1, le=64, description="most words per caption")
    min_tokens: int = Field(default=3, ge=1, le=64, description="fewest words per caption")
    source: Literal["auto", "av", "audio", "video"] = Field(
        default="auto", description="modalities to caption from: auto (what the stream carries), av, audio "
        "(frames blanked) or video (audio silenced); the model's metadata says which it supports")


def _with_model(p: CaptionParams, path: Path) -> CaptionParams:
    return p.model_copy(update={"model": str(path)})


class CaptionNode(ModelNode[CaptionParams]):
    """Captions of each stream's rolling window, one every ``every_s`` seconds."""

    type_id: ClassVar[str] = "avstream/captions@v1"
    summary: ClassVar[str] = "caption text every N seconds per stream (encoder + decoder step, beam search)"
    Params: ClassVar[type[Params]] = CaptionParams
    required_outputs: ClassVar[tuple[str, ...]] = ("memory",)

    def __init__(self, ctx: NodeContext, params: CaptionParams):
        super().__init__(ctx, params)
        self.captioner: ModelCaptioner | None = None
        self.next_t1: dict[str, float] = {}
        self.latest: dict[str, str] = {}
        self.warned: set[str] = set()

    @classmethod
    def _parsed(cls, params: Any) -> CaptionParams:
        return params if isinstance(params, CaptionParams) else CaptionParams.model_validate(params)

    @classmethod
    def window_requirement(cls, params: Any, base_dir: Path) -> WindowRequirement | None:
        p = cls._parsed(params)
        return paced_requirement(read_contract(resolve_encoder(p.model, base_dir)), p.every_s)

    @classmethod
    def check(cls, params: Any, ctx: CheckContext) -> list[tuple[str, str]]:
        p = cls._parsed(params)
        try:
            enc = resolve_encoder(p.model, ctx.base_dir)
            contract = read_contract(enc)
        except ModelError as exc:
            return [("model", str(exc))]
        problems = super().check(_with_model(p, enc), ctx)
        if problems:
            return problems
        try:
            spec = read_decoder_spec(resolve_decoder(enc, contract, p.decoder, ctx.base_dir))
        except ModelError as exc:
            return [("decoder", str(exc))]
        if spec.encoder and base_ref(spec.encoder) != base_ref(contract.ref):
            problems.append(("decoder", f"{spec.source} decodes the memory of {spec.encoder}, the encoder is {contract.ref}"))
        if p.max_tokens > spec.length - 1:
            problems.append(("max_tokens", f"{spec.ref} takes at most {spec.length - 1} words (got {p.max_tokens})"))
        if p.min_tokens > p.max_tokens:
            problems.append(("min_tokens", f"{p.min_tokens} is more than max_tokens {p.max_tokens}"))
        sources = model_sources(contract)
        if p.source != "auto" and p.source not in sources:
            problems.append(("source", f"{contract.ref} captions from {', '.join(sources)}, not {p.source}"))
        for got in ctx.downstream:
            if got.hop and got.hop + 1e-9 < p.every_s and (p.every_s / got.hop) % 1 > 1e-6:
                problems.append(("every_s", f"{p.every_s:g} s is not a multiple of the window hop {got.hop:g} s"))
        return problems

    def on_start(self) -> None:
        p = self.params
        enc = resolve_encoder(p.model, self.ctx.base_dir)
        # the base class opens params.model: give it the resolved encoder file
        setattr(self, "params", _with_model(p, enc))  # noqa: B010
        super().on_start()
        assert self.runner is not None
        dec = resolve_decoder(enc, self.runner.contract, p.decoder, self.ctx.base_dir)
        spec = read_decoder_spec(dec)
        plan = self.thread_plan()
        session = create_session(dec, providers=p.providers, threads=plan.intra, spin=plan.spin,
                                 node_id=self.ctx.node_id)
        self.captioner = ModelCaptioner(self.runner, session, spec, beam=p.beam, max_tokens=p.max_tokens,
                                        min_tokens=p.min_tokens, source=p.source)
        self.ctx.logger.info("%s: decoder %s (%d words), beam %d, a caption every %g s", self.ctx.node_id,
                             spec.ref, len(spec.vocab) - 4, p.beam, p.every_s)

    def on_stop(self) -> None:
        self.captioner = None
        super().on_stop()

    def _due(self, w: AVWindow) -> bool:
        return caption_due(self.next_t1, w, self.params.every_s)

    def process_batch(self, windows: Sequence[AVWindow]) -> list[Result]:
        if self.captioner is None:
            self.on_start()
        cap = self.captioner
        assert cap is not None
        due, sources = [], []
        for w in windows:
            if not isinstance(w, AVWindow) or not self._due(w):
                continue
            s = window_source(w, cap.contract, self.params.source)
            if s not in cap.sources:
                self.ctx.count("skipped")
                if w.stream not in self.warned:
                    self.warned.add(w.stream)
                    self.ctx.logger.warning("%s: stream %s: %s captions from %s, the stream gives %s only; "
                                            "no captions", self.ctx.node_id, w.stream, cap.contract.ref,
                                            ", ".join(cap.sources), s)
                continue
            due.append(w)
            sources.append(s)
        caps = cap.caption_windows(due, sources)
        self.ctx.count("windows", len(due))
        out = []
        for w, c in zip(due, caps, strict=True):
            self.latest[w.stream] = c.text
            out.append(Result(kind="caption", stream=w.stream, t0=w.t0, t1=w.t1, capture_wall=w.wall,
                              model=cap.contract.ref, fields={"text": c.text, "source": c.source,
                                                              "confidence": round(c.confidence, 4)}))
        return out

    def process(self, item: Item) -> Iterable[Result]:
        if not isinstance(item, AVWindow):
            return ()
        return self.process_batch([item])

    def on_eos(self, stream: str) -> Iterable[Item]:
        self.next_t1.pop(stream, None)
        return ()

    def status(self) -> dict[str, Any]:
        return {"caption": dict(self.latest)}


def caption_node_types() -> list[type[CaptionNode]]:
    return [CaptionNode]
