"""Which endpoints need CURVE (SPEC §9): anything a network peer could reach."""

from __future__ import annotations

import pytest

from avstream.engine.transport.curve import PublishSecurity, check_publish, needs_curve


@pytest.mark.parametrize("endpoint, needs", [
    ("tcp://127.0.0.1:5560", False), ("tcp://127.1.2.3:5560", False), ("tcp://localhost:5560", False),
    ("tcp://[::1]:5560", False), ("ipc:///tmp/x.sock", False), ("inproc://x", False),
    ("tcp://0.0.0.0:5560", True), ("tcp://*:5560", True), ("tcp://[::]:5560", True), ("tcp://eth0:5560", True),
    ("tcp://192.0.2.10:5560", True), ("tcp://example.org:5560", True), ("tcp://127.0.0.1:0;192.0.2.1:5560", True),
    ("ws://0.0.0.0:8080/results", True), ("ws://127.0.0.1:8080/results", False), ("wss://[::1]:443/r", False),
])
def test_loopback_or_not(endpoint: str, needs: bool) -> None:
    assert needs_curve(endpoint) is needs


def test_insecure_lets_a_network_endpoint_start_and_keys_are_checked() -> None:
    assert check_publish("tcp://0.0.0.0:5560", PublishSecurity(insecure=True)) == []
    [(key, message)] = check_publish("tcp://0.0.0.0:5560", PublishSecurity())
    assert key == "" and "outputs.publish.insecure: true" in message
    problems = dict(check_publish("tcp://127.0.0.1:5560", PublishSecurity("/nonexistent.key_secret", "/nonexistent")))
    assert "no such key file" in problems["curve.secret_key"]
    assert "not a folder" in problems["curve.clients"]
