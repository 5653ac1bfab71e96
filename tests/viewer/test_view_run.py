"""`avstream run PIPELINE --view`: the viewer of one run, opened from the URL the run prints."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, run_cli
from tests.viewer.browser import PIPELINE, WatchedPage, browser, screenshot

pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytestmark = pytest.mark.timeout(240)
__all__ = ["browser"]  # the fixture, imported for pytest


def test_run_view_serves_the_run_and_says_when_it_ended(tmp_path: Path, browser: Any) -> None:
    pipeline = tmp_path / "viewer.yaml"
    pipeline.write_text(PIPELINE)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "avstream.engine.cli", "run", str(pipeline), "--view",
                             "--port", str(port), "--duration", "12", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.fullmatch(rf"viewer: (http://127\.0\.0\.1:{port}/\?token=[\w-]+)\n", line)
        assert match, line
        watched = WatchedPage(browser)
        watched.page.goto(match.group(1))
        watched.page.wait_for_selector('section.card[data-stream="cam0"]', timeout=30_000)
        watched.wait_for(lambda: watched.hooks(".streams.cam0.points.violence") >= 2, "violence points")
        watched.wait_for(lambda: watched.hooks(".streams.cam0.framesDrawn") >= 5, "video frames")
        screenshot(watched.page, "viewer-run")
        watched.wait_for(lambda: watched.hooks(".ended"), "the run's end", timeout=60)
        assert "run ended" in watched.page.inner_text("#banner")
        assert watched.errors == []
        watched.close()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_run_view_on_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        done = run_cli("run", "highlight", "--input", "sample://short", "--view", "--port", str(port), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"the viewer cannot listen on 127.0.0.1:{port}" in done.stderr and "--port" in done.stderr
    assert "Traceback" not in done.stderr and time.monotonic() - started < 60
