"""Starting worker processes.

At start-up the supervisor has already imported what every worker needs (numpy, ZeroMQ, pydantic,
the plugins) to validate the pipeline, so the first workers are plain forks of it, made before it
opens any ZeroMQ socket: milliseconds each instead of a fresh interpreter (~0.3 s of CPU per
worker), with the inherited pages shared (``engine/runtime/memory.py``). What only some workers use
(PyAV, ONNX Runtime, OpenCV) is imported by those workers: mapped where it runs, not everywhere. Later restarts, when the supervisor's sockets exist, start a fresh interpreter
(``python -m avstream.engine.runtime.worker``), which shares nothing with the supervisor's ZeroMQ state.
Either way a worker names itself ``avs:<process>`` (``ps -o comm``, ``top``).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
from typing import Any

from avstream.engine.runtime.memory import before_fork


def _forked_entry(argv: list[str]) -> None:
    from avstream.engine.runtime.worker import main

    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no interpreter clean-up: the supervisor's inherited objects are not ours


class Child:
    """One worker process, with the subset of the Popen interface the supervisor uses."""

    def __init__(self, argv: list[str], fork: bool):
        self.proc: Any
        if fork:
            before_fork()
            self.proc = multiprocessing.get_context("fork").Process(target=_forked_entry, args=(argv,), daemon=False)
            self.proc.start()
            self.pid: int = self.proc.pid or 0
        else:
            self.proc = subprocess.Popen([sys.executable, "-m", "avstream.engine.runtime.worker", *argv], stdin=subprocess.DEVNULL)
            self.pid = self.proc.pid

    def poll(self) -> int | None:
        if isinstance(self.proc, subprocess.Popen):
            return self.proc.poll()
        return None if self.proc.is_alive() else self.proc.exitcode

    def send_signal(self, signum: int) -> None:
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int | None:
        if isinstance(self.proc, subprocess.Popen):
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
        self.proc.join(timeout)
        return self.proc.exitcode
