"""Caption decoding in numpy: the word vocabulary, greedy and beam search over a decoder step, and the
decoder step's metadata.

A *decoder step* is any function ``step(tokens) -> logits``: ``tokens`` is (B, L) int64 — BOS, the
words so far, then PAD up to the fixed length L — and ``logits`` is (B, V), the scores of the next
token after the last non-PAD position. The exported ``*_decoder_step.onnx`` graphs are such functions
(with the encoder memory bound by the caller), so the search needs no torch and no KV cache.

The decoder step model carries its own ``avstream`` metadata (``task: caption_decoder_step``): the
vocabulary, the special token ids, the token length L and the memory width; ``decoder_spec`` reads it.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ModelError
from .metrics import tokenize
from .models import METADATA_KEY, read_onnx_header

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


@dataclass
class Hypothesis:
    """One decoded caption: word ids (no BOS/EOS), total log-probability, per-token probabilities
    (the EOS included when it was produced)."""

    ids: list[int]
    logprob: float
    probs: list[float]
    finished: bool = True

    @property
    def confidence(self) -> float:
        """Mean probability of the chosen tokens (the EOS included), in [0, 1]."""
        return float(np.mean(self.probs)) if self.probs else 0.0

    def score(self, length_penalty: float) -> float:
        """Log-probability normalised by length**length_penalty (0: raw sum, 1: per-token mean)."""
        return self.logprob / max(1, len(self.probs)) ** length_penalty


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _check_limits(vocab: Vocabulary, length: int, max_tokens: int, min_tokens: int) -> None:
    if length < 2:
        raise ValueError(f"token length must be >= 2 (BOS + one word), got {length}")
    if not 1 <= max_tokens <= length - 1:
        raise ValueError(f"max_tokens must be in [1, {length - 1}] for token length {length}, got {max_tokens}")
    if not 0 <= min_tokens <= max_tokens:
        raise ValueError(f"min_tokens must be in [0, max_tokens={max_tokens}], got {min_tokens}")
    if len(vocab) <= 4:
        raise ValueError("the vocabulary has no words besides the special tokens")


def _token_batch(vocab: Vocabulary, length: int, seqs: Sequence[Sequence[int]]) -> np.ndarray:
    toks = np.full((len(seqs), length), vocab.pad, dtype=np.int64)
    toks[:, 0] = vocab.bos
    for i, s in enumerate(seqs):
        toks[i, 1 : 1 + len(s)] = s
    return toks


def _next_logprobs(step: StepFn, vocab: Vocabulary, length: int, seqs: Sequence[Sequence[int]],
                   n_words: int, max_tokens: int, min_tokens: int) -> np.ndarray:
    """Log-probabilities of the next token for each sequence, with the grammar's constraints applied:
    never PAD/BOS/UNK, no EOS before ``min_tokens`` words, only EOS after ``max_tokens`` words."""
    logits = np.asarray(step(_token_batch(vocab, length, seqs)), dtype=np.float64)
    if logits.shape != (len(seqs), len(vocab)):
        raise ModelError(f"decoder step returned logits of shape {logits.shape}, expected {(len(seqs), len(vocab))}")
    logp = log_softmax(logits)
    banned = np.zeros(len(vocab), bool)
    banned[[vocab.pad, vocab.bos, vocab.unk]] = True
    if n_words < min_tokens:
        banned[vocab.eos] = True
    if n_words >= max_tokens:
        banned[:] = True
        banned[vocab.eos] = False
    logp[:, banned] = -np.inf
    return logp


def greedy_search(step: StepFn, vocab: Vocabulary, length: int, max_tokens: int = 20,
                  min_tokens: int = 3) -> Hypothesis:
    """The most probable token at each step until EOS (at most ``max_tokens`` words)."""
    _check_limits(vocab, length, max_tokens, min_tokens)
    ids: list[int] = []
    probs: list[float] = []
    total = 0.0
    for n in range(max_tokens + 1):
        logp = _next_logprobs(step, vocab, length, [ids], n, max_tokens, min_tokens)[0]
        v = int(np.argmax(logp))
        total += float(logp[v])
        probs.append(math.exp(float(logp[v])))
        if v == vocab.eos:
            return Hypothesis(ids, total, probs)
        ids.append(v)
    return Hypothesis(ids, total, probs, finished=False)  # unreachable: EOS is forced at max_tokens


def beam_search(step: StepFn, vocab: Vocabulary, length: int, beam: int = 3, max_tokens: int = 20,
                min_tokens: int = 3, length_penalty: float = 1.0) -> Hypothesis:
    """Beam search; the best finished hypothesis by ``Hypothesis.score(length_penalty)``.

    Each step expands every live beam by its top ``2 * beam`` tokens, ranks all candidates by total
    log-probability, sends an EOS candidate ranked within the first ``beam`` to the finished list and
    keeps the best ``beam`` others alive. It stops when no live beam can still beat the best finished
    hypothesis (log-probabilities only fall, so a live beam's best final score is its total divided by
    the longest length's penalty): stopping after ``beam`` finished ones instead would lose a long,
    probable caption to short ones that end early. Beam 1 is greedy search.
    """
    _check_limits(vocab, length, max_tokens, min_tokens)
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    if length_penalty < 0:
        raise ValueError(f"length_penalty must be >= 0, got {length_penalty}")
    live: list[Hypothesis] = [Hypothesis([], 0.0, [], finished=False)]
    finished: list[Hypothesis] = []
    for n in range(max_tokens + 1):
        logp = _next_logprobs(step, vocab, length, [h.ids for h in live], n, max_tokens, min_tokens)
        k = min(2 * beam, logp.shape[1])
        cands: list[tuple[float, int, int]] = []
        for i, h in enumerate(live):
            top = np.argpartition(-logp[i], k - 1)[:k]
            cands += [(h.logprob + float(logp[i, v]), i, int(v)) for v in top if np.isfinite(logp[i, v])]
        cands.sort(key=lambda c: (-c[0], c[1], c[2]))  # ties: earlier beam, lower id (deterministic)
        nxt: list[Hypothesis] = []
        for rank, (total, i, v) in enumerate(cands):
            h = live[i]
            probs = [*h.probs, math.exp(total - h.logprob)]
            if v == vocab.eos:
                if rank < beam:
                    finished.append(Hypothesis(list(h.ids), total, probs))
            elif len(nxt) < beam:
                nxt.append(Hypothesis([*h.ids, v], total, probs, finished=False))
            if len(nxt) >= beam and rank >= beam:
                break
        live = nxt
        if not live:
            break
        if finished:
            best = max(h.score(length_penalty) for h in finished)
            bound = max(h.logprob for h in live) / (max_tokens + 1) ** length_penalty
            if best >= bound:
                break
    pool = finished or live
    return max(pool, key=lambda h: h.score(length_penalty))


def search(step: StepFn, vocab: Vocabulary, length: int, beam: int = 3, max_tokens: int = 20,
           min_tokens: int = 3, length_penalty: float = 1.0) -> Hypothesis:
    """Greedy search for ``beam`` 1, beam search otherwise."""
    if beam <= 1:
        return greedy_search(step, vocab, length, max_tokens, min_tokens)
    return beam_search(step, vocab, length, beam, max_tokens, min_tokens, length_penalty)


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
