"""Real processes for system tests: an ``avstream run`` and a subscriber, read without sleeps."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent


class LineReader:
    """Collects a child's stdout lines in a queue so tests can wait with a timeout."""

    def __init__(self, proc: subprocess.Popen[str]):
        self.proc = proc
        self.lines: queue.Queue[str] = queue.Queue()
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def next(self, timeout: float) -> str:
        return self.lines.get(timeout=timeout)


class Subscriber(LineReader):
    def __init__(self, endpoint: str, prefix: str = "", keys: list[str] | None = None,
                 wrap: list[str] | None = None):
        """``keys``: ``["--server-key", F, "--client-key", F]`` for CURVE; ``wrap``: a command prefix
        the subscriber runs under (``ip netns exec NAME``)."""
        proc = subprocess.Popen([*(wrap or []), sys.executable, str(HERE / "subscriber.py"), endpoint, prefix,
                                 *(keys or [])], stdout=subprocess.PIPE, text=True)
        super().__init__(proc)
        assert json.loads(self.next(20)) == {"ready": True}

    def message(self, timeout: float = 30) -> dict[str, Any]:
        return json.loads(self.next(timeout))

    def until(self, predicate: Any, timeout: float = 60) -> list[dict[str, Any]]:
        """Messages up to and including the first that satisfies ``predicate``."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            msg = self.message(max(0.1, deadline - time.monotonic()))
            got.append(msg)
            if predicate(msg):
                return got

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def start_run(*args: str, env: dict[str, str] | None = None, wrap: list[str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([*(wrap or []), sys.executable, "-m", "avstream.engine.cli", "run", *args],
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, **(env or {})))


def children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def worker_pid(supervisor_pid: int, process_name: str) -> int:
    """The worker running process group ``process_name`` (workers name themselves avs:<name>)."""
    for child in children(supervisor_pid):
        try:
            if child.name() == f"avs:{process_name}"[:15]:
                return child.pid
        except psutil.NoSuchProcess:
            continue
    raise LookupError(process_name)


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """The pids still alive after ``timeout`` (zombies count as gone)."""
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if alive:
            psutil.wait_procs([psutil.Process(p) for p in alive if psutil.pid_exists(p)], timeout=0.2)
    return alive


def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return out, err
