"""Metrics on hand-made cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from avstream.exporters.metrics import (
    accuracy,
    average_precision,
    bleu4,
    bootstrap_ci,
    box_mask,
    ciou,
    ciou_summary,
    event_word_f1,
    precision_at_k,
)


def test_average_precision_known_values() -> None:
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision([0, 0, 1, 1], [0.9, 0.8, 0.7, 0.1]) == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert average_precision([1, 1, 0], [0.3, 0.2, 0.1]) == 1.0
    assert math.isnan(average_precision([0, 0], [0.1, 0.2]))
    # ties are one block: order of input does not matter
    assert average_precision([1, 0], [0.5, 0.5]) == average_precision([0, 1], [0.5, 0.5]) == 0.5


def test_precision_at_k_and_accuracy() -> None:
    assert precision_at_k([1, 0, 1, 0, 0, 1], [6, 5, 4, 3, 2, 1], k=5) == pytest.approx(2 / 5)
    assert accuracy([1, 0, 1], [1, 1, 1]) == pytest.approx(2 / 3)


def test_ciou_with_a_perfect_and_a_wrong_map() -> None:
    gt = box_mask([0.25, 0.25, 0.5, 0.5], 8, 8)
    assert gt.sum() == 4
    perfect = gt.astype(float)
    assert ciou(perfect, gt) == 1.0
    wrong = np.zeros((8, 8))
    wrong[6:, 6:] = 1.0
    assert ciou(wrong, gt) == 0.0
    half = np.zeros((8, 8))
    half[2:4, 3:5] = 1.0  # 2 of 4 cells overlap -> IoU 2/6
    assert ciou(half, gt) == pytest.approx(2 / 6)
    at, auc = ciou_summary([1.0, 0.0, 0.6, 0.4])
    assert at == 0.5
    assert 0.0 < auc < 1.0


def test_bleu4_known_values() -> None:
    assert bleu4([["a bell rings twice"]], ["a bell rings twice"]) == pytest.approx(1.0)
    assert bleu4([["a bell rings"]], ["a drum beats"]) == 0.0
    # brevity penalty: a shorter hypothesis with all n-grams right scores below 1
    score = bleu4([["a loud bell rings twice now"]], ["a loud bell rings twice"])
    assert 0.0 < score < 1.0 and score == pytest.approx(math.exp(1 - 6 / 5))


def test_event_word_f1() -> None:
    vocab = {"bell", "drum", "siren"}
    f1 = event_word_f1([{"bell"}, {"drum", "siren"}], ["a bell rings", "a drum and a bell"], vocab)
    # tp: bell, drum = 2; fp: bell (second) = 1; fn: siren = 1
    assert f1 == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))


def test_bootstrap_ci_brackets_the_statistic() -> None:
    values = np.r_[np.ones(60), np.zeros(40)]
    lo, hi = bootstrap_ci(lambda idx: float(values[idx].mean()), len(values), rounds=300)
    assert lo < 0.6 < hi and hi - lo < 0.3
    groups = np.repeat(np.arange(10), 10)
    glo, ghi = bootstrap_ci(lambda idx: float(values[idx].mean()), len(values), groups=groups, rounds=300)
    assert ghi - glo > hi - lo  # whole groups vary more than single items here
