"""Capture devices: a microphone through PortAudio from a real PulseAudio server, cameras through the
FFmpeg CLI reader (no camera here: the reader runs against a pipe fed like a camera device), and
the errors for missing or unusable devices."""

from __future__ import annotations

import os
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from avstream.engine.capture.schemes import open_reader
from avstream.engine.errors import SourceError
from avstream.engine.items import AudioChunk, Event, Item, VideoFrame
from tests.live.helpers import LiveRun
from tests.live.servers import Pulse, needs_ffmpeg

pytestmark = pytest.mark.timeout(60)  # a test's own mark overrides this
RATE = 16000


def _test_signal(seconds: float = 2.5) -> np.ndarray:
    """A 200 -> 1700 Hz chirp and low-passed noise bursts (well inside every resampler's pass band):
    one clear correlation peak."""
    rng = np.random.default_rng(7)
    t = np.arange(int(seconds * RATE)) / RATE
    sig = 0.3 * np.sin(2 * np.pi * (200 * t + 300 * t * t))
    for start in (0.3, 1.1, 1.7):
        i = int(start * RATE)
        burst = np.convolve(rng.standard_normal(2400 + 7), np.ones(8) / 8, mode="valid")
        sig[i:i + 2400] += 0.6 * burst
    return np.clip(sig, -0.9, 0.9).astype(np.float32)


def _write_wav(path: Path, x: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((x * 32767).astype("<i2").tobytes())
    return path


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_microphone_captures_what_pulseaudio_plays(pulse: Pulse, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in pulse.env.items():
        monkeypatch.setenv(k, v)
    played = _test_signal()
    wav = _write_wav(tmp_path / "played.wav", played)
    got: list[AudioChunk] = []

    def keep(item: Item) -> None:
        if isinstance(item, AudioChunk):
            got.append(item)

    run = LiveRun({"uri": "mic://default"}, stream="mic", windows=False, consume=keep)
    try:
        run.wait(lambda r: len(r.audio_t) > 10, 30, "audio from the microphone")
        player = pulse.play(wav)
        assert player.wait(30) == 0, player.stderr.read() if player.stderr else ""
        end = run.rec.audio_t[-1][1]
        run.wait(lambda r: r.audio_t[-1][1] > end + 1.0, 30, "audio after the playback")
        status = run.node.status()
    finally:
        run.stop()
    info = run.rec.info[0]
    assert info.has_audio and not info.has_video and info.sample_rate == RATE
    assert all(c.sample_rate == RATE for c in got)
    assert all(b.t >= a.t_end - 1e-6 for a, b in zip(got, got[1:], strict=False))  # contiguous, monotonic
    # the chunks on their own timeline (as windows see them): a timing error would show here
    t0 = got[0].t
    captured = np.zeros(int(round((got[-1].t_end - t0) * RATE)) + 1, np.float32)
    for c in got:
        i = int(round((c.t - t0) * RATE))
        captured[i:i + len(c.samples)] = c.samples
    n = len(captured) + len(played)
    spec = np.fft.rfft(captured, n) * np.conj(np.fft.rfft(played, n))
    xc = np.fft.irfft(spec, n)
    lag = int(np.argmax(xc[: len(captured)]))
    seg = captured[lag:lag + len(played)]
    assert len(seg) == len(played), "the playback was not captured in full"
    corr = float(np.dot(seg, played) / (np.linalg.norm(seg) * np.linalg.norm(played) + 1e-12))
    assert corr > 0.9, f"captured audio correlates {corr:.2f} with what was played"
    assert status["state"] == "up" and "device" in status and status.get("mic_overflows", 0) == 0
    assert abs(status["drift_ppm"]) < 2000 and "av_skew_ms" in status


def test_microphone_errors_are_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SourceError) as err:
        open_reader("mic://no-such-device-xyz", stream="desk")
    msg = str(err.value)
    assert "'desk'" in msg and "mic://no-such-device-xyz" in msg and "input device" in msg and "\n" not in msg
    with pytest.raises(SourceError, match="only audio"):
        open_reader("mic://default", stream="desk", audio=False)
    with pytest.raises(SourceError, match="give a device"):
        open_reader("mic://", stream="desk")


def test_microphone_block_buffer_counts_overflows() -> None:
    from avstream.engine.capture.microphone import _Blocks

    b = _Blocks(max_samples=1000)
    for k in range(5):
        b.add(float(k), np.zeros(300, np.float32), overflow=k == 4)
    assert b.dropped == 600 and b.held == 900 and b.overflows == 1
    assert [w for w, _ in b.take(0.0)] == [2.0, 3.0, 4.0]


def test_missing_and_unusable_cameras_are_clear_errors() -> None:
    needs_ffmpeg()
    for backend in ("ffmpeg", "opencv"):
        with pytest.raises(SourceError) as err:
            open_reader("v4l2:///dev/video97", stream="porch", live=_settings(camera_backend=backend))
        msg = str(err.value)
        assert "'porch'" in msg and "/dev/video97" in msg and "not found" in msg
    run = LiveRun({"uri": "v4l2:///dev/null"}, stream="porch")
    run.wait_done(30)
    assert isinstance(run.error, SourceError) and "not a video capture device" in str(run.error)
    with pytest.raises(SourceError, match="size"):
        open_reader("v4l2:///dev/video0?size=big", stream="porch")


def _settings(**kw: object) -> object:
    from avstream.engine.capture.live import LiveSettings

    return LiveSettings(**kw)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_camera_reader_through_the_ffmpeg_cli_on_a_device_like_pipe(tmp_path: Path) -> None:
    """The camera path (FFmpeg CLI, NUT pipe, decoding, wall clock, stall, reconnect) against a FIFO
    that a real-time writer fills with raw YUYV frames, as a V4L2 device delivers them."""
    needs_ffmpeg()
    from avstream.engine.capture.camera import V4L2Reader
    from avstream.engine.capture.live import LiveSettings

    fifo = tmp_path / "video0"
    os.mkfifo(fifo)
    gen = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
           "color=c=0x101010:s=160x120:r=25,drawbox=c=white:t=fill:enable='lt(mod(t,1),0.1)'",
           "-pix_fmt", "yuyv422", "-f", "rawvideo", "-y", str(fifo)]
    writer = subprocess.Popen(gen, stdin=subprocess.DEVNULL)
    settings = LiveSettings(stall_timeout=1.0, open_timeout=3.0, backoff_initial=0.2, backoff_max=0.5)
    reader = V4L2Reader(f"v4l2://{fifo}?format=yuyv422&size=160x120&fps=25", stream="cam", live=settings,
                        demuxer="rawvideo")
    reader.bind()
    items = reader.read()
    frames: list[VideoFrame] = []
    events: list[Event] = []
    try:
        for item in items:
            if isinstance(item, VideoFrame):
                frames.append(item)
            elif isinstance(item, Event):
                events.append(item)
            if len(frames) >= 60:
                break
        writer.kill()
        writer.wait()
        for item in items:  # the writer is gone: the stall watchdog declares the camera down
            if isinstance(item, Event):
                events.append(item)
                break
        writer = subprocess.Popen(gen, stdin=subprocess.DEVNULL)
        for item in items:
            if isinstance(item, Event):
                events.append(item)
            if isinstance(item, VideoFrame) and events[-1].name == "stream_up":
                frames.append(item)
                break
    finally:
        reader.close()
        writer.kill()
        writer.wait()
    assert reader.info.has_video and not reader.info.has_audio and (reader.info.width, reader.info.height) == (160, 120)
    assert all(f.image.shape == (120, 160, 3) and f.image.dtype == np.uint8 for f in frames)
    bright = [f.t for f in frames[:60] if f.image.mean() > 128]
    assert len(bright) >= 3
    ts = [f.t for f in frames]
    assert all(b > a for a, b in zip(ts, ts[1:], strict=False))
    rate = 59 / (ts[59] - ts[0])
    assert 22 < rate < 28
    assert [e.name for e in events] == ["stream_down", "stream_up"]
