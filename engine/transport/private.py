"""Private local transport: ``ipc://`` socket files 0600 and shared-memory folders 0700 (SPEC §9).

ZeroMQ creates an ipc socket file with the process umask (usually 0755), and ``mkdir`` follows the
umask too, so both are set explicitly: the umask is tightened around ``bind`` (no moment where the
file is open to others) and the mode is set again afterwards (whatever the umask was).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import zmq

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
IPC_PREFIX = "ipc://"

# The umask is per process: edge threads bind concurrently, so they take turns changing it.
_umask_lock = threading.Lock()


def ipc_path(endpoint: str) -> Path | None:
    """The socket file of an ``ipc://`` endpoint (None for other transports and abstract sockets)."""
    if not endpoint.startswith(IPC_PREFIX):
        return None
    rest = endpoint[len(IPC_PREFIX):]
    if not rest or rest.startswith("@"):  # Linux abstract namespace: no file to protect
        return None
    return Path(rest)


def bind_private(sock: zmq.Socket[Any], endpoint: str) -> None:
    """``sock.bind(endpoint)``; an ipc socket file is left readable and writable by its owner only."""
    path = ipc_path(endpoint)
    if path is None:
        sock.bind(endpoint)
        return
    with _umask_lock:
        old = os.umask(0o077)
        try:
            sock.bind(endpoint)
        finally:
            os.umask(old)
    os.chmod(path, PRIVATE_FILE_MODE)


def make_private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) with mode 0700; an existing folder is set to 0700."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_DIR_MODE)
    return path
