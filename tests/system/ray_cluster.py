"""A two-node local Ray cluster, all on 127.0.0.1, for tests/system/test_ray_backend.py.

    python ray_cluster.py OUT_DIR -- COMMAND...
starts a head node (1 CPU, 150 MB object store, no dashboard) and a second node that joins it with
other resources (``camera_host: 1``), writes ``cluster.json`` (the address and each Ray node's id and
resources) into OUT_DIR, runs COMMAND with ``RAY_ADDRESS`` set, and stops the cluster whatever
happens (``ray stop --force``). Its exit code is COMMAND's. Meant to run inside a private network
namespace with only loopback (Ray listens on every interface it finds).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ray(*args: str, env: dict[str, str]) -> None:
    subprocess.run([str(BIN / "ray"), *args], check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=120)


def main() -> int:
    out = Path(sys.argv[1])
    command = sys.argv[sys.argv.index("--") + 1:]
    port = free_port()
    tmp = out / "ray"  # Ray's session folder, private to this test
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_DISABLE_IMPORT_WARNING="1")
    common = ["--node-ip-address=127.0.0.1", "--object-store-memory=150000000", "--disable-usage-stats"]
    try:
        ray("start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
            f"--temp-dir={tmp}", "--resources={\"head_host\": 4}", *common, env=env)
        ray("start", f"--address=127.0.0.1:{port}", "--num-cpus=1", "--resources={\"camera_host\": 1}", *common,
            env=env)
        address = f"127.0.0.1:{port}"
        nodes = subprocess.run([sys.executable, "-c", (
            f"import json, ray; ray.init(address={address!r}, _node_ip_address='127.0.0.1', log_to_driver=False, "
            "include_dashboard=False); print(json.dumps([{'id': n['NodeID'], 'resources': n['Resources']} "
            "for n in ray.nodes() if n['Alive']]))")], check=True, capture_output=True, text=True,
            env=env, timeout=120).stdout.strip().splitlines()[-1]
        (out / "cluster.json").write_text(json.dumps({"address": address, "nodes": json.loads(nodes)}))
        return subprocess.run(command, env=dict(env, RAY_ADDRESS=address)).returncode
    except subprocess.CalledProcessError as exc:
        print(f"ray_cluster: {exc.cmd[:3]} failed: {exc.stderr}", file=sys.stderr)
        return 3
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=120)


if __name__ == "__main__":
    sys.exit(main())
