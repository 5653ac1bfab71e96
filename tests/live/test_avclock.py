"""The clock model on simulated clocks: reconnect continuity, timestamp jumps, drift over a long run,
re-syncs, and the jitter buffer. Time is a parameter here, so a 10-minute run takes a second."""

from __future__ import annotations

import math

import numpy as np
import pytest

from avstream.engine.capture.avclock import AudioClock, ClockFit, JitterBuffer, LinearResampler, StreamClock
from avstream.engine.capture.fit import GridGate
from avstream.engine.items import AudioChunk, VideoFrame
from avstream.engine.synthetic.scene import sync_audio

pytestmark = pytest.mark.timeout(60)
FRAME = 1 / 25


def test_stream_clock_shares_the_origin_and_continues_after_a_reconnect() -> None:
    c = StreamClock(start=0.0)
    c.new_connection()
    assert c.map("video", 1.464, wall=100.0) == pytest.approx(0.0)
    assert c.map("audio", 1.400, wall=100.0) == pytest.approx(-0.064)  # the container's A/V offset is kept
    assert c.map("video", 11.464, wall=110.0) == pytest.approx(10.0)
    c.note_end(10.04, 110.0)
    c.new_connection()  # the server restarted: its timestamps start anywhere
    t = c.map("video", 0.5, wall=117.0)
    assert t is not None and t == pytest.approx(10.04 + 7.0)  # continues from the wall time of the gap
    assert c.map("audio", 0.45, wall=117.0) == pytest.approx(t - 0.05)


def test_stream_clock_bridges_a_jump_on_both_tracks_alike() -> None:
    c = StreamClock(max_jump_s=10.0)
    c.new_connection()
    for k in range(50):
        c.map("video", 5.0 + k * FRAME, wall=1000.0 + k * FRAME)
        c.map("audio", 5.0 + k * FRAME, wall=1000.0 + k * FRAME)
    # timestamps wrap back to 0 on both tracks, 40 ms of wall time later
    tv = c.map("video", 0.0, wall=1000.0 + 50 * FRAME)
    ta = c.map("audio", 0.0, wall=1000.0 + 50 * FRAME + 0.01)
    assert tv == pytest.approx(49 * FRAME + FRAME, abs=1e-6)
    assert ta == pytest.approx(tv)  # the same correction: A/V alignment survives the jump
    assert c.jumps == 2


def test_frames_a_few_ticks_early_still_take_their_own_grid_point() -> None:
    """RTSP: a sender report re-syncs the RTP clock, and from then on video timestamps sit a 90 kHz
    tick or two earlier. Frames must keep their own grid points, or every window after it takes the
    next frame for each point and the video runs a frame ahead of the audio."""
    c = StreamClock()
    c.grid = FRAME
    c.new_connection()
    tick = 1 / 90000
    pts = [1.064 + k * FRAME - (2 * tick if k >= 100 else 0.0) for k in range(200)]
    times = [c.map("video", p, wall=100.0 + k * FRAME) for k, p in enumerate(pts)]
    gate = GridGate(25)
    assert all(t is not None and gate.keep(t) for t in times)  # each frame is the one for its point
    assert [math.floor(t / FRAME) for t in times if t is not None] == list(range(200))
    # the audio keeps the container's alignment with the video
    assert c.map("audio", 1.064, wall=100.0) == pytest.approx(times[0])


def test_clock_fit_finds_the_slope_under_one_sided_jitter() -> None:
    rng = np.random.default_rng(1)
    fit = ClockFit(window_s=60.0)
    for k in range(3000):
        x = k * 0.02
        fit.add(x, 5.0 + x * 0.999 + rng.uniform(0, 0.03))
    assert fit.b == pytest.approx(0.999, abs=2e-5)
    assert fit.map(60.0) == pytest.approx(5.0 + 60 * 0.999, abs=0.003)  # the lower envelope


def test_resampler_keeps_phase_across_blocks() -> None:
    x = np.sin(np.arange(16000) * 0.01).astype(np.float32)
    rs = LinearResampler()
    out = np.concatenate([rs.process(x[i:i + 321], 0.999) for i in range(0, len(x), 321)])
    assert abs(len(out) - 16000 * 0.999) <= 2
    ref = np.interp(np.arange(len(out)) / 0.999, np.arange(len(x)), x)
    assert np.max(np.abs(out - ref)) < 1e-4


def _beep_onsets(t0: float, audio: np.ndarray, rate: int) -> np.ndarray:
    loud = np.abs(audio) > 0.1
    idx = np.flatnonzero(loud)
    prev = np.concatenate([[-(10**9)], idx[:-1]])
    return t0 + idx[idx - prev > rate // 20] / rate


def test_audio_clock_running_1000ppm_fast_stays_within_a_frame_over_ten_minutes() -> None:
    """A microphone whose sample clock runs 1000 ppm fast (16016 samples per second of capture wall
    time, labelled 16 kHz), blocks stamped with a jittery capture time: the beeps, rendered at whole
    seconds of true time, come out at whole seconds of media time, within one video frame, for 600 s.
    Uncorrected, the skew would reach 0.6 s."""
    rng = np.random.default_rng(0)
    true_rate, rate, block = 16016, 16000, 320
    clock = AudioClock(rate, resync_s=0.3)
    parts: list[tuple[float, np.ndarray]] = []
    pos = 0
    while pos + block <= 600 * true_rate:
        samples = sync_audio(true_rate, pos, block)
        capture = pos / true_rate + rng.uniform(0.0, 0.01)  # the ADC time, as the driver reports it
        t, out = clock.push(samples, capture)
        assert not clock.new_segment or not parts  # one continuous segment: no re-sync was needed
        parts.append((t, out))
        pos += block
    audio = np.concatenate([p[1] for p in parts])
    onsets = _beep_onsets(parts[0][0], audio, rate)
    assert len(onsets) == 600
    err = onsets - np.round(onsets)
    assert np.max(np.abs(err)) < FRAME, f"worst skew {np.max(np.abs(err)) * 1000:.1f} ms"
    assert np.max(np.abs(err[-60:])) < 0.012  # once the drift is learnt: inside the 10 ms deadband
    assert clock.drift_ppm == pytest.approx(1000, abs=50)
    assert abs(clock.skew) < 0.012 and clock.resyncs == 0
    uncorrected = (599 * true_rate) / rate - 599
    assert uncorrected > 0.5


def test_audio_clock_resyncs_on_a_gap_and_drops_an_overlap() -> None:
    clock = AudioClock(16000)
    block = np.zeros(640, np.float32)
    clock.push(block, 0.0)
    t, out = clock.push(block, 0.04)
    assert t == pytest.approx(0.04) and len(out) == 640
    t, out = clock.push(block, 5.0)  # 5 s of input lost (packet loss, reconnect): a new segment
    assert clock.new_segment and t == pytest.approx(5.0) and clock.resyncs == 1
    ref = 5.04 - 0.2  # the input repeats 0.2 s: that much is dropped, then timing continues
    emitted = []
    for _ in range(20):
        t, out = clock.push(block, ref)
        if len(out):
            emitted.append((t, ref))
        ref += 0.04
    assert clock.resyncs == 2 and clock.dropped == pytest.approx(3200, abs=1)
    assert emitted[0][0] == pytest.approx(5.04)
    assert all(abs(t - r) < 0.002 for t, r in emitted)


def _frame(t: float) -> VideoFrame:
    return VideoFrame("s", t, 0.0, np.zeros((2, 2, 3), np.uint8))


def _chunk(t: float, n: int = 640) -> AudioChunk:
    return AudioChunk("s", t, 0.0, np.ones(n, np.float32), 16000)


def test_jitter_buffer_orders_and_waits_for_late_audio() -> None:
    jb = JitterBuffer("s", video=True, audio=True, sample_rate=16000, hold_s=0.25)
    jb.push(_frame(0.0), now=0.0)
    jb.push(_frame(0.04), now=0.01)
    assert jb.pop(now=0.02) == []  # audio has not reached 0.0 yet: wait
    jb.push(_chunk(0.0), now=0.03)
    assert [i.t for i in jb.pop(now=0.03)] == [0.0, 0.0, 0.04]
    jb.push(_frame(0.08), now=0.05)
    assert jb.pop(now=0.1) == []
    assert [i.t for i in jb.pop(now=0.31)] == [0.08]  # held for hold_s at most


def test_jitter_buffer_fills_missing_audio_with_silence_and_drops_it_when_late() -> None:
    jb = JitterBuffer("s", video=True, audio=True, sample_rate=16000, hold_s=0.2, conceal_s=1.0)
    jb.push(_chunk(0.0, 1600), now=0.0)
    out = []
    for k in range(75):  # 3 s of video, no audio after the first 0.1 s
        jb.push(_frame(k * FRAME), now=k * FRAME)
        out += jb.pop(now=k * FRAME)
    silence = [i for i in out if isinstance(i, AudioChunk) and not i.samples.any()]
    assert silence and jb.concealed_s > 1.0
    assert silence[0].t == pytest.approx(0.1)
    assert all(a.t_end <= b.t + 1e-9 for a, b in zip(silence, silence[1:], strict=False))
    late = _chunk(0.1, 16000)  # the real audio for 0.1..1.1 s turns up after all
    jb.push(late, now=3.0)
    assert jb.late_audio_s >= min(1.0, jb.concealed_s) - 1e-6
    rest = jb.pop(now=3.0) + jb.flush()
    assert not any(isinstance(i, AudioChunk) and i.t < silence[-1].t_end - 1e-9 and i.samples.any() for i in rest)
    assert math.isfinite(jb.audio_end)
