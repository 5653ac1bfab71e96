"""The MQTT output of SPEC §8: results, alert state, captions, events and Home Assistant discovery.

``send`` runs on the publisher's thread and only translates a header into MQTT messages under a lock:
retained state (availability, alert, caption, discovery configs) goes to a per-topic map that keeps
the latest value, everything else to a bounded FIFO that drops its oldest message when full. A worker
thread of our own hands them to paho while connected; paho's network thread connects, reconnects with
backoff and resends unacknowledged QoS 1/2 messages. After every (re)connect, and when Home
Assistant announces itself (``<discovery_prefix>/status`` = ``online``), the whole retained state is
sent again, so a broker restarted without persistence gets it back.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import re
import socket
import threading
import time
from collections import OrderedDict, deque
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

try:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
    from paho.mqtt.reasoncodes import ReasonCode
except ImportError as exc:  # the pipeline compiler turns this into a located one-line error
    hint = "paho-mqtt (pip install 'avstream[serve]')"
    raise ImportError(hint, name=hint) from exc

from avstream.engine.sinks import Sink, SinkContext

log = logging.getLogger("avstream.sinks.mqtt")

ONLINE, OFFLINE = b"online", b"offline"
RESULT_KINDS = ("highlight", "violence", "localization", "caption")


class MqttSettings(BaseModel):
    """``outputs.mqtt`` of a pipeline (and ``mqtt`` of a serve config)."""

    model_config = ConfigDict(extra="forbid")
    host: str = Field("127.0.0.1", min_length=1, description="broker host")
    port: int = Field(1883, ge=1, le=65535)
    prefix: str = Field("avstream", pattern=r"^[^#+/][^#+]*$", description="first level of every topic")
    qos: int = Field(1, ge=0, le=2)
    discovery: bool = Field(True, description="publish Home Assistant discovery configs")
    discovery_prefix: str = Field("homeassistant", pattern=r"^[^#+/][^#+]*$")
    username: str | None = None
    password: str | None = Field(None, repr=False, description="never logged; use ${ENV_VAR} in a file")
    client_id: str | None = Field(None, description="default: <prefix>-<host name>-<pid>")
    keepalive: int = Field(30, ge=5, le=3600, description="seconds")
    queue_size: int = Field(1000, ge=1, description="messages kept while the broker is away; oldest dropped")
    reconnect_max_s: int = Field(30, ge=1, le=3600, description="cap of the reconnect backoff")
    tls: bool = Field(False, description="TLS to the broker (port 8883 usually); implied by ca_file")
    ca_file: str | None = Field(None, description="CA certificate (PEM) of the broker; default: the system's")


def topic_level(name: str) -> str:
    """A stream id as one topic level: MQTT wildcards and separators would change the topic's meaning."""
    return re.sub(r"[/+#\s]", "_", name) or "_"


def node_id(stream: str) -> str:
    """Home Assistant accepts only [a-zA-Z0-9_-] in the node id of a discovery topic."""
    return "avstream_" + re.sub(r"[^a-zA-Z0-9_-]", "_", stream)


# The entities of a stream: object id -> (component, kind it follows, name, state topic tail, extra config)
ENTITIES: dict[str, tuple[str, str, str, str, dict[str, Any]]] = {
    "violence_alert": ("binary_sensor", "violence", "Violence alert", "violence/alert",
                       {"device_class": "safety", "payload_on": "ON", "payload_off": "OFF"}),
    "highlight_score": ("sensor", "highlight", "Highlight score", "highlight/score",
                        {"state_class": "measurement", "suggested_display_precision": 2}),
    "localization_score": ("sensor", "localization", "Localization score", "localization/score",
                           {"state_class": "measurement", "suggested_display_precision": 2}),
    # HA rejects a sensor state longer than 255 characters
    "caption": ("sensor", "caption", "Caption", "caption/text", {"value_template": "{{ value[:255] }}"}),
}


class MqttSink(Sink):
    """Counters for metrics and tests: ``connected`` (bool, the broker has accepted us), ``dropped``
    (messages lost to a full queue), ``sent`` (messages handed to the network layer)."""

    name = "mqtt"

    def __init__(self, settings: MqttSettings, context: SinkContext):
        self.settings = settings
        self.run_name = context.run_name
        self.connected = False
        self.dropped = 0
        self.sent = 0
        self._cond = threading.Condition()
        self._queue: deque[tuple[str, bytes]] = deque()  # not retained, in order
        self._pending: OrderedDict[str, bytes] = OrderedDict()  # retained, latest value per topic
        self._state: dict[str, bytes] = {}  # every retained topic's current value, resent on reconnect
        self._seen: dict[str, set[str]] = {}  # stream -> kinds seen ("" for its first message)
        self._models: dict[str, str] = {}  # stream -> pipeline name (device model)
        self._stopping = False
        self._close_by = 0.0  # monotonic deadline of close()
        self._warned_unreachable = False
        self._last_refusal = ""
        self._was_connected = False
        p = settings.prefix
        self.available_topic = f"{p}/available"
        self.birth_topic = f"{settings.discovery_prefix}/status"
        client_id = settings.client_id or f"{topic_level(p)}-{socket.gethostname()}-{os.getpid()}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        if settings.username is not None:
            self.client.username_pw_set(settings.username, settings.password)
        if settings.tls or settings.ca_file:
            ca = settings.ca_file and str(context.base_dir / settings.ca_file)  # relative to the YAML's folder
            self.client.tls_set(ca_certs=ca)
        self.client.will_set(self.available_topic, OFFLINE, qos=settings.qos, retain=True)
        self.client.reconnect_delay_set(1, settings.reconnect_max_s)
        self.client.max_queued_messages_set(settings.queue_size)  # paho's own queue (in flight, resent)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self._set_retained(self.available_topic, ONLINE)
        self.client.connect_async(settings.host, settings.port, settings.keepalive)
        self.client.loop_start()  # connects in the background, retrying: an absent broker never stops the run
        self._worker = threading.Thread(target=self._run, name="mqtt-sink", daemon=True)
        self._worker.start()

    # --- the publisher's side: translate, never block -------------------------------------------

    def describe_stream(self, stream: str, pipeline: str) -> None:
        """The pipeline a stream runs through (the HA device model); the run's name by default."""
        with self._cond:
            self._models[stream] = pipeline

    def send(self, header: dict[str, Any], arrays: list[np.ndarray]) -> None:
        kind = header.get("kind")
        if kind == "status":
            return  # once a second for the whole graph: not part of the MQTT contract
        stream = str(header.get("stream", ""))
        base = f"{self.settings.prefix}/{topic_level(stream)}" if stream else self.settings.prefix
        body = json.dumps(header).encode()
        with self._cond:
            if stream and stream not in self._seen:
                self._seen[stream] = set()
                self._set_retained(f"{base}/available", ONLINE)
            if kind == "event":
                name = header.get("name")
                if stream and name in ("stream_down", "stream_up"):
                    self._set_retained(f"{base}/available", OFFLINE if name == "stream_down" else ONLINE)
                self._enqueue(f"{base}/events", body)
            elif kind in RESULT_KINDS and stream:
                if kind not in self._seen[stream]:
                    self._seen[stream].add(kind)
                    self._announce(stream, kind)
                self._enqueue(f"{base}/{kind}", body)
                if kind == "violence":
                    self._set_retained(f"{base}/violence/alert", b"ON" if header.get("alert") else b"OFF")
                elif kind in ("highlight", "localization") and "score" in header:
                    self._enqueue(f"{base}/{kind}/score", str(round(float(header["score"]), 4)).encode())
                elif kind == "caption" and header.get("text"):
                    self._set_retained(f"{base}/caption/text", str(header["text"]).encode())
            self._cond.notify()

    def remove_stream(self, stream: str) -> None:
        base = f"{self.settings.prefix}/{topic_level(stream)}"
        topics = [self._config_topic(obj, stream) for obj in ENTITIES] if self.settings.discovery else []
        topics += [f"{base}/violence/alert", f"{base}/caption/text", f"{base}/available"]
        with self._cond:
            for topic in topics:  # an empty retained message deletes the retained one; HA drops the entity
                self._state.pop(topic, None)
                self._pending.pop(topic, None)
                self._pending[topic] = b""
            self._seen.pop(stream, None)
            self._models.pop(stream, None)
            self._cond.notify()

    def metric_families(self) -> list[Any]:
        from avstream.engine.sinks.metrics import counter_family, gauge_family

        return [
            gauge_family("avstream_mqtt_connected", "1 while connected to the MQTT broker", [], [((), self.connected)]),
            counter_family("avstream_mqtt_dropped_total", "MQTT messages dropped while the broker was away (queue full)",
                           [], [((), self.dropped)]),
        ]

    def close(self, timeout_s: float = 2.0) -> None:
        """Send what is queued (while connected, within ``timeout_s``), say ``offline``, disconnect."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._stopping = True
            self._close_by = deadline - min(0.5, timeout_s / 4)  # leave time to say offline
            self._cond.notify_all()
        self._worker.join(max(0.0, deadline - time.monotonic()))
        if self.connected:
            info = self.client.publish(self.available_topic, OFFLINE, qos=self.settings.qos, retain=True)
            try:
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            except (RuntimeError, ValueError):  # lost the connection meanwhile: the will says offline
                pass
        self.client.disconnect()
        # paho's thread may be inside a TCP connect (up to its 5 s timeout): wait for it within ours only
        stopper = threading.Thread(target=self.client.loop_stop, name="mqtt-stop", daemon=True)
        stopper.start()
        stopper.join(max(0.1, deadline - time.monotonic()))
        if self._queue:
            log.warning("mqtt: %d message(s) not delivered at shutdown", len(self._queue))

    # --- state (called with the lock held) ------------------------------------------------------

    def _enqueue(self, topic: str, payload: bytes) -> None:
        while len(self._queue) >= self.settings.queue_size:
            self._queue.popleft()  # the newest results matter more than the oldest
            self.dropped += 1
        self._queue.append((topic, payload))

    def _set_retained(self, topic: str, payload: bytes) -> None:
        if self._state.get(topic) == payload:
            return  # retained topics are states: published on change
        self._state[topic] = payload
        self._pending.pop(topic, None)  # the latest value goes out after what was queued before it
        self._pending[topic] = payload

    def _config_topic(self, obj: str, stream: str) -> str:
        return f"{self.settings.discovery_prefix}/{ENTITIES[obj][0]}/{node_id(stream)}/{obj}/config"

    def _announce(self, stream: str, kind: str) -> None:
        """The Home Assistant entity that follows ``kind`` on ``stream``, once the stream produces it."""
        if not self.settings.discovery:
            return
        p, nid, level = self.settings.prefix, node_id(stream), topic_level(stream)
        for obj, (_component, follows, title, state_tail, extra) in ENTITIES.items():
            if follows != kind:
                continue
            config = {
                "name": title,
                "unique_id": f"{nid}_{obj}",
                "state_topic": f"{p}/{level}/{state_tail}",
                "json_attributes_topic": f"{p}/{level}/{kind}",
                "availability": [{"topic": self.available_topic, "payload_available": "online",
                                  "payload_not_available": "offline"},
                                 {"topic": f"{p}/{level}/available", "payload_available": "online",
                                  "payload_not_available": "offline"}],
                "availability_mode": "all",
                "device": {"identifiers": [nid], "name": stream, "manufacturer": "avstream",
                           "model": self._models.get(stream, self.run_name)},
                "origin": {"name": "avstream", "sw_version": _version()},
                **extra,
            }
            self._set_retained(self._config_topic(obj, stream), json.dumps(config).encode())

    def _resend_state(self) -> None:
        for topic, payload in self._state.items():
            self._pending.setdefault(topic, payload)
        self._cond.notify()

    # --- the worker: hand messages to paho while connected --------------------------------------

    def _run(self) -> None:
        qos = self.settings.qos
        while True:
            with self._cond:
                while not ((self.connected and (self._pending or self._queue)) or self._stopping):
                    self._cond.wait(1.0)
                work = self.connected and (self._pending or self._queue)
                if self._stopping and (not work or time.monotonic() > self._close_by):
                    return
                if self._pending:
                    topic, payload = self._pending.popitem(last=False)
                    retain = True
                else:
                    topic, payload = self._queue.popleft()
                    retain = False
            info = self.client.publish(topic, payload, qos=qos, retain=retain)
            if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                # paho's in-flight window is full (the broker has not acknowledged yet, e.g. while a
                # reconnect flushes the backlog): the message goes back to the head of ours, which
                # alone drops (the oldest, counted) when the broker stays slower than the graph
                with self._cond:
                    if retain:
                        self._pending.setdefault(topic, payload)
                        self._pending.move_to_end(topic, last=False)
                    else:
                        self._queue.appendleft((topic, payload))
                time.sleep(0.01)
            else:
                self.sent += 1  # NO_CONN included: paho keeps it and sends it after the reconnect

    # --- paho's network thread ------------------------------------------------------------------

    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                    properties: Any) -> None:
        if reason.is_failure:
            if str(reason) != self._last_refusal:  # a wrong password: one line, not one per attempt
                self._last_refusal = str(reason)
                log.warning("mqtt: the broker at %s refused the connection: %s; retrying", self._where(), reason)
            return
        self._last_refusal = ""
        if self.settings.discovery:
            client.subscribe(self.birth_topic, qos=0)
        log.info("mqtt: %s to %s", "reconnected" if self._was_connected else "connected", self._where())
        self._was_connected = True
        self._warned_unreachable = False
        with self._cond:
            self.connected = True
            self._resend_state()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if not self._warned_unreachable:  # one line per outage, not one per attempt
            self._warned_unreachable = True
            log.warning("mqtt: cannot reach the broker at %s; retrying in the background "
                        "(up to %d messages are kept meanwhile)", self._where(), self.settings.queue_size)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                       properties: Any) -> None:
        with self._cond:
            was = self.connected
            self.connected = False
        if was and not self._stopping:
            log.warning("mqtt: lost the broker at %s (%s); reconnecting", self._where(), reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == self.birth_topic and message.payload == ONLINE:
            with self._cond:  # Home Assistant restarted: it wants the configs (and states) again
                self._resend_state()


def _version() -> str:
    try:
        return importlib.metadata.version("avstream")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def make_mqtt_sink(settings: MqttSettings, context: SinkContext) -> MqttSink:
    return MqttSink(settings, context)
