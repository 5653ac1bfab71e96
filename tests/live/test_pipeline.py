"""``avstream run`` on live streams from real servers, as a user runs it: several streams in one
graph, one server killed and restarted, bad streams next to good ones."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from tests.live.helpers import is_message, live_pipeline
from tests.live.servers import Server, ffmpeg_server, rtsp_server
from tests.system.helpers import Subscriber, start_run, stop


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_one_server_restarts_while_the_other_stream_keeps_going(clip: Path, live_dir: Path, servers: list[Server],
                                                                 port: int, tmp_path: Path) -> None:
    srv_a, url_a = rtsp_server(clip, live_dir)
    srv_b, url_b = rtsp_server(clip, live_dir)
    servers += [srv_a.start(), srv_b.start()]
    yaml = live_pipeline(tmp_path / "two.yaml", {"camA": url_a, "camB": url_b}, port)
    sub = Subscriber(f"tcp://127.0.0.1:{port}")
    run = start_run(str(yaml), "--quiet")
    try:
        got = sub.until(is_message("highlight", "camA"), timeout=60)
        got += sub.until(is_message("highlight", "camB"), timeout=30)
        last_a = max(m["header"]["t1"] for m in got if is_message("highlight", "camA")(m))
        srv_a.kill()
        down = sub.until(is_message("event", "camA", "stream_down"), timeout=30)
        detail = down[-1]["header"]["detail"]
        assert detail["uri"] == url_a and detail["error"]
        # camA is down: camB's windows and results keep coming
        during = sub.until(is_message("highlight", "camB"), timeout=20)
        during += sub.until(is_message("highlight", "camB"), timeout=20)
        assert not any(is_message("highlight", "camA")(m) and m["header"]["t0"] > last_a for m in during)
        srv_a.start()
        sub.until(is_message("event", "camA", "stream_up"), timeout=40)
        after = sub.until(lambda m: is_message("highlight", "camA")(m) and m["header"]["t0"] > last_a + 1.0, timeout=60)
        a_after = [m["header"] for m in after if is_message("highlight", "camA")(m)]
        assert a_after[-1]["t0"] > last_a  # media time went on over the gap
        assert run.poll() is None
    finally:
        sub.close()
        out, err = stop(run)
    assert run.returncode == 0, err
    assert "Traceback" not in err
    assert "camA" in err and "stream down" in err and "up again" in err


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_bad_streams_give_clear_errors_and_the_good_one_keeps_going(clip: Path, live_dir: Path,
                                                                    servers: list[Server], port: int,
                                                                    tmp_path: Path) -> None:
    locked, url_locked = rtsp_server(clip, live_dir, auth="admin:s3cret")
    good, url_good = ffmpeg_server("tcp", live_dir)
    servers += [locked.start(), good.start()]
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
        streams = {"locked": url_locked.replace("rtsp://", "rtsp://admin:wrong@"),
                   "nowhere": f"rtsp://viewer:hunter2@127.0.0.1:{dead_port}/cam",
                   "good": url_good}
        yaml = live_pipeline(tmp_path / "bad.yaml", streams, port)
        sub = Subscriber(f"tcp://127.0.0.1:{port}")
        run = start_run(str(yaml), "--quiet")
        try:
            seen: list[dict[str, Any]] = []
            want = {"nowhere": "stream_down", "locked": "stream_down", "good": "highlight"}

            def all_seen(m: dict[str, Any]) -> bool:  # in whatever order they come
                seen.append(m)
                done = {sid for sid, what in want.items() if any(
                    x["header"]["stream"] == sid and what in (x["header"]["kind"], x["header"].get("name"))
                    for x in seen)}
                return len(done) == len(want)

            sub.until(all_seen, timeout=90)
            for _ in range(2):
                seen += sub.until(is_message("highlight", "good"), timeout=60)
            assert run.poll() is None
        finally:
            sub.close()
            out, err = stop(run)
    text = out + err + repr([m["header"] for m in seen])
    assert "wrong" not in text and "hunter2" not in text and "s3cret" not in text
    assert "Traceback" not in err
    nowhere = next(m["header"] for m in seen if is_message("event", "nowhere", "stream_down")(m))
    assert "refused" in nowhere["detail"]["error"] and "viewer:***@" in nowhere["detail"]["uri"]
    lines = [line for line in err.splitlines() if "locked" in line and "401" in line]
    assert lines and all("admin:***@" in line for line in lines), err


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigint_stops_live_inputs_and_their_ffmpeg_readers(live_dir: Path, servers: list[Server], port: int,
                                                           tmp_path: Path) -> None:
    """An SRT stream is read by an FFmpeg subprocess: SIGINT stops the graph within 5 s and leaves
    no FFmpeg reader behind."""
    import time

    from tests.system.helpers import children, wait_gone

    srv, url = ffmpeg_server("srt", live_dir)
    servers.append(srv.start())
    yaml = live_pipeline(tmp_path / "srt.yaml", {"cam": url}, port)
    sub = Subscriber(f"tcp://127.0.0.1:{port}")
    run = start_run(str(yaml), "--quiet")
    try:
        sub.until(is_message("highlight", "cam"), timeout=60)
        readers = [p.pid for p in children(run.pid) if "ffmpeg" in " ".join(p.cmdline())]
        assert readers, "the SRT input is read by an FFmpeg subprocess"
        everyone = [p.pid for p in children(run.pid)]
    finally:
        sub.close()
        t = time.monotonic()
        out, err = stop(run)
    assert time.monotonic() - t < 5.0
    assert run.returncode == 0, err
    assert wait_gone(everyone, 5) == []
    assert "Traceback" not in err
