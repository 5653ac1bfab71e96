"""Run ``avstream run ...`` as a child process and collect what it publishes, for the exporter tests
that check an exported model end to end in a real pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import zmq

Message = tuple[dict[str, Any], list[np.ndarray]]


def receive_results(endpoint: str, run: subprocess.Popen[str], kind: str) -> list[Message]:
    """Every ``kind`` message on the PUB socket until the run ends: (header, decoded payloads)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, f"{kind}.".encode())
    sock.connect(endpoint)
    got: list[Message] = []
    try:
        while True:
            if not sock.poll(500):
                if run.poll() is not None:
                    return got
                continue
            _, header_bytes, *frames = sock.recv_multipart()
            header = json.loads(header_bytes)
            got.append((header, [np.frombuffer(f, dtype=p["dtype"]).reshape(p["shape"])
                                 for f, p in zip(frames, header["payloads"], strict=True)]))
    finally:
        sock.close(0)
        ctx.term()


def run_and_receive(args: list[str], endpoint: str, kind: str, *, cwd: Path | None = None,
                    env: dict[str, str] | None = None, timeout: float = 120) -> tuple[list[Message], str]:
    """``avstream run ARGS`` until it ends; its ``kind`` results and its stderr. Fails on a non-zero exit."""
    run = subprocess.Popen([sys.executable, "-m", "avstream.engine.cli", "run", *args], cwd=cwd,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=dict(os.environ, **(env or {})))
    try:
        got = receive_results(endpoint, run, kind)
        _, err = run.communicate(timeout=timeout)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, err
    return got, err
