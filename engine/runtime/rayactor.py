"""The Ray actor that hosts one process group (``avstream run --backend ray``, docs/ray.md).

Ray places the actor by the resources its nodes declare; the actor starts the group's ordinary
worker process (``python -m avstream.engine.runtime.worker``) on that host and reports where it runs.
The worker talks to the supervisor and to its neighbours over ZeroMQ as with the local backend. When
the actor's process dies Ray restarts it (``max_restarts``), and the supervisor starts the worker
in it again, announcing ``node_restarted`` as for a local restart. Nothing here imports ray at
module level: the class is wrapped with ``ray.remote`` by the driver.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from avstream.engine.transport.private import PRIVATE_FILE_MODE, make_private_dir


def free_ports(ip: str, count: int) -> list[int]:
    """Ports free on this host now, for the sockets a group binds (the OS picks them)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind((ip, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


class WorkerHost:
    """One process group's worker, on the Ray node the actor was placed on."""

    def __init__(self, run_dir: str, ring_dir: str):
        self.run_dir = make_private_dir(Path(run_dir))  # the same path on every host: ipc sockets, spec
        self.ring_dir = make_private_dir(Path(ring_dir))
        self.proc: subprocess.Popen[bytes] | None = None

    def where(self) -> dict[str, Any]:
        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address(),
                "host": socket.gethostname(), "actor_pid": os.getpid()}

    def free_ports(self, ip: str, count: int) -> list[int]:
        return free_ports(ip, count)

    def _write(self, name: str, text: str) -> str:
        path = self.run_dir / name
        tmp = path.with_name(f".{name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
        return str(path)

    def start(self, process: str, spec_json: str, keys_json: str, argv: list[str]) -> int:
        """Start the worker of ``process``; returns its pid (the supervisor checks its hello by it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        spec = self._write(f"spec-{process}.json", spec_json)
        keys = self._write(f"keys-{process}.json", keys_json)
        self.proc = subprocess.Popen([sys.executable, "-m", "avstream.engine.runtime.worker", "--spec", spec,
                                      "--edge-keys", keys, *argv, "--parent", str(os.getpid())],
                                     stdin=subprocess.DEVNULL)
        return self.proc.pid

    def wait(self) -> int:
        """Blocks until the worker exits; its exit code (negative: the signal that ended it)."""
        assert self.proc is not None
        return self.proc.wait()

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signum)
            except ProcessLookupError:
                pass

    def pid(self) -> int:
        """The actor's own process (what a test kills to have Ray restart the actor)."""
        return os.getpid()

    def stop(self) -> None:
        """Before the actor is killed: the worker goes with it."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
