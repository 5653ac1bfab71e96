"""The caption decoder step's metadata: vocabulary, special tokens, token length, memory width.

``DecoderSpec`` is the pydantic schema of a model whose ``task`` is ``caption_decoder_step``;
``avstream.engine.inference.contract`` reads a model file and picks this schema or the window-model
one by its task.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from avstream.engine.errors import ModelError
from avstream.engine.inference.metadata import (
    ContractError,
    MetadataModel,
    Text,
    TopLevel,
    problem,
    problems_of,
    raise_problems,
)
from avstream.engine.inference.onnx_header import OnnxHeader


def tokenize(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
DECODER_TASK = "caption_decoder_step"

StepFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Vocabulary:
    """Words by id; ids 0-3 are PAD, BOS, EOS and UNK (``SPECIALS``)."""

    words: tuple[str, ...]
    pad: int = 0
    bos: int = 1
    eos: int = 2
    unk: int = 3
    index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(set(self.words)) != len(self.words):
            raise ValueError("vocabulary words must be distinct")
        self.index.update({w: i for i, w in enumerate(self.words)})

    @classmethod
    def build(cls, texts: Iterable[str]) -> Vocabulary:
        """Specials, then the words of ``texts`` by falling frequency (ties alphabetical): deterministic."""
        counts = Counter(w for t in texts for w in tokenize(t))
        return cls((*SPECIALS, *sorted(counts, key=lambda w: (-counts[w], w))))

    def __len__(self) -> int:
        return len(self.words)

    @property
    def specials(self) -> tuple[int, ...]:
        return (self.pad, self.bos, self.eos, self.unk)

    def encode(self, text: str) -> list[int]:
        """Word ids of ``text`` (lower-cased, punctuation dropped); unknown words are UNK."""
        return [self.index.get(w, self.unk) for w in tokenize(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of word ids, stopping at EOS and skipping the other special tokens."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos:
                break
            if i not in self.specials and 0 <= i < len(self.words):
                out.append(self.words[i])
        return " ".join(out)

    def to_json(self) -> dict[str, Any]:
        return {"words": list(self.words), "pad": self.pad, "bos": self.bos, "eos": self.eos, "unk": self.unk}

    @classmethod
    def from_json(cls, data: Any, source: str = "<vocabulary>") -> Vocabulary:
        """The vocabulary of a metadata or checkpoint object; ModelError lists every problem."""
        try:
            return VocabularySpec.model_validate(data).vocabulary()
        except ValidationError as exc:
            raise ContractError(source, [(f"vocabulary.{k}" if k else "vocabulary", m) for k, m in
                                         problems_of(exc, VocabularySpec)], what="") from None


WordId = Annotated[int, Field(ge=0)]
# sane bounds, so a corrupt or hostile model file cannot make the engine allocate absurd buffers
MAX_TOKENS = 4096
MAX_MEMORY_DIM = 65536
MAX_MEMORY_TOKENS = 1 << 20
MAX_WORDS = 1 << 20


class VocabularySpec(MetadataModel):
    """``vocabulary``: the words by id and the ids of the four special tokens."""

    words: list[str]
    pad: WordId = 0
    bos: WordId = 1
    eos: WordId = 2
    unk: WordId = 3

    @field_validator("words", mode="before")
    @classmethod
    def _word_list(cls, value: Any) -> Any:
        if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
            raise PydanticCustomError("contract", "must be a list of strings (got {got})", {"got": type(value).__name__})
        if len(value) > MAX_WORDS:
            raise PydanticCustomError("contract", "at most {most} words (got {got})", {"most": MAX_WORDS, "got": len(value)})
        return value

    @model_validator(mode="after")
    def _ids_fit(self) -> VocabularySpec:
        n, found = len(self.words), []
        ids = {"pad": self.pad, "bos": self.bos, "eos": self.eos, "unk": self.unk}
        found += [problem((k,), f"must be a word id in [0, {n}) (got {v})", v) for k, v in ids.items() if v >= n]
        if len(set(ids.values())) != len(ids):
            found.append(problem((), "pad, bos, eos and unk must be distinct ids", ids))
        twice = sorted(w for w, count in Counter(self.words).items() if count > 1)  # linear: big vocabularies
        if twice:
            found.append(problem(("words",), f"words must be distinct (repeated: {', '.join(twice[:5])})", twice))
        raise_problems("vocabulary", found)
        return self

    def vocabulary(self) -> Vocabulary:
        return Vocabulary(tuple(self.words), self.pad, self.bos, self.eos, self.unk)


# --------------------------------------------------------------------------------------------------
# decoder step metadata
class TokensInput(MetadataModel):
    """The token ids fed to each step: BOS, the words so far, then PAD up to ``length``."""

    name: Text = "tokens"
    dtype: Literal["int64"] = "int64"
    length: Annotated[int, Field(ge=2, le=MAX_TOKENS)]
    meaning: str = ""


class MemoryInput(MetadataModel):
    """The encoder's memory: (B, tokens, dim) float32."""

    name: Text = "memory"
    dtype: Literal["float32"] = "float32"
    dim: Annotated[int, Field(gt=0, le=MAX_MEMORY_DIM)]
    tokens: Annotated[int, Field(gt=0, le=MAX_MEMORY_TOKENS)] | None = None  # memory length, when it is fixed
    meaning: str = ""


class DecoderInputs(MetadataModel):
    tokens: TokensInput
    memory: MemoryInput


class LogitsOutput(MetadataModel):
    name: Text = "logits"
    meaning: str = ""


class DecoderOutputs(MetadataModel):
    logits: LogitsOutput


class DecoderSpec(TopLevel):
    """The ``avstream`` metadata of a decoder step model (``task: caption_decoder_step``)."""

    task: Literal["caption_decoder_step"]
    encoder: str = ""  # id@version of the encoder whose memory it reads
    inputs: DecoderInputs
    outputs: DecoderOutputs
    vocabulary: VocabularySpec
    max_tokens: WordId = 20  # default: as many words as the token length allows, at most 20
    min_tokens: WordId = 1
    _source: str = PrivateAttr("")
    _vocab: Vocabulary | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _default_max_tokens(cls, data: Any) -> Any:
        inputs = data.get("inputs") if isinstance(data, dict) else None
        tokens = inputs.get("tokens") if isinstance(inputs, dict) else None
        length = tokens.get("length") if isinstance(tokens, dict) else None
        if isinstance(length, int) and not isinstance(length, bool) and length >= 2 and "max_tokens" not in data:
            return {**data, "max_tokens": min(20, length - 1)}
        return data

    @model_validator(mode="after")
    def _limits_fit(self) -> DecoderSpec:
        length = self.inputs.tokens.length
        if not 1 <= self.max_tokens <= length - 1 or self.min_tokens > self.max_tokens:
            raise_problems("decoder", [problem(("max_tokens",), f"{self.max_tokens} (min {self.min_tokens}) does "
                                               f"not fit token length {length}", self.max_tokens)])
        return self

    @property
    def source(self) -> str:
        """The file the metadata came from, for messages."""
        return self._source

    @property
    def tokens_name(self) -> str:
        return self.inputs.tokens.name

    @property
    def length(self) -> int:
        return self.inputs.tokens.length

    @property
    def memory_name(self) -> str:
        return self.inputs.memory.name

    @property
    def memory_dim(self) -> int:
        return self.inputs.memory.dim

    @property
    def logits_name(self) -> str:
        return self.outputs.logits.name

    @property
    def vocab(self) -> Vocabulary:
        if self._vocab is None:
            self._vocab = self.vocabulary.vocabulary()
        return self._vocab

    def inputs_summary(self) -> str:
        return (f"tokens {self.length} + memory {self.memory_dim}-d, {len(self.vocab)} tokens"
                + (f" (decodes {self.encoder})" if self.encoder else ""))


def decoder_spec_from_dict(data: Any, source: str = "<decoder>") -> DecoderSpec:
    """Validate a decoder step's metadata; the ModelError lists every problem with its key path."""
    if not isinstance(data, dict):
        raise ModelError(f"{source}: metadata 'avstream' must be a JSON object")
    if data.get("task") != DECODER_TASK:
        raise ContractError(source, [("task", f"expected {DECODER_TASK!r} for a decoder step "
                                              f"(got {data.get('task')!r})")])
    try:
        spec = DecoderSpec.model_validate(data)
    except ValidationError as exc:
        raise ContractError(source, problems_of(exc, DecoderSpec)) from None
    spec._source = source
    return spec


def decoder_graph_problems(spec: DecoderSpec, header: OnnxHeader) -> list[tuple[str, str]]:
    """Where the graph's inputs and outputs disagree with the decoder step's metadata."""
    ins = {t.name: t for t in header.inputs}
    outs = {t.name: t for t in header.outputs}
    found = [(f"{key}.name", f"graph has no input {name!r} (graph inputs: {', '.join(ins) or 'none'})")
             for key, name in (("inputs.tokens", spec.tokens_name), ("inputs.memory", spec.memory_name))
             if name not in ins]
    tok = ins.get(spec.tokens_name)
    if tok is not None and (tok.dtype != "int64" or len(tok.shape) != 2
                            or (isinstance(tok.shape[1], int) and tok.shape[1] != spec.length)):
        found.append(("inputs.tokens", f"graph input {spec.tokens_name!r} is {tok.dtype} {list(tok.shape)}, "
                                       f"the metadata says int64 [batch, {spec.length}]"))
    mem = ins.get(spec.memory_name)
    if mem is not None and (len(mem.shape) != 3 or (isinstance(mem.shape[2], int) and mem.shape[2] != spec.memory_dim)):
        found.append(("inputs.memory", f"graph input {spec.memory_name!r} is {list(mem.shape)}, the metadata "
                                       f"says [batch, tokens, {spec.memory_dim}]"))
    logits = outs.get(spec.logits_name)
    if logits is None:
        found.append(("outputs.logits.name", f"graph has no output {spec.logits_name!r} "
                                             f"(graph outputs: {', '.join(outs) or 'none'})"))
    elif logits.shape and isinstance(logits.shape[-1], int) and logits.shape[-1] != len(spec.vocab):
        found.append(("outputs.logits", f"graph output {spec.logits_name!r} has {logits.shape[-1]} logits, "
                                        f"the vocabulary {len(spec.vocab)} words"))
    return found
