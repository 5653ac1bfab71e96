"""The runs of tests/system/test_ray_backend.py, inside the Ray cluster of ray_cluster.py.

    python ray_scenario.py OUT_DIR          (RAY_ADDRESS set by ray_cluster.py)
Writes into OUT_DIR: the same pipeline run with the local backend and with Ray (JSONL + status
JSON), a longer Ray run whose ``score`` actor is SIGKILLed mid-run (Ray restarts it), and the exit
codes and standard error of the runs that must fail with a clear message (a resource no Ray node
offers, an unreachable cluster address). The test reads the files and checks them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PIPELINE = """\
version: 1
name: onray
backend: {{kind: ray, node_ip: 127.0.0.1, placement_timeout_s: 30}}
streams:
  cam0: {{uri: "synthetic://scene?seed=5&duration={seconds}", realtime: false, resources: {{camera_host: 1}}, process: cam}}
  cam1: {{uri: "synthetic://scene?seed=6&duration={seconds}", realtime: false, process: cam1}}
nodes:
  window: {{type: avstream/av_window@v1, inputs: [cam0, cam1], resources: {{head_host: 1}}}}
  score: {{type: avstream/highlight@v1, inputs: [window], resources: {{head_host: 1, num_cpus: 0.5}}, params: {{model: "builtin:highlight"}}}}
outputs:
  publish: {{endpoint: "tcp://127.0.0.1:{port}"}}
"""


def run(out: Path, name: str, yaml: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "avstream.engine.cli", "run", str(yaml), "--quiet",
                             "--jsonl", str(out / f"{name}.jsonl"), "--status-json", str(out / f"{name}.status.jsonl"),
                             *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(out: Path, name: str, proc: subprocess.Popen[str], timeout: float = 150) -> None:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    (out / f"{name}.result.json").write_text(json.dumps({"rc": proc.returncode, "stderr": err}))


def jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def main() -> int:
    out = Path(sys.argv[1])
    address = os.environ["RAY_ADDRESS"]
    short, long = out / "short.yaml", out / "long.yaml"
    short.write_text(PIPELINE.format(seconds=30, port=5611))
    long.write_text(PIPELINE.format(seconds=600, port=5612))

    finish(out, "local", run(out, "local", short, "--backend", "local"))
    finish(out, "ray", run(out, "ray", short, "--backend", "ray", "--address", address))

    proc = run(out, "killed", long, "--address", address)
    killed: dict[str, object] = {}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None and not killed:
        lines, status = jsonl(out / "killed.jsonl"), jsonl(out / "killed.status.jsonl")
        if len(lines) >= 20 and status and status[-1].get("placement"):
            actor_pid = int(status[-1]["placement"]["score"]["actor_pid"])
            os.kill(actor_pid, signal.SIGKILL)  # the actor's process: Ray restarts the actor
            killed = {"actor_pid": actor_pid, "at": time.time()}
        time.sleep(0.1)
    (out / "killed.kill.json").write_text(json.dumps(killed))
    while killed and time.monotonic() < deadline + 60 and proc.poll() is None:  # results after the restart
        lines = jsonl(out / "killed.jsonl")
        back = [i for i, m in enumerate(lines) if m.get("name") == "node_restarted"]
        if back and sum(1 for m in lines[back[0]:] if m["kind"] == "highlight") >= 20:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    finish(out, "killed", proc, timeout=60)

    bad = out / "bad.yaml"
    bad.write_text(PIPELINE.format(seconds=5, port=5613).replace("{head_host: 1, num_cpus: 0.5}", "{gpu_host: 1}"))
    finish(out, "unknown_resource", run(out, "unknown_resource", bad))
    finish(out, "unreachable", run(out, "unreachable", short, "--address", "127.0.0.1:9"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
