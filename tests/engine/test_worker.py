"""A node runner in one process: queued items in, then end of stream; outputs checked in order."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from avstream.engine.config import Overrides, load_pipeline
from avstream.engine.items import AudioChunk, AVWindow, EndOfStream, Event, StreamInfo, VideoFrame
from avstream.engine.transport import Inbox, InputPort, OutputPort
from avstream.engine.worker import ControlLink, NodeRunner

pytestmark = pytest.mark.timeout(30)


def test_window_runner_turns_queued_media_into_windows_then_stops(tmp_path: Path) -> None:
    spec = load_pipeline("highlight", Overrides(sets=["streams.cam0.realtime=false"]))  # block: no drops
    for i, edge in enumerate(spec.edges):
        edge.endpoint = f"ipc://{tmp_path}/e{i}"
    zctx: zmq.Context[Any] = zmq.Context()
    stop = threading.Event()
    control = zctx.socket(zmq.ROUTER)
    control.bind(f"ipc://{tmp_path}/control")
    link = ControlLink(zctx, f"ipc://{tmp_path}/control", "window", stop)
    link.thread.start()
    # downstream of the window node: a receiving port standing in for the model node
    (to_score,) = spec.outputs_of("window")
    downstream = Inbox()
    port = InputPort(zctx, to_score, downstream, tmp_path, threading.Event())
    assert port.ready.wait(5)
    runner = NodeRunner(spec, spec.nodes["window"], zctx, tmp_path, stop, link, {})
    runner.thread.start()
    (from_source,) = spec.inputs_of("window")
    feeder = OutputPort(zctx, "cam0", [from_source], tmp_path, threading.Event())
    feeder.send(StreamInfo("cam0", has_video=True, has_audio=True))
    for k in range(75):  # 3 s at 25 fps, audio in 40 ms chunks
        t = k / 25
        feeder.send(VideoFrame("cam0", t, time.time(), np.full((90, 160, 3), k, np.uint8)))
        feeder.send(AudioChunk("cam0", t, time.time(), np.zeros(640, np.float32), 16000))
    feeder.send(Event("stream_up", "cam0", {}))
    feeder.send(EndOfStream("cam0"))
    got: list[Any] = []
    while not got or not isinstance(got[-1], EndOfStream):
        item = downstream.get(10)
        assert item is not None, f"stalled after {got}"
        got.append(item[1])
    runner.thread.join(5)
    assert not runner.thread.is_alive() and not runner.failed
    windows = [g for g in got if isinstance(g, AVWindow)]
    assert [(w.t0, w.t1) for w in windows] == [(0.0, 2.0), (1.0, 3.0), (2.0, 4.0)]
    assert all(w.frames is not None and w.frames.shape[1:] == (64, 64, 3) for w in windows)
    assert any(isinstance(g, Event) and g.name == "stream_up" for g in got)  # events pass through
    status = runner.status()
    assert status["in"] == 75 * 2 + 3 and status["drops"] == 0
    # the control link reports status and takes a stop command
    identity, _ = control.recv_multipart()
    stop.clear()
    control.send_multipart([identity, b'{"type": "stop"}'])
    deadline = time.monotonic() + 5
    while not stop.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stop.is_set()
    feeder.close(0)
    runner.output.close(0)
    port.stop.set()
    stop.set()
    for p in [port, *runner.inbox.ports]:
        p.thread.join(2)
    link.post({"type": "bye"})
    link.thread.join(2)
    zctx.destroy(linger=0)
