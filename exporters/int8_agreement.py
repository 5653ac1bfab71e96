"""How close an INT8 model's outputs must stay to its FP32 model's, the one rule that the AVX2 check
(tests/exporters/test_quantize_avx2.py), the aarch64 check (scripts/aarch64-qemu.sh) and
models/int8.md state. numpy only: the emulated aarch64 interpreter imports it without the exporters'
dependencies."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

SCORE_MAX_ABS = 0.02  # a probability a window, spread over a few hundredths on held-out windows: judged in its units
ACTIVATION_MIN_CORR = 0.98  # highlight's activation: log terms of near-silent audio make it the loosest
MIN_CORR = 0.99  # every other output (embeddings, heatmaps, memories), by correlation over the windows


def agreement(fp32: np.ndarray, int8: np.ndarray) -> dict[str, float]:
    """Correlation and max abs difference of one output over the held-out windows."""
    a, b = np.ravel(fp32).astype(np.float64), np.ravel(int8).astype(np.float64)
    return {"corr": float(np.corrcoef(a, b)[0, 1]), "max_abs": float(np.abs(a - b).max())}


def holds(output: str, measured: Mapping[str, float]) -> bool:
    """Whether one output's agreement (see ``agreement``) is within the rule."""
    if output == "score":
        return measured["max_abs"] <= SCORE_MAX_ABS
    return measured["corr"] >= (ACTIVATION_MIN_CORR if output == "activation" else MIN_CORR)
