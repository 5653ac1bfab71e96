"""Webhooks (SPEC §8): each selected event message POSTed as JSON to the configured targets.

Every target has a bounded queue and a worker thread of its own, so a slow or dead receiver delays
neither the graph (``send`` only enqueues) nor the other targets. A delivery is retried with
exponential backoff and jitter on a connection failure, a timeout, a 5xx or a 429; any other 4xx is
final (the receiver said the request itself is wrong). Deliveries, final failures, retries and
queue overflows are counted per target; the metrics sink exports them.

The body is the SPEC §4 header as JSON; ``X-Avstream-Signature: sha256=<hex>`` is the HMAC-SHA256
of exactly those bytes with the target's secret, so a receiver verifies the raw body before parsing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import queue
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator, model_validator
from pydantic_core import PydanticCustomError

from avstream.engine.backoff import backoff_delay
from avstream.engine.capture.base import redact_uri
from avstream.engine.sinks import Sink, SinkContext

log = logging.getLogger("avstream.sinks.webhooks")

USER_AGENT = "avstream-webhooks/1"


class WebhookTarget(BaseModel):
    """One receiver of event messages."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="http:// or https:// URL the events are POSTed to (user:password@ → basic auth)")
    events: list[str] | None = Field(None, description="event names to send (default: every event)")
    secret: str | None = Field(None, repr=False, description="HMAC-SHA256 key of the X-Avstream-Signature header")
    timeout_s: float = Field(5.0, gt=0, description="seconds one request may take")
    max_attempts: int = Field(5, ge=1, description="attempts per event before it counts as a failure")
    queue_size: int = Field(1000, gt=0, description="events waiting per target; beyond it they are dropped (counted)")
    backoff_initial_s: float = Field(0.5, gt=0, description="delay before the first retry; doubles per retry")
    backoff_cap_s: float = Field(30.0, gt=0, description="longest delay between two attempts")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PydanticCustomError("http_url", "not an http(s) URL: {url}", {"url": repr(redact_uri(url))})
        return url

    @field_validator("events")
    @classmethod
    def _some_events(cls, events: list[str] | None) -> list[str] | None:
        if events is not None and not events:
            raise PydanticCustomError("no_events", "empty: leave it out to send every event")
        return events


class WebhooksSettings(RootModel[list[WebhookTarget]]):
    """``outputs.webhooks``: a list of targets (SPEC §6 form); a single target mapping is also taken."""

    root: list[WebhookTarget] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _one_target(cls, data: Any) -> Any:
        return [data] if isinstance(data, dict) else data


def sign(body: bytes, secret: str) -> str:
    """The ``X-Avstream-Signature`` value of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not a place to resend the event to (urllib would turn the POST into a GET)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class _Retry(Exception):
    def __init__(self, reason: str, after_s: float | None = None):
        super().__init__(reason)
        self.after_s = after_s


class TargetWorker:
    """The queue and thread of one target, and its counters."""

    def __init__(self, target: WebhookTarget, rng: random.Random | None = None):
        self.target = target
        self.label = redact_uri(target.url)  # the `target` label of the metrics, and what logs show
        self.events = set(target.events) if target.events is not None else None
        self.delivered = 0  # events the receiver accepted (2xx)
        self.failures = 0  # events given up on: attempts exhausted, a 4xx, or still queued at close
        self.dropped = 0  # events not queued because the queue was full
        self.retries = 0  # attempts after the first
        self.queue: queue.Queue[tuple[str, bytes]] = queue.Queue(target.queue_size)
        self._rng = rng or random.Random()
        self._closing = threading.Event()  # deliver what is queued, then stop
        self._abort = threading.Event()  # the close timeout passed: stop now
        self._overflowing = False
        parts = urllib.parse.urlsplit(target.url)
        self._headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if parts.username is not None:  # urllib does not send URL credentials by itself
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            self._headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            netloc = parts.hostname or ""
            if ":" in netloc:
                netloc = f"[{netloc}]"
            if parts.port is not None:
                netloc += f":{parts.port}"
            parts = parts._replace(netloc=netloc)
        self._url = urllib.parse.urlunsplit(parts)
        self._opener = urllib.request.build_opener(_NoRedirect())
        self.thread = threading.Thread(target=self._run, name=f"webhook:{self.label}", daemon=True)
        self.thread.start()

    def wants(self, name: str) -> bool:
        return self.events is None or name in self.events

    def offer(self, name: str, body: bytes) -> None:
        try:
            self.queue.put_nowait((name, body))
            self._overflowing = False
        except queue.Full:
            self.dropped += 1
            if not self._overflowing:  # once per overflow episode, not once per event
                self._overflowing = True
                log.warning("webhook %s: queue full (%d events); dropping events until it drains",
                            self.label, self.target.queue_size)

    def _run(self) -> None:
        while not self._abort.is_set():
            try:
                name, body = self.queue.get(timeout=0.1)
            except queue.Empty:
                if self._closing.is_set():
                    return
                continue
            self._deliver(name, body)

    def _deliver(self, name: str, body: bytes) -> None:
        t = self.target
        for attempt in range(1, t.max_attempts + 1):
            if attempt > 1:
                self.retries += 1
            try:
                self._post(name, body)
                self.delivered += 1
                return
            except _Retry as exc:
                reason, after = str(exc), exc.after_s
            except _Final as exc:
                self.failures += 1
                log.warning("webhook %s: %s event refused: %s (not retried)", self.label, name, exc)
                return
            if attempt == t.max_attempts:
                break
            delay = backoff_delay(attempt, initial=t.backoff_initial_s, cap=t.backoff_cap_s, jitter=0.3, rng=self._rng)
            if after is not None:
                delay = max(delay, min(after, t.backoff_cap_s))
            if attempt == 1:
                log.info("webhook %s: %s event not delivered: %s; retrying", self.label, name, reason)
            if self._abort.wait(delay):
                break
        self.failures += 1
        log.warning("webhook %s: %s event not delivered after %d attempt(s): %s", self.label, name, attempt, reason)

    def _post(self, name: str, body: bytes) -> None:
        headers = dict(self._headers, **{"X-Avstream-Event": name})
        if self.target.secret:
            headers["X-Avstream-Signature"] = sign(body, self.target.secret)
        request = urllib.request.Request(self._url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.target.timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            code = exc.code
            exc.close()
            if code >= 500:
                raise _Retry(f"HTTP {code}") from None
            if code == 429:
                raise _Retry("HTTP 429 (too many requests)", _retry_after(exc.headers.get("Retry-After"))) from None
            raise _Final(f"HTTP {code}") from None
        except (urllib.error.URLError, OSError) as exc:  # refused, reset, DNS, timeout (TimeoutError is an OSError)
            reason = getattr(exc, "reason", exc)
            raise _Retry(redact_uri(str(reason)) or type(exc).__name__) from None

    def close(self) -> None:
        self._closing.set()

    def abort(self) -> int:
        """Stop now; the events still queued count as failures. Returns how many there were."""
        self._abort.set()
        left = 0
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
            left += 1
        self.failures += left
        return left


class _Final(Exception):
    pass


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:  # an HTTP date: the backoff delay is used instead
        return None


class WebhookSink(Sink):
    """``outputs.webhooks``: event messages to HTTP receivers, signed, retried, never blocking."""

    name = "webhooks"

    def __init__(self, targets: Iterable[WebhookTarget]):
        self.targets = [TargetWorker(t) for t in targets]
        for worker in self.targets:
            log.info("webhook target %s (events: %s%s)", worker.label,
                     ", ".join(sorted(worker.events)) if worker.events is not None else "all",
                     ", signed" if worker.target.secret else "")

    def send(self, header: dict[str, Any], arrays: list[np.ndarray]) -> None:
        if header.get("kind") != "event":
            return
        name = str(header.get("name", ""))
        wanted = [w for w in self.targets if w.wants(name)]
        if not wanted:
            return
        body = json.dumps(header, separators=(",", ":")).encode()
        for worker in wanted:
            worker.offer(name, body)

    def stats(self) -> list[dict[str, Any]]:
        """Per target: its redacted URL and counters (what the metrics sink exports)."""
        return [{"target": w.label, "delivered": w.delivered, "failures": w.failures, "dropped": w.dropped,
                 "retries": w.retries, "queued": w.queue.qsize()} for w in self.targets]

    def metric_families(self) -> list[Any]:
        from avstream.engine.sinks.metrics import counter_family

        stats = self.stats()
        return [
            counter_family("avstream_webhook_deliveries_total", "Events a webhook target accepted (2xx)",
                           ["target"], [((s["target"],), s["delivered"]) for s in stats]),
            counter_family("avstream_webhook_failures_total",
                           "Events given up on: attempts exhausted, refused (4xx) or undelivered at close",
                           ["target"], [((s["target"],), s["failures"]) for s in stats]),
            counter_family("avstream_webhook_dropped_total", "Events dropped because a target's queue was full",
                           ["target"], [((s["target"],), s["dropped"]) for s in stats]),
            counter_family("avstream_webhook_retries_total", "Webhook attempts after the first",
                           ["target"], [((s["target"],), s["retries"]) for s in stats]),
        ]

    def close(self, timeout_s: float = 2.0) -> None:
        deadline = time.monotonic() + timeout_s
        for worker in self.targets:
            worker.close()
        for worker in self.targets:  # the targets drain in parallel; the deadline is shared
            worker.thread.join(max(0.0, deadline - time.monotonic()))
        for worker in self.targets:
            if worker.thread.is_alive():
                left = worker.abort()
                log.warning("webhook %s: %d queued event(s) and the one in flight not delivered within %.1f s "
                            "of stopping", worker.label, left, timeout_s)


def make_webhooks(settings: WebhooksSettings, context: SinkContext) -> WebhookSink:
    return WebhookSink(settings.root)
