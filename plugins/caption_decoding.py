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

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from avstream.engine.errors import ModelError
from avstream.engine.inference.decoder_contract import Vocabulary

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
DECODER_TASK = "caption_decoder_step"

StepFn = Callable[[np.ndarray], np.ndarray]


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


