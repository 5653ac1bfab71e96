"""The one exponential backoff of the engine: live reconnects and worker restarts."""

from __future__ import annotations

import random

import pytest

from avstream.engine.backoff import backoff_delay
from avstream.engine.capture.live import LiveReader
from avstream.engine.capture.settings import LiveSettings
from avstream.engine.runtime.restarts import RESTART_BACKOFF_INITIAL_S, RESTART_BACKOFF_MAX_S


def test_doubles_from_the_initial_delay_up_to_the_cap() -> None:
    delays = [backoff_delay(n, initial=0.5, cap=8.0) for n in range(1, 8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff_delay(0, initial=0.5, cap=8.0) == 0.5  # attempt 0 counts as the first


def test_a_very_long_outage_stays_at_the_cap() -> None:
    # a float power of two this large would overflow without the limit on doublings
    assert backoff_delay(100_000, initial=0.5, cap=30.0, jitter=0.25, rng=random.Random(1)) <= 30.0 * 1.25


def test_jitter_stays_within_its_fraction_and_varies() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(3, initial=1.0, cap=30.0, jitter=0.25, rng=rng) for _ in range(200)]
    assert all(3.0 <= d <= 5.0 for d in delays)
    assert len({round(d, 6) for d in delays}) > 100


def test_floor_bounds_the_delay_from_below() -> None:
    assert backoff_delay(1, initial=0.01, cap=1.0, floor=0.05) == 0.05


def test_supervisor_restart_delays_are_unchanged() -> None:
    # restarts inside the window wait 0.5, 1, 2, 4, 8 s, then 8 s
    got = [backoff_delay(n, initial=RESTART_BACKOFF_INITIAL_S, cap=RESTART_BACKOFF_MAX_S) for n in range(1, 7)]
    assert got == [min(0.5 * 2 ** (n - 1), 8.0) for n in range(1, 7)]


@pytest.mark.parametrize("attempt", [1, 2, 5, 12])
def test_live_reconnect_delay_follows_the_settings(attempt: int) -> None:
    settings = LiveSettings(backoff_initial=0.2, backoff_max=1.5, backoff_jitter=0.0)
    reader = LiveReader("tcp://127.0.0.1:9", stream="s", video=True, audio=False, fps=0.0, sample_rate=16000,
                        audio_chunk_s=0.04, settings=settings)
    assert reader.backoff(attempt) == pytest.approx(min(1.5, 0.2 * 2 ** (attempt - 1)))
