"""A real Mosquitto broker on 127.0.0.1 for tests, and a paho subscriber that records what it gets."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.waiting import wait_until

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")


def needs_mosquitto() -> None:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (Debian package `mosquitto`)")


class Broker:
    """``mosquitto -c conf`` listening on 127.0.0.1:port; restartable on the same port."""

    def __init__(self, folder: Path, port: int, users: dict[str, str] | None = None, persistence: bool = False,
                 tls: tuple[Path, Path] | None = None):
        needs_mosquitto()
        self.folder, self.port = folder, port
        folder.mkdir(parents=True, exist_ok=True)
        lines = [f"listener {port} 127.0.0.1", f"user {pwd.getpwuid(os.getuid()).pw_name}",
                 f"persistence {'true' if persistence else 'false'}", f"log_dest file {folder / 'mosquitto.log'}"]
        if persistence:
            lines.append(f"persistence_location {folder}/")
        if tls:  # (certificate, key) of the server
            lines += [f"certfile {tls[0]}", f"keyfile {tls[1]}"]
        if users:
            if MOSQUITTO_PASSWD is None:
                pytest.skip("mosquitto_passwd is not installed (Debian package `mosquitto`)")
            pw_file = folder / "passwords"
            for i, (name, password) in enumerate(users.items()):
                subprocess.run([MOSQUITTO_PASSWD, "-b", *(["-c"] if i == 0 else []), str(pw_file), name, password],
                               check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pw_file}"]
        else:
            lines.append("allow_anonymous true")
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        assert MOSQUITTO is not None
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(20)
        self.proc = None


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool


class Subscriber:
    """A paho client subscribed to ``topics``; every message kept in order, reconnecting on its own."""

    def __init__(self, port: int, topics: list[str], client_id: str = "", clean: bool = True,
                 auth: tuple[str, str] | None = None, ca_file: Path | None = None):
        self.topics = topics
        self.got: list[Received] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        if auth:
            self.client.username_pw_set(*auth)
        if ca_file:
            self.client.tls_set(ca_certs=str(ca_file))
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", port, 30)
        self.client.loop_start()
        assert self.subscribed.wait(20), "the test subscriber did not connect"

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.got.append(Received(message.topic, bytes(message.payload), bool(message.retain)))

    def messages(self, topic: str | None = None) -> list[Received]:
        with self.lock:
            return [m for m in self.got if topic is None or m.topic == topic]

    def last(self, topic: str) -> bytes | None:
        found = self.messages(topic)
        return found[-1].payload if found else None

    def wait_for(self, check: Callable[[], Any], what: str, timeout_s: float = 30.0) -> Any:
        return wait_until(check, what, timeout_s, every=0.02,
                          detail=lambda: [(m.topic, m.payload[:80]) for m in self.messages()])

    def retained_snapshot(self, sentinel: str) -> dict[str, bytes]:
        """Every retained message the broker delivered on subscribing. The broker answers in order, so
        once our own message on ``sentinel`` comes back, all the retained ones have arrived."""
        self.client.publish(sentinel, b"x", qos=1)
        self.wait_for(lambda: self.messages(sentinel), f"the sentinel on {sentinel}")
        return {m.topic: m.payload for m in self.messages() if m.retain}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
