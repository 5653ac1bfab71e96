"""Cross-stream dynamic batching: the batch collector with real threads, and a real batched node runner
(real sockets, real ONNX Runtime) whose results, events and ends of stream come out exactly in order."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avstream.engine.inference.batching import batch_limits, collect_batch
from avstream.engine.items import AVWindow, EndOfStream, Event, Item, Result
from avstream.engine.node import CheckContext
from avstream.engine.runtime.config import load_pipeline
from tests.engine.runner_harness import node_runner

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.timeout(60)


def window(stream: str, t0: float, level: int = 0) -> AVWindow:
    return AVWindow(stream, t0, t0 + 2.0, time.time(), np.full((4, 4, 6, 3), level, np.uint8),
                    np.zeros(160, np.float32), 2.0, 80)


class Feed:
    """A producer thread putting items on a queue at given delays; ``get`` is what the worker passes."""

    def __init__(self, items: list[tuple[float, Item]]):
        self.q: queue.Queue[Item] = queue.Queue()
        self.thread = threading.Thread(target=self._run, args=(items,), daemon=True)
        self.thread.start()

    def _run(self, items: list[tuple[float, Item]]) -> None:
        for delay, item in items:
            time.sleep(delay)
            self.q.put(item)

    def get(self, timeout: float) -> Item | None:
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            return None


def test_collect_batch_stops_at_max_batch_and_at_max_wait() -> None:
    feed = Feed([(0.0, window("a", float(i))) for i in range(6)])
    feed.thread.join()
    batch, held = collect_batch(feed.get, window("a", -1.0), max_batch=4, max_wait_s=1.0)
    assert [w.t0 for w in batch if isinstance(w, AVWindow)] == [-1.0, 0.0, 1.0, 2.0] and held is None
    # one more comes within the wait, the next one too late
    feed = Feed([(0.02, window("b", 0.0)), (0.5, window("b", 1.0))])
    t = time.monotonic()
    batch, held = collect_batch(feed.get, window("a", 9.0), max_batch=8, max_wait_s=0.15)
    waited = time.monotonic() - t
    assert [w.stream for w in batch if isinstance(w, AVWindow)] == ["a", "b"] and held is None
    assert 0.1 <= waited < 0.45


def test_queued_items_are_taken_after_the_wait_and_control_items_cut_the_batch() -> None:
    feed = Feed([(0.0, window("a", 1.0)), (0.0, window("b", 1.0))])
    feed.thread.join()
    batch, _ = collect_batch(feed.get, window("a", 0.0), max_batch=8, max_wait_s=0.0)
    assert len(batch) == 3  # zero wait still drains what is already queued
    eos = EndOfStream("a")
    feed = Feed([(0.0, window("b", 2.0)), (0.0, eos), (0.0, window("b", 3.0))])
    feed.thread.join()
    batch, held = collect_batch(feed.get, window("a", 2.0), max_batch=8, max_wait_s=1.0)
    assert len(batch) == 2 and held is eos and feed.q.qsize() == 1


def test_batch_limits_of_encoder_nodes(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    import logging

    from avstream.engine.node import NodeContext
    from avstream.exporters.testing import tiny_model
    from avstream.plugins.encoders import ModelNode, OnnxEncoderNode, OnnxEncoderParams

    tiny_model(tmp_path / "tiny.onnx")
    ctx = NodeContext("enc", ("a",), tmp_path, threading.Event(), logging.getLogger("t"))
    batched = OnnxEncoderNode(ctx, OnnxEncoderParams(model="tiny.onnx", max_batch=8, max_wait_ms=25))
    got = batch_limits(batched)
    assert got is not None and (got.max_batch, got.max_wait_s) == (8, 0.025)
    assert batch_limits(OnnxEncoderNode(ctx, OnnxEncoderParams(model="tiny.onnx"))) is None

    class OneByOne(OnnxEncoderNode):  # per-item logic in process(): batching would bypass it
        type_id = "test/one_by_one@v1"

        def process(self, item: Item) -> Any:
            return super().process(item)

    assert ModelNode.supports_batching(), "the base class batches"
    assert batch_limits(OneByOne(ctx, OnnxEncoderParams(model="tiny.onnx", max_batch=8))) is None
    problems = OneByOne.check({"model": "tiny.onnx", "max_batch": 4}, CheckContext("enc", tmp_path))
    assert [k for k, _ in problems] == ["max_batch"]


PIPELINE = """
version: 1
name: batched
streams:
  s0: {uri: "synthetic://scene?seed=1&duration=4", realtime: false}
  s1: {uri: "synthetic://scene?seed=2&duration=4", realtime: false}
  s2: {uri: "synthetic://scene?seed=3&duration=4", realtime: false}
nodes:
  window: {type: avstream/av_window@v1, inputs: [s0, s1, s2]}
  score:  {type: avstream/highlight@v1, inputs: [window],
           params: {model: "builtin:highlight", max_batch: MAXB, max_wait_ms: 50, threads: 1}}
"""


def run_score_node(tmp_path: Path, max_batch: int, items: list[Item]) -> tuple[list[Item], dict[str, Any]]:
    """The score node of PIPELINE in a real NodeRunner: ``items`` in through a socket, outputs back."""
    yaml = tmp_path / f"p{max_batch}.yaml"
    yaml.write_text(PIPELINE.replace("MAXB", str(max_batch)))
    spec = load_pipeline(str(yaml))
    run_dir = tmp_path / f"run{max_batch}"
    run_dir.mkdir()
    with node_runner(spec, "score", run_dir) as h:
        for item in items[:12]:  # queued before the node starts: the first batches are full
            h.feeder.send(item)
        h.runner.thread.start()
        for item in items[12:]:
            h.feeder.send(item)
        got: list[Item] = []
        ends = 0
        while ends < 3:
            nxt = h.downstream.get(20)
            assert nxt is not None, f"stalled after {len(got)} items"
            got.append(nxt[1])
            ends += isinstance(nxt[1], EndOfStream)
        h.runner.thread.join(5)
        assert not h.runner.thread.is_alive() and not h.runner.failed
        status = h.runner.status()
    return got, status


def av_window(stream: str, t0: float, seed: int) -> AVWindow:
    rng = np.random.default_rng(seed)
    return AVWindow(stream, t0, t0 + 2.0, time.time(), rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8),
                    rng.normal(0, 0.1, 32000).astype(np.float32), 4.0, 16000)


def test_batched_runner_keeps_order_events_and_end_of_stream(tmp_path: Path) -> None:
    items: list[Item] = []
    for k in range(8):
        for s in ("s0", "s1", "s2"):
            if s == "s1" and k == 5:
                items.append(Event("stream_down", "s1", {"k": k}))
            if s == "s2" and k == 6:
                items.append(EndOfStream("s2"))
            if s == "s2" and k >= 6:
                continue
            items.append(av_window(s, float(k), seed=k * 3 + int(s[1])))
    items += [EndOfStream("s0"), EndOfStream("s1")]
    batched, st_b = run_score_node(tmp_path, 4, items)
    single, st_1 = run_score_node(tmp_path, 1, items)
    # exactly the input order: results, the event and the ends of stream in the positions they came in
    def shape(got: list[Item]) -> list[tuple[str, str, float]]:
        return [(type(g).__name__, g.stream, g.t0 if isinstance(g, Result) else -1.0) for g in got]

    expect = [(("Result" if isinstance(i, AVWindow) else type(i).__name__), i.stream,
               i.t0 if isinstance(i, AVWindow) else -1.0) for i in items]
    assert shape(batched) == expect == shape(single)
    # per-stream state (the rolling normalisation) sees the same windows in the same order
    for b, one in zip(batched, single, strict=True):
        if isinstance(b, Result) and isinstance(one, Result):
            assert b.fields["score"] == pytest.approx(one.fields["score"], abs=1e-4)
            assert b.fields["activation"] == pytest.approx(one.fields["activation"], abs=1e-4)
    windows = sum(isinstance(i, AVWindow) for i in items)
    assert st_b["counters"]["windows"] == st_1["counters"]["windows"] == windows
    assert st_1["counters"]["batches"] == windows
    assert st_b["counters"]["batches"] < windows * 0.6, st_b["counters"]  # mostly full batches of 4
    assert st_b["in"] == st_1["in"] == len(items)


def test_batch_waits_only_for_streams_due_within_the_limit(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    import logging

    from avstream.engine.node import NodeContext
    from avstream.exporters.testing import tiny_model
    from avstream.plugins.encoders import OnnxEncoderNode, OnnxEncoderParams

    tiny_model(tmp_path / "tiny.onnx")  # window hop 1 s
    ctx = NodeContext("enc", ("a", "b"), tmp_path, threading.Event(), logging.getLogger("t"))
    node = OnnxEncoderNode(ctx, OnnxEncoderParams(model="tiny.onnx", max_batch=4, max_wait_ms=50))
    node.on_start()
    (batching,) = [batch_limits(node)]
    assert batching is not None and batching.max_wait_s == pytest.approx(0.05)  # nothing seen: full wait
    node.process_batch([window("a", 0.0)])
    assert batching.max_wait_s == pytest.approx(0.05)  # b not seen yet
    node.process_batch([window("b", 0.0)])
    # both streams deliver once a second: neither is due within 50 ms, a batch starting now does not wait
    assert batching.max_wait_s < 0.01
    slow = OnnxEncoderNode(ctx, OnnxEncoderParams(model="tiny.onnx", max_batch=4, max_wait_ms=2000))
    slow.on_start()
    slow.process_batch([window("a", 0.0), window("b", 0.0)])
    slow_batching = batch_limits(slow)
    assert slow_batching is not None and 1.0 < slow_batching.max_wait_s <= 2.0  # due in 1 s, plus some slack
