"""The FFmpeg CLI reader's child process: spawned without Python code in the child, and gone when the
thread that started it ends."""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest

from avstream.engine.capture.network import CliInput
from tests.live.servers import needs_ffmpeg


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for its wait() is gone too
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_ffmpeg_child_dies_with_the_thread_that_started_it() -> None:
    needs_ffmpeg()
    if shutil.which("setpriv") is None:
        pytest.skip("needs util-linux's setpriv (it gives FFmpeg the parent-death signal)")
    started: list[CliInput] = []
    def reader() -> None:  # a reader thread lives on while its FFmpeg runs; here for half a second
        started.append(CliInput("test", ["-re", "-f", "lavfi"], "testsrc=size=64x48:rate=5"))
        time.sleep(0.5)

    thread = threading.Thread(target=reader)
    thread.start()
    thread.join(10)
    child = started[0].proc
    try:
        deadline = time.monotonic() + 10
        while _alive(child.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child.pid), "FFmpeg outlived the thread that started it"
        assert child.wait(5) == -9  # SIGKILL, the parent-death signal
    finally:
        started[0].kill()


def test_ffmpeg_child_starts_while_other_threads_spawn_and_import() -> None:
    """Many readers started at once from many threads, as a serve with many network streams does: each
    child reaches exec. (A guard, not a reproduction: the hang a Python ``preexec_fn`` could cause, a
    child waiting on a lock another thread held at the fork, is too rare to provoke on demand.)"""
    needs_ffmpeg()
    inputs: list[CliInput] = []
    lock = threading.Lock()

    def start() -> None:
        for _ in range(5):
            cli = CliInput("test", ["-f", "lavfi"], "testsrc=size=64x48:rate=5:duration=0.2")
            with lock:
                inputs.append(cli)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert len(inputs) == 40 and not any(t.is_alive() for t in threads)
    finally:
        for cli in inputs:
            cli.kill()
