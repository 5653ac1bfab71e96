"""The supervisor of ``avstream serve``: the run supervisor's worker machinery, with graphs that change.

Per template one set of shared worker processes (``--serve``: they never end on end-of-stream); per
stream one source worker feeding the template's fan-in endpoints (see graphs.py). Heartbeats,
crash restarts with backoff, ``node_restarted`` events, the result publisher and its sinks are the
run supervisor's. Added here: streams added/removed/restarted while running (commands from the REST
thread, executed on this loop's thread, which owns every socket), failed streams retried slowly,
SIGHUP/config-file reloads applied as a difference, readiness for systemd.
"""

from __future__ import annotations

import collections
import os
import queue
import signal
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from avstream.engine.capture.base import redact_text, redact_uri
from avstream.engine.errors import AvstreamError, ConfigError
from avstream.engine.items import EndOfStream, Event
from avstream.engine.runtime.config import has_live_input
from avstream.engine.runtime.outputs import ResultPublisher
from avstream.engine.runtime.replay import ReplayGuard
from avstream.engine.runtime.resharding import ShardMonitor
from avstream.engine.runtime.restarts import ResumePoints, exit_description
from avstream.engine.runtime.snapshot import NodeEntries
from avstream.engine.runtime.status import StatusView
from avstream.engine.runtime.supervisor import PreviewViewer, Supervisor, WorkerProc
from avstream.engine.serve.config import ServeConfig, StreamEntry, load_serve_config
from avstream.engine.serve.graphs import Template, compile_template, write_spec
from avstream.engine.serve.notify import sd_notify
from avstream.engine.serve.viewer import ViewerHub
from avstream.engine.sinks import SINK_KINDS, Sink, SinkContext, SinkFanout, build_sinks
from avstream.engine.transport.private import make_private_dir
from avstream.engine.transport.wire import encode


class RedactingView(StatusView):
    def line(self, text: str, important: bool = False) -> None:
        super().line(redact_text(text), important)


@dataclass
class StreamRun:
    entry: StreamEntry
    template: Template
    state: str = "starting"
    failed: bool = False
    error: str = ""
    removing: bool = False
    readd: StreamEntry | None = None  # restart / changed entry: spawn again once the old worker is gone
    ran: bool = False


class EventLog(Sink):
    """Keeps the recent event messages for GET /api/events."""

    name = "event-log"

    def __init__(self, size: int):
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=size)

    def send(self, header: dict[str, Any], arrays: list[np.ndarray]) -> None:
        if header.get("kind") == "event":
            self.events.append(header)


class ServiceSupervisor(Supervisor):
    def __init__(self, config: ServeConfig, *, quiet: bool = False):
        # The graph is not known up front: what Supervisor.__init__ derives from a spec is built here.
        self.config = config
        self.quiet = quiet
        self.status_json = None
        self.id = f"{os.getpid():x}{int(time.time() * 1000) % 0xFFFFFF:x}"
        self.run_dir = Path(tempfile.mkdtemp(prefix="avs-"))
        shm_root = Path("/dev/shm")
        self.ring_dir = shm_root / f"avstream-{self.id}" if shm_root.is_dir() else self.run_dir / "rings"
        make_private_dir(self.ring_dir)
        self.workers: dict[str, WorkerProc] = {}
        self.by_node: dict[str, WorkerProc] = {}
        self.stopping = False
        self.stop_reason = ""
        self.failed = False
        self.view = RedactingView(tty=False, quiet=quiet)
        self.fallbacks: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.fallbacks_logged: set[tuple[str, str, str]] = set()
        self.results_endpoint = f"ipc://{self.run_dir}/results"
        self.control_endpoint = f"ipc://{self.run_dir}/control"
        self.identities: dict[str, bytes] = {}
        self.templates: dict[Path, Template] = {}
        self.streams: dict[str, StreamRun] = {}
        self.spec_files: dict[str, Path] = {}
        self.shared: set[str] = set()  # worker names of shared template processes
        self.shared_failed: dict[str, tuple[str, float]] = {}  # shared process -> why it failed (cleared once it runs again)
        self.commands: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue()
        self.event_log = EventLog(config.server.events_history)
        self.named_sinks: dict[str, Sink] = {}
        self.node_entries = NodeEntries()  # status entries with rates, as `avstream run` has them
        self.inputs: dict[str, dict[str, Any]] = {}  # each stream's input as its source reads it
        self.fan_in_push: dict[str, zmq.Socket[Any]] = {}
        self.reload_requested = False
        self.config_mtime = self._mtime()
        self.ready_sent = False
        self.api_started: Callable[[], bool] = lambda: True
        self.api_failed: Callable[[], bool] = lambda: False
        self.started = time.monotonic()
        self.viewer: PreviewViewer | None = None  # set before run() by a live viewer
        self.preview_wanted: frozenset[str] = frozenset()
        self.replay = ReplayGuard()
        self.resume = ResumePoints()
        self.shards = ShardMonitor(None)  # streams come and go here: `replicas:` keeps a fixed ring
        self.shard_producers: set[str] = set()

    # --- graphs ---
    def template_for(self, entry: StreamEntry) -> Template:
        template = self.templates.get(entry.template)
        if template is None:
            key = f"t{len(self.templates)}"
            template = compile_template(entry.template, key, self.run_dir, self.results_endpoint)
            self.templates[entry.template] = template
            for process in template.processes:
                self.workers[process] = WorkerProc(process, template.processes[process])
                self.spec_files[process] = template.spec_file(self.run_dir)
                self.shared.add(process)
                if hasattr(self, "control"):
                    self.spawn(self.workers[process])
        return template

    def source_streams(self, worker: WorkerProc) -> set[str]:
        return {worker.name} if worker.name in self.streams else set()  # a stream's source runs alone

    def worker_args(self, worker: WorkerProc) -> list[str]:
        args = ["--spec", str(self.spec_files[worker.name])]
        return [*args, "--serve"] if worker.name in self.shared else args

    def add_stream(self, entry: StreamEntry) -> StreamRun:
        """Attach a source for ``entry`` to its template's running graph (the template starts if new)."""
        if entry.id in self.streams:
            raise KeyError(entry.id)
        template = self.template_for(entry)
        spec = template.source_spec(entry, self.config.base_dir)
        self.spec_files[entry.id] = write_spec(spec, self.run_dir / f"stream-{entry.id}.json")
        keys = ("uri", "video", "audio", "realtime", "loop", "options", "rtsp_transport")
        self.inputs[entry.id] = {k: spec.nodes[entry.id].params.get(k) for k in keys}
        run = StreamRun(entry, template)
        self.streams[entry.id] = run
        self.workers[entry.id] = WorkerProc(entry.id, [entry.id])
        if hasattr(self, "control"):
            self.spawn(self.workers[entry.id])
        if hasattr(self, "publisher"):  # sinks that open the input themselves (clips) follow it
            for sink in self.publisher.sinks.sinks:
                add = getattr(sink, "add_stream", None)
                if callable(add):
                    add(entry.id, self.inputs[entry.id])
        self._viewer_streams()
        self.view.line(f"stream '{entry.id}' added: {redact_uri(str(entry.params.get('uri') or entry.params.get('video')))} "
                       f"through '{entry.pipeline}'")
        return run

    def remove_stream(self, sid: str, readd: StreamEntry | None = None) -> None:
        run = self.streams[sid]
        run.removing, run.readd = True, readd
        worker = self.workers[sid]
        worker.restart_at = None
        if worker.popen is not None and worker.popen.poll() is None:
            self._send_control(sid, {"type": "stop"})
            worker.popen.send_signal(signal.SIGTERM)

    def _finish_removals(self) -> None:
        for sid, run in list(self.streams.items()):
            worker = self.workers[sid]
            if not run.removing or (worker.popen is not None and worker.popen.poll() is None):
                continue
            if worker.popen is not None:
                worker.popen.wait()
            # The source stopped mid-stream: end it in the shared nodes so they forget its state.
            for endpoint in dict.fromkeys(e.endpoint for e in run.template.fan_in):  # each once: to all its edges
                self._push(endpoint, EndOfStream(sid))
            del self.workers[sid], self.streams[sid]
            self.replay.forget_stream(sid)  # a restarted or re-added stream starts a new media timeline
            self.resume.forget_stream(sid)
            self.identities.pop(sid, None)
            if run.readd is not None:
                self.add_stream(run.readd)
            else:
                self.publisher.sinks.remove_stream(sid)
                self._viewer_streams()
                self.view.line(f"stream '{sid}' removed")

    def _viewer_streams(self) -> None:
        if isinstance(self.viewer, ViewerHub):  # pages show a stream added over REST without a reload
            self.viewer.set_streams(list(self.streams))

    def _push(self, endpoint: str, item: Any) -> None:
        sock = self.fan_in_push.get(endpoint)
        if sock is None:
            sock = self.fan_in_push[endpoint] = self.ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 1000)
            sock.connect(endpoint)
        sock.send_multipart(encode(item, None), copy=False)

    # --- failures ---
    def _release_drained(self) -> None:
        # A stream's source that finished (a file without loop) may go: the shared nodes run on.
        for worker in self.workers.values():
            if worker.drained and not worker.released:
                worker.released = True
                self._send_control(worker.name, {"type": "stop"})

    def _handle_crash(self, worker: WorkerProc, rc: int, now: float) -> None:
        run = self.streams.get(worker.name)
        if run is not None and run.removing:
            return
        loop = worker.loop
        recent = [t for t in loop.restarts if now - t < loop.policy.window_s]
        retry = self.config.server.failed_retry_s
        if loop.failed and not worker.fatal:  # a retry of a failed process crashed too: stay failed
            loop.last_exit = exit_description(rc)
            worker.restart_count += 1
            worker.error_reported = False
            worker.restart_at = now + retry
            self.view.line(f"process '{worker.name}' is still failing ({loop.last_exit}): next retry in {retry:.0f} s",
                           important=True)
            return
        if not (worker.fatal or len(recent) >= loop.policy.max_restarts):
            super()._handle_crash(worker, rc, now)
            return
        why = f"crashed {len(recent) + 1} times in {loop.policy.window_s:.0f} s, last {exit_description(rc)}"
        error = redact_text(worker.fatal or why)
        if not worker.fatal:  # a crash loop: failed until a retry stays up
            loop.mark_failed(now)
        if run is None:  # a shared process: its streams get no results until it is back
            self.shared_failed[worker.name] = (error, now)
            self.view.line(f"process '{worker.name}' failed: {error}; trying again in {retry:.0f} s", important=True)
            for node in worker.nodes:
                self.publisher.publish_event(Event("node_failed", "", {
                    "node": node, "process": worker.name, "error": error, "restarts": len(recent),
                    "window_s": loop.policy.window_s, "last_exit": exit_description(rc), "retry_in_s": retry,
                    "retry_s": retry}))
        else:
            run.failed, run.state, run.error = True, "failed", error
            self.view.line(f"stream '{worker.name}' failed: {run.error}; trying again in {retry:.0f} s", important=True)
            self.publisher.publish_event(Event("stream_failed", worker.name, {"error": run.error, "retry_s": retry}))
        worker.fatal, loop.restarts, worker.error_reported = None, [], False
        worker.restart_at = now + retry

    def _live_source(self, node_id: str) -> bool:
        return has_live_input(self.inputs.get(node_id) or {})

    def _recovered(self, worker: WorkerProc, now: float) -> bool:
        # The daemon clears a failure in _update_states, from the stream and process states.
        return False

    def _clear_failure(self, worker: WorkerProc, now: float) -> None:
        if worker.loop.failed:
            self._announce_recovered(worker, worker.loop.clear(now))

    # --- state ---
    def _update_states(self, now: float) -> None:
        for name in list(self.shared_failed):
            worker = self.workers[name]
            fresh = worker.status_at > self.shared_failed[name][1]  # a report of the new process, not the old one
            if fresh and all(worker.status.get(n, {}).get("state") == "running" for n in worker.nodes):
                del self.shared_failed[name]
                self._clear_failure(worker, now)
        for sid, run in self.streams.items():
            worker = self.workers[sid]
            status = worker.status.get(sid, {})
            out = int(status.get("out", 0))
            run.ran = run.ran or out > 0
            broken = [self.shared_failed[p][0] for p in run.template.processes if p in self.shared_failed]
            if run.removing:
                run.state = "stopped"
            elif broken:
                run.state, run.error = "failed", f"its pipeline failed: {broken[0]}"
            elif worker.done:
                run.state = "stopped"
            elif run.failed and not (out > 0 and status.get("state") == "running"):
                run.state = "failed"
            elif self.publisher.stream_down.get(sid):
                run.state, run.failed = "down", False
            elif status.get("state") == "running" and out > 0:
                run.state, run.failed, run.ran, run.error = "running", False, True, ""
                self._clear_failure(worker, now)
            elif status.get("state") in ("stopped", "draining") and out > 0:
                run.state, run.ran = "stopped", True
            else:
                run.state = "starting"

    def stream_view(self, sid: str, detail: bool = False) -> dict[str, Any]:
        run = self.streams[sid]
        worker = self.workers[sid]
        status = worker.status.get(sid, {})
        extra = status.get("extra") or {}
        params = run.entry.params
        view: dict[str, Any] = {
            "id": sid, "pipeline": run.entry.pipeline, "state": run.state,
            "uri": redact_uri(params["uri"]) if params.get("uri") else None,
            "video": redact_uri(params["video"]) if params.get("video") else None,
            "audio": redact_uri(params["audio"]) if params.get("audio") else None,
            "fps_in": round(self.node_entries.fps.get(sid, (0.0, 0.0))[1], 2), "drops": int(status.get("drops", 0)) + int(extra.get("drops", 0) or 0),
            "av_skew_ms": extra.get("av_skew_ms"), "restarts": worker.restart_count,
            "error": run.error or None, "replayed": self.replay.replayed(sid),
            "latest": {kind: {k: v for k, v in header.items() if k != "payloads"}
                       for kind, header in self.publisher.latest.get(sid, {}).items()},
        }
        if detail:
            nodes = {sid: {**status, "process": sid}}
            for process, node_ids in run.template.processes.items():
                shared = self.workers[process].status
                for nid in node_ids:
                    if nid in shared:
                        nodes[nid] = {**shared[nid], "process": process, "shared": True}
            view["nodes"] = nodes
        return view

    def status(self, final: bool = False) -> dict[str, Any]:
        """The ``status`` message of the service (the run's shape, docs/messages.md), once a second."""
        nodes = []
        for worker in self.workers.values():
            # the streams it serves: a stream's own source, or every stream of a shared process's template
            served = [worker.name] if worker.name in self.streams else sorted(
                sid for sid, run in self.streams.items() if worker.name in run.template.processes)
            nodes += [self.node_entries.entry(worker, node_id, "", served) for node_id in worker.nodes]
        return {"run": "serve", "run_id": self.id, "uptime_s": round(time.monotonic() - self.started, 3),
                "final": final, "nodes": nodes, "streams": [self.stream_view(sid) for sid in self.streams]}

    def ready(self) -> bool:
        configured = [run for sid, run in self.streams.items() if sid in self.config.streams]
        return all(r.state in ("running", "down") or (r.state == "stopped" and r.ran) for r in configured)

    # --- commands from the REST thread ---
    def call(self, fn: Callable[[], Any], timeout: float = 15.0) -> Any:
        future: Future[Any] = Future()
        self.commands.put((fn, future))
        return future.result(timeout)

    def _run_commands(self) -> None:
        while not self.commands.empty():
            fn, future = self.commands.get()
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                future.set_exception(exc)

    # --- reloads ---
    def _mtime(self) -> float:
        try:
            return self.config.file.stat().st_mtime
        except OSError:
            return 0.0

    def reload(self) -> None:
        """Re-read the config file and apply only what changed: streams, and output sections."""
        try:
            new = load_serve_config(self.config.file)
        except ConfigError as exc:
            for problem in exc.problems:
                self.view.line(f"reload: {problem}", important=True)
            self.view.line("reload: config not applied", important=True)
            return
        old = self.config.streams
        added = [s for s in new.streams if s not in old and s not in self.streams]
        removed = [s for s in old if s not in new.streams and s in self.streams]
        changed = [s for s in new.streams if s in old and new.streams[s].raw != old[s].raw and s in self.streams]
        self.config.streams = new.streams
        for sid in removed:
            self.remove_stream(sid)
        for sid in changed:
            self.remove_stream(sid, readd=new.streams[sid])
        for sid in added:
            try:
                self.add_stream(new.streams[sid])
            except ConfigError as exc:
                self.view.line(f"reload: stream '{sid}': {exc}", important=True)
        outputs = self.apply_sink_changes(new.sinks) if new.sinks != self.config.sinks else []
        self.view.line(f"reload: {len(added)} added, {len(removed)} removed, {len(changed)} changed"
                       + (f"; outputs rebuilt: {', '.join(outputs)}" if outputs else ""))

    def apply_sink_changes(self, sections: dict[str, Any]) -> list[str]:
        """Rebuild the output sections that changed (closing the old sink first); the others, and the
        metrics they have counted, are kept."""
        changed = sorted(n for n in {*sections, *self.config.sinks} if sections.get(n) != self.config.sinks.get(n))
        context = SinkContext("serve", self.config.base_dir, self.config.path(self.config.server.data_dir),
                              streams=dict(self.inputs))
        for name in changed:
            old = self.named_sinks.pop(name, None)
            if old is not None:
                old.close(2.0)
            if name in sections:
                try:
                    self.named_sinks[name] = build_sinks({name: sections[name]}, context).sinks[0]
                except (AvstreamError, OSError) as exc:
                    self.view.line(f"reload: output '{name}' not started: {exc}", important=True)
        self.config.sinks = sections
        sinks = list(self.named_sinks.values())
        for sink in sinks:
            sink.attach(sinks)
        self.publisher.sinks.sinks = [*self.own_sinks(), *sinks]
        return changed

    def own_sinks(self) -> list[Sink]:
        """The service's sinks besides the configured outputs: the event history, the live viewer."""
        return [self.event_log, *([self.viewer] if isinstance(self.viewer, Sink) else [])]

    # --- main loop ---
    def run(self) -> int:
        old_hup = signal.signal(signal.SIGHUP, self._on_hup)
        try:
            return super().run()
        finally:
            signal.signal(signal.SIGHUP, old_hup)

    def _on_hup(self, _signum: int, _frame: Any) -> None:
        self.reload_requested = True

    def build_sinks(self) -> SinkFanout:
        context = SinkContext("serve", self.config.base_dir, self.config.path(self.config.server.data_dir),
                              streams=dict(self.inputs))
        sections = dict(self.config.sinks)
        if "metrics" in SINK_KINDS:
            # served at the REST API's /metrics, not on a port of its own
            sections.setdefault("metrics", SINK_KINDS["metrics"].settings_model().model_validate({"listen": None})
                                .model_dump(mode="json"))
        built = build_sinks(sections, context)  # built together: the metrics sink reads the others' counters
        self.named_sinks.update(zip(sections, built.sinks, strict=True))
        return SinkFanout([*self.own_sinks(), *self.named_sinks.values()])

    def _run(self) -> int:
        try:
            for entry in self.config.streams.values():
                self.add_stream(entry)
        except ConfigError as exc:
            for problem in exc.problems:
                self.view.line(str(problem), important=True)
            return 2
        for worker in self.workers.values():  # forks, before any socket exists here
            self.spawn(worker)
        self._open_control_sockets()
        try:
            sinks = self.build_sinks()
            self.publisher = ResultPublisher(self.ctx, self.config.server.publish, sinks=sinks,
                                             security=self.config.publish_security())
        except (AvstreamError, OSError, zmq.ZMQError, ValueError) as exc:
            self.view.line(f"error: cannot start the outputs: {exc}", important=True)
            return 1
        self.view.line(f"serving {len(self.streams)} stream(s) through {len(self.templates)} pipeline(s); "
                       f"results on {self.config.server.publish}")
        poller = self._control_poller()
        next_tick = time.monotonic() + 1.0
        while True:
            now = self._poll_once(poller)
            if not self.stopping:
                self._run_commands()
                self._finish_removals()
                if self.reload_requested:
                    self.reload_requested = False
                    self.reload()
            if now >= next_tick:
                next_tick = now + 1.0
                self._update_states(now)
                self.publisher.publish_status(self.status())
                self.publisher.tick()
                for line in self.replay.report():
                    self.view.line(line)
                self._log_fallbacks(final=False)
                if self.config.server.watch and self._mtime() != self.config_mtime:
                    self.config_mtime = self._mtime()
                    self.reload()
                if self.api_failed() and not self.stopping:
                    self.view.line(f"error: the REST API cannot listen on {self.config.server.listen}", important=True)
                    self.failed = True
                    self.request_stop("REST API down")
                if not self.ready_sent and self.api_started():
                    self.ready_sent = True
                    sd_notify("READY=1\nSTATUS=serving")
                elif self.ready_sent:
                    sd_notify("WATCHDOG=1")
            if self.stopping and (all(w.done or w.popen is None for w in self.workers.values())
                                  or now > self.stop_deadline):
                self._kill_remaining()
                break
        sd_notify("STOPPING=1")
        self.view.line(f"stopped ({self.stop_reason or 'end'}): {self.publisher.published} messages published")
        return 1 if self.failed else 0

    def discard(self) -> None:
        """Remove what __init__ made, for a service that never ran."""
        self._cleanup()

    def _cleanup(self) -> None:
        for sock in self.fan_in_push.values():
            sock.close(linger=0)
        super()._cleanup()
