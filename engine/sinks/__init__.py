"""Where published messages go besides the PUB socket: MQTT, webhooks, metrics, event clips.

A sink receives every message the publisher sends (the SPEC §4 header and its payload arrays), in
the supervisor process, on the publisher's thread. ``send`` must never block the graph: a sink hands
the message to a bounded queue and does its I/O on a thread of its own, counting what it drops.

Sinks are configured under ``outputs.<name>`` of a pipeline (and at the top of a ``serve`` config):
each kind registers its pydantic settings model and a factory in :data:`SINK_KINDS`, so the pipeline
compiler validates the section with located errors and the supervisor builds the sink.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

log = logging.getLogger("avstream.sinks")


class Sink:
    """Base class of the outputs beyond the PUB socket and the JSONL file."""

    name = "sink"

    def send(self, header: dict[str, Any], arrays: list[np.ndarray]) -> None:
        """One published message (results, events, and ``status`` once a second). Never blocks."""

    def remove_stream(self, stream: str) -> None:
        """The stream is gone for good (removed from a running service): forget what is kept for it."""

    def close(self, timeout_s: float = 2.0) -> None:
        """Deliver what is queued, within ``timeout_s``, then stop."""

    def attach(self, sinks: list[Sink]) -> None:
        """Called once every sink of the run is built, with all of them (the metrics sink reads the others)."""

    def metric_families(self) -> list[Any]:
        """Prometheus metric families of this sink's own counters (``prometheus_client.core``), read at
        each scrape; see ``engine/sinks/metrics.py`` for helpers that build them."""
        return []


@dataclass(frozen=True)
class SinkKind:
    """A kind of sink: the module path of its settings model and its factory, imported on first use
    (so a pipeline without MQTT never imports paho)."""

    settings: str  # "module:Class", a pydantic model
    factory: str  # "module:function", (settings, context) -> Sink
    summary: str

    def settings_model(self) -> type[BaseModel]:
        model: type[BaseModel] = _load(self.settings)
        return model

    def build(self, settings: BaseModel, context: SinkContext) -> Sink:
        make: Callable[[BaseModel, SinkContext], Sink] = _load(self.factory)
        return make(settings, context)


@dataclass(frozen=True)
class SinkContext:
    """What a sink may need from the run: its name, where relative paths and data go."""

    run_name: str
    base_dir: Path  # the pipeline (or serve config) file's folder
    data_dir: Path  # where a sink keeps files (clips); the base dir for `avstream run`
    # each stream's input as its source node has it (uri or video + audio, realtime, loop, options):
    # the clip recorder opens the same input a second time
    streams: dict[str, dict[str, Any]] = field(default_factory=dict)


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


# The kinds the engine ships; the key is the section name under `outputs:`.
SINK_KINDS: dict[str, SinkKind] = {}


def register_sink(name: str, kind: SinkKind) -> None:
    SINK_KINDS[name] = kind


class SinkFanout:
    """All sinks of a run: one failing sink is logged once and never stops the others."""

    def __init__(self, sinks: list[Sink]):
        self.sinks = sinks
        self._failed: set[str] = set()

    def send(self, header: dict[str, Any], arrays: list[np.ndarray]) -> None:
        for sink in self.sinks:
            try:
                sink.send(header, arrays)
            except Exception as exc:  # noqa: BLE001 - a bug in one sink must not take the graph down
                if sink.name not in self._failed:
                    self._failed.add(sink.name)
                    log.error("output %s failed: %s (further failures of it are not logged)", sink.name, exc)

    def remove_stream(self, stream: str) -> None:
        for sink in self.sinks:
            sink.remove_stream(stream)

    def close(self, timeout_s: float = 2.0) -> None:
        for sink in self.sinks:
            try:
                sink.close(timeout_s)
            except Exception as exc:  # noqa: BLE001 - close the others anyway
                log.error("output %s did not close cleanly: %s", sink.name, exc)


def build_sinks(sections: dict[str, dict[str, Any]], context: SinkContext) -> SinkFanout:
    """The sinks of validated ``outputs.<kind>`` sections (see the pipeline compiler)."""
    sinks = []
    for name, data in sections.items():
        kind = SINK_KINDS[name]
        sinks.append(kind.build(kind.settings_model().model_validate(data), context))
    for sink in sinks:
        sink.attach(sinks)
    return SinkFanout(sinks)


# the engine's own kinds: section name -> (module, settings model, factory, summary)
for _name, _module, _settings, _factory, _summary in (
    ("webhooks", "webhooks", "WebhooksSettings", "make_webhooks", "signed HTTP POSTs of selected events, retried with backoff"),
    ("metrics", "metrics", "MetricsSettings", "make_metrics", "Prometheus metrics of the run, served over HTTP"),
    ("mqtt", "mqtt", "MqttSettings", "make_mqtt_sink", "MQTT topics and Home Assistant discovery (SPEC §8)"),
    ("record", "clips", "RecordSettings", "make_clip_sink",
     "event clips: encoded packets remuxed into MP4 around configured events"),
    ("annotate", "annotate", "AnnotateSettings", "make_annotate_sink",
     "annotated video: results burned into MP4 files of each stream"),
):
    register_sink(_name, SinkKind(f"avstream.engine.sinks.{_module}:{_settings}",
                                  f"avstream.engine.sinks.{_module}:{_factory}", _summary))
