"""Media readers on real files made with the FFmpeg CLI, plus sample:// and synthetic:// inputs."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avstream.engine.capture.base import redact_uri
from avstream.engine.capture.schemes import open_reader
from avstream.engine.errors import SourceError
from avstream.engine.items import AudioChunk, VideoFrame
from avstream.engine.synthetic.scene import SceneConfig, generate_truth

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI")

BEEP_AT = 2.0  # s, in the file's own media time


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, timeout=60)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    beep = f"aevalsrc=0.8*sin(2*PI*1000*t)*between(t\\,{BEEP_AT}\\,{BEEP_AT + 0.2}):s=44100:c=stereo"
    files = {k: d / v for k, v in {
        "av": "av.mp4", "ts": "av.ts", "noaudio": "noaudio.mp4", "wav": "beep.wav", "red": "red.mkv",
        "faststart": "fs.mp4", "garbage": "garbage.mp4",
    }.items()}  # fmt: skip
    video = ["-f", "lavfi", "-i", "testsrc=size=160x120:rate=25"]
    h264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    ffmpeg(*video, "-f", "lavfi", "-i", beep, "-t", "4", *h264, "-c:a", "aac", str(files["av"]))
    ffmpeg("-i", str(files["av"]), "-c", "copy", str(files["ts"]))  # MPEG-TS: start time ~1.4 s
    ffmpeg(*video, "-t", "2", *h264, "-an", str(files["noaudio"]))
    ffmpeg("-f", "lavfi", "-i", beep, "-t", "3", str(files["wav"]))
    ffmpeg(
        "-f", "lavfi", "-i", "color=c=red:size=64x48:rate=10", "-t", "0.5", "-c:v", "ffv1", str(files["red"])
    )
    ffmpeg(
        *video,
        "-f",
        "lavfi",
        "-i",
        beep,
        "-t",
        "4",
        *h264,
        "-c:a",
        "aac",
        "-movflags",
        "+faststart",
        str(files["faststart"]),
    )
    files["garbage"].write_bytes(b"\x00\x00\x01 not a media file " * 500)
    return files


def read_all(uri: str | Path, **kw: Any) -> tuple[list[VideoFrame], list[AudioChunk]]:
    with open_reader(str(uri), stream="cam0", **kw) as reader:
        items = list(reader.read())
    return [i for i in items if isinstance(i, VideoFrame)], [i for i in items if isinstance(i, AudioChunk)]


def first_loud(chunks: list[AudioChunk], level: float = 0.1) -> float:
    return next(c.t for c in chunks if np.sqrt(np.mean(c.samples**2)) > level)


def assert_contiguous(chunks: list[AudioChunk]) -> None:
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.t == pytest.approx(a.t_end, abs=1e-9)


@pytest.mark.parametrize("kind", ["av", "ts"])
def test_file_timestamps(media: dict[str, Path], kind: str) -> None:
    with open_reader(str(media[kind]), stream="cam0") as reader:
        info = reader.info
    assert info.has_video and info.has_audio and info.fps == 25 and (info.width, info.height) == (160, 120)
    assert info.sample_rate == 16000 and info.stream == "cam0"
    frames, chunks = read_all(media[kind])
    assert len(frames) == 100
    ts = np.array([f.t for f in frames])
    assert ts.min() >= 0 and ts[0] < 0.05  # time starts at 0 whatever the container's start time
    np.testing.assert_allclose(np.diff(ts), 0.04, atol=1e-3)
    f = frames[0]
    assert f.stream == "cam0" and f.image.shape == (120, 160, 3) and f.image.dtype == np.uint8
    assert f.image.flags["C_CONTIGUOUS"] and f.wall > 0
    assert chunks[0].t < 0.05 and all(len(c.samples) == 640 for c in chunks[:-1])
    assert all(
        c.samples.dtype == np.float32 and c.samples.ndim == 1 and c.sample_rate == 16000 for c in chunks
    )
    assert max(np.abs(c.samples).max() for c in chunks) <= 1.0
    assert_contiguous(chunks)
    assert abs(first_loud(chunks) - BEEP_AT) <= 0.04 + 0.025  # one chunk, plus the TS audio lead
    assert chunks[-1].t_end == pytest.approx(4.0, abs=0.1)


def test_fps_subsampling_and_rate(media: dict[str, Path]) -> None:
    frames, chunks = read_all(media["av"], fps=10, sample_rate=8000, audio_chunk_s=0.1)
    ts = np.array([f.t for f in frames])
    assert len(frames) == 40 and len(set(ts)) == 40
    assert np.diff(ts).min() >= 0.08 - 1e-6 and np.diff(ts).max() <= 0.12 + 1e-6
    assert all(len(c.samples) == 800 and c.sample_rate == 8000 for c in chunks[:-1])
    assert abs(first_loud(chunks) - BEEP_AT) <= 0.1
    frames, _ = read_all(media["av"], fps=50)  # above the native rate: no duplicates
    assert len(frames) == 100


def test_bgr_order(media: dict[str, Path]) -> None:
    frames, chunks = read_all(media["red"])
    assert not chunks and len(frames) == 5
    b, g, r = frames[0].image.reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 40 and b < 40


def test_tracks_can_be_missing_or_ignored(media: dict[str, Path]) -> None:
    with open_reader(str(media["noaudio"]), stream="s") as reader:
        assert reader.info.has_video and not reader.info.has_audio and reader.info.sample_rate == 0
    frames, chunks = read_all(media["noaudio"])
    assert len(frames) == 50 and not chunks
    frames, chunks = read_all(media["wav"])
    assert not frames and abs(first_loud(chunks) - BEEP_AT) <= 0.04
    assert chunks[0].t == 0.0
    frames, chunks = read_all(media["av"], video=False)
    assert not frames and chunks
    frames, chunks = read_all("file://" + str(media["av"]), audio=False)
    assert len(frames) == 100 and not chunks


def test_open_errors_name_stream_and_redacted_uri(media: dict[str, Path], tmp_path: Path) -> None:
    cases = [
        (str(tmp_path / "missing.mp4"), "not found"),
        (str(media["garbage"]), "not a media file"),
        (str(tmp_path), "directory"),
        ("file://bob:hunter2@" + str(tmp_path / "x.mp4"), "not found"),
        ("gopher://bob:hunter2@10.0.0.1/live", "not supported"),
    ]
    for uri, why in cases:
        with pytest.raises(SourceError) as err:
            open_reader(uri, stream="cam7")
        msg = str(err.value)
        assert "'cam7'" in msg and why in msg and "\n" not in msg
        assert "hunter2" not in msg and redact_uri(uri) in msg
        assert isinstance(err.value, ConnectionError)
    with pytest.raises(SourceError, match="no usable track"):
        open_reader(str(media["wav"]), stream="cam7", audio=False)


def test_truncated_files(media: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = media["faststart"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="avstream.capture"):
        frames, chunks = read_all(cut)  # stops cleanly at the last decodable point
    assert 10 < len(frames) < 100 and chunks
    assert any("truncated" in r.getMessage() for r in caplog.records)
    plain = tmp_path / "cut_plain.mp4"  # index at the end: nothing can be read at all
    plain.write_bytes(media["av"].read_bytes()[:20000])
    with pytest.raises(SourceError, match="cut_plain"):
        read_all(plain)


def test_redact_uri() -> None:
    assert redact_uri("rtsp://admin:s3cr:t@cam.local:554/h264") == "rtsp://admin:***@cam.local:554/h264"
    assert redact_uri("rtsp://viewer@cam.local/x") == "rtsp://viewer@cam.local/x"
    assert redact_uri("http://h/x?token=abc&w=1#f") == "http://h/x?token=***&w=1#f"
    assert redact_uri("/data/a@b.mp4") == "/data/a@b.mp4"
    assert redact_uri("sample://demo") == "sample://demo"


def test_synthetic_reader_times_and_truth() -> None:
    uri = "synthetic://scene?seed=3&duration=2&fps=20&width=160&height=96&rate=8000"
    with open_reader(uri, stream="s1", sample_rate=16000) as reader:
        info = reader.info
        items = list(reader.read())
        truth = reader.truth
    assert (info.fps, info.width, info.height, info.sample_rate) == (20, 160, 96, 16000)
    assert truth == generate_truth(
        SceneConfig(seed=3, duration=2, fps=20, width=160, height=96, sample_rate=8000)
    )
    frames = [i for i in items if isinstance(i, VideoFrame)]
    chunks = [i for i in items if isinstance(i, AudioChunk)]
    assert [f.t for f in frames] == [i / 20 for i in range(40)]
    assert frames[0].image.shape == (96, 160, 3)
    assert sum(len(c.samples) for c in chunks) == 32000 and chunks[0].t == 0.0
    assert_contiguous(chunks)
    ts = [i.t for i in items]
    assert all(b >= a - 0.05 for a, b in zip(ts, ts[1:], strict=False))  # interleaved by media time
    with open_reader(uri, stream="s1", fps=8, video=True, audio=False) as reader:
        only = list(reader.read())
    assert len(only) == 16 and all(isinstance(f, VideoFrame) for f in only)


def test_samples_and_uri_errors() -> None:
    with open_reader("sample://demo", stream="d") as reader:
        assert (reader.info.width, reader.info.height, reader.info.fps, reader.info.sample_rate) == (
            640,
            360,
            25,
            16000,
        )
        assert reader.truth is not None and reader.truth["config"]["duration"] == 20.0
    with pytest.raises(SourceError, match=r"unknown sample 'nope'.*demo"):
        open_reader("sample://nope", stream="d")
    with pytest.raises(SourceError, match="unknown query key 'colour'"):
        open_reader("synthetic://scene?seed=1&colour=red", stream="d")
    with pytest.raises(SourceError, match="bad value 'x' for 'seed'"):
        open_reader("synthetic://scene?seed=x", stream="d")
    with pytest.raises(SourceError, match="duration"):
        open_reader("synthetic://scene?duration=-1", stream="d")


def test_sync_sample_flash_and_beep_line_up() -> None:
    frames, chunks = read_all("synthetic://sync?duration=3&width=64&height=48")
    flashes = [f.t for f in frames if f.image.mean() > 128]
    assert flashes[0] == 0.0 and [round(t, 2) for t in flashes if t % 1.0 == 0] == [0.0, 1.0, 2.0]
    beeps = [c.t for c in chunks if np.abs(c.samples).max() > 0.1]
    assert {round(t) for t in beeps} == {0, 1, 2} and all(t % 1.0 < 0.1 for t in beeps)


def test_written_scene_reads_back_in_sync(tmp_path: Path) -> None:
    from avstream.engine.synthetic.scene import write_scene

    cfg = SceneConfig(seed=4, duration=4.0, width=160, height=96, violence=False, sound="drum")
    truth = write_scene(cfg, tmp_path / "s.mp4", tmp_path / "s.json")
    frames, chunks = read_all(tmp_path / "s.mp4")
    assert [round(f.t, 3) for f in frames] == [f["t"] for f in truth["frames"]]
    # the decoded audio follows the sounding object's envelope at the same media time
    env = np.interp(
        [c.t + 0.02 for c in chunks],
        [f["t"] for f in truth["frames"]],
        [f["envelope"] for f in truth["frames"]],
    )
    rms = np.array([np.sqrt(np.mean(c.samples**2)) for c in chunks])
    assert np.corrcoef(env, rms)[0, 1] > 0.8
    lag = [np.corrcoef(np.roll(env, k), rms)[0, 1] for k in range(-3, 4)]
    assert int(np.argmax(lag)) - 3 in (-1, 0, 1)  # aligned within one chunk


def test_min_size_scales_frames_down_keeping_the_aspect(tmp_path: Path) -> None:
    from avstream.engine.capture.base import scaled_size
    from avstream.engine.synthetic.scene import SceneConfig, write_scene

    assert scaled_size(1280, 720, (112, 112)) == (200, 112)
    assert scaled_size(1280, 720, (64, 64)) == (114, 64)
    assert scaled_size(320, 180, (640, 360)) == (320, 180)  # never upscales
    assert scaled_size(1280, 720, None) == (1280, 720)
    clip = tmp_path / "c.mp4"
    write_scene(SceneConfig(seed=3, duration=1, width=640, height=360), str(clip))
    with open_reader(str(clip), stream="s", audio=False, min_size=(112, 112)) as reader:
        shapes = {item.image.shape for item in reader.read() if isinstance(item, VideoFrame)}
    assert shapes == {(112, 200, 3)}
