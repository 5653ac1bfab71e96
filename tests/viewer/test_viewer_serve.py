"""The web viewer of `avstream serve` in headless Chromium: the real daemon in a subprocess, a synthetic
scene with known ground truth, the page as a user opens it."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.engine.test_serve import Daemon
from tests.viewer.browser import (
    PIPELINE,
    WatchedPage,
    browser,
    distance_to_boxes,
    heatmap_peak,
    latency_report,
    screenshot,
    sounding_boxes,
)

pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytestmark = pytest.mark.timeout(300)
__all__ = ["browser"]  # the fixture, imported for pytest

STREAM = "cam"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    folder = tmp_path_factory.mktemp("viewer")
    (folder / "viewer.yaml").write_text(PIPELINE)
    from tests.viewer.browser import SCENE_URI

    d = Daemon(folder, f'{STREAM}: {{pipeline: viewer.yaml, uri: "{SCENE_URI}", realtime: true}}\n')
    yield d
    if d.proc.poll() is None:
        d.stop()


@pytest.fixture(scope="module")
def viewer(daemon: Daemon, browser: Any) -> Iterator[WatchedPage]:
    """One signed-in page for the module: through /?token=..., as the printed URL does."""
    watched = WatchedPage(browser)
    watched.page.goto(f"{daemon.url}/?token={daemon.token}")
    assert watched.page.url == f"{daemon.url}/", "the token stays in the address bar"
    watched.page.wait_for_selector(f'section.card[data-stream="{STREAM}"]', timeout=30_000)
    yield watched
    watched.close()


def test_page_loads_and_charts_gain_points(viewer: WatchedPage) -> None:
    cookies = viewer.context.cookies()
    cookie = next(c for c in cookies if c["name"] == "avstream_token")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    first = viewer.wait_for(lambda: viewer.hooks(f".streams.{STREAM}.points.highlight"), "a highlight point")
    viewer.wait_for(lambda: viewer.hooks(f".streams.{STREAM}.points.highlight") >= first + 2
                    and viewer.hooks(f".streams.{STREAM}.points.violence") >= 2, "more chart points")
    health = viewer.wait_for(lambda: viewer.hooks(f".streams.{STREAM}.health"), "a health line")
    assert health["state"] in ("running", "starting") and health["fps"] >= 0
    text = viewer.page.inner_text(f'section.card[data-stream="{STREAM}"] .health')
    assert "fps" in text and "drops" in text
    # uPlot drew the series: its canvas has lit pixels in the plot area
    drawn = viewer.page.evaluate("""() => { const c = document.querySelector('.card .chart canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }""")
    assert drawn > 500
    assert viewer.errors == []


def test_alert_is_shaded_and_its_event_listed(viewer: WatchedPage) -> None:
    alerts = viewer.wait_for(lambda: viewer.hooks(f".streams.{STREAM}.alerts"), "an alert interval")
    assert alerts[0][0] >= 0
    viewer.wait_for(lambda: viewer.hooks(f".streams.{STREAM}.events"), "an event in the list")
    assert "violence_start" in viewer.page.inner_text(f'section.card[data-stream="{STREAM}"] ul.events')
    # the shading is on the violence chart: reddish pixels under the series
    red = viewer.page.evaluate("""() => { const c = document.querySelectorAll('.card .chart canvas')[1];
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i+3] && d[i] > d[i+2] + 20 && d[i] > d[i+1]) n++; return n; }""")
    assert red > 200
    screenshot(viewer.page, "viewer-serve-alert")
    assert viewer.errors == []


def test_video_advances_and_heatmap_is_brightest_on_the_sounding_object(viewer: WatchedPage) -> None:
    first = viewer.wait_for(lambda: viewer.hooks(f".streams.{STREAM}.framesDrawn"), "a video frame")
    t_first = viewer.hooks(f".streams.{STREAM}.lastT")
    viewer.wait_for(lambda: viewer.hooks(f".streams.{STREAM}.framesDrawn") >= first + 10, "ten more frames")
    assert viewer.hooks(f".streams.{STREAM}.lastT") > t_first
    hits, samples = 0, []
    for _ in range(8):
        peak = viewer.wait_for(lambda: heatmap_peak(viewer.page, STREAM), "a heatmap drawn")
        assert peak["alpha"] > 0 and 0 < peak["lit"] <= 1
        t0, t1 = peak["window"]
        distance = distance_to_boxes(peak["x"], peak["y"], sounding_boxes(t0, t1))
        samples.append((round(t1, 2), round(distance, 3)))
        hits += distance <= 0.1
        viewer.page.wait_for_timeout(1000)
    print(f"heatmap peak distance to the sounding object, per window end: {samples}")
    assert hits >= 5, samples
    screenshot(viewer.page, "viewer-serve-heatmap")
    assert viewer.errors == []


def test_glass_to_glass_latency(viewer: WatchedPage) -> None:
    viewer.wait_for(lambda: len(viewer.hooks(f".streams.{STREAM}.latency")) >= 50, "50 frames drawn")
    samples = viewer.hooks(f".streams.{STREAM}.latency")
    print(latency_report(samples))
    assert all(s > -50 for s in samples), "a frame drawn before it was captured: clocks disagree"


def test_stream_added_over_rest_appears_without_reload(daemon: Daemon, viewer: WatchedPage) -> None:
    from tests.viewer.browser import SCENE_URI

    reply = daemon.client.post("/api/streams", json={"id": "late", "pipeline": "viewer.yaml",
                                                      "uri": SCENE_URI.replace("seed=3", "seed=4"), "realtime": True})
    assert reply.status_code == 201, reply.text
    viewer.page.wait_for_selector('section.card[data-stream="late"]', timeout=30_000)
    viewer.wait_for(lambda: viewer.hooks(".streams.late.points.highlight"), "a result of the new stream")
    assert daemon.client.delete("/api/streams/late").status_code == 200
    viewer.page.wait_for_selector('section.card[data-stream="late"]', state="detached", timeout=30_000)
    assert viewer.errors == []


def test_wrong_token_is_refused(daemon: Daemon, browser: Any) -> None:
    page = WatchedPage(browser)
    try:
        got = page.page.goto(f"{daemon.url}/")
        assert got is not None and got.status == 200
        assert page.page.locator("form#login").count() == 1 and page.page.locator("section.card").count() == 0
        got = page.page.goto(f"{daemon.url}/?token=wrong")
        assert got is not None and got.status == 401 and "Wrong token" in page.page.inner_text("body")
        page.page.fill("#token", "also-wrong")
        page.page.click("button[type=submit]")
        assert "Wrong token" in page.page.inner_text("body")
        assert not any(c["name"] == "avstream_token" for c in page.context.cookies())
        # a forged cookie: the page's WebSocket is closed with 4401 before any data
        page.context.add_cookies([{"name": "avstream_token", "value": "forged", "url": daemon.url}])
        page.page.goto(f"{daemon.url}/")  # the login page (the cookie is wrong): a page of this origin
        result = page.page.evaluate("""(url) => new Promise((done) => { const ws = new WebSocket(url); let n = 0;
            ws.onmessage = () => n++; ws.onclose = (e) => done({code: e.code, messages: n}); })""",
                                    daemon.url.replace("http", "ws") + "/api/live")
        assert result == {"code": 4401, "messages": 0}
    finally:
        page.close()
    # the right token from another site's page (Origin) is refused; the cookie never authorises a change
    assert ws_close_code(daemon, {"Authorization": f"Bearer {daemon.token}",
                                       "Origin": "http://evil.example"}) == 4401
    assert ws_close_code(daemon, {"Authorization": "Bearer wrong"}) == 4401
    assert ws_close_code(daemon, {"Authorization": f"Bearer {daemon.token}"}) is None
    req = urllib.request.Request(daemon.url + "/api/streams/cam/restart", method="POST",
                                 headers={"Cookie": f"avstream_token={daemon.token}"})
    try:
        urllib.request.urlopen(req, timeout=10)
        raise AssertionError("a POST with only the cookie was accepted")
    except urllib.error.HTTPError as exc:
        assert exc.code == 401


def ws_close_code(daemon: Daemon, headers: dict[str, str]) -> int | None:
    """The close code the live feed answers with, or None when it sent its hello."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    url = daemon.url.replace("http", "ws") + "/api/live"
    with connect(url, additional_headers=headers, open_timeout=10) as ws:
        try:
            first = ws.recv(10)
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else -1
        assert '"hello"' in str(first)
        return None


def test_viewer_can_be_turned_off(tmp_path: Path) -> None:
    d = Daemon(tmp_path, "{}\n", extra=", viewer: false")
    try:
        assert d.client.get("/").status_code == 404
        assert d.client.get("/api/streams").status_code == 200
    finally:
        d.stop()
