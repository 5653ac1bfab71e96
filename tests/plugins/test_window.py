"""The A/V window node, driven synchronously in one process: items in, windows out, in order."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from avstream.engine.items import AudioChunk, AVWindow, Item, StreamInfo, VideoFrame
from avstream.engine.node import NodeContext, WindowRequirement
from avstream.plugins.window import AVWindowNode, WindowParams

REQ = WindowRequirement(seconds=2.0, hop=1.0, fps=4.0, frames=8, height=12, width=16, sample_rate=16000, audio_samples=32000)


def make_node(req: WindowRequirement | None = REQ, **params: float) -> AVWindowNode:
    ctx = NodeContext("window", ("s",), Path("."), threading.Event(), logging.getLogger("t"), window=req)
    return AVWindowNode(ctx, WindowParams(**params))


def feed(node: AVWindowNode, seconds: float, video: bool = True, audio: bool = True, fps: float = 25.0) -> list[AVWindow]:
    """A stream whose frame k has pixel value k and whose audio sample n equals n / rate (a ramp)."""
    out: list[AVWindow] = []
    out += node.process(StreamInfo("s", has_video=video, has_audio=audio))  # type: ignore[arg-type]
    chunk = 640
    n_frames = int(seconds * fps)
    n_chunks = int(seconds * 16000 / chunk)
    events: list[tuple[float, object]] = []
    if video:
        events += [(k / fps, VideoFrame("s", k / fps, 1000.0 + k / fps, np.full((36, 48, 3), k % 256, np.uint8))) for k in range(n_frames)]
    if audio:
        for c in range(n_chunks):
            t = c * chunk / 16000
            samples = (np.arange(c * chunk, (c + 1) * chunk) / 16000).astype(np.float32)
            events.append((t, AudioChunk("s", t, 1000.0 + t, samples, 16000)))
    for _, item in sorted(events, key=lambda e: e[0]):
        out += node.process(item)  # type: ignore[arg-type]
    out += node.on_eos("s")  # type: ignore[arg-type]
    return out


def test_windows_follow_length_hop_and_model_shape() -> None:
    wins = feed(make_node(), 5.0)
    assert [(w.t0, w.t1) for w in wins] == [(0.0, 2.0), (1.0, 3.0), (2.0, 4.0), (3.0, 5.0), (4.0, 6.0)]
    w = wins[1]
    assert w.frames is not None and w.frames.shape == (8, 12, 16, 3)
    # frames sampled on the 4 fps grid from t0: the first source frame at or after t0 + k/4
    assert [int(f[0, 0, 0]) for f in w.frames] == [math.ceil((1 + k / 4) * 25) for k in range(8)]
    assert w.audio is not None and w.audio.shape == (32000,)
    # audio aligned by media time: the ramp's first sample is t0
    assert abs(float(w.audio[0]) - 1.0) < 1e-4 and abs(float(w.audio[-1]) - (3.0 - 1 / 16000)) < 1e-3
    # the last window is partial and padded with silence
    last = wins[-1]
    assert last.audio is not None and float(np.abs(last.audio[16000:]).max()) == 0.0
    assert last.wall >= wins[0].wall


def test_missing_audio_and_missing_video() -> None:
    wins = feed(make_node(), 3.0, audio=False)
    assert wins and all(w.audio is None and w.frames is not None for w in wins)
    wins = feed(make_node(), 3.0, video=False)
    assert wins and all(w.frames is None and w.audio is not None for w in wins)


def test_params_without_a_model() -> None:
    node = make_node(None, seconds=1.0, hop=0.5, fps=2.0, width=8, height=6)
    wins = feed(node, 2.0, audio=False)
    assert [(w.t0, w.t1) for w in wins][:3] == [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0)]
    assert wins[0].frames is not None and wins[0].frames.shape == (2, 6, 8, 3)


def test_audio_resampled_to_the_model_rate() -> None:
    node = make_node()
    node.process(StreamInfo("s", has_video=False, has_audio=True))
    out: list[Item] = []
    for c in range(150):  # 3 s at 8 kHz in 160-sample chunks
        t = c * 160 / 8000
        out += node.process(AudioChunk("s", t, t, np.full(160, 0.5, np.float32), 8000))
    assert out and isinstance(out[0], AVWindow) and out[0].audio is not None
    assert out[0].audio.shape == (32000,) and abs(float(out[0].audio.mean()) - 0.5) < 1e-3
    assert node.ctx.counters["resampled"] == 150  # a source that fits audio sends the model's rate


def test_windows_inside_a_gap_are_skipped() -> None:
    node = make_node(WindowRequirement(seconds=2.0, hop=1.0, sample_rate=16000, audio_samples=32000))
    node.process(StreamInfo("s", has_video=False, has_audio=True))
    out: list[Item] = []
    for t in [k * 0.5 for k in range(8)] + [20 + k * 0.5 for k in range(8)]:  # 0..4 s, a hole, 20..24 s
        out += node.process(AudioChunk("s", t, t, np.ones(8000, np.float32), 16000))
    starts = [w.t0 for w in out if isinstance(w, AVWindow)]
    assert starts[:3] == [0.0, 1.0, 2.0]
    assert not [t for t in starts if 4.0 <= t and t + 2.0 <= 20.0]  # nothing made of the hole alone
    assert 20.0 in starts
    assert node.ctx.counters["gap_windows_skipped"] > 10


def test_frames_that_fit_are_kept_as_they_come() -> None:
    node = make_node()
    node.process(StreamInfo("s", has_video=True, has_audio=False))
    out: list[Item] = []
    for k in range(13):  # 3 s on the 4 fps grid, at the model's size: what a fitting source sends
        image = np.full((12, 16, 3), k, np.uint8)
        out += node.process(VideoFrame("s", k / 4, 0.0, image))
    wins = [w for w in out if isinstance(w, AVWindow)]
    assert wins and wins[0].frames is not None and [int(f[0, 0, 0]) for f in wins[0].frames] == list(range(8))
    assert "resized" not in node.ctx.counters and "resampled" not in node.ctx.counters


def test_a_source_that_does_not_fit_is_fitted_here_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    node = make_node()
    with caplog.at_level(logging.WARNING):
        wins = feed(node, 3.0)  # 48x36 frames at 25 fps
    assert wins[0].frames is not None and wins[0].frames.shape == (8, 12, 16, 3)
    assert node.ctx.counters["resized"] == 12  # only the frames on the 4 fps grid (0 .. 2.75 s)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["window: stream 's': frames come at 48x36, the model takes 16x12: resizing them here "
                        "(counted as 'resized')"]


def test_the_window_node_does_not_load_opencv() -> None:
    code = (
        "import sys, logging, threading; from pathlib import Path; import numpy as np\n"
        "from avstream.engine.runtime.registry import load_registry\n"
        "from avstream.engine.items import VideoFrame, AudioChunk, StreamInfo\n"
        "from avstream.engine.node import NodeContext, WindowRequirement\n"
        "cls = load_registry().get('avstream/av_window@v1')\n"
        "req = WindowRequirement(seconds=2.0, hop=1.0, fps=4.0, frames=8, height=12, width=16, sample_rate=16000,"
        " audio_samples=32000)\n"
        "node = cls(NodeContext('w', ('s',), Path('.'), threading.Event(), logging.getLogger('t'), window=req),"
        " cls.Params())\n"
        "node.process(StreamInfo('s', True, True))\n"
        "wins = [w for k in range(12) for w in [*node.process(VideoFrame('s', k / 4, 0.0, np.zeros((12, 16, 3), np.uint8))),"
        " *node.process(AudioChunk('s', k / 4, 0.0, np.zeros(4000, np.float32), 16000))]]\n"
        "assert wins, 'no window'\n"
        "print('cv2' in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


def test_a_window_node_restarted_mid_stream_starts_where_its_data_begins() -> None:
    """After a restart the node's first media item is at 7.9 s: no window of the media time before
    (already published by the node that died) is made again from frames it does not have."""
    node = make_node()
    out: list[AVWindow] = list(node.process(StreamInfo("s", has_video=True, has_audio=True)))  # type: ignore[arg-type]
    for k in range(int(7.9 * 25), int(12 * 25)):
        t = k / 25
        out += node.process(VideoFrame("s", t, 1000.0 + t, np.full((36, 48, 3), 1, np.uint8)))  # type: ignore[arg-type]
        out += node.process(AudioChunk("s", t, 1000.0 + t, np.zeros(640, np.float32), 16000))  # type: ignore[arg-type]
    assert [(w.t0, w.t1) for w in out][:3] == [(7.0, 9.0), (8.0, 10.0), (9.0, 11.0)]
