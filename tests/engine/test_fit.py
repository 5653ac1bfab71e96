"""Frames fitted once per size in the reader, on each consumer's grid; audio resampled once by PyAV.

Real files made by the FFmpeg CLI; the reference is a plain PyAV decode of the same file with the
same swscale conversion (bit-identical), and PyAV's own resampler for the audio.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avstream.engine.capture.base import FpsGate
from avstream.engine.capture.fit import FrameFitter, GridGate, frame_fits
from avstream.engine.capture.schemes import open_reader
from avstream.engine.items import NATIVE_FIT, AudioChunk, MediaFit, VideoFrame
from avstream.engine.runtime.graph import PipelineSpec
from tests.conftest import make_h264_clip
from tests.engine.runner_harness import ControlPlane, control_plane

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI")

FITS = [MediaFit(112, 112, 8.0), MediaFit(112, 112, 4.0), MediaFit(64, 64, 4.0), MediaFit(64, 64, 2.0)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s of 320x240 25 fps H.264 (B-frames) with 48 kHz stereo AAC."""
    return make_h264_clip(tmp_path_factory.mktemp("fit") / "clip.mp4")


def decoded(path: Path) -> list[tuple[float, Any]]:
    """Every video frame of ``path`` with its media time (the file starts at 0)."""
    import av

    with av.open(str(path)) as c:
        return [(float(f.time), f) for f in c.decode(video=0)]


def grid_picks(times: list[float], fps: float) -> list[float]:
    """The first frame at or after each point k / fps (what a window node samples from a full decode)."""
    picks, k = [], 0
    for t in times:
        if t + 1e-6 >= k / fps:
            picks.append(t)
            k = math.floor(t * fps + 1e-6) + 1
    return picks


def reformat(frame: Any, size: tuple[int, int]) -> np.ndarray:
    from av.video.reformatter import VideoReformatter

    return VideoReformatter().reformat(frame, format="bgr24", width=size[0], height=size[1],
                                       interpolation="AREA", threads=1).to_ndarray()


def test_grid_gate_keeps_the_first_frame_at_or_after_each_grid_point() -> None:
    rng = np.random.default_rng(3)
    times = np.cumsum(rng.uniform(0.01, 0.09, 300)).tolist()  # variable frame rate
    for fps in (2.0, 4.0, 8.0, 30.0):
        gate = GridGate(fps)
        assert [t for t in times if gate.keep(t)] == grid_picks(times, fps)
    assert all(GridGate(0).keep(t) for t in times)
    fitter = FrameFitter(FITS[:2])
    assert [f.fps for f in fitter.wanted(0.0)] == [8.0, 4.0] and fitter.next_time() == pytest.approx(0.125, abs=1e-5)
    fitter.offset = 10.0  # a looping source's second pass: the grids go on in stream time
    assert [f.fps for f in fitter.wanted(0.01)] == [8.0, 4.0] and fitter.next_time() == pytest.approx(0.125, abs=1e-5)


def test_frame_fits_of_a_sources_edges() -> None:
    assert frame_fits([None, None]) == []  # no window consumer: plain frames
    fits = frame_fits([MediaFit(64, 64, 4.0, 16000), None, MediaFit(64, 64, 4.0, 16000), MediaFit(0, 0, 0.0, 16000)])
    assert fits == [MediaFit(64, 64, 4.0), NATIVE_FIT]  # the audio rate is not a frame matter


def test_each_size_is_made_once_on_each_fits_grid_bit_identical_to_swscale(clip: Path) -> None:
    reference = decoded(clip)
    times = [t for t, _ in reference]
    fitter = FrameFitter(FITS)
    with open_reader(str(clip), stream="s", audio=False, fitter=fitter) as reader:
        frames = [f for f in reader.read() if isinstance(f, VideoFrame)]
    assert frames and all(f.fitted for f in frames)
    by_time = dict(reference)
    for fit in FITS:
        got = [f for f in frames if fit.frame_key in (f.fitted or {})]
        assert [f.t for f in got] == grid_picks(times, fit.fps), fit  # only the frames its window samples
        for f in got:
            image = (f.fitted or {})[fit.frame_key]
            assert image.shape == (fit.height, fit.width, 3) and image.flags["C_CONTIGUOUS"]
            np.testing.assert_array_equal(image, reformat(by_time[f.t], (fit.width, fit.height)))
    for f in frames:  # fits of one size share one image: each size converted once per frame
        fitted = f.fitted or {}
        sizes = {fitted[k].shape for k in fitted}
        assert len({id(v) for v in fitted.values()}) == len(sizes)
    # the 4 fps grid is inside the 8 fps one: 112x112 made at 8 fps, 64x64 at 4 fps, nothing else converted
    assert fitter.made == {"112x112": len(grid_picks(times, 8.0)), "64x64": len(grid_picks(times, 4.0))}
    assert len(frames) == len(grid_picks(times, 8.0))


def test_a_native_fit_gets_the_plain_frames(clip: Path) -> None:
    with open_reader(str(clip), stream="s", audio=False) as reader:
        plain = [f for f in reader.read() if isinstance(f, VideoFrame)]
    with open_reader(str(clip), stream="s", audio=False, fitter=FrameFitter([NATIVE_FIT, FITS[3]])) as reader:
        fitted = [f for f in reader.read() if isinstance(f, VideoFrame)]
    assert [f.t for f in fitted] == [f.t for f in plain]  # a consumer without a fit takes every frame
    for a, b in zip(plain, fitted, strict=True):
        np.testing.assert_array_equal((b.fitted or {})[NATIVE_FIT.frame_key], a.image)


def test_audio_is_resampled_once_by_pyavs_resampler(clip: Path) -> None:
    import av

    with open_reader(str(clip), stream="s", video=False, sample_rate=16000, audio_chunk_s=0.04) as reader:
        chunks = [c for c in reader.read() if isinstance(c, AudioChunk)]
    got = np.concatenate([c.samples for c in chunks])
    resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
    parts = []
    with av.open(str(clip)) as c:
        for frame in c.decode(audio=0):
            parts += [o.to_ndarray().reshape(-1) for o in resampler.resample(frame)]
    parts += [o.to_ndarray().reshape(-1) for o in resampler.resample(None)]
    np.testing.assert_array_equal(got, np.concatenate(parts).astype(np.float32))
    assert {c.sample_rate for c in chunks} == {16000}


def test_generated_frames_are_rendered_only_when_taken(clip: Path) -> None:
    import av

    from avstream.engine.synthetic.scene import SceneConfig, scene_for

    scene = scene_for(SceneConfig(seed=5, duration=2, width=320, height=180))
    fitter = FrameFitter([FITS[0], FITS[2]])
    uri = "synthetic://scene?seed=5&duration=2&width=320&height=180"
    with open_reader(uri, stream="s", audio=False, fitter=fitter) as reader:
        frames = [f for f in reader.read() if isinstance(f, VideoFrame)]
    assert [f.t for f in frames] == grid_picks([k / 25 for k in range(50)], 8.0)
    for f in frames:
        source = av.VideoFrame.from_ndarray(scene.frame(round(f.t * 25)), format="bgr24")
        for fit in (FITS[0], FITS[2]):
            if fit.frame_key in (f.fitted or {}):
                np.testing.assert_array_equal((f.fitted or {})[fit.frame_key], reformat(source, (fit.width, fit.height)))


def test_monitor_windows_get_only_their_frames_through_the_transport(clip: Path, tmp_path: Path) -> None:
    """The compiled monitor pipeline's source in a real NodeRunner, its four window edges on real
    sockets and one shared-memory ring: each edge gets its model's frames, bit-identical to swscale
    on a full decode, and a window node fed by it cuts the windows it would cut from that full decode."""
    from avstream.engine.runtime.config import Overrides, load_pipeline

    spec = load_pipeline("monitor", Overrides(input_uri=str(clip), sets=["streams.cam0.realtime=false"]))
    with control_plane(spec, "cam0", tmp_path) as plane:
        _check_fitted_run(spec, clip, tmp_path, plane)


def _check_fitted_run(spec: PipelineSpec, clip: Path, tmp_path: Path, plane: ControlPlane) -> None:
    import threading

    from avstream.engine.items import AVWindow, EndOfStream, Item, StreamInfo
    from avstream.engine.node import NodeContext
    from avstream.engine.runtime.worker import NodeRunner
    from avstream.engine.transport.edges import Inbox, InputPort
    from avstream.plugins.window import AVWindowNode, WindowParams

    zctx, stop, link = plane.zctx, plane.stop, plane.link
    edges = spec.outputs_of("cam0")
    inboxes = {e.dst: Inbox() for e in edges}
    ports = [InputPort(zctx, e, inboxes[e.dst], tmp_path, threading.Event()) for e in edges]
    assert all(p.ready.wait(5) for p in ports)
    runner = NodeRunner(spec, spec.nodes["cam0"], zctx, tmp_path, stop, link, {})
    runner.thread.start()
    got: dict[str, list[Item]] = {dst: [] for dst in inboxes}
    while not all(items and isinstance(items[-1], EndOfStream) for items in got.values()):
        for dst, box in inboxes.items():
            while (item := box.get(0.01)) is not None:
                if isinstance(item[1], VideoFrame):
                    frame = item[1]
                    got[dst].append(VideoFrame(frame.stream, frame.t, frame.wall, frame.image.copy()))
                    frame.release()
                else:
                    got[dst].append(item[1])
    runner.thread.join(10)
    status = runner.status()
    try:
        assert not runner.failed
        reference = decoded(clip)
        times = [t for t, _ in reference]
        by_time = dict(reference)
        for edge in edges:
            fit = edge.fit
            assert fit is not None and fit.size is not None
            frames = [f for f in got[edge.dst] if isinstance(f, VideoFrame)]
            assert [f.t for f in frames] == grid_picks(times, fit.fps), edge.dst
            for f in frames:
                np.testing.assert_array_equal(f.image, reformat(by_time[f.t], fit.size))
        assert status["extra"]["frames_made"] == {"112x112": len(grid_picks(times, 8.0)),
                                                  "64x64": len(grid_picks(times, 4.0))}
        # windows: fed through the fitted edge == fed with every decoded frame at the model's size
        req = spec.nodes["w_violence"].window
        assert req is not None
        nodes = [AVWindowNode(NodeContext(f"w{i}", ("cam0",), tmp_path, threading.Event(),
                                          logging.getLogger("t"), window=req), WindowParams()) for i in range(2)]
        audio = [c for c in got["w_violence"] if isinstance(c, AudioChunk)]
        info = next(i for i in got["w_violence"] if isinstance(i, StreamInfo))
        full: list[Item] = [VideoFrame("cam0", t, 0.0, reformat(f, (req.width, req.height))) for t, f in reference]
        every = sorted([*full, *audio], key=lambda m: m.t if isinstance(m, (VideoFrame, AudioChunk)) else 0.0)
        fed: list[list[AVWindow]] = []
        for node, media in ((nodes[0], got["w_violence"]), (nodes[1], every)):
            out = [w for m in [info, *media] if not isinstance(m, EndOfStream) for w in node.process(m)]
            fed.append([w for w in [*out, *node.on_eos("cam0")] if isinstance(w, AVWindow)])
        assert len(fed[0]) == len(fed[1]) > 0
        for a, b in zip(*fed, strict=True):
            assert (a.t0, a.t1) == (b.t0, b.t1) and a.frames is not None and b.frames is not None
            np.testing.assert_array_equal(a.frames, b.frames)
            np.testing.assert_array_equal(a.audio, b.audio)
        assert all("resized" not in n.ctx.counters for n in nodes)
    finally:
        stop.set()
        runner.output.close(0)
        for p in ports:
            p.stop.set()
            p.thread.join(2)


def test_source_rate_gate_keeps_the_first_frame_at_or_after_each_grid_point() -> None:
    # 25 fps sampled at 4 fps: the frame at 0.24 s lies before the 0.25 s point and must not be kept
    # (the window node would skip it and use the next frame twice).
    gate = FpsGate(4.0, 25.0)
    kept = [round(i / 25, 2) for i in range(50) if gate.keep(i / 25)]
    assert kept == [0.0, 0.28, 0.52, 0.76, 1.0, 1.28, 1.52, 1.76]
    # timestamps rounded to a millisecond time base still land on their grid point
    gate = FpsGate(10.0, 30.0)
    assert [gate.keep(t) for t in (0.0, 0.033, 0.067, 0.0999, 0.133, 0.167, 0.2)] == [
        True, False, False, True, False, False, True]
