"""The report's page in a real browser: headless Chromium driven by Playwright renders it with no
console error and every image loaded. A screenshot of the page is kept as a test artifact."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli
from tests.report.conftest import RunFiles
from tests.report.pixels import manifest

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.timeout(180)


def browser_or_skip() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed (pip install 'avstream[dev]')")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (scripts/test.sh installs the chromium package)")
    return sync_playwright


def test_the_page_renders_with_every_image(monitor_run: RunFiles, video_run: RunFiles, tmp_path: Path) -> None:
    sync_playwright = browser_or_skip()
    assert monitor_run.status is not None and video_run.video is not None
    out = tmp_path / "report"
    joined = tmp_path / "both.jsonl"  # two runs' streams on one page: cam0 of the monitor run as "mon"
    joined.write_text(monitor_run.jsonl.read_text().replace('"stream": "cam0"', '"stream": "mon"')
                      + video_run.jsonl.read_text())
    res = run_cli("report", str(joined), str(monitor_run.status), "--video", f"cam0={video_run.video}",
                  "--out", str(out), timeout=120)
    assert res.returncode == 0, res.stderr
    expected = len(manifest(out)["figures"]) + len(manifest(out)["thumbnails"])
    assert expected >= 9
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
            page.goto((out / "index.html").as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => ({src: e.getAttribute('src'), complete: e.complete, w: e.naturalWidth}))")
            title = page.title()
            screenshot = tmp_path / "report-page.png"
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert title == "avstream report"
    assert len(images) == expected
    assert all(img["complete"] and img["w"] > 0 for img in images), images
    assert screenshot.stat().st_size > 10_000
    artifacts = os.environ.get("AVSTREAM_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(artifacts) / "report-page.png")
