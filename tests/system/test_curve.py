"""CURVE on the results socket (SPEC §9), with real processes on a real non-loopback address.

The pipeline publishes on 10.99.0.1 inside a private network namespace made by the test (the
address sits on the namespace's own loopback device, so nothing leaves the machine); subscribers
and a raw TCP client run in that namespace as separate processes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from avstream.engine.transport.keys_cli import write_keys
from tests.conftest import free_port, run_cli
from tests.system.helpers import Subscriber, start_run, stop

pytestmark = pytest.mark.timeout(150)

ADDRESS = "10.99.0.1"
FAST = ["--set", "streams.cam0.realtime=false"]

# Connects, offers a ZMTP 3.0 greeting with the NULL mechanism (what a client without keys would
# send) and prints, hex-encoded, every byte the server sends until it closes or the time is up.
RAW_CLIENT = textwrap.dedent("""
    import socket, sys, time
    host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    got, deadline = b"", time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            s = socket.create_connection((host, port), timeout=1)
        except OSError:
            time.sleep(0.05)
            continue
        s.sendall(b"\\xff" + b"\\x00" * 8 + b"\\x7f" + b"\\x03\\x00" + b"NULL".ljust(20, b"\\x00") + b"\\x00" * 32)
        s.settimeout(0.5)
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not chunk:
                break
            got += chunk
        s.close()
    print(got.hex(), flush=True)
""")


def _netns_available() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


@pytest.fixture
def netns() -> Iterator[list[str]]:
    """A private network namespace whose loopback carries 10.99.0.1; the command prefix into it."""
    if not _netns_available():
        pytest.skip("needs root and iproute2 for a private network namespace")
    name = f"avs-curve-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot make a network namespace: {made.stderr.strip()}")
    wrap = ["ip", "netns", "exec", name]
    try:
        for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", f"{ADDRESS}/32", "dev", "lo"]):
            res = subprocess.run([*wrap, *cmd], capture_output=True, text=True)
            if res.returncode != 0:
                pytest.skip(f"cannot set up the namespace's loopback: {res.stderr.strip()}")
        yield wrap
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def highlight_pipeline(path: Path, uri: str, port: int, publish: str, jsonl: Path | None = None) -> Path:
    """A window and a highlight node over ``uri``, publishing on ADDRESS:``port`` with the extra
    ``publish`` settings (YAML lines)."""
    lines = ["version: 1", f"name: {path.stem}", "streams:", f'  cam0: {{uri: "{uri}", realtime: false}}',
             "nodes:", "  window: {type: avstream/av_window@v1, inputs: [cam0]}",
             '  score:  {type: avstream/highlight@v1, inputs: [window], params: {model: "builtin:highlight"}}',
             "outputs:", "  publish:", f'    endpoint: "tcp://{ADDRESS}:{port}"']
    lines += [f"    {line}" for line in textwrap.dedent(publish).strip().splitlines()]
    if jsonl is not None:
        lines.append(f"  jsonl: {{path: {jsonl.name}}}")
    path.write_text("\n".join(lines) + "\n")
    return path


def curve_pipeline(tmp_path: Path, keys: Path, port: int, jsonl: Path) -> Path:
    return highlight_pipeline(tmp_path / "curve.yaml", "synthetic://scene?seed=5&duration=6", port, f"""
        wait_for_subscribers: 1
        wait_timeout_s: 60
        curve: {{secret_key: {keys.name}/server.key_secret, clients: {keys.name}/clients}}
    """, jsonl)


def lines_of(sub: Subscriber) -> list[dict]:
    """What a subscriber printed after its ready line, read once it has been killed."""
    sub.close()
    sub.thread.join(timeout=10)
    got = []
    while not sub.lines.empty():
        got.append(json.loads(sub.lines.get()))
    return got


def test_only_the_right_client_key_receives_and_nothing_is_plaintext(netns: list[str], tmp_path: Path,
                                                                     port: int) -> None:
    keys = tmp_path / "keys"
    write_keys(keys)
    stranger = tmp_path / "stranger"  # a valid key pair the server was never told about
    write_keys(stranger)
    jsonl = tmp_path / "out.jsonl"
    pipeline = curve_pipeline(tmp_path, keys, port, jsonl)
    endpoint = f"tcp://{ADDRESS}:{port}"
    wrong = Subscriber(endpoint, "", ["--server-key", str(keys / "server.key"),
                                      "--client-key", str(stranger / "client.key_secret")], wrap=netns)
    plain = Subscriber(endpoint, "", wrap=netns)
    raw = subprocess.Popen([*netns, sys.executable, "-c", RAW_CLIENT, ADDRESS, str(port), "25"],
                           stdout=subprocess.PIPE, text=True)
    run = start_run(str(pipeline), "--quiet", wrap=netns)
    right = Subscriber(endpoint, "highlight.", ["--server-key", str(keys / "server.key"),
                                                "--client-key", str(keys / "client.key_secret")], wrap=netns)
    try:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        msgs = right.until(lambda m: m["header"]["t0"] >= 5.0, timeout=20)
        raw_out, _ = raw.communicate(timeout=40)
    finally:
        for proc in (raw, run):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        right.close()
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    published = [(h["kind"], h["seq"]) for h in lines if h["kind"] == "highlight"]
    assert len(published) >= 6
    assert [(m["header"]["kind"], m["header"]["seq"]) for m in msgs] == published  # everything, in order
    assert lines_of(wrong) == []  # a key the server does not list: nothing
    assert lines_of(plain) == []  # no key at all: nothing
    received = bytes.fromhex(raw_out.strip())
    assert received.startswith(b"\xff")  # it did reach the server: a ZMTP signature, then it was dropped
    for marker in (b"schema_version", b"highlight.", b'"seq"', b"cam0"):
        assert marker not in received, f"plaintext {marker!r} reached a raw TCP client"
    assert "Traceback" not in err


def test_non_loopback_publish_without_keys_refuses_to_start(tmp_path: Path, port: int) -> None:
    for endpoint in (f"tcp://{ADDRESS}:{port}", f"tcp://0.0.0.0:{port}", f"tcp://*:{port}"):
        res = run_cli("run", "highlight", "--input", "synthetic://scene?duration=2", *FAST, "--publish", endpoint,
                      "--quiet")
        assert res.returncode == 2, res.stderr
        assert "outputs.publish" in res.stderr and "not a loopback address" in res.stderr
        assert "outputs.publish.insecure: true" in res.stderr and "avstream keys" in res.stderr
        assert "Traceback" not in res.stderr
    # loopback needs nothing
    ok = run_cli("validate", "highlight", "--publish", f"tcp://127.0.0.2:{port}")
    assert ok.returncode == 0, ok.stderr


def test_curve_keys_that_are_missing_are_located_errors(tmp_path: Path, port: int) -> None:
    pipeline = highlight_pipeline(tmp_path / "p.yaml", "synthetic://scene?duration=2", port,
                                  "curve: {secret_key: nowhere.key_secret, clients: nobody}")
    res = run_cli("validate", str(pipeline))
    assert res.returncode == 2
    assert f"{pipeline}:" in res.stderr
    assert "outputs.publish.curve.secret_key: no such key file" in res.stderr
    assert "outputs.publish.curve.clients: not a folder of client public keys" in res.stderr


def test_insecure_true_starts_and_warns_once(netns: list[str], port: int) -> None:
    endpoint = f"tcp://{ADDRESS}:{port}"
    plain = Subscriber(endpoint, "highlight.", wrap=netns)
    run = start_run("highlight", "--input", "synthetic://scene?duration=3", *FAST, "--publish", endpoint,
                    "--set", "outputs.publish.insecure=true", "--set", "outputs.publish.wait_for_subscribers=1",
                    "--quiet", wrap=netns)
    try:
        out, err = stop_after_exit(run)
        got = plain.until(lambda m: m["header"]["t0"] >= 2.0, timeout=20)  # plain TCP, as asked for
    finally:
        plain.close()
    assert run.returncode == 0, err
    assert err.count("WITHOUT authentication") == 1, err
    assert [m["header"]["t0"] for m in got] == [0.0, 1.0, 2.0]


def stop_after_exit(run: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        return run.communicate(timeout=120)
    finally:
        stop(run)


def test_keys_files_modes_and_no_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "new" / "keys"
    res = run_cli("keys", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert out.stat().st_mode & 0o777 == 0o700
    for name in ("server.key_secret", "client.key_secret"):
        assert (out / name).stat().st_mode & 0o777 == 0o600
    for name in ("server.key", "clients/client.key"):
        assert (out / name).stat().st_mode & 0o077 in (0o044, 0o000)  # public: readable, never writable by others
    assert "server.key_secret" in res.stdout and "curve:" in res.stdout
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    again = run_cli("keys", "--out", str(out))
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    forced = run_cli("keys", "--out", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (out / "server.key_secret").read_bytes() != before[out / "server.key_secret"]
    assert (out / "server.key_secret").stat().st_mode & 0o777 == 0o600
    added = run_cli("keys", "--out", str(out), "--client", "viewer2", "--add-client")
    assert added.returncode == 0, added.stderr
    assert (out / "clients" / "viewer2.key").is_file()
    assert (out / "viewer2.key_secret").stat().st_mode & 0o777 == 0o600
    assert not list(out.glob("tmp*")), "a temporary folder was left behind"


def test_the_daemon_publishes_over_curve_only_to_listed_clients(netns: list[str], tmp_path: Path, port: int) -> None:
    keys = tmp_path / "keys"
    write_keys(keys)
    config = tmp_path / "serve.yaml"
    config.write_text(textwrap.dedent(f"""
        version: 1
        server:
          listen: "127.0.0.1:{free_port()}"
          publish: "tcp://{ADDRESS}:{port}"
          publish_curve: {{secret_key: keys/server.key_secret, clients: keys/clients}}
          viewer: false
        streams:
          cam0: {{pipeline: highlight, uri: "synthetic://scene?seed=2&duration=30", realtime: true}}
    """))
    endpoint = f"tcp://{ADDRESS}:{port}"
    plain = Subscriber(endpoint, "", wrap=netns)
    right = Subscriber(endpoint, "highlight.", ["--server-key", str(keys / "server.key"),
                                                "--client-key", str(keys / "client.key_secret")], wrap=netns)
    daemon = subprocess.Popen([*netns, sys.executable, "-m", "avstream.engine.cli", "serve", str(config)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        msgs = right.until(lambda m: m["header"]["kind"] == "highlight", timeout=90)
        assert msgs[-1]["header"]["stream"] == "cam0"
    finally:
        out, err = stop(daemon)
        right.close()
    assert lines_of(plain) == []
    assert "Traceback" not in err
