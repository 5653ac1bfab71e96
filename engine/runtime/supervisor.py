"""The supervisor: owns the graph of one ``avstream run``.

It allocates endpoints, spawns one worker process per process group, watches heartbeats, restarts
crashed workers with backoff (publishing ``node_restarted``), collects results into the outputs,
publishes the run's status once a second (PUB ``status`` messages, ``--status-json``, the status
view), drains at end of input and stops everything on SIGINT/SIGTERM within a few seconds.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import zmq

from avstream.engine.errors import AvstreamError
from avstream.engine.inference.runners import describe_fallbacks
from avstream.engine.items import Event, PreviewFrame, Result
from avstream.engine.runtime.config import has_live_input
from avstream.engine.runtime.control import MAX_CONTROL_BYTES, ControlGate
from avstream.engine.runtime.graph import OUTPUTS_NODE, PipelineSpec
from avstream.engine.runtime.outputs import ResultPublisher
from avstream.engine.runtime.replay import ReplayGuard
from avstream.engine.runtime.resharding import ShardMonitor
from avstream.engine.runtime.restarts import CrashLoop, RestartPolicy, ResumePoints
from avstream.engine.runtime.snapshot import StatusJsonSink, StatusTracker
from avstream.engine.runtime.spawner import Child
from avstream.engine.runtime.status import StatusView
from avstream.engine.sinks import Sink, SinkContext, build_sinks
from avstream.engine.transport.curve import PublishSecurity
from avstream.engine.transport.edgekeys import edge_bind
from avstream.engine.transport.private import bind_private, make_private_dir
from avstream.engine.transport.wire import Rejects, WireError, decode

log = logging.getLogger("avstream.supervisor")
HEARTBEAT_TIMEOUT_S = 10.0
STOP_GRACE_S = 3.0


class PreviewViewer(Protocol):
    """What takes the live preview (engine/serve/viewer.py): called from the supervisor's thread."""

    def wanted_streams(self) -> set[str]:
        """The streams someone watches now (cheap, thread-safe)."""
        ...

    def send_frame(self, frame: PreviewFrame) -> None:
        """One preview frame; must not block."""
        ...


@dataclass
class WorkerProc:
    name: str
    nodes: list[str]
    popen: Child | None = None
    last_seen: float = 0.0
    status: dict[str, Any] = field(default_factory=dict)
    status_at: float = 0.0  # arrival of the last status report (rates are taken between two)
    loop: CrashLoop = field(default_factory=lambda: CrashLoop(RestartPolicy()))  # crash history, failed state
    restart_count: int = 0  # over the whole run (``loop.restarts`` holds the recent ones only)
    restart_at: float | None = None
    done: bool = False
    fatal: str | None = None
    error_reported: bool = False
    drained: bool = False  # its nodes finished; it waits until its consumers have read everything
    released: bool = False


class Supervisor:
    def __init__(self, spec: PipelineSpec, *, quiet: bool = False, tty: bool | None = None,
                 status_json: str | None = None):
        self.spec = spec
        self.quiet = quiet
        self.status_json = status_json  # a path, "-" for standard output, None for none
        self.id = f"{os.getpid():x}{int(time.time() * 1000) % 0xFFFFFF:x}"
        self.run_dir = Path(tempfile.mkdtemp(prefix="avs-"))
        shm_root = Path("/dev/shm")
        self.ring_dir = shm_root / f"avstream-{self.id}" if shm_root.is_dir() else self.run_dir / "rings"
        make_private_dir(self.ring_dir)
        self.workers = {name: WorkerProc(name, nodes) for name, nodes in spec.processes().items()}
        for worker in self.workers.values():
            policies = [RestartPolicy.model_validate(spec.nodes[n].restart) for n in worker.nodes]
            worker.loop = CrashLoop(RestartPolicy.combined(policies))
        self.by_node = {n: w for w in self.workers.values() for n in w.nodes}
        self.stopping = False
        self.stop_reason = ""
        self.failed = False
        self.view = StatusView(tty=tty, quiet=quiet)
        self.tracker = StatusTracker(spec, self.id)
        self.fallbacks: dict[tuple[str, str, str], dict[str, Any]] = {}  # (node, model, cause) -> report
        self.fallbacks_logged: set[tuple[str, str, str]] = set()
        self.viewer: PreviewViewer | None = None  # set before run() by a live viewer
        self.preview_wanted: frozenset[str] = frozenset()
        self.replay = ReplayGuard()
        self.resume = ResumePoints()
        self.shards = ShardMonitor(spec)  # replicated encoders: which replicas are up, gaps of lost ones
        self.shard_producers = self.shards.producers()

    # --- set-up ---
    def allocate_endpoints(self) -> None:
        results = f"ipc://{self.run_dir}/results"
        shared: dict[tuple[str, str], str] = {}  # (producer, consumer process): one socket for its edges
        for i, edge in enumerate(self.spec.edges):
            if edge.dst == OUTPUTS_NODE:
                edge.endpoint = results
            else:
                key = (edge.src, self.spec.nodes[edge.dst].process)
                edge.endpoint = shared.setdefault(key, f"ipc://{self.run_dir}/e{i}")
        self.results_endpoint = results
        self.control_endpoint = f"ipc://{self.run_dir}/control"
        if self.spec.preview is not None:
            self.spec.preview.endpoint = results  # preview frames come in with the results
        (self.run_dir / "spec.json").write_text(self.spec.to_json())

    def worker_args(self, worker: WorkerProc) -> list[str]:
        """The spec file a worker reads, and flags; `avstream serve` gives each graph its own."""
        return ["--spec", str(self.run_dir / "spec.json")]

    def spawn(self, worker: WorkerProc) -> None:
        resume = {n: self.resume.resume(n, self._live_source(n), time.time()) for n in worker.nodes}
        argv = [*self.worker_args(worker), "--process", worker.name, "--control",
                self.control_endpoint, "--run-dir", str(self.ring_dir), "--resume", json.dumps(resume),
                "--parent", str(os.getpid())]
        worker.popen = self.start_child(worker, argv)
        worker.last_seen = time.monotonic()
        worker.loop.on_spawn(worker.last_seen)
        worker.restart_at = None
        worker.drained = worker.released = False

    def start_child(self, worker: WorkerProc, argv: list[str]) -> Child:
        """The worker process (the Ray backend starts it in an actor instead)."""
        # Forking is safe only before this process has ZeroMQ sockets (the first start).
        return Child(argv, fork=not hasattr(self, "control"))

    def stream_inputs(self) -> dict[str, dict[str, Any]]:
        """Each stream's input as its source node reads it, for sinks that open it too (clips)."""
        keys = ("uri", "video", "audio", "realtime", "loop", "options", "rtsp_transport")
        return {n.streams[0]: {k: n.params.get(k) for k in keys} for n in self.spec.nodes.values()
                if n.is_source and len(n.streams) == 1}

    # --- main loop ---
    def _kill_remaining(self) -> None:
        """Past the stop deadline: kill what is still alive."""
        for worker in self.workers.values():
            if worker.popen is not None and worker.popen.poll() is None:
                worker.popen.kill()
                worker.popen.wait()
            worker.done = True

    def _open_control_sockets(self) -> None:
        """The workers' control channel (ROUTER) and the results inbox (PULL), bound by the supervisor."""
        self.ctx = zmq.Context()
        self.control = self.ctx.socket(zmq.ROUTER)
        self.control.setsockopt(zmq.LINGER, 0)
        self.control.setsockopt(zmq.MAXMSGSIZE, MAX_CONTROL_BYTES)  # a peer sending more is disconnected
        edge_bind(self.ctx, self.control, self.control_endpoint)
        bind_private(self.control, self.control_endpoint)
        self.results = self.ctx.socket(zmq.PULL)
        self.results.setsockopt(zmq.LINGER, 0)
        edge_bind(self.ctx, self.results, self.results_endpoint)
        bind_private(self.results, self.results_endpoint)
        # what the two sockets drop: malformed messages, or control messages not from the worker they name
        self.gate = ControlGate(self.identities)
        self.result_rejects = Rejects("the results socket")

    def _control_poller(self) -> zmq.Poller:
        poller = zmq.Poller()
        poller.register(self.control, zmq.POLLIN)
        poller.register(self.results, zmq.POLLIN)
        return poller

    def _poll_once(self, poller: zmq.Poller) -> float:
        """Up to 20 ms of control messages and results, then the workers' health; returns the time."""
        for sock, _ in poller.poll(20):
            if sock is self.results:
                self._drain_results()
            else:
                self._drain_control()
        self._sync_preview()
        now = time.monotonic()
        self._release_held()
        self._check_workers(now)
        return now

    # --- live preview ---
    def _sync_preview(self) -> None:
        """Tell the source workers when the set of streams a viewer watches has changed."""
        wanted = frozenset(self.viewer.wanted_streams()) if self.viewer is not None else frozenset()
        if wanted != self.preview_wanted:
            self.preview_wanted = wanted
            for worker in self.workers.values():
                self._send_preview(worker)

    def source_streams(self, worker: WorkerProc) -> set[str]:
        """The streams whose source nodes run in ``worker``."""
        return {s for n in worker.nodes if self.spec.nodes[n].is_source for s in self.spec.nodes[n].streams}

    def _send_preview(self, worker: WorkerProc) -> None:
        sources = self.source_streams(worker)
        if sources:  # an empty list stops what it previewed
            self._send_control(worker.name, {"type": "preview", "streams": sorted(sources & self.preview_wanted)})

    def run(self) -> int:
        old_int = signal.signal(signal.SIGINT, self._on_signal)
        old_term = signal.signal(signal.SIGTERM, self._on_signal)
        try:
            return self._run()
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
            self._cleanup()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if not self.stopping:
            self.request_stop(f"signal {signal.Signals(signum).name}")

    def request_stop(self, reason: str) -> None:
        self.stopping = True
        self.stop_reason = reason
        self.stop_deadline = time.monotonic() + STOP_GRACE_S
        for worker in self.workers.values():
            if worker.popen is not None and worker.popen.poll() is None:
                self._send_control(worker.name, {"type": "stop"})
                worker.popen.send_signal(signal.SIGTERM)

    def _send_control(self, name: str, msg: dict[str, Any]) -> None:
        identity = self.identities.get(name)
        if identity is not None:
            try:
                self.control.send_multipart([identity, json.dumps(msg).encode()], flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                pass

    def _run(self) -> int:
        if self.status_json == "-" and self.spec.outputs.jsonl == "-":
            self.view.line("error: --status-json - and a JSONL sink on '-' cannot both write to standard output",
                           important=True)
            return 2
        self.allocate_endpoints()
        self.identities: dict[str, bytes] = {}
        if not self.spec.outputs.wait_for_subscribers:
            for worker in self.workers.values():  # forks, before any socket exists here
                self.spawn(worker)
        self._open_control_sockets()
        try:
            sinks = build_sinks(self.spec.outputs.sinks, SinkContext(self.spec.name, Path(self.spec.base_dir),
                                                                     Path(self.spec.base_dir), self.stream_inputs()))
        except (AvstreamError, OSError) as exc:
            self.view.line(f"error: cannot start the outputs: {exc}", important=True)
            return 1
        if isinstance(self.viewer, Sink):  # the live viewer takes every published message too
            sinks.sinks.append(self.viewer)
        try:
            out = self.spec.outputs
            self.publisher = ResultPublisher(self.ctx, out.publish, out.jsonl, out.jsonl_fsync, sinks,
                                             PublishSecurity(out.curve_secret_key, out.curve_clients, out.insecure))
        except (zmq.ZMQError, ValueError) as exc:
            self.view.line(f"error: cannot bind the output socket {self.spec.outputs.publish}: {exc}", important=True)
            return 1
        except OSError as exc:
            self.view.line(f"error: cannot write the JSONL output {self.spec.outputs.jsonl}: {exc.strerror or exc}",
                           important=True)
            return 1
        try:
            self.status_sink = StatusJsonSink(self.status_json) if self.status_json else None
        except OSError as exc:
            self.view.line(f"error: cannot write the status JSON {self.status_json}: {exc.strerror or exc}",
                           important=True)
            return 1
        self.view.line(f"pipeline '{self.spec.name}': {len(self.spec.nodes)} nodes in {len(self.workers)} processes, "
                       f"publishing on {self.spec.outputs.publish}{' (CURVE)' if self.publisher.curve else ''}")
        if self.spec.outputs.wait_for_subscribers:
            n = self.spec.outputs.wait_for_subscribers
            self.view.line(f"waiting for {n} subscriber(s) on {self.spec.outputs.publish}")
            if not self.publisher.wait_for_subscribers(n, self.spec.outputs.wait_timeout_s):
                self.view.line(f"warning: only {self.publisher.subscriptions} of {n} subscriber(s) after "
                               f"{self.spec.outputs.wait_timeout_s} s; starting anyway", important=True)
        for worker in self.workers.values():
            if worker.popen is None and not worker.done:
                self.spawn(worker)
        started = time.monotonic()
        poller = self._control_poller()
        next_tick = time.monotonic() + 1.0
        while True:
            now = self._poll_once(poller)
            live_limit = self.spec.duration if self.spec.live_streams else None
            if live_limit and not self.stopping and now - started >= live_limit:
                self.request_stop("--duration reached")
            if self.publisher.reader_gone and not self.stopping:
                self.request_stop("the JSONL reader closed standard output")
            if self.status_sink is not None and self.status_sink.reader_gone and not self.stopping:
                self.request_stop("the status JSON reader closed standard output")
            if now >= next_tick:
                next_tick = now + 1.0
                self.publisher.tick()
                for line in self.replay.report():
                    self.view.line(line)
                self._log_fallbacks(final=False)
                self._publish_status()
            if all(w.done for w in self.workers.values()):
                # Workers flush their sockets before exiting; collect what is still in transit.
                while self.results.poll(30):
                    self._drain_results()
                self._release_held(final=True)
                break
            if self.stopping and now > self.stop_deadline:
                self._kill_remaining()
                break
        self._log_fallbacks(final=True)
        self._publish_status(final=True)
        self._report_rejects()
        reason = self.stop_reason or "end of input"
        self.view.line(f"stopped ({reason}): {self.publisher.published} messages published")
        still_failed = [w.name for w in self.workers.values() if w.loop.failed]
        if still_failed:
            self.view.line(f"ended with failed process(es): {', '.join(still_failed)}", important=True)
        return 1 if self.failed or still_failed else 0

    def _publish_status(self, final: bool = False) -> None:
        """Once a second: the status object to the PUB socket, the --status-json sink and the view."""
        snapshot = self.tracker.snapshot(self.workers, self.publisher, final, replayed=self.replay.replayed)
        snapshot.update(self.extra_status())
        if self.shards.replicas:
            snapshot["shards"] = self.shards.status()
            for entry in snapshot["streams"]:
                entry["dropped"] = self.shards.stream_drops(entry["id"])
        status = self.publisher.publish_status(snapshot)
        if self.status_sink is not None:
            self.status_sink.write(status)
        self.view.update(status, final=final)

    def extra_status(self) -> dict[str, Any]:
        """Entries a backend adds to the status object (the Ray backend: where each process runs)."""
        return {}

    def _log_fallbacks(self, final: bool) -> None:
        """The execution-provider fallbacks of every model in one line, once all nodes have started.

        Workers send a status report only after what their nodes posted before reaching that state,
        so when every node is past start-up every fallback of those start-ups has arrived.
        """
        pending = [key for key in self.fallbacks if key not in self.fallbacks_logged]
        if not pending or not (final or StatusTracker.all_started(self.workers)):
            return
        reports = [self.fallbacks[key] for key in pending]
        self.fallbacks_logged.update(pending)
        self.view.line(describe_fallbacks(reports), important=any(r.get("level") == "warning" for r in reports))

    def _drain_results(self) -> None:
        while self.results.poll(0):
            frames = self.results.recv_multipart(copy=False)
            try:
                item = decode([f.buffer for f in frames])
            except WireError as exc:  # dropped and counted: one bad sender never stops the outputs
                self.result_rejects.note(exc)
                continue
            if isinstance(item, PreviewFrame):  # for the viewer only: never published
                if self.viewer is not None:
                    self.viewer.send_frame(item)
            elif isinstance(item, Result):
                ordered = self.shards.order(item, time.monotonic()) if self.shards.handovers else [item]
                for result in ordered:
                    self._publish_result(result)
            elif isinstance(item, Event):
                self.publisher.publish_event(item)

    def _publish_result(self, item: Result) -> None:
        gap = self.shards.check(item) if self.shards.watches else None
        if gap is not None:  # windows a lost replica took with it
            self.publisher.publish_event(gap)
        if self.replay.admit(item.stream, item.kind, item.t1):
            self.publisher.publish_result(item)

    def _release_held(self, final: bool = False) -> None:
        """Results a handover between replicas held too long (or all of them, at the end)."""
        if not self.shards.handovers:
            return
        for item in self.shards.overdue(float("inf") if final else time.monotonic()):
            if isinstance(item, Event):
                self.publisher.publish_event(item)
            else:
                self._publish_result(item)

    def _report_rejects(self) -> None:
        """At the end: how many malformed or foreign messages the supervisor's sockets dropped."""
        counts = {"control": self.gate.rejects.count, "results": self.result_rejects.count}
        if any(counts.values()):
            self.view.line("dropped malformed messages: " + ", ".join(f"{n} on the {k} socket"
                                                                     for k, n in counts.items() if n), important=True)

    def _spawned_pid(self, process: str) -> int | None:
        worker = self.workers.get(process)
        return worker.popen.pid if worker is not None and worker.popen is not None else None

    def _drain_control(self) -> None:
        while self.control.poll(0):
            admitted = self.gate.admit(self.control.recv_multipart(), self._spawned_pid)
            if admitted is None:  # malformed, or not from the worker it names: dropped and counted
                continue
            worker, msg = self.workers.get(admitted.process), admitted.body
            if worker is None:  # a stream `avstream serve` has just removed
                continue
            worker.last_seen = time.monotonic()
            kind = admitted.type
            if kind == "hello":
                if self.preview_wanted:  # a (re)started worker: what is watched now
                    self._send_preview(worker)
                if worker.name in self.shard_producers:  # and which replicas are up
                    for shard_msg in self.shards.messages():
                        self._send_control(worker.name, shard_msg)
            elif kind == "status":
                worker.status = msg["nodes"]
                worker.status_at = worker.last_seen
                self.resume.note(msg["nodes"], time.time())
                for node in worker.nodes:  # a replica back up takes its streams again
                    if msg["nodes"].get(node, {}).get("state") == "running":
                        self._reshard(self.shards.returned(node, dict(self.replay.high)))
            elif kind == "provider_fallback":
                report = msg["report"]
                self.fallbacks.setdefault((report["node"], report["model"], report["why"]), report)
            elif kind == "drained":
                worker.drained = True
                self._release_drained()
            elif kind == "log":
                self.view.line(f"[{worker.name}] {msg['level'].lower()}: {msg['message']}",
                               important=msg["level"] in ("WARNING", "ERROR", "CRITICAL"))
            elif kind == "error":
                worker.error_reported = True
                if msg.get("fatal"):
                    worker.fatal = (msg.get("message") or "failed").split(": ", 1)[-1]
                    self.view.line(f"error: node '{msg['node']}': {worker.fatal}", important=True)
                else:
                    self.view.line(f"node '{msg['node']}' failed:\n{(msg.get('traceback') or '').rstrip()}",
                                   important=True)

    def _live_source(self, node_id: str) -> bool:
        """A source reading a live input (its media time follows the wall clock)."""
        node = self.spec.nodes.get(node_id) if hasattr(self, "spec") else None
        return node is not None and node.is_source and has_live_input(node.params)

    def _check_workers(self, now: float) -> None:
        for worker in self.workers.values():
            if worker.done:
                continue
            if worker.popen is None:
                if self.stopping:  # waiting for a restart: nothing left to stop
                    worker.done = True
                elif worker.restart_at is not None and now >= worker.restart_at:
                    self.spawn(worker)
                continue
            rc = worker.popen.poll()
            if rc is None:
                if worker.loop.failed and self._recovered(worker, now):
                    continue
                if not self.stopping and now - worker.last_seen > HEARTBEAT_TIMEOUT_S:
                    self.view.line(f"process '{worker.name}' sent no heartbeat for {HEARTBEAT_TIMEOUT_S:.0f} s: killing it", important=True)
                    worker.popen.kill()
                continue
            worker.popen = None
            if rc == 0 or self.stopping:
                worker.done = True
                self._release_drained()
                continue
            self._handle_crash(worker, rc, now)

    def _release_drained(self) -> None:
        """Let a finished worker exit once every process it feeds has finished too.

        A producer that exits while its consumer is still behind closes the connection with data
        in flight; ZeroMQ may then lose the tail of the stream (its end-of-stream marker included)
        when the consumer was not reading at that moment. Keeping producers alive until their
        consumers are done removes that case.
        """
        for worker in self.workers.values():
            if not worker.drained or worker.released:
                continue
            feeds = {self.by_node[e.dst].name for e in self.spec.edges
                     if e.src in worker.nodes and e.dst != OUTPUTS_NODE}
            if all(self.workers[name].done for name in feeds - {worker.name}):
                worker.released = True
                self._send_control(worker.name, {"type": "stop"})

    def _reshard(self, moved: Event | None) -> None:
        """A replica went down or came back: announce what moved, tell the producers."""
        if moved is None:
            return
        self.publisher.publish_event(moved)
        d = moved.detail
        self.view.line(f"replica {d['replica']} of '{d['node']}' {'back up' if d['reason'] == 'replica_up' else 'lost'}: "
                       f"streams moved {d['moved'] or 'none'}", important=d["reason"] != "replica_up")
        for name in self.shard_producers:
            for msg in self.shards.messages():
                self._send_control(name, msg)

    def _handle_crash(self, worker: WorkerProc, rc: int, now: float) -> None:
        for node in worker.nodes:
            self._reshard(self.shards.lost(node, dict(self.replay.high)))
        if worker.fatal:
            # the error itself was shown when the node reported it: one line per failure, not two
            self.view.line(f"process '{worker.name}' stopped after that error", important=True)
            worker.done = True
            self.failed = True
            return
        decision = worker.loop.on_crash(rc, now)
        how = worker.loop.last_exit
        worker.restart_count += 1
        worker.restart_at = now + decision.delay_s
        worker.error_reported = False
        policy = worker.loop.policy
        if decision.failed:
            self.view.line(f"process '{worker.name}' failed: restarted {decision.restarts - 1} times in "
                           f"{policy.window_s:g} s, last {how}; retrying every {policy.failed_retry_s:g} s",
                           important=True)
            for node in worker.nodes:
                self.publisher.publish_event(Event("node_failed", "", worker.loop.failed_detail(node, worker.name, decision)))
            return
        if decision.still_failed:
            self.view.line(f"process '{worker.name}' is still failing ({how}): next retry in {decision.delay_s:g} s",
                           important=True)
            return
        self.view.line(f"process '{worker.name}' ended with {how}: restarting in {decision.delay_s:.1f} s", important=True)
        for node in worker.nodes:
            self.publisher.publish_event(Event(
                "node_restarted", "", {"node": node, "process": worker.name, "reason": how,
                                       "restarts": decision.restarts, "delay_s": decision.delay_s}))

    def _recovered(self, worker: WorkerProc, now: float) -> bool:
        """A retry of a failed process that stayed up: announce it (``node_recovered``)."""
        running = worker.status_at >= worker.loop.spawned_at and all(
            worker.status.get(n, {}).get("state") in ("running", "draining", "stopped") for n in worker.nodes)
        if not worker.loop.check_recovered(True, running, now):
            return False
        self._announce_recovered(worker, worker.loop.clear(now))
        return True

    def _announce_recovered(self, worker: WorkerProc, failed_for: float) -> None:
        self.view.line(f"process '{worker.name}' recovered", important=True)
        for node in worker.nodes:
            self.publisher.publish_event(Event("node_recovered", "", {
                "node": node, "process": worker.name, "failed_for_s": round(failed_for, 3)}))

    def _cleanup(self) -> None:
        for worker in self.workers.values():
            if worker.popen is not None and worker.popen.poll() is None:
                worker.popen.kill()
                worker.popen.wait()
        for name in ("publisher", "status_sink"):
            if getattr(self, name, None) is not None:
                getattr(self, name).close()
        if hasattr(self, "ctx"):
            self.ctx.destroy(linger=0)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        shutil.rmtree(self.ring_dir, ignore_errors=True)
        self.view.close()

