"""Exponential backoff with a cap and jitter: the delay before the next attempt after a failure.

Used by live readers between reconnects and by the supervisor between worker restarts. No
imports from the rest of the engine, so every layer can use it.
"""

from __future__ import annotations

import random

# 2 ** 60 times any sane initial delay is past every cap; a larger exponent would overflow a float
_MAX_DOUBLINGS = 60


def backoff_delay(attempt: int, *, initial: float, cap: float, jitter: float = 0.0, floor: float = 0.0,
                  rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (1 for the first retry).

    ``initial`` doubles per attempt up to ``cap``; ``jitter`` (a fraction, 0 to 1) scales the delay
    by a random factor in ``[1 - jitter, 1 + jitter]`` so many clients do not retry in step; the
    result is never below ``floor``.
    """
    doublings = min(max(0, attempt - 1), _MAX_DOUBLINGS)
    delay = min(cap, initial * 2.0**doublings)
    if jitter:
        delay *= 1.0 + (rng or random).uniform(-jitter, jitter)
    return max(floor, delay)
