"""What the viewer's browser tests share: headless Chromium through Playwright, console error capture,
screenshots as artifacts, a pipeline with scores and heatmaps, and a synthetic scene's ground truth."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
# A scene whose sounding object and violence segment are known (docs/synthetic.md), long enough to never end
# during the tests; realtime so the page sees it live.
SCENE: dict[str, Any] = {"seed": 3, "duration": 300.0, "fps": 25.0, "width": 640, "height": 360, "objects": 2, "violence": True}
SCENE_URI = ("synthetic://scene?seed=3&duration=300&fps=25&width=640&height=360&objects=2&violence=1")

# highlight + violence + localization in one shared process. The violence thresholds at 0 turn the
# alert on with the first window, so "an alert, then its event" does not hang on the model's score.
PIPELINE = """\
version: 1
name: viewer-test
streams:
  cam0: {uri: "SCENE_URI", realtime: true, process: models}
nodes:
  w_highlight:    {type: avstream/av_window@v1, inputs: [cam0], process: models}
  w_violence:     {type: avstream/av_window@v1, inputs: [cam0], process: models}
  w_localization: {type: avstream/av_window@v1, inputs: [cam0], process: models}
  highlight: {type: avstream/highlight@v1, inputs: [w_highlight], process: models,
              params: {model: "builtin:highlight", threads: 1}}
  violence: {type: avstream/violence@v1, inputs: [w_violence], process: models,
             params: {model: "builtin:violence", threads: 1, on_threshold: 0.0, off_threshold: 0.0}}
  localization: {type: avstream/localization@v1, inputs: [w_localization], process: models,
                 params: {model: "builtin:localization", threads: 1}}
""".replace("SCENE_URI", SCENE_URI)


def artifacts_dir() -> Path:
    """Screenshots go to $AVSTREAM_ARTIFACTS (CI uploads it), else a folder printed by the test."""
    folder = Path(os.environ.get("AVSTREAM_ARTIFACTS") or Path(tempfile.gettempdir()) / "avstream-viewer-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(page: Any, name: str) -> Path:
    path = artifacts_dir() / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, f"{path} is nearly empty"
    print(f"screenshot: {path}")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install 'playwright>=1.40')")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        yield chromium
        chromium.close()


class WatchedPage:
    """A page with its console errors (and uncaught exceptions) collected."""

    def __init__(self, browser: Any):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def hooks(self, expr: str = "") -> Any:
        return self.page.evaluate(f"window.avstreamViewer{expr}")

    def wait_for(self, predicate: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = predicate()
            if got:
                return got
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}; page errors: {self.errors}")

    def close(self) -> None:
        self.context.close()


def heatmap_peak(page: Any, stream: str) -> dict[str, Any] | None:
    """The brightest (most opaque) pixel of the stream's heatmap canvas, normalised, with the window shown."""
    return page.evaluate("""(stream) => {
        const s = window.avstreamViewer.streams[stream];
        if (!s || !s.heatmapsDrawn) return null;
        const c = s.heatmapCanvas, d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let best = -1, at = 0, lit = 0;
        for (let i = 3; i < d.length; i += 4) { if (d[i] > best) { best = d[i]; at = (i - 3) / 4; } if (d[i] > 0) lit++; }
        return {x: ((at % c.width) + 0.5) / c.width, y: (Math.floor(at / c.width) + 0.5) / c.height,
                alpha: best, lit: lit / (c.width * c.height), window: s.heatmapT, frameT: s.lastT};
    }""", stream)


def sounding_boxes(t0: float, t1: float) -> list[list[float]]:
    """The sounding object's boxes (normalised) over media time [t0, t1]."""
    truth = _truth()
    fps = truth["config"]["fps"]
    obj = truth["sounding_object"]
    first, last = max(0, int(t0 * fps)), min(truth["num_frames"] - 1, int(t1 * fps) + 1)
    return [truth["frames"][i]["boxes"][obj] for i in range(first, last + 1)]


_TRUTH: dict[str, Any] = {}


def _truth() -> dict[str, Any]:
    if not _TRUTH:
        from avstream.engine.synthetic.scene import SceneConfig, generate_truth

        _TRUTH.update(generate_truth(SceneConfig(**SCENE)))
    return _TRUTH


def distance_to_boxes(x: float, y: float, boxes: list[list[float]]) -> float:
    """The smallest distance from (x, y) to any of the boxes (0 inside one)."""
    return min(((max(b[0] - x, 0.0, x - b[2]) ** 2 + max(b[1] - y, 0.0, y - b[3]) ** 2) ** 0.5) for b in boxes)


def latency_report(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"glass-to-glass latency over {len(ordered)} frames: median {statistics.median(ordered):.1f} ms, p95 {p95:.1f} ms"
