"""Media time continues across a stream server's restart (docs/capture.md, "Reconnects"): in a real
``avstream run`` with two live streams, one server (HTTP, then RTSP) is stopped and started again;
every result of that stream must have a ``t0`` past the one before, the first after the outage must
be later by about the wall time the outage lasted, and the other stream must not be disturbed."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.live.helpers import is_message, live_pipeline
from tests.live.servers import Server, ffmpeg_server, rtsp_server
from tests.system.helpers import Subscriber, start_run, stop, worker_pid

OUTAGE_S = 6.0


def _kill_source(run_pid: int, name: str, timeout: float = 30) -> None:
    """SIGKILL the source's process once it is up (a fresh pid), then wait for its successor."""
    old = worker_pid(run_pid, name)
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if worker_pid(run_pid, name) != old:
                return
        except LookupError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{name} was not restarted")


@pytest.mark.slow
@pytest.mark.timeout(200)
@pytest.mark.parametrize("kind", ["http", "rtsp", "http-source-killed"])
def test_media_time_continues_after_the_stream_server_restarts(kind: str, clip: Path, live_dir: Path,
                                                               servers: list[Server], port: int,
                                                               tmp_path: Path) -> None:
    if kind.startswith("http"):
        srv_a, url_a = ffmpeg_server("http", live_dir)
    else:
        srv_a, url_a = rtsp_server(clip, live_dir)
    srv_b, url_b = ffmpeg_server("tcp", live_dir)
    servers += [srv_a.start(), srv_b.start()]
    yaml = live_pipeline(tmp_path / "two.yaml", {"camA": url_a, "camB": url_b}, port)
    sub = Subscriber(f"tcp://127.0.0.1:{port}")
    run = start_run(str(yaml), "--quiet")
    seen: list[dict[str, Any]] = []
    try:
        seen += sub.until(lambda m: is_message("highlight", "camA")(m) and m["header"]["t0"] >= 3, timeout=60)
        seen += sub.until(is_message("highlight", "camB"), timeout=30)
        srv_a.stop()
        stopped = time.time()
        seen += sub.until(is_message("event", "camA", "stream_down"), timeout=30)
        if kind == "http-source-killed":  # the source's process dies during the outage, twice
            _kill_source(run.pid, "camA")
            time.sleep(2.0)  # its successor reports (no media time: its input is down)
            _kill_source(run.pid, "camA")
        time.sleep(max(0.0, OUTAGE_S - (time.time() - stopped)))
        srv_a.start()
        restarted = time.time()
        seen += sub.until(is_message("event", "camA", "stream_up"), timeout=40)
        n_up = len(seen)
        up_t = seen[-1]["header"]["t0"]
        # the windows over the outage (silence) come at once, then those of the new connection
        seen += sub.until(lambda m: is_message("highlight", "camA")(m) and m["header"]["t0"] >= up_t, timeout=40)
        assert run.poll() is None
    finally:
        sub.close()
        out, err = stop(run)
    assert "Traceback" not in err
    for stream in ("camA", "camB"):
        t0s = [m["header"]["t0"] for m in seen if is_message("highlight", stream)(m)]
        assert all(b > a for a, b in zip(t0s, t0s[1:], strict=False)), f"{stream}: t0 went back: {t0s}"
    up = n_up - 1
    before = [m["header"] for m in seen[:up] if is_message("highlight", "camA")(m)]
    after = [m["header"] for m in seen[up:] if is_message("highlight", "camA")(m)]
    assert before and after
    down_t = next(m["header"]["t0"] for m in seen if is_message("event", "camA", "stream_down")(m))
    wall_gap = restarted - stopped
    # The outage shows in media time (about its wall time), not as a restart at 0.
    assert up_t - down_t >= wall_gap - 2.0, (down_t, up_t, wall_gap)
    assert after[0]["t0"] > before[-1]["t0"] and after[-1]["t0"] >= up_t > before[-1]["t0"] + wall_gap - 2.0
