"""The caption evaluation protocol on hand-made cases: truth events, references, synonyms, scores, baselines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from avstream.engine.items import AVWindow
from avstream.engine.node import WindowRequirement
from avstream.exporters.caption_scenes import (
    EVAL_SEEDS,
    EVENT_WORDS,
    mentioned_events,
    normalise_events,
    references,
    scene_windows,
    score,
    truth_events,
    window_caption,
    window_starts,
)
from avstream.exporters.eval_captions import (
    AUDIO_ONLY,
    AudioRulesCaption,
    audio_features,
    evaluate,
    rule_caption,
    table,
)

NORMAL = "a yellow bell rings while a red square drifts silently"
HIGH = "a yellow bell rings rapidly and loudly and moves quickly while a red square drifts silently"
VIOL = "objects shake violently amid loud bangs while a yellow bell rings"


def hand_truth() -> dict[str, Any]:
    return {
        "sound_class": "bell",
        "events": [{"kind": "highlight", "t0": 2.0, "t1": 5.5}, {"kind": "violence", "t0": 9.2, "t1": 11.0}],
        "captions": [
            {"kind": "normal", "t0": 0.0, "t1": 2.0, "text": NORMAL},
            {"kind": "highlight", "t0": 2.0, "t1": 5.5, "text": HIGH},
            {"kind": "normal", "t0": 5.5, "t1": 9.2, "text": NORMAL},
            {"kind": "violence", "t0": 9.2, "t1": 11.0, "text": VIOL},
            {"kind": "normal", "t0": 11.0, "t1": 20.0, "text": NORMAL},
        ],
    }


def test_protocol_is_fixed() -> None:
    # the committed protocol: changing any of these makes old figures incomparable
    assert EVAL_SEEDS == tuple(range(1_000_000, 1_000_100))
    assert window_starts() == [0.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0]
    assert EVENT_WORDS == ("bell", "drum", "engine", "siren", "voice", "bangs")


def test_truth_events_need_one_second_of_violence() -> None:
    truth = hand_truth()
    assert truth_events(truth, 0.0, 5.0) == {"bell"}
    assert truth_events(truth, 5.0, 10.0) == {"bell"}  # 0.8 s of violence: not enough
    assert truth_events(truth, 5.5, 10.5) == {"bell", "bangs"}  # 1.3 s
    assert truth_events(truth, 10.0, 15.0) == {"bell", "bangs"}  # exactly 1 s counts


def test_window_caption_and_references() -> None:
    truth = hand_truth()
    assert window_caption(truth, 0.0, 5.0) == HIGH  # 3 s of highlight beats 2 s of normal
    assert references(truth, 0.0, 5.0) == [NORMAL, HIGH]
    assert window_caption(truth, 5.0, 10.0) == NORMAL
    assert references(truth, 5.0, 10.0) == [NORMAL]  # 0.5 s highlight, 0.8 s violence: too short
    assert window_caption(truth, 7.5, 12.5) == VIOL  # violent window: the violence text, though shorter
    assert references(truth, 7.5, 12.5) == [NORMAL, VIOL]


def test_synonyms_map_to_event_words() -> None:
    assert normalise_events("A green figure SHOUTS excitedly") == "a green figure voice excitedly"
    assert mentioned_events("a green figure speaks") == {"voice"}
    assert mentioned_events("one loud bang while drums beat") == {"bangs", "drum"}
    assert mentioned_events("a red square drifts silently") == set()


def test_scores_on_hand_made_hypotheses() -> None:
    truths = [{"bell"}, {"bell", "bangs"}, {"voice"}, {"engine"}]
    refs = [[NORMAL], [VIOL], ["a green figure speaks"], ["a blue engine hums"]]
    perfect = score("perfect", truths, refs, [NORMAL, VIOL, "a green figure speaks", "a blue engine hums"], ci_rounds=50)
    assert perfect.f1 == 1.0 and perfect.bleu4 == pytest.approx(1.0) and perfect.class_accuracy == 1.0
    assert perfect.bangs_precision == perfect.bangs_recall == 1.0 and perfect.f1_ci == (1.0, 1.0)
    # one miss (no bangs), one wrong class (drum for voice): tp 3, fp 1, fn 2
    rough = score("rough", truths, refs, [NORMAL, NORMAL, "a red drum beats", "a blue engine hums"], ci_rounds=50)
    assert rough.f1 == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))
    assert rough.class_accuracy == 0.75 and np.isnan(rough.bangs_precision) and rough.bangs_recall == 0.0
    assert 0.0 < rough.bleu4 < perfect.bleu4
    assert "| rough |" in table([perfect, rough], list(EVAL_SEEDS[:2]))
    assert "SUBSET" in table([rough], list(EVAL_SEEDS[:2]))


def test_rules_on_hand_made_features() -> None:
    base = {"peak": 0.4, "dynamics": 2.0, "centroid": 600.0, "low_share": 0.35, "onset_rate": 0.0}
    assert rule_caption(base) == "a blue engine hums"
    assert rule_caption({**base, "centroid": 900.0, "low_share": 0.0}) == "a magenta siren wails"
    assert rule_caption({**base, "dynamics": 20.0, "centroid": 2000.0, "low_share": 0.5, "onset_rate": 4}) == "a red drum beats"
    assert rule_caption({**base, "dynamics": 10.0, "centroid": 1500.0, "low_share": 0.0, "onset_rate": 3.5}) == "a green figure speaks"
    assert rule_caption({**base, "dynamics": 10.0, "centroid": 1000.0, "low_share": 0.0, "onset_rate": 1.2}) == "a yellow bell rings"
    assert rule_caption({**base, "peak": 0.95}).startswith("objects shake violently amid loud bangs while a blue engine")
    # a steady 60 Hz hum reads as continuous, low: an engine
    t = np.arange(80000) / 16000
    f = audio_features((0.3 * np.sin(2 * np.pi * 60 * t)).astype(np.float32), 16000)
    assert f["dynamics"] < 1.5 and f["low_share"] > 0.9 and f["peak"] < 0.31


def test_scene_windows_match_the_requirement() -> None:
    req = WindowRequirement(seconds=5.0, hop=2.5, fps=1.0, frames=5, height=32, width=48, sample_rate=8000,
                            audio_samples=40000)
    es = scene_windows(EVAL_SEEDS[0], req)
    assert [w.t0 for w in es.windows] == window_starts()
    w = es.windows[1]
    assert w.frames is not None and w.frames.shape == (5, 32, 48, 3) and w.frames.dtype == np.uint8
    assert w.audio is not None and w.audio.shape == (40000,) and w.sample_rate == 8000
    audio_only = scene_windows(EVAL_SEEDS[0], AUDIO_ONLY)
    only = audio_only.windows[0]
    assert only.frames is None and only.audio is not None and only.audio.shape == (80000,)
    assert audio_only.truth == es.truth


class _Oracle:
    """Knows the scenes (in evaluation order) and answers with each window's caption."""

    name = "oracle"

    def __init__(self, seeds: Sequence[int]):
        from avstream.engine.synthetic.scene import SceneConfig, generate_truth

        self.truths = [generate_truth(SceneConfig(seed=s, duration=20.0)) for s in seeds]

    @property
    def requirement(self) -> WindowRequirement:
        return AUDIO_ONLY

    def caption(self, windows: Sequence[AVWindow]) -> list[str]:
        truth = self.truths.pop(0)
        return [window_caption(truth, w.t0, w.t1) for w in windows]


def test_evaluate_two_scenes() -> None:
    seeds = EVAL_SEEDS[:2]
    results = evaluate([_Oracle(seeds), AudioRulesCaption()], seeds, progress=lambda m: None, ci_rounds=50)
    oracle, rules = results
    assert oracle.windows == rules.windows == 14
    assert oracle.f1 == 1.0 and oracle.bleu4 == pytest.approx(1.0)
    assert 0.0 <= rules.f1 <= 1.0 and rules.seconds_per_caption > 0
    with pytest.raises(ValueError, match="held out"):
        evaluate([AudioRulesCaption()], [5], progress=lambda m: None)
