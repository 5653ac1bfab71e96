"""Live preview frames: a real supervisor running a real pipeline, with a viewer object of the test
that asks for streams and collects the JPEG frames the sources send."""

from __future__ import annotations

import json
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from avstream.engine.capture.preview import preview_size
from avstream.engine.items import PreviewFrame
from avstream.engine.runtime.config import Overrides, load_pipeline
from avstream.engine.runtime.graph import PipelineSpec, PreviewSpec
from avstream.engine.runtime.supervisor import Supervisor
from avstream.engine.transport.wire import decode, encode


class Viewer:
    """Watches ``wanted`` while ``watching()`` says so; keeps every frame with its arrival time."""

    def __init__(self, wanted: set[str], watching: Callable[[Viewer], bool] = lambda v: True):
        self.wanted, self.watching = wanted, watching
        self.frames: list[tuple[float, PreviewFrame]] = []
        self.stopped_at: float | None = None  # when the wanted set became empty
        self.lock = threading.Lock()

    def wanted_streams(self) -> set[str]:
        if self.stopped_at is None and not self.watching(self):
            self.stopped_at = time.time()
        return set() if self.stopped_at is not None else set(self.wanted)

    def send_frame(self, frame: PreviewFrame) -> None:
        with self.lock:
            self.frames.append((time.time(), frame))


def pipeline(folder: Path, uri: str, realtime: bool) -> str:
    path = folder / "p.yaml"
    path.write_text(textwrap.dedent(f"""\
        version: 1
        name: preview
        streams:
          cam0: {{uri: "{uri}", realtime: {str(realtime).lower()}}}
          cam1: {{uri: "{uri}", realtime: {str(realtime).lower()}}}
        nodes:
          window: {{type: avstream/av_window@v1, inputs: [cam0, cam1]}}
          score: {{type: avstream/highlight@v1, inputs: [window], params: {{model: builtin:highlight}}}}
        outputs:
          publish: {{endpoint: "ipc://{folder}/pub"}}
          jsonl: {{path: "{folder / "out.jsonl"}"}}
        """))
    return str(path)


def run(spec: PipelineSpec, viewer: Viewer | None) -> Supervisor:
    sup = Supervisor(spec, quiet=True)
    sup.viewer = viewer
    assert sup.run() == 0
    return sup


def results(folder: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in (folder / "out.jsonl").read_text().splitlines()]
    return [m for m in lines if m.get("type") != "status"]


def check_frames(frames: list[PreviewFrame], spec: PreviewSpec, size: tuple[int, int]) -> None:
    for f in frames:
        image = cv2.imdecode(np.frombuffer(f.jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape == (size[1], size[0], 3) == (f.height, f.width, 3)
    ts = [f.t for f in frames]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)


def at_most_fps(arrivals: list[float], fps: float) -> None:
    """No one-second span holds more than ``fps`` frames (one more for the span's edges)."""
    for i, t in enumerate(arrivals):
        assert sum(1 for u in arrivals[i:] if u < t + 1.0) <= fps + 1, arrivals


def test_wire_round_trip() -> None:
    frame = PreviewFrame("cam0", 1.5, 1700000000.25, 64, 36, b"\xff\xd8 jpeg \xff\xd9")
    assert decode(encode(frame)) == frame
    assert preview_size(1920, 1080, 640) == (640, 360)
    assert preview_size(320, 240, 640) == (320, 240)  # never enlarged
    assert preview_size(1279, 719, 2000) == (1278, 718)  # even sides
    with pytest.raises(ValueError, match="preview fps"):
        PreviewSpec(fps=0)


def test_realtime_scene_previews_only_the_watched_stream_until_the_viewer_leaves(tmp_path: Path) -> None:
    preview = PreviewSpec(fps=5.0, max_width=320)
    spec = load_pipeline(pipeline(tmp_path, "synthetic://scene?seed=3&duration=5", True), Overrides(preview=preview))
    assert spec.preview == preview and PipelineSpec.from_json(spec.to_json()).preview == preview
    started = time.time()
    viewer = Viewer({"cam1"}, lambda v: len(v.frames) < 12)
    sup = run(spec, viewer)
    frames = [f for _, f in viewer.frames]
    assert {f.stream for f in frames} == {"cam1"}
    assert viewer.stopped_at is not None
    # frames sent before the workers heard that nobody watches may still arrive, then none
    late = [a for a, _ in viewer.frames if a > viewer.stopped_at + 0.5]
    assert not late, f"{len(late)} frames after the viewer left"
    check_frames(frames, preview, (320, 180))
    at_most_fps([a for a, _ in viewer.frames], preview.fps)
    # realtime: media time runs with the wall clock; wall is the capture time, before arrival
    offsets = [f.wall - f.t for f in frames]
    assert max(offsets) - min(offsets) < 0.5, offsets
    assert all(started <= f.wall <= arrival for arrival, f in viewer.frames)
    status = sup.workers[sup.by_node["cam1"].name].status["cam1"]["preview"]
    assert status["encoded"] >= len(frames) and status["watched"] == []
    assert sup.workers[sup.by_node["cam0"].name].status["cam0"]["preview"]["encoded"] == 0  # never watched
    published = results(tmp_path)
    assert published and all("jpeg" not in m and m.get("type") != "PreviewFrame" for m in published)


@pytest.fixture(scope="module")
def coded_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 s of 25 fps H.264 with B-frames (the skip planner drops frames no model takes) and audio."""
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=960x540:rate=25:duration=6",
                    "-f", "lavfi", "-i", "sine=frequency=440:duration=6", "-c:v", "libx264", "-preset", "ultrafast",
                    "-bf", "3", "-g", "50", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)], check=True)
    return path


def test_a_file_gives_the_same_results_with_preview_and_skipping_intact(tmp_path: Path, coded_file: Path) -> None:
    plain_dir, watched_dir = tmp_path / "plain", tmp_path / "watched"
    plain_dir.mkdir()
    watched_dir.mkdir()
    plain = run(load_pipeline(pipeline(plain_dir, str(coded_file), False)), None)
    preview = PreviewSpec()
    viewer = Viewer({"cam0"})
    watched = run(load_pipeline(pipeline(watched_dir, str(coded_file), False), Overrides(preview=preview)), viewer)

    def strip(ms: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        keep = ("kind", "stream", "t0", "t1", "score")
        return sorted(tuple(m.get(k) for k in keep) for m in ms if m.get("kind"))

    assert strip(results(watched_dir)) == strip(results(plain_dir)) != []
    frames = [f for _, f in viewer.frames]
    assert frames and {f.stream for f in frames} == {"cam0"}
    check_frames(frames, preview, (640, 360))
    at_most_fps([a for a, _ in viewer.frames], preview.fps)
    assert all(0 <= f.t < 6.0 for f in frames)

    def counters(sup: Supervisor) -> dict[str, Any]:
        return dict(sup.workers[sup.by_node["cam0"].name].status["cam0"]["counters"])

    # the preview shows frames decoded anyway: decoding and skipping are as without it
    c_plain, c_watched = counters(plain), counters(watched)
    assert c_plain.get("frames_skipped", 0) + c_plain.get("packets_dropped", 0) > 0, c_plain
    for key in ("frames_decoded", "frames_skipped", "packets_dropped", "frames_out"):
        assert c_watched.get(key) == c_plain.get(key), key
    status = watched.workers[watched.by_node["cam0"].name].status["cam0"]["preview"]
    assert status["encoded"] >= len(frames) and status["failed"] == 0


def test_serve_streams_are_previewed_when_watched(tmp_path: Path) -> None:
    """`avstream serve` sources always have a preview; only the watched stream sends frames."""
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from avstream.engine.serve.config import load_serve_config
    from avstream.engine.serve.service import ServiceSupervisor

    config = tmp_path / "serve.yaml"
    config.write_text(textwrap.dedent(f"""\
        version: 1
        server: {{listen: "127.0.0.1:1", publish: "ipc://{tmp_path}/pub"}}
        streams:
          a: {{pipeline: highlight, uri: "synthetic://scene?seed=1&duration=30", realtime: true}}
          b: {{pipeline: highlight, uri: "synthetic://scene?seed=2&duration=30", realtime: true}}
        """))
    service = ServiceSupervisor(load_serve_config(config), quiet=True)

    class StopAfter(Viewer):
        def send_frame(self, frame: PreviewFrame) -> None:
            super().send_frame(frame)
            if len(self.frames) == 15:
                service.request_stop("enough frames")  # the supervisor's own thread calls this

    viewer = StopAfter({"a"})
    service.viewer = viewer
    started = time.time()
    service.run()
    frames = [f for _, f in viewer.frames]
    assert len(frames) >= 15 and {f.stream for f in frames} == {"a"}
    check_frames(frames, PreviewSpec(), (640, 360))
    at_most_fps([a for a, _ in viewer.frames], PreviewSpec().fps)
    assert all(started <= f.wall <= arrival for arrival, f in viewer.frames)
    assert service.workers["b"].status["b"]["preview"]["encoded"] == 0
