"""Shared fixtures: repository paths, the CLI in a subprocess or in this process, free TCP ports."""

from __future__ import annotations

import importlib.util
import inspect
import os
import socket
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from click.testing import Result as CliResult

from avstream.engine.items import Item, Result

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def bench_module(name: str) -> Any:
    """``bench/<name>.py`` imported as a module (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_h264_clip(path: Path, seconds: float = 4) -> Path:
    """``seconds`` of 320x240 25 fps H.264 (B-frames) with 48 kHz stereo AAC, made by the FFmpeg CLI."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", f"{seconds:g}", "-ac", "2",
                    "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    str(path)], check=True, timeout=60)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(*args: str, timeout: float = 60, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``avstream ARGS`` as a user would, in a child process."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "avstream.engine.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd)


def results(items: Iterable[Item]) -> list[Result]:
    """What a node made of its input, each item checked to be a Result."""
    got = list(items)
    out = [r for r in got if isinstance(r, Result)]
    assert len(out) == len(got), f"not only results: {got}"
    return out


def invoke_cli(*args: str) -> CliResult:
    """Run ``avstream ARGS`` in this process (no interpreter start-up): exit code, stdout and stderr."""
    from avstream.engine.cli import main

    # Click 8.1 mixes stderr into stdout unless told not to; 8.2 keeps them apart and has no such flag
    separate: dict[str, Any] = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner).parameters else {}
    return CliRunner(**separate).invoke(main, list(args), prog_name="avstream")


@pytest.fixture
def port() -> int:
    return free_port()
