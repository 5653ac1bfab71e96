"""Greedy and beam search on a hand-made decoder step whose best caption is known by enumeration."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest

from avstream.engine.errors import ModelError
from avstream.engine.inference.decoder_contract import Vocabulary, decoder_spec_from_dict
from avstream.plugins.caption_decoding import beam_search, greedy_search, log_softmax, search

VOCAB = Vocabulary(("<pad>", "<bos>", "<eos>", "<unk>", "a", "b", "c", "d"))
A, B, C, D, EOS = 4, 5, 6, 7, 2
LENGTH = 6  # BOS + up to 5 words

# next-token probabilities after each prefix; greedy takes "a" (0.5) and ends at a c <eos> (0.5*0.3*0.55),
# the best caption is b c <eos> (0.4*0.9*0.95)
TABLE: dict[tuple[int, ...], dict[int, float]] = {
    (): {A: 0.5, B: 0.4, C: 0.1},
    (A,): {C: 0.3, D: 0.26, EOS: 0.24, B: 0.2},
    (B,): {C: 0.9, EOS: 0.1},
    (A, C): {EOS: 0.55, D: 0.45},
    (B, C): {EOS: 0.95, D: 0.05},
}
DEFAULT = {EOS: 0.9, A: 0.04, B: 0.03, C: 0.02, D: 0.01}


def probs_after(prefix: tuple[int, ...], table: dict[tuple[int, ...], dict[int, float]]) -> np.ndarray:
    p = np.full(len(VOCAB), 1e-12)
    for v, q in table.get(prefix, DEFAULT).items():
        p[v] = q
    return p


def make_step(table: dict[tuple[int, ...], dict[int, float]],
              calls: list[np.ndarray] | None = None) -> Callable[[np.ndarray], np.ndarray]:
    def step(tokens: np.ndarray) -> np.ndarray:
        assert tokens.dtype == np.int64 and tokens.ndim == 2 and tokens.shape[1] == LENGTH
        assert (tokens[:, 0] == VOCAB.bos).all()
        if calls is not None:
            calls.append(tokens.copy())
        rows = []
        for row in tokens:
            words = row[1:]
            n = int((words != VOCAB.pad).sum())
            assert (words[n:] == VOCAB.pad).all(), "padding only after the words"
            rows.append(np.log(probs_after(tuple(int(x) for x in words[:n]), table)) + 3.0)  # logits: any offset
        return np.stack(rows)

    return step


def brute_force_best(table: dict[tuple[int, ...], dict[int, float]], max_tokens: int, min_tokens: int) -> tuple[tuple[int, ...], float]:
    best: tuple[tuple[int, ...], float] = ((), -math.inf)
    for n in range(min_tokens, max_tokens + 1):
        for seq in itertools.product([A, B, C, D], repeat=n):
            lp = sum(math.log(probs_after(seq[:i], table)[seq[i]]) for i in range(n))
            lp += math.log(probs_after(seq, table)[EOS])  # forced at the limit, but with its own probability
            if lp > best[1]:
                best = (seq, lp)
    return best


def test_vocabulary_round_trip() -> None:
    v = Vocabulary.build(["A bell rings.", "a drum beats", "a bell"])
    assert v.words[:4] == ("<pad>", "<bos>", "<eos>", "<unk>")
    assert v.words[4:] == ("a", "bell", "beats", "drum", "rings")  # by frequency, then alphabetical
    ids = v.encode("a Bell rings loudly")
    assert ids == [4, 5, 8, v.unk]
    assert v.decode([*ids, v.eos, 6]) == "a bell rings"  # stops at EOS, skips UNK
    assert Vocabulary.from_json(v.to_json()) == v
    with pytest.raises(ModelError, match="list of strings"):
        Vocabulary.from_json({"words": "abc"})
    with pytest.raises(ModelError, match="distinct"):
        Vocabulary.from_json({"words": list(v.words), "eos": 1})


def test_beam_finds_the_best_caption_greedy_does_not() -> None:
    calls: list[np.ndarray] = []
    greedy = greedy_search(make_step(TABLE, calls), VOCAB, LENGTH, max_tokens=5, min_tokens=1)
    assert greedy.ids == [A, C] and greedy.finished
    assert greedy.probs == pytest.approx([0.5, 0.3, 0.55])
    assert greedy.logprob == pytest.approx(math.log(0.5 * 0.3 * 0.55))
    assert calls[1][0].tolist() == [VOCAB.bos, A, 0, 0, 0, 0]  # BOS, the words so far, PAD to the length
    seq, lp = brute_force_best(TABLE, max_tokens=5, min_tokens=1)
    assert seq == (B, C)
    beam = beam_search(make_step(TABLE), VOCAB, LENGTH, beam=3, max_tokens=5, min_tokens=1, length_penalty=0.0)
    assert tuple(beam.ids) == seq and beam.logprob == pytest.approx(lp)
    assert beam.confidence == pytest.approx(np.mean([0.4, 0.9, 0.95]))
    assert VOCAB.decode(beam.ids) == "b c"
    # beam 1 is greedy; the default length penalty (per-token mean) agrees here
    assert search(make_step(TABLE), VOCAB, LENGTH, beam=1, min_tokens=1, max_tokens=5).ids == [A, C]
    assert search(make_step(TABLE), VOCAB, LENGTH, beam=3, min_tokens=1, max_tokens=5).ids == [B, C]


def test_beam_matches_enumeration_on_random_decoders() -> None:
    # a beam as wide as the tree (4 + 16 + 64 prefixes) is exhaustive: it must find the enumerated best
    rng = np.random.default_rng(0)
    for _ in range(20):
        table = {}
        for n in range(4):
            for prefix in itertools.product([A, B, C, D], repeat=n):
                p = rng.dirichlet(np.full(5, 0.3))
                table[prefix] = dict(zip([A, B, C, D, EOS], p.tolist(), strict=True))
        seq, lp = brute_force_best(table, max_tokens=3, min_tokens=1)
        wide = beam_search(make_step(table), VOCAB, LENGTH, beam=64, max_tokens=3, min_tokens=1, length_penalty=0.0)
        assert tuple(wide.ids) == seq and wide.logprob == pytest.approx(lp)


def test_length_limits() -> None:
    eos_first = {(): {EOS: 0.8, A: 0.2}, (A,): {EOS: 0.7, B: 0.3}}
    for fn in (greedy_search, beam_search):
        h = fn(make_step(eos_first), VOCAB, LENGTH, max_tokens=5, min_tokens=2)
        assert len(h.ids) >= 2 and h.finished
    never_ends = {(): {A: 1.0}, (A,): {A: 1.0}, (A, A): {A: 1.0}, (A, A, A): {A: 1.0}, (A, A, A, A): {A: 1.0}}
    for fn in (greedy_search, beam_search):
        h = fn(make_step(never_ends), VOCAB, LENGTH, max_tokens=3, min_tokens=1)
        assert h.ids == [A, A, A]  # EOS forced after max_tokens words
    with pytest.raises(ValueError, match="max_tokens"):
        greedy_search(make_step(TABLE), VOCAB, LENGTH, max_tokens=6)
    with pytest.raises(ValueError, match="beam"):
        beam_search(make_step(TABLE), VOCAB, LENGTH, beam=0, max_tokens=5)
    with pytest.raises(ModelError, match="shape"):
        greedy_search(lambda t: np.zeros((len(t), 3)), VOCAB, LENGTH, max_tokens=5)


def test_log_softmax_is_stable() -> None:
    out = log_softmax(np.array([[1000.0, 1000.0, -1000.0]]))
    assert np.allclose(np.exp(out).sum(), 1.0) and out[0, 0] == pytest.approx(math.log(0.5))


def test_decoder_spec_validation() -> None:
    good = {
        "schema": 1, "id": "dec", "version": "1", "task": "caption_decoder_step", "encoder": "enc@1",
        "inputs": {"tokens": {"name": "tokens", "dtype": "int64", "length": LENGTH},
                   "memory": {"name": "memory", "dim": 16}},
        "outputs": {"logits": {"name": "logits"}},
        "vocabulary": VOCAB.to_json(), "max_tokens": 5, "min_tokens": 1,
    }
    spec = decoder_spec_from_dict(good, "d.onnx")
    assert (spec.ref, spec.length, spec.memory_dim, spec.vocab, spec.encoder) == ("dec@1", LENGTH, 16, VOCAB, "enc@1")
    for change, key in (({"task": "caption"}, "task"), ({"max_tokens": 6}, "max_tokens"),
                        ({"inputs": {"tokens": {"length": 6}}}, "inputs"), ({"version": ""}, "version"),
                        ({"vocabulary": {"words": ["a", "a", "b", "c"]}}, "vocabulary")):
        with pytest.raises(ModelError, match=key):
            decoder_spec_from_dict({**good, **change}, "d.onnx")


def test_beam_keeps_searching_for_a_long_better_caption() -> None:
    # three short captions finish early; the long one ("a a a a") is far more probable and must win
    table = {(): {A: 0.8, B: 0.1, C: 0.1}, (B,): {EOS: 0.95, D: 0.05}, (C,): {EOS: 0.95, D: 0.05},
             (B, D): {EOS: 1.0}, (C, D): {EOS: 1.0},
             (A,): {A: 0.99, EOS: 0.01}, (A, A): {A: 0.99, EOS: 0.01}, (A, A, A): {A: 0.99, EOS: 0.01},
             (A, A, A, A): {EOS: 0.99, A: 0.01}}
    for lp in (0.0, 1.0):
        h = beam_search(make_step(table), VOCAB, LENGTH, beam=3, max_tokens=5, min_tokens=1, length_penalty=lp)
        assert h.ids == [A, A, A, A], lp
