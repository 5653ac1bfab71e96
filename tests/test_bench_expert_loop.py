"""The benchmarks' expert loop feeds the model what its contract asks, and what the engine feeds it.

A 4 s 320x240 25 fps H.264 clip (B-frames) with 48 kHz stereo AAC, made by the FFmpeg CLI. The
reference for the frames is computed here, independently of both loops: a full PyAV decode, the
first frame at or after each point k / 4 s of the model's grid, each scaled by swscale (area) to
64x64 BGR. The expert's windows must hold exactly those frames (bit for bit, no tolerance: same
decoder, same scaler) and exactly the engine's window tensors (reader fitted to the model, window
node); the engine's and the expert's activations then agree exactly too.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import bench_module, make_h264_clip

REPO = Path(__file__).resolve().parents[1]
MODEL = "builtin:highlight"

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI")


def expert_loop() -> Any:
    return bench_module("expert_loop")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_h264_clip(tmp_path_factory.mktemp("expert") / "clip.mp4")


def expert_feeds(clip: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
                 ) -> tuple[list[dict[str, np.ndarray]], list[float]]:
    """What bench/expert_loop.py feeds the model per window, and the activations it prints."""
    module = expert_loop()
    feeds: list[dict[str, np.ndarray]] = []
    opened = module.session

    class Recording:
        def __init__(self, path: Path):
            self.session = opened(path)

        def run(self, names: list[str], feed: dict[str, np.ndarray]) -> Any:
            feeds.append({k: v.copy() for k, v in feed.items()})
            return self.session.run(names, feed)

    monkeypatch.setattr(module, "session", Recording)
    monkeypatch.setattr(sys, "argv", ["expert_loop.py", str(clip), "--model", MODEL])
    monkeypatch.chdir(REPO)
    module.main()
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["windows"] == len(feeds)
    return feeds, printed["activation"]


def reference_frames(clip: Path, fps: float, size: tuple[int, int]) -> list[tuple[float, np.ndarray]]:
    """Every frame of a full decode on the first-at-or-after rule of the grid k / fps, scaled to ``size``."""
    import av
    from av.video.reformatter import VideoReformatter

    scaler = VideoReformatter()
    picks: list[tuple[float, np.ndarray]] = []
    k = 0
    with av.open(str(clip)) as container:
        for frame in container.decode(video=0):
            t = float(frame.time)
            if t + 1e-6 >= k / fps:
                picks.append((t, scaler.reformat(frame, format="bgr24", width=size[0], height=size[1],
                                                 interpolation="AREA", threads=1).to_ndarray()))
                k = math.floor(t * fps + 1e-6) + 1
    return picks


def engine_windows(clip: Path, tmp_path: Path) -> list[Any]:
    """The engine's windows: the reader fitted to the model's size and grid, then the window node."""
    from avstream.engine.capture.fit import FrameFitter
    from avstream.engine.capture.schemes import open_reader
    from avstream.engine.inference.contract import read_contract, resolve_model
    from avstream.engine.items import AVWindow, MediaFit
    from avstream.engine.node import NodeContext
    from avstream.plugins.window import AVWindowNode, WindowParams

    need = read_contract(resolve_model(MODEL, REPO)).window_requirement()
    node = AVWindowNode(NodeContext("window", ("s",), tmp_path, threading.Event(), logging.getLogger("t"),
                                    window=need), WindowParams())
    fitter = FrameFitter([MediaFit(need.width, need.height, need.fps)])
    out: list[Any] = []
    with open_reader(str(clip), stream="s", sample_rate=need.sample_rate, fitter=fitter) as reader:
        for item in [reader.info, *reader.read()]:
            out += node.process(item)
    out += node.on_eos("s")
    return [w for w in out if isinstance(w, AVWindow)]


def test_expert_windows_hold_the_models_frames_and_the_engines_tensors(
        clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from avstream.engine.inference.contract import read_contract, resolve_model
    from avstream.engine.inference.runners import Runner

    path = resolve_model(MODEL, REPO)
    need = read_contract(path).window_requirement()
    feeds, activations = expert_feeds(clip, monkeypatch, capsys)
    windows = engine_windows(clip, tmp_path)
    assert len(feeds) == len(windows) >= 4

    # the model's frames: on its 4 fps grid, 8 distinct frames per full window, none repeated
    reference = reference_frames(clip, need.fps, (need.width, need.height))
    assert [round(t, 2) for t, _ in reference[:6]] == [0.0, 0.28, 0.52, 0.76, 1.0, 1.28]
    full = [i for i, w in enumerate(windows) if w.t1 <= 4.0 + 1e-6]
    assert full
    for i in full:
        t0 = windows[i].t0
        want = np.stack([img for t, img in reference if t0 - 1e-6 <= t < t0 + need.seconds - 1e-6])
        np.testing.assert_array_equal(feeds[i]["video"][0], want, err_msg=f"window t0={t0}")
        video = feeds[i]["video"][0].reshape(need.frames, -1)
        assert all((video[k] != video[k + 1]).any() for k in range(need.frames - 1)), f"a repeated frame at t0={t0}"

    # the engine's window tensors, every window (the padded last ones too), and its activations
    runner = Runner.open(path, providers=["cpu"], threads=1)
    for feed, window, activation in zip(feeds, windows, activations, strict=True):
        np.testing.assert_array_equal(feed["video"][0], runner.prepare_video(window.frames))
        np.testing.assert_array_equal(feed["audio"][0], runner.prepare_audio(window.audio, window.sample_rate))
        engine = float(runner.run_windows([window])[0]["activation"].reshape(-1)[0])
        assert engine == pytest.approx(activation, abs=1e-6)
