"""How the benchmarks start the commands they measure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child_env() -> dict[str, str]:
    """The children's environment with bytecode caching on: an installed avstream has its .pyc files,
    while a checkout run under PYTHONDONTWRITEBYTECODE would compile every module at each start
    (about 0.3 s of CPU per run, counted against the engine)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def cache_bytecode(pipeline: str, clip: Path) -> None:
    """Import every module a run of ``pipeline`` needs once, untimed, so that their bytecode is cached."""
    subprocess.run([sys.executable, "-m", "avstream.engine.cli", "validate", pipeline, "--input", str(clip)],
                   cwd=REPO, env=child_env(), capture_output=True, check=True)
    subprocess.run([sys.executable, "-c", "import av, numpy, onnxruntime"], cwd=REPO, env=child_env(), check=True)
