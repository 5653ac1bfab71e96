"""A node runner in one process: queued items in, then end of stream; outputs checked in order."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avstream.engine.items import AudioChunk, AVWindow, EndOfStream, Event, StreamInfo, VideoFrame
from avstream.engine.runtime.config import Overrides, load_pipeline
from tests.engine.runner_harness import node_runner

pytestmark = pytest.mark.timeout(30)


def test_window_runner_turns_queued_media_into_windows_then_stops(tmp_path: Path) -> None:
    spec = load_pipeline("highlight", Overrides(sets=["streams.cam0.realtime=false"]))  # block: no drops
    with node_runner(spec, "window", tmp_path) as h:
        h.runner.thread.start()
        h.feeder.send(StreamInfo("cam0", has_video=True, has_audio=True))
        for k in range(75):  # 3 s at 25 fps, audio in 40 ms chunks
            t = k / 25
            h.feeder.send(VideoFrame("cam0", t, time.time(), np.full((90, 160, 3), k, np.uint8)))
            h.feeder.send(AudioChunk("cam0", t, time.time(), np.zeros(640, np.float32), 16000))
        h.feeder.send(Event("stream_up", "cam0", {}))
        h.feeder.send(EndOfStream("cam0"))
        got: list[Any] = []
        while not got or not isinstance(got[-1], EndOfStream):
            item = h.downstream.get(10)
            assert item is not None, f"stalled after {got}"
            got.append(item[1])
        h.runner.thread.join(5)
        assert not h.runner.thread.is_alive() and not h.runner.failed
        windows = [g for g in got if isinstance(g, AVWindow)]
        assert [(w.t0, w.t1) for w in windows] == [(0.0, 2.0), (1.0, 3.0), (2.0, 4.0)]
        assert all(w.frames is not None and w.frames.shape[1:] == (64, 64, 3) for w in windows)
        assert any(isinstance(g, Event) and g.name == "stream_up" for g in got)  # events pass through
        status = h.runner.status()
        assert status["in"] == 75 * 2 + 3 and status["drops"] == 0
        # the control link reports status and takes a stop command
        identity, _ = h.control.recv_multipart()
        h.stop.clear()
        h.control.send_multipart([identity, b'{"type": "stop"}'])
        deadline = time.monotonic() + 5
        while not h.stop.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert h.stop.is_set()
