"""``avstream subscribe`` against real pipelines: plain on loopback, payloads inline, CURVE with the
right and a stranger's keys, and user mistakes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avstream.engine.transport.keys_cli import write_keys
from tests.conftest import run_cli
from tests.system.helpers import start_run, stop

pytestmark = pytest.mark.timeout(150)

FAST = ["--set", "streams.cam0.realtime=false", "--set", "outputs.publish.wait_for_subscribers=1",
        "--set", "outputs.publish.wait_timeout_s=60", "--quiet"]


def subscribe(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "avstream.engine.cli", "subscribe", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(sub: subprocess.Popen[str], run: subprocess.Popen[str]) -> tuple[int, list[dict], str]:
    try:
        out, err = sub.communicate(timeout=90)
    finally:
        if sub.poll() is None:
            sub.kill()
        stop(run)
    return sub.returncode, [json.loads(line) for line in out.splitlines()], err


def test_prints_each_result_as_one_json_line(port: int) -> None:
    endpoint = f"tcp://127.0.0.1:{port}"
    sub = subscribe(endpoint, "--topic", "highlight.", "--count", "4", "--timeout", "60")
    run = start_run("highlight", "--input", "synthetic://scene?seed=3&duration=8", "--publish", endpoint, *FAST)
    code, lines, err = finish(sub, run)
    assert code == 0, err
    assert [m["kind"] for m in lines] == ["highlight"] * 4
    assert [m["seq"] for m in lines] == [0, 1, 2, 3]  # from the first: the run waited for the subscriber
    assert [m["t0"] for m in lines] == [0.0, 1.0, 2.0, 3.0]
    assert all(m["stream"] == "cam0" and 0.0 <= m["score"] <= 1.0 for m in lines)
    assert err == ""  # no gap reported


def test_payloads_come_inline_with_their_shape(port: int) -> None:
    endpoint = f"tcp://127.0.0.1:{port}"
    sub = subscribe(endpoint, "--topic", "localization.", "--stream", "cam0", "--payloads", "--count", "2",
                    "--timeout", "60")
    run = start_run("localization", "--input", "synthetic://scene?seed=4&duration=6", "--publish", endpoint, *FAST)
    code, lines, err = finish(sub, run)
    assert code == 0, err
    for message in lines:
        (heatmap,) = message["payloads"]
        assert heatmap["name"] == "heatmap"
        data = np.asarray(heatmap["data"])
        assert list(data.shape) == heatmap["shape"] and data.ndim == 2
        assert np.isfinite(data).all()


def curve_run(keys: Path, endpoint: str) -> subprocess.Popen[str]:
    return start_run("highlight", "--input", "synthetic://scene?seed=5&duration=8", "--publish", endpoint, *FAST,
                     "--set", f"outputs.publish.curve.secret_key={keys / 'server.key_secret'}",
                     "--set", f"outputs.publish.curve.clients={keys / 'clients'}")


def test_curve_the_right_keys_receive_a_strangers_do_not(tmp_path: Path, port: int) -> None:
    keys, stranger = tmp_path / "keys", tmp_path / "stranger"
    write_keys(keys)
    write_keys(stranger)  # a valid pair the publisher was never told about
    endpoint = f"tcp://127.0.0.1:{port}"
    nobody = subscribe(endpoint, "--server-key", str(keys / "server.key"),
                       "--client-key", str(stranger / "client.key_secret"), "--count", "1", "--timeout", "8")
    right = subscribe(endpoint, "--server-key", str(keys / "server.key"), "--client-key",
                      str(keys / "client.key_secret"), "--topic", "highlight.", "--count", "3", "--timeout", "60")
    run = curve_run(keys, endpoint)
    code, lines, err = finish(right, run)
    assert code == 0, err
    assert [m["seq"] for m in lines] == [0, 1, 2]
    out, err = nobody.communicate(timeout=30)
    assert nobody.returncode == 1 and out == "", err
    assert "received 0 of 1 messages before the 8 s timeout" in err


def test_user_mistakes_are_one_line_and_exit_2(tmp_path: Path) -> None:
    not_a_key = tmp_path / "server.key"
    not_a_key.write_text("hello\n")
    cases = [
        (["tcp://127.0.0.1:1", "--server-key", str(not_a_key)], "needs both --server-key"),
        (["tcp://127.0.0.1:1", "--server-key", str(tmp_path / "none.key"), "--client-key", str(not_a_key)],
         "no such key file"),
        (["tcp://127.0.0.1:1", "--server-key", str(not_a_key), "--client-key", str(not_a_key)], "key"),
        (["no-scheme-here"], "cannot connect to 'no-scheme-here'"),
    ]
    for args, words in cases:
        res = run_cli("subscribe", *args, "--timeout", "1")
        assert res.returncode == 2, (args, res.stderr)
        assert words in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
