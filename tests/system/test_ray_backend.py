"""``avstream run --backend ray`` on a real two-node Ray cluster, inside a loopback-only namespace.

ray_cluster.py starts a head node (``head_host``) and a second node (``camera_host``) on 127.0.0.1
inside ``unshare -n`` (Ray listens on every interface it finds: there it finds only loopback), and
ray_scenario.py runs the pipelines in it. Checked here: each process group ran on the Ray node its
``resources:`` ask for (the camera on the second node, the rest on the head), the results match a
local run of the same pipeline window by window, an actor SIGKILLed mid-run is restarted by Ray with
``node_restarted`` published and ``seq`` gap-free, and the clear errors for a resource no node offers
and an unreachable cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray", reason="the Ray backend needs the ray extra: pip install 'avstream[ray]'")
pytestmark = pytest.mark.timeout(600)
HERE = Path(__file__).resolve().parent
FIELDS = ("t1", "score", "activation", "model")


def _namespace_reason() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare(1) and ip(8) are needed for a loopback-only network namespace"
    probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make a private network namespace here (unshare -n: {probe.stderr.strip() or probe.returncode})"
    return None


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = _namespace_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("ray")
    cmd = f"ip link set lo up && {sys.executable} {HERE / 'ray_cluster.py'} {out} -- {sys.executable} {HERE / 'ray_scenario.py'} {out}"
    proc = subprocess.run(["unshare", "-n", "sh", "-c", cmd], capture_output=True, text=True, timeout=540,
                          env=dict(os.environ, PYTHONPATH=str(HERE.parents[1])))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def outcome(out: Path, name: str) -> dict[str, Any]:
    return dict(json.loads((out / f"{name}.result.json").read_text()))


def test_placement_follows_resources(scenario: Path) -> None:
    assert outcome(scenario, "ray")["rc"] == 0, outcome(scenario, "ray")["stderr"]
    nodes = json.loads((scenario / "cluster.json").read_text())["nodes"]
    camera = next(n["id"] for n in nodes if "camera_host" in n["resources"])
    head = next(n["id"] for n in nodes if "head_host" in n["resources"])
    assert camera != head
    placement = jsonl(scenario / "ray.status.jsonl")[-1]["placement"]
    assert placement["cam"]["node_id"] == camera  # pinned next to the camera
    assert placement["window"]["node_id"] == head and placement["score"]["node_id"] == head
    assert placement["score"]["resources"] == {"num_cpus": 0.5, "num_gpus": 0.0, "resources": {"head_host": 1.0}}
    assert {placement[p]["node_id"] for p in placement} == {camera, head}  # both Ray nodes in use


def test_results_match_a_local_run_window_by_window(scenario: Path) -> None:
    assert outcome(scenario, "local")["rc"] == 0, outcome(scenario, "local")["stderr"]
    local = {(m["stream"], m["t0"]): m for m in jsonl(scenario / "local.jsonl") if m["kind"] == "highlight"}
    ray = {(m["stream"], m["t0"]): m for m in jsonl(scenario / "ray.jsonl") if m["kind"] == "highlight"}
    assert {s for s, _ in local} == {"cam0", "cam1"}
    assert sorted(ray) == sorted(local) and len(local) == 2 * 30
    for key, mine in local.items():
        other = ray[key]
        for field in FIELDS:
            if isinstance(mine[field], float):
                assert other[field] == pytest.approx(mine[field], abs=1e-6), (key, field)
            else:
                assert other[field] == mine[field], (key, field)
    for stream in ("cam0", "cam1"):  # the same message contract: seq per stream and kind from 0, +1
        seqs = [m["seq"] for m in jsonl(scenario / "ray.jsonl") if m["stream"] == stream and m["kind"] == "highlight"]
        assert seqs == list(range(30))


def test_an_actor_killed_is_restarted_by_ray_and_the_rules_hold(scenario: Path) -> None:
    result = outcome(scenario, "killed")
    assert result["rc"] == 0, result["stderr"]
    kill = json.loads((scenario / "killed.kill.json").read_text())
    assert kill, "the run ended before the actor could be killed"
    lines = jsonl(scenario / "killed.jsonl")
    restarts = [m for m in lines if m["kind"] == "event" and m["name"] == "node_restarted"]
    assert [m["detail"]["node"] for m in restarts] == ["score"]
    status = jsonl(scenario / "killed.status.jsonl")
    after = status[-1]["placement"]["score"]
    assert after["actor_pid"] != kill["actor_pid"]  # a new actor process: Ray restarted it
    assert next(n for n in status[-1]["nodes"] if n["id"] == "score")["restarts"] == 1
    for stream in ("cam0", "cam1"):
        mine = [m for m in lines if m["stream"] == stream and m["kind"] == "highlight"]
        assert [m["seq"] for m in mine] == list(range(len(mine)))  # seq continues across the restart
        t1 = [m["t1"] for m in mine]
        assert t1 == sorted(set(t1))  # never a result twice, never back in media time
        assert any(m["wall"] > kill["at"] + 0.5 for m in mine), f"{stream}: no results after the restart"


def test_clear_errors(scenario: Path) -> None:
    unknown = outcome(scenario, "unknown_resource")
    assert unknown["rc"] == 2
    # Ray's own start-up warnings may come first; the error is the last line, alone
    assert unknown["stderr"].strip().splitlines()[-1] == "error: node 'score' needs resource 'gpu_host', which no Ray node offers"
    unreachable = outcome(scenario, "unreachable")
    assert unreachable["rc"] == 1
    assert "cannot reach the Ray cluster at 127.0.0.1:9" in unreachable["stderr"]
    assert "Traceback" not in unknown["stderr"] + unreachable["stderr"]
