"""Prometheus metrics of a run (SPEC §7), kept from the messages the publisher sends.

Results and events are counted as they pass (``avstream_results_total``, ``avstream_events_total``,
the ``avstream_result_latency_seconds`` histogram). Everything per node and per stream comes from the
``status`` message, once a second: those numbers are totals the workers keep, so they are exposed by
a custom collector that sets each counter from its total rather than incrementing it. A worker
restart resets its totals; the collector then adds the last totals seen before the reset, so the
counters the registry exposes never go down within a run.

Other sinks export their own counters (webhook failures, MQTT connection, clips) through their
``metric_families()``, read at each scrape. The registry is this sink's own, never the global one,
so two runs in one process never mix, and ``avstream serve`` mounts the same registry at ``/metrics``
of its REST app (:func:`render`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from avstream.engine.sinks import Sink, SinkContext

log = logging.getLogger("avstream.sinks.metrics")

# seconds: results are due tens of ms to a few seconds after their window ends
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RESULT_KINDS = ("highlight", "violence", "localization", "caption")


class MetricsSettings(BaseModel):
    """``outputs.metrics``: where the Prometheus text format is served."""

    model_config = ConfigDict(extra="forbid")
    listen: str | None = Field("127.0.0.1:9108", description="HOST:PORT of the /metrics HTTP server "
                               "(loopback by default); null: no server (the registry is read in-process)")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise PydanticCustomError("host_port", "not HOST:PORT: {value} (e.g. 127.0.0.1:9108)",
                                      {"value": repr(value)})
        return value


def counter_family(name: str, doc: str, labels: Sequence[str],
                   samples: Iterable[tuple[Sequence[str], float]]) -> CounterMetricFamily:
    """A counter from totals kept elsewhere: ``samples`` are (label values, total). ``name`` ends in _total."""
    family = CounterMetricFamily(name.removesuffix("_total"), doc, labels=list(labels))
    for values, total in samples:
        family.add_metric(list(values), float(total))
    return family


def gauge_family(name: str, doc: str, labels: Sequence[str],
                 samples: Iterable[tuple[Sequence[str], float]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    for values, value in samples:
        family.add_metric(list(values), float(value))
    return family


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The Prometheus text exposition of ``registry`` and its content type (for a REST ``/metrics``)."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Monotonic:
    """Totals that restart from zero when a worker restarts, made into counters that never go down."""

    def __init__(self) -> None:
        self.base: dict[Any, float] = {}
        self.last: dict[Any, float] = {}

    def update(self, key: Any, total: float) -> None:
        if total < self.last.get(key, 0.0):
            self.base[key] = self.base.get(key, 0.0) + self.last[key]
        self.last[key] = total

    def value(self, key: Any) -> float:
        return self.base.get(key, 0.0) + self.last.get(key, 0.0)

    def items(self) -> Iterator[tuple[Any, float]]:
        for key in sorted(self.last):
            yield key, self.value(key)

    def forget(self, keep: Any) -> None:
        """Drop the keys for which ``keep(key)`` is false."""
        for table in (self.base, self.last):
            for key in [k for k in table if not keep(k)]:
                del table[key]


class _Histograms:
    """Cumulative histogram snapshots (``engine/timing.py``) per key, carried across worker restarts."""

    def __init__(self) -> None:
        self.base: dict[Any, dict[str, Any]] = {}
        self.last: dict[Any, dict[str, Any]] = {}

    def update(self, key: Any, snap: dict[str, Any]) -> None:
        prev = self.last.get(key)
        if prev is not None and (snap["count"] < prev["count"] or snap["le"] != prev["le"]):
            self.base[key] = prev if key not in self.base else _add(self.base[key], prev)
        self.last[key] = snap

    def items(self) -> Iterator[tuple[Any, dict[str, Any]]]:
        for key in sorted(self.last):
            base = self.base.get(key)
            yield key, self.last[key] if base is None else _add(base, self.last[key])

    def forget(self, keep: Any) -> None:
        for table in (self.base, self.last):
            for key in [k for k in table if not keep(k)]:
                del table[key]


def _add(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    if a["le"] != b["le"]:  # other buckets after an upgrade: keep the newer only
        return b
    return {"le": b["le"], "counts": [x + y for x, y in zip(a["counts"], b["counts"], strict=True)],
            "count": a["count"] + b["count"], "sum": a["sum"] + b["sum"]}


def _stream_of(node: dict[str, Any]) -> str:
    """The ``stream`` label of a node's counters: its stream, or "" for a node shared by several."""
    streams = node.get("streams") or []
    return str(streams[0]) if len(streams) == 1 else ""


def _summed(extra: dict[str, Any], key: str) -> float:
    """``key`` of a source's extras, added over its readers (a camera + microphone pair nests one
    dict per input URI)."""
    total = 0.0
    for k, v in extra.items():
        if k == key and isinstance(v, (int, float)) and not isinstance(v, bool):
            total += float(v)
        elif isinstance(v, dict):
            total += _summed(v, key)
    return total


class _StatusCollector(Collector):
    """The per-node and per-stream numbers of the latest ``status`` message."""

    def __init__(self, lock: threading.Lock):
        self.lock = lock
        self.frames_in = _Monotonic()  # (stream, node)
        self.items_out = _Monotonic()
        self.drops = _Monotonic()
        self.reconnects = _Monotonic()  # (stream,)
        self.stalls = _Monotonic()
        self.replayed = _Monotonic()  # (stream, kind)
        self.restarts: dict[str, float] = {}  # node -> the supervisor's count (never reset in a run)
        self.failures: dict[str, float] = {}  # node -> times its process was declared failed (crash loop)
        self.failed: dict[str, float] = {}  # node -> 1 while failed, else 0
        self.queue: dict[str, float] = {}
        self.skew: dict[str, float] = {}  # stream -> seconds
        self.up: dict[str, float] = {}
        self.inference = _Histograms()  # (node, model)
        self.stream_of: dict[str, str] = {}  # node -> its stream label

    def update(self, status: dict[str, Any]) -> None:
        per_stream: dict[str, dict[str, float]] = {}
        for node in status.get("nodes", []):
            nid, stream = str(node["id"]), _stream_of(node)
            self.stream_of[nid] = stream
            self.frames_in.update((stream, nid), float(node.get("items_in", 0)))
            self.items_out.update((stream, nid), float(node.get("items_out", 0)))
            self.drops.update((stream, nid), float(node.get("drops", 0)))
            self.queue[nid] = float(node.get("queue", 0))
            self.restarts[nid] = float(node.get("restarts", 0))
            self.failures[nid] = float(node.get("failures", 0))
            self.failed[nid] = 1.0 if node.get("state") == "failed" else 0.0
            extra = node.get("extra") or {}
            if stream:
                totals = per_stream.setdefault(stream, {"reconnects": 0.0, "stalls": 0.0})
                totals["reconnects"] += _summed(extra, "reconnects")
                totals["stalls"] += _summed(extra, "stalls")
                if isinstance(extra.get("av_skew_ms"), (int, float)):
                    self.skew[stream] = float(extra["av_skew_ms"]) / 1000.0
            timing = (node.get("timings") or {}).get("inference_seconds")
            if timing:
                self.inference.update((nid, str(timing.get("labels", {}).get("model", ""))), timing)
        for stream in status.get("streams", []):
            sid = str(stream["id"])
            self.up[sid] = 1.0 if stream.get("state") == "running" else 0.0
            totals = per_stream.get(sid, {"reconnects": 0.0, "stalls": 0.0})
            self.reconnects.update((sid,), totals["reconnects"])
            for kind, n in (stream.get("replayed") or {}).items():
                self.replayed.update((sid, str(kind)), float(n))
            self.stalls.update((sid,), totals["stalls"])

    def forget_stream(self, stream: str) -> None:
        for table in (self.frames_in, self.items_out, self.drops, self.reconnects, self.stalls, self.replayed):
            table.forget(lambda key: key[0] != stream)
        self.skew.pop(stream, None)
        self.up.pop(stream, None)
        gone = {nid for nid, s in self.stream_of.items() if s == stream}  # its source and other own nodes
        for nid in gone:
            self.queue.pop(nid, None)
            self.restarts.pop(nid, None)
            self.failures.pop(nid, None)
            self.failed.pop(nid, None)
            del self.stream_of[nid]
        self.inference.forget(lambda key: key[0] not in gone)

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            sn = ("stream", "node")
            yield counter_family("avstream_frames_in_total", "Items a node took from its inputs", sn,
                                 self.frames_in.items())
            yield counter_family("avstream_items_out_total", "Items a node emitted", sn, self.items_out.items())
            yield counter_family("avstream_drops_total", "Items a node's inputs dropped (backpressure)", sn,
                                 self.drops.items())
            yield gauge_family("avstream_queue_depth", "Items waiting in a node's inputs", ("node",),
                               (((n,), v) for n, v in sorted(self.queue.items())))
            yield counter_family("avstream_node_restarts_total", "Restarts of a node's process", ("node",),
                                 (((n,), v) for n, v in sorted(self.restarts.items())))
            yield counter_family("avstream_node_failures_total", "Times a node was declared failed (crash loop)",
                                 ("node",), (((n,), v) for n, v in sorted(self.failures.items())))
            yield gauge_family("avstream_node_failed", "1 while a node is failed (retried slowly), else 0", ("node",),
                               (((n,), v) for n, v in sorted(self.failed.items())))
            yield gauge_family("avstream_av_skew_seconds", "Audio minus video clock offset of a live stream",
                               ("stream",), (((s,), v) for s, v in sorted(self.skew.items())))
            yield gauge_family("avstream_stream_up", "1 while the stream is running, else 0", ("stream",),
                               (((s,), v) for s, v in sorted(self.up.items())))
            yield counter_family("avstream_reconnects_total", "Times a live stream came back after going down",
                                 ("stream",), self.reconnects.items())
            yield counter_family("avstream_replayed_total", "Results not published again: their media time was "
                                 "already published (a restarted node's replay)", ("stream", "kind"), self.replayed.items())
            yield counter_family("avstream_stalls_total", "Times a live stream stopped delivering media",
                                 ("stream",), self.stalls.items())
            family = HistogramMetricFamily("avstream_inference_seconds", "Time of one (batched) model call",
                                           labels=["node", "model"])
            for (nid, model), snap in self.inference.items():
                buckets = [(_le(le), float(n)) for le, n in zip(snap["le"], snap["counts"], strict=True)]
                buckets.append(("+Inf", float(snap["count"])))
                family.add_metric([nid, model], buckets, float(snap["sum"]))
            yield family


def _le(bound: float) -> str:
    return repr(float(bound))


class _SinksCollector(Collector):
    """The other sinks' own counters, read at scrape time."""

    def __init__(self) -> None:
        self.sinks: list[Sink] = []

    def collect(self) -> Iterator[Metric]:
        for sink in self.sinks:
            try:
                yield from sink.metric_families()
            except Exception as exc:  # noqa: BLE001 - one sink's bug must not break the scrape
                log.warning("metrics of output %s unavailable: %s", sink.name, exc)


class MetricsSink(Sink):
    """``outputs.metrics``: the run's Prometheus metrics, optionally served over HTTP."""

    name = "metrics"

    def __init__(self, listen: str | None = None):
        self.registry = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self.status = _StatusCollector(self._lock)
        self.peers = _SinksCollector()
        self.registry.register(self.status)
        self.registry.register(self.peers)
        self.results = Counter("avstream_results", "Result messages published", ["stream", "kind"],
                               registry=self.registry)
        self.events = Counter("avstream_events", "Event messages published", ["stream", "name"],
                              registry=self.registry)
        self.latency = Histogram("avstream_result_latency_seconds", "Emit wall time minus the capture time of "
                                 "the window's last sample", ["stream", "kind"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self._seen: set[tuple[str, str, str]] = set()  # (metric, stream, kind or name), for remove_stream
        self.server: Any = None
        self.listen = listen
        if listen:
            from prometheus_client import start_http_server

            host, _, port = listen.rpartition(":")
            self.server, self._thread = start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)
            log.info("metrics at http://%s/metrics", listen)

    def attach(self, sinks: list[Sink]) -> None:
        self.peers.sinks = [s for s in sinks if s is not self]

    def add_collector(self, collector: Collector) -> None:
        """More metrics in the same registry (the daemon's own)."""
        self.registry.register(collector)

    def render(self) -> tuple[bytes, str]:
        return render(self.registry)

    def send(self, header: dict[str, Any], arrays: list[np.ndarray]) -> None:
        kind, stream = str(header.get("kind", "")), str(header.get("stream", ""))
        if kind == "status":
            with self._lock:
                self.status.update(header)
        elif kind == "event":
            name = str(header.get("name", ""))
            self.events.labels(stream, name).inc()
            self._seen.add(("events", stream, name))
            if name in ("stream_up", "stream_down"):
                with self._lock:  # at once, not at the next status
                    self.status.up[stream] = 1.0 if name == "stream_up" else 0.0
        elif "latency_ms" in header:
            self.results.labels(stream, kind).inc()
            self.latency.labels(stream, kind).observe(max(0.0, float(header["latency_ms"])) / 1000.0)
            self._seen.add(("results", stream, kind))

    def remove_stream(self, stream: str) -> None:
        for metric, s, label in [k for k in self._seen if k[1] == stream]:
            if metric == "events":
                self.events.remove(s, label)
            else:
                self.results.remove(s, label)
                self.latency.remove(s, label)
            self._seen.discard((metric, s, label))
        with self._lock:
            self.status.forget_stream(stream)

    def close(self, timeout_s: float = 2.0) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def make_metrics(settings: MetricsSettings, context: SinkContext) -> MetricsSink:
    return MetricsSink(settings.listen)
