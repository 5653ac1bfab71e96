"""A worker process: runs the nodes of one process group, each in its own thread.

Started by the supervisor as ``python -m avstream.engine.runtime.worker``. It talks to the supervisor on a
control socket (status and heartbeats out, ``stop`` in) and exits when its nodes have finished, when
told to stop, on SIGTERM, or when the supervisor disappears (parent-death signal plus a parent-pid
watch, so no worker outlives a ``kill -9`` of the supervisor).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import zmq

from avstream.engine.capture.preview import PreviewTap, is_preview_only
from avstream.engine.errors import ConfigError, MissingDependencyError, ModelError, SourceError
from avstream.engine.inference.batching import batch_limits, collect_batch
from avstream.engine.items import AudioChunk, EndOfStream, Event, Item, Result, VideoFrame
from avstream.engine.node import Node, NodeContext, NodeState, SourceNode
from avstream.engine.runtime.graph import NodeSpec, PipelineSpec
from avstream.engine.runtime.memory import tune_malloc
from avstream.engine.runtime.registry import load_registry
from avstream.engine.transport.edgekeys import EdgeKeys, activate, edge_connect, stop_authenticators
from avstream.engine.transport.edges import Inbox, InputLink, InputPort, OutputPort
from avstream.engine.transport.shards import ShardedEdge, ShardRouter, ShardTable


def set_process_name(name: str) -> None:
    """The kernel's name of this process (15 bytes), as ps/top show it."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(15, name.encode()[:15] + b"\0", 0, 0, 0)  # PR_SET_NAME
    except OSError:
        pass


STATUS_EVERY_S = 0.5
# Errors caused by the user's input or set-up: reported without a traceback and not retried.
USER_ERRORS = (SourceError, ModelError, ConfigError, MissingDependencyError)
log = logging.getLogger("avstream.worker")


class ControlLink:
    """The worker's control socket, owned by one thread; other threads post through a queue."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, process: str, stop: threading.Event):
        self.ctx, self.endpoint, self.process, self.stop = ctx, endpoint, process, stop
        self.outbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self.status_fn: Any = lambda: {}
        self.preview_streams: frozenset[str] = frozenset()  # streams a viewer watches (sources preview them)
        self.shards = ShardTable()  # replicas up, per replicated node (the supervisor's "shards" messages)
        self.thread = threading.Thread(target=self._run, name="control", daemon=True)

    def post(self, message: dict[str, Any]) -> None:
        self.outbox.put(message)

    def _run(self) -> None:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.setsockopt(zmq.RECONNECT_IVL, 5)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
        edge_connect(sock, self.endpoint)
        sock.connect(self.endpoint)
        sock.send_json({"type": "hello", "process": self.process, "pid": os.getpid()})
        next_status = 0.0
        while True:
            now = time.monotonic()
            # Taken before the outbox drains, so whatever a node posted before reaching the state this
            # status shows (a provider fallback during start-up, say) reaches the supervisor first.
            status = self.status_fn() if now >= next_status else None
            while not self.outbox.empty():
                msg = self.outbox.get()
                msg.setdefault("process", self.process)
                sock.send_json(msg)
                if msg["type"] == "bye":
                    sock.close()
                    return
            if status is not None:
                sock.send_json({"type": "status", "process": self.process, "nodes": status})
                next_status = now + STATUS_EVERY_S
            if sock.poll(20):
                try:
                    cmd = sock.recv_json()
                except ValueError:  # only the supervisor can send here; still, a bad message is no command
                    continue
                if isinstance(cmd, dict) and cmd.get("type") == "stop":
                    self.stop.set()
                elif isinstance(cmd, dict) and cmd.get("type") == "preview":
                    self.preview_streams = frozenset(str(s) for s in cmd.get("streams") or ())
                elif isinstance(cmd, dict) and cmd.get("type") == "shards" and isinstance(cmd.get("up"), list):
                    self.shards.set_up(str(cmd.get("node")), [r for r in cmd["up"] if isinstance(r, int)])


class ForwardingHandler(logging.Handler):
    """Sends log records to the supervisor, which prints them above the status view."""

    def __init__(self, link: ControlLink):
        super().__init__(logging.INFO)
        self.link = link

    def emit(self, record: logging.LogRecord) -> None:
        report = getattr(record, "provider_fallback", None)
        if report is not None:  # the supervisor logs the fallbacks of the whole run in one line
            self.link.post({"type": "provider_fallback", "report": report})
            return
        self.link.post({"type": "log", "level": record.levelname, "logger": record.name, "message": self.format(record)})


class NodeRunner:
    """One node in its thread: inputs -> process() -> outputs, end-of-stream accounting, stats."""

    def __init__(self, spec: PipelineSpec, node: NodeSpec, zctx: zmq.Context[Any], run_dir: Path,
                 stop: threading.Event, link: ControlLink, resume: dict[str, float],
                 inputs: dict[str, InputLink] | None = None):
        self.spec, self.node_spec, self.link, self.stop = spec, node, link, stop
        cls = load_registry().get(node.type_id)
        logger = logging.getLogger(f"avstream.node.{node.id}")
        self.ctx = NodeContext(
            node_id=node.id, streams=tuple(node.streams), base_dir=Path(spec.base_dir), stop_event=stop,
            logger=logger, window=node.window, resume_after=resume, cpu_consumers=max(1, spec.cpu_consumers),
            duration=spec.duration if node.is_source and node.id not in spec.live_streams else None,
            output_fits=tuple(e.fit for e in spec.outputs_of(node.id)),
        )
        if node.is_source and spec.preview is not None and spec.preview.endpoint:
            p = spec.preview
            self.ctx.preview = PreviewTap(fps=p.fps, max_width=p.max_width, quality=p.quality, endpoint=p.endpoint,
                                          zctx=zctx, wanted=lambda: link.preview_streams, stop=stop)
        self.node: Node[Any] = cls(self.ctx, cls.Params.model_validate(node.params))
        self.inbox = Inbox()
        self.in_edges = spec.inputs_of(node.id)
        for edge in self.in_edges:
            # the worker's receiving sockets, one per endpoint, shared by its nodes (None: one each, started now)
            shared = None
            if inputs is not None:
                shared = inputs.get(edge.endpoint)
                if shared is None:
                    shared = inputs[edge.endpoint] = InputLink(zctx, edge.endpoint, edge.kind, stop)
            InputPort(zctx, edge, self.inbox, run_dir, stop, shared)
        out_edges = spec.outputs_of(node.id)
        sharded = [ShardedEdge(i, dst.replica_of, dst.replica, dst.replicas) for i, e in enumerate(out_edges)
                   if (dst := spec.nodes.get(e.dst)) is not None and dst.replica_of]
        router = ShardRouter(sharded, len(out_edges), link.shards) if sharded else None
        self.output = OutputPort(zctx, node.id, out_edges, run_dir, stop, router=router)
        self.items_in = 0
        self.items_out = 0
        self.last_t: dict[str, float] = {}
        self.latency_ms = 0.0
        self.failed = False
        self.serve = False  # a shared node of `avstream serve`: streams come and go, end-of-stream never ends it
        self.thread = threading.Thread(target=self.run, name=f"node:{node.id}", daemon=True)

    def emit(self, item: Item) -> bool:
        if isinstance(item, (VideoFrame, AudioChunk)):
            self.last_t[item.stream] = item.t
            self.latency_ms = (time.time() - item.wall) * 1000
        elif isinstance(item, Result):
            self.last_t[item.stream] = item.t1
            self.latency_ms = (time.time() - item.capture_wall) * 1000
        ok = self.output.send(item)
        self.items_out += ok
        return ok

    def run(self) -> None:
        node = self.node
        try:
            node.state = NodeState.STARTING
            node.on_start()
            node.state = NodeState.RUNNING
            if isinstance(node, SourceNode):
                self.run_source(node)
            else:
                self.run_consumer(node)
            node.state = NodeState.STOPPED
        except Exception as exc:
            node.state = NodeState.FAILED
            self.failed = True
            fatal = isinstance(exc, USER_ERRORS)
            self.link.post({"type": "error", "node": self.node_spec.id, "fatal": fatal,
                            "message": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
            if fatal and isinstance(node, SourceNode):
                # Let everything downstream finish the stream; the other streams keep running.
                stream = self.ctx.streams[0] if self.ctx.streams else ""
                self.emit(Event("stream_down", stream, {"error": str(exc)}))
                for s in self.ctx.streams:
                    self.emit(EndOfStream(s))
            else:
                self.stop.set()
        finally:
            try:
                node.on_stop()
            except Exception:
                log.exception("node %s: on_stop failed", self.node_spec.id)

    def run_source(self, node: SourceNode[Any]) -> None:
        preview = self.ctx.preview
        for item in node.produce():
            if isinstance(item, VideoFrame) and item.native is not None:
                if preview is not None:
                    preview.offer(item)  # after pacing: the wall time the consumers see
                item.native = None
                if is_preview_only(item):
                    continue  # a decoded frame no consumer takes
            if not self.emit(item) or self.stop.is_set():
                return
        for stream in self.ctx.streams:
            self.emit(EndOfStream(stream))

    def run_consumer(self, node: Node[Any]) -> None:
        # Each input edge delivers one end-of-stream per stream flowing through it.
        streams_of_edge = [set(self.spec.nodes[e.src].streams) for e in self.in_edges]
        pending = {s: sum(1 for ss in streams_of_edge if s in ss) for s in self.ctx.streams}
        batching = batch_limits(node)  # nodes that batch windows of several streams (engine/inference/batching.py)
        held: Item | None = None  # a control item that ended a batch: handled next, in order
        while (pending or self.serve) and not self.stop.is_set():
            if held is not None:
                item, held = held, None
            else:
                got = self.inbox.get(0.1)
                if got is None:
                    continue
                _, item = got
            self.items_in += 1
            if isinstance(item, Event):  # events travel to the outputs untouched
                self.emit(item)
                continue
            if self.serve:
                if isinstance(item, EndOfStream):
                    # one stream left the shared graph: forget its state, keep serving the others
                    self.ctx.streams = tuple(s for s in self.ctx.streams if s != item.stream)
                    for out in node.on_eos(item.stream):
                        self.emit(out)
                    self.emit(item)
                    continue
                self._attached(item)
            if isinstance(item, EndOfStream):
                if item.stream not in pending:
                    continue
                pending[item.stream] -= 1
                if pending[item.stream] == 0:
                    del pending[item.stream]
                    node.state = NodeState.DRAINING
                    for out in node.on_eos(item.stream):
                        self.emit(out)
                    self.emit(item)
                continue
            batch: list[Item] = [item]
            try:
                if batching is not None:
                    batch, held = collect_batch(self._next_item, item, batching.max_batch, batching.max_wait_s)
                    self.items_in += len(batch) - 1
                outs = batching.process(batch) if batching is not None else node.process(item)
                for out in outs:
                    if not self.emit(out):
                        return
            finally:
                for it in batch:
                    if isinstance(it, VideoFrame):
                        it.release()  # nodes copy what they keep; the slot goes back to the writer

    def _attached(self, item: Item) -> None:
        """Serve mode: the streams now attached, learned from their items (batch waits use them)."""
        stream = getattr(item, "stream", "")
        if stream and stream not in self.ctx.streams and not isinstance(item, EndOfStream):
            self.ctx.streams = (*self.ctx.streams, stream)

    def _next_item(self, timeout: float) -> Item | None:
        got = self.inbox.get(timeout)
        if got is not None and self.serve:
            self._attached(got[1])
        return None if got is None else got[1]

    def status(self) -> dict[str, Any]:
        return {
            "type": self.node_spec.type_id, "state": self.node.state.value, "in": self.items_in,
            "out": self.items_out, "queue": self.inbox.depth(), "drops": self.inbox.drops(),
            "latency_ms": round(self.latency_ms, 1), "last_t": self.last_t,
            "counters": dict(self.ctx.counters), "extra": self.node.status(),
            "timings": {name: t.snapshot() for name, t in self.ctx.timings.items()},
            **({"preview": self.ctx.preview.status()} if self.ctx.preview is not None else {}),
        }


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _alive(pid: int) -> bool:
    """Whether the supervisor still runs (workers are forked by a fork server, not by it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="avstream-worker")
    parser.add_argument("--spec", required=True)
    parser.add_argument("--process", required=True)
    parser.add_argument("--control", required=True)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--resume", default="{}")
    parser.add_argument("--parent", type=int, default=0)
    parser.add_argument("--serve", action="store_true", help="shared nodes of `avstream serve`: never end on EOS")
    parser.add_argument("--edge-keys", default="", help="the run's CURVE keys for tcp edges (engine/transport/edgekeys.py)")
    args = parser.parse_args(argv)
    _die_with_parent()
    tune_malloc()  # a fresh interpreter (a restart) has not inherited the supervisor's setting
    set_process_name(f"avs:{args.process}")
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor coordinates a Ctrl-C
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    parent = args.parent or os.getppid()
    if not _alive(parent):
        return 0
    spec = PipelineSpec.from_json(Path(args.spec).read_text())
    activate(EdgeKeys.from_json(Path(args.edge_keys).read_text()) if args.edge_keys else None)
    zctx: zmq.Context[Any] = zmq.Context()
    link = ControlLink(zctx, args.control, args.process, stop)
    root = logging.getLogger("avstream")
    root.setLevel(logging.INFO)
    root.addHandler(ForwardingHandler(link))
    root.propagate = False
    link.thread.start()
    resume: dict[str, dict[str, float]] = json.loads(args.resume)
    runners: list[NodeRunner] = []
    inputs: dict[str, InputLink] = {}
    try:
        for node_id in spec.processes()[args.process]:
            runners.append(NodeRunner(spec, spec.nodes[node_id], zctx, Path(args.run_dir), stop, link,
                                      resume.get(node_id, {}), inputs))
        for shared in inputs.values():  # bound once every node of the process has its port on it
            shared.start()
    except Exception:
        link.post({"type": "error", "node": args.process, "traceback": traceback.format_exc()})
        link.post({"type": "bye", "failed": True})
        link.thread.join(2)
        return 1
    for r in runners:
        r.serve = args.serve
        if args.serve:
            r.ctx.streams = ()  # the template's own stream never comes; the attached ones are learned
    link.status_fn = lambda: {r.node_spec.id: r.status() for r in runners}
    for r in runners:
        r.thread.start()
    while any(r.thread.is_alive() for r in runners):
        if not _alive(parent):  # supervisor gone
            stop.set()
        for r in runners:
            r.thread.join(0.1)
    failed = any(r.failed for r in runners)
    graceful = not stop.is_set()
    if graceful:
        # Stay connected until the supervisor says every consumer has finished: closing with items
        # still in flight to a busy consumer can lose the end of the stream.
        link.post({"type": "status", "nodes": link.status_fn()})
        link.post({"type": "drained"})
        while not stop.wait(0.1):
            if not _alive(parent):
                break
    for r in runners:
        r.output.close(linger_ms=2000 if graceful else 0)
    stop.set()  # receiver threads end within one poll interval
    for r in runners:
        for port in r.inbox.ports:
            port.thread.join(1)
        if r.ctx.preview is not None:
            r.ctx.preview.join(1)
    link.post({"type": "status", "nodes": link.status_fn()})
    link.post({"type": "bye", "failed": failed})
    link.thread.join(3)
    stop_authenticators()
    zctx.term() if graceful else zctx.destroy(linger=0)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
