"""The caption decoder step's metadata: vocabulary, special tokens, token length, memory width."""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avstream.engine.errors import ModelError
from avstream.engine.inference.contract import METADATA_KEY
from avstream.engine.inference.onnx_header import read_onnx_header


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
        if not isinstance(data, dict) or not isinstance(data.get("words"), list) or not all(
                isinstance(w, str) for w in data["words"]):
            raise ModelError(f"{source}: vocabulary: expected an object with a list of strings under 'words'")
        ids = {k: data.get(k, d) for k, d in (("pad", 0), ("bos", 1), ("eos", 2), ("unk", 3))}
        n = len(data["words"])
        for k, v in ids.items():
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < n:
                raise ModelError(f"{source}: vocabulary.{k}: must be a word id in [0, {n}) (got {v!r})")
        if len(set(ids.values())) != 4:
            raise ModelError(f"{source}: vocabulary: pad, bos, eos and unk must be distinct ids")
        try:
            return cls(tuple(data["words"]), **ids)
        except ValueError as exc:
            raise ModelError(f"{source}: vocabulary: {exc}") from None


# --------------------------------------------------------------------------------------------------
# decoder step metadata
@dataclass(frozen=True)
class DecoderSpec:
    """The ``avstream`` metadata of a decoder step model."""

    id: str
    version: str
    tokens_name: str
    length: int
    memory_name: str
    memory_dim: int
    logits_name: str
    vocab: Vocabulary
    max_tokens: int
    min_tokens: int
    encoder: str = ""  # id@version of the encoder whose memory it reads
    source: str = ""

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"


def decoder_spec_from_dict(data: Any, source: str = "<decoder>") -> DecoderSpec:
    """Validate a decoder step's metadata; ModelError names the source and the key."""

    def fail(key: str, msg: str) -> ModelError:
        return ModelError(f"{source}: metadata '{METADATA_KEY}': {key}: {msg}")

    if not isinstance(data, dict):
        raise ModelError(f"{source}: metadata '{METADATA_KEY}' must be a JSON object")
    if data.get("task") != DECODER_TASK:
        raise fail("task", f"expected {DECODER_TASK!r} for a decoder step (got {data.get('task')!r})")

    def text(d: Any, key: str, path: str, default: str | None = None) -> str:
        v = d.get(key, default) if isinstance(d, dict) else None
        if not isinstance(v, str) or not v:
            raise fail(path, f"must be a non-empty string (got {v!r})")
        return v

    def integer(d: Any, key: str, path: str, default: int | None = None) -> int:
        v = d.get(key, default) if isinstance(d, dict) else None
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise fail(path, f"must be a non-negative integer (got {v!r})")
        return v

    inputs = data.get("inputs")
    outputs = data.get("outputs")
    if not isinstance(inputs, dict) or not isinstance(inputs.get("tokens"), dict) or not isinstance(
            inputs.get("memory"), dict):
        raise fail("inputs", "needs objects 'tokens' and 'memory'")
    if not isinstance(outputs, dict) or not isinstance(outputs.get("logits"), dict):
        raise fail("outputs", "needs an object 'logits'")
    vocab = Vocabulary.from_json(data.get("vocabulary"), source)
    length = integer(inputs["tokens"], "length", "inputs.tokens.length")
    max_tokens = integer(data, "max_tokens", "max_tokens", min(20, max(1, length - 1)))
    min_tokens = integer(data, "min_tokens", "min_tokens", 1)
    if length < 2:
        raise fail("inputs.tokens.length", f"must be >= 2 (got {length})")
    if not 1 <= max_tokens <= length - 1 or min_tokens > max_tokens:
        raise fail("max_tokens", f"{max_tokens} (min {min_tokens}) does not fit token length {length}")
    version = data.get("version")
    if not isinstance(version, (str, int)) or isinstance(version, bool) or not str(version):
        raise fail("version", f"missing (a string such as \"1\"; got {version!r})")
    return DecoderSpec(
        id=text(data, "id", "id"),
        version=str(version),
        tokens_name=text(inputs["tokens"], "name", "inputs.tokens.name", "tokens"),
        length=length,
        memory_name=text(inputs["memory"], "name", "inputs.memory.name", "memory"),
        memory_dim=integer(inputs["memory"], "dim", "inputs.memory.dim"),
        logits_name=text(outputs["logits"], "name", "outputs.logits.name", "logits"),
        vocab=vocab,
        max_tokens=max_tokens,
        min_tokens=min_tokens,
        encoder=str(data.get("encoder", "")),
        source=source,
    )


def read_decoder_spec(path: str | os.PathLike[str]) -> DecoderSpec:
    """The checked metadata of a decoder step ONNX file (graph inputs/outputs included)."""
    header = read_onnx_header(path)
    text = header.metadata.get(METADATA_KEY)
    if text is None:
        raise ModelError(f"{path}: no '{METADATA_KEY}' metadata: not an avstream decoder step model")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: metadata '{METADATA_KEY}' is not valid JSON: {exc}") from None
    spec = decoder_spec_from_dict(data, str(path))
    ins = {t.name: t for t in header.inputs}
    outs = {t.name for t in header.outputs}
    for key, name in (("inputs.tokens", spec.tokens_name), ("inputs.memory", spec.memory_name)):
        if name not in ins:
            raise ModelError(f"{path}: metadata '{METADATA_KEY}': {key}.name: graph has no input {name!r} "
                             f"(graph inputs: {', '.join(ins) or 'none'})")
    if spec.logits_name not in outs:
        raise ModelError(f"{path}: metadata '{METADATA_KEY}': outputs.logits.name: graph has no output "
                         f"{spec.logits_name!r}")
    tok = ins[spec.tokens_name]
    if tok.dtype != "int64" or len(tok.shape) != 2 or (isinstance(tok.shape[1], int) and tok.shape[1] != spec.length):
        raise ModelError(f"{path}: graph input {spec.tokens_name!r} is {tok.dtype} {list(tok.shape)}, "
                         f"the metadata says int64 [batch, {spec.length}]")
    return spec
