"""The source node avstream/source@v1, run in-process (produce() called directly)."""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest

from avstream.engine.capture.settings import LiveSettings
from avstream.engine.errors import SourceError
from avstream.engine.items import AudioChunk, Item, StreamInfo, VideoFrame
from avstream.engine.node import CheckContext, NodeContext
from avstream.engine.runtime.registry import check_interface
from avstream.plugins.sources import FileSource, SourceParams, source_node_types

SCENE = "synthetic://scene?seed=1&duration=2&width=96&height=64"


def make(params: dict[str, Any], base_dir: Path = Path("."), **ctx_kw: Any) -> FileSource:
    ctx = NodeContext(
        node_id="src",
        streams=("cam0",),
        base_dir=base_dir,
        stop_event=threading.Event(),
        logger=logging.getLogger("test.sources"),
        **ctx_kw,
    )
    return FileSource(ctx, SourceParams(**params))


def run(node: FileSource) -> tuple[StreamInfo, list[VideoFrame], list[AudioChunk]]:
    items: list[Item] = list(node.produce())
    assert isinstance(items[0], StreamInfo)
    assert not any(isinstance(i, StreamInfo) for i in items[1:])
    frames = [i for i in items if isinstance(i, VideoFrame)]
    chunks = [i for i in items if isinstance(i, AudioChunk)]
    assert len(frames) + len(chunks) == len(items) - 1
    assert all(i.stream == "cam0" for i in frames + chunks)
    return items[0], frames, chunks


def test_manifest_and_params() -> None:
    assert source_node_types() == [FileSource]
    check_interface(FileSource, "builtin")
    assert FileSource.type_id == "avstream/source@v1" and FileSource.output_kind == "media"
    for name, field in SourceParams.model_fields.items():
        assert field.description, name
    with pytest.raises(pydantic.ValidationError, match="give `uri`"):
        SourceParams()
    with pytest.raises(pydantic.ValidationError, match="not both"):
        SourceParams(uri="sample://demo", audio="a.wav")
    unknown: dict[str, Any] = {"uri": "sample://demo", "colour": "red"}
    with pytest.raises(pydantic.ValidationError):
        SourceParams(**unknown)
    with pytest.raises(pydantic.ValidationError):
        SourceParams(uri="sample://demo", fps=-1)


def test_check_reports_bad_uris(tmp_path: Path) -> None:
    ctx = CheckContext(node_id="src", base_dir=tmp_path)
    assert FileSource.check(SourceParams(uri="sample://demo"), ctx) == []
    problems = dict(FileSource.check(SourceParams(video="clip.mp4", audio="sample://nope"), ctx))
    assert "not found" in problems["video"] and "demo" in problems["audio"]
    (tmp_path / "clip.mp4").write_bytes(b"")
    assert "video" not in dict(FileSource.check(SourceParams(video="clip.mp4"), ctx))


def test_fast_run_counts_and_duration() -> None:
    node = make({"uri": SCENE, "realtime": False}, duration=1.0)
    info, frames, chunks = run(node)
    assert info.has_video and info.has_audio and info.stream == "cam0"
    assert len(frames) == 25 and max(f.t for f in frames) < 1.0
    assert chunks[-1].t_end == pytest.approx(1.0) and all(c.t < 1.0 for c in chunks)
    assert node.ctx.counters == {"frames_out": 25, "audio_chunks_out": len(chunks)}


def test_resume_after_skips_what_was_sent() -> None:
    node = make({"uri": SCENE, "realtime": True}, resume_after={"cam0": 1.5})
    start = time.monotonic()
    _, frames, chunks = run(node)
    assert min(f.t for f in frames) > 1.5 and min(c.t for c in chunks) > 1.5
    assert len(frames) == 12  # frames 1.52 .. 1.96
    assert time.monotonic() - start < 1.5  # pacing starts at the resume point, not at t=0


def test_loop_keeps_media_time_increasing() -> None:
    node = make({"uri": SCENE, "realtime": False, "loop": True}, duration=5.0)
    _, frames, chunks = run(node)
    ts = [f.t for f in frames]
    assert len(frames) == 125 and all(b > a for a, b in zip(ts, ts[1:], strict=False))
    np.testing.assert_allclose(np.diff(ts), 0.04, atol=1e-9)
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.t == pytest.approx(a.t_end)
    assert chunks[-1].t_end == pytest.approx(5.0)


def test_realtime_paces_at_media_speed() -> None:
    node = make({"uri": "synthetic://scene?seed=2&duration=1&width=96&height=64"})
    start = time.monotonic()
    _, frames, _ = run(node)
    elapsed = time.monotonic() - start
    assert 0.8 < elapsed < 5.0
    span = frames[-1].wall - frames[0].wall  # wall is stamped at release when paced
    assert 0.7 < span < 5.0


def test_stop_is_prompt() -> None:
    node = make({"uri": "synthetic://scene?seed=2&duration=30&width=96&height=64"})
    threading.Timer(0.3, node.ctx.stop_event.set).start()
    start = time.monotonic()
    _, frames, _ = run(node)
    assert time.monotonic() - start < 1.5
    assert 0 < len(frames) < 50


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI")
def test_video_and_audio_pair_with_relative_paths(tmp_path: Path) -> None:
    wav = tmp_path / "mic.wav"
    beep = "aevalsrc=0.5*sin(2*PI*800*t)*between(t\\,1\\,1.3):s=48000"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", beep, "-t", "2", str(wav)], check=True
    )
    node = make(
        {"video": "synthetic://sync?duration=2&width=64&height=48", "audio": "mic.wav", "realtime": False},
        base_dir=tmp_path,
    )
    info, frames, chunks = run(node)
    assert (
        info.has_video and info.has_audio and (info.width, info.height, info.sample_rate) == (64, 48, 16000)
    )
    assert " + " in info.uri
    assert len(frames) == 50 and chunks
    loud = next(c.t for c in chunks if np.abs(c.samples).max() > 0.2)
    assert abs(loud - 1.0) <= 0.04
    bad = make({"video": "mic.wav", "audio": "mic.wav"}, base_dir=tmp_path)  # no video track
    with pytest.raises(SourceError, match="no usable track|no video"):
        list(bad.produce())


def test_open_errors_are_source_errors(tmp_path: Path) -> None:
    node = make({"uri": "missing.mp4"}, base_dir=tmp_path)
    with pytest.raises(SourceError, match="'cam0'.*not found"):
        list(node.produce())


def test_live_settings_are_one_schema_with_the_node_params() -> None:
    """The source node's live params are LiveSettings' own fields: same defaults, limits and messages."""
    assert issubclass(SourceParams, LiveSettings)
    for name, field in LiveSettings.model_fields.items():
        assert repr(SourceParams.model_fields[name]) == repr(field), name
    params = SourceParams(uri="rtsp://cam/1", backoff_max=12.0, clock="wall")
    assert params.backoff_max == 12.0 and params.clock == "wall"
    defaults = LiveSettings()
    assert (defaults.rtsp_transport, defaults.open_timeout, defaults.stall_timeout) == ("tcp", 10.0, 5.0)
    assert (defaults.backoff_initial, defaults.backoff_max, defaults.backoff_jitter) == (0.5, 30.0, 0.25)
    assert (defaults.max_reconnects, defaults.backend, defaults.max_lag, defaults.clock) == (0, "auto", 2.0, "auto")
    assert (defaults.jitter_buffer, defaults.decode_threads, defaults.camera_backend) == (0.25, 0, "auto")
    assert (defaults.capture_format, defaults.capture_size, defaults.capture_fps) == ("", "", 0.0)
    assert (defaults.mic_channels, defaults.mic_rate, defaults.mic_buffer) == (1, 0, 2.0)
    # the node's own params come first, as `avstream plugins` lists them
    fields = list(SourceParams.model_fields)
    assert fields[:3] == ["uri", "video", "audio"] and fields.index("options") < fields.index("rtsp_transport")
    for bad, message in (({"backoff_jitter": 2}, "less than or equal to 1"), ({"stall_timeout": 0}, "greater than 0"),
                         ({"rtsp_transport": "x"}, "'tcp', 'udp' or 'auto'"), ({"capture_size": "big"}, "pattern"),
                         ({"mic_rate": -1}, "greater than or equal to 0"), ({"bogus": 1}, "Extra inputs")):
        for model, extra in ((LiveSettings, {}), (SourceParams, {"uri": "sample://demo"})):
            with pytest.raises(pydantic.ValidationError, match=message):
                model(**extra, **bad)
    with pytest.raises(pydantic.ValidationError):
        defaults.stall_timeout = 1.0  # type: ignore[misc]  # frozen, as the node params are


def test_every_live_scheme_has_a_reader() -> None:
    from avstream.engine.capture import schemes
    from avstream.engine.capture.base import LIVE_SCHEMES, NETWORK_SCHEMES

    assert set(NETWORK_SCHEMES) <= LIVE_SCHEMES
    for scheme in LIVE_SCHEMES:
        assert scheme in schemes._SCHEMES, scheme  # noqa: SLF001 - the registry has no public listing
