"""Private local transport (SPEC §9): another local user can neither connect to a run's ipc sockets
nor map its shared-memory rings.

A real run is started; its ipc socket files must be 0600 in a 0700 run folder, its ring folder
``/dev/shm/avstream-<id>`` 0700 with rings 0600. Then a user made by the test (``useradd``) tries, in
a forked child that dropped to that user's uid, to connect to every socket (a raw ``AF_UNIX``
connect, which is what ZeroMQ's ipc transport does) and to open and map every ring: each attempt must
fail with a permission error. The folders are then opened to that user for traversal only (0711), so
the files' own modes are tested too, not just their folders'.
"""

from __future__ import annotations

import json
import mmap
import os
import secrets
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.helpers import Subscriber, start_run, stop

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def other_user() -> Iterator[tuple[int, int]]:
    """(uid, gid) of an unprivileged user that exists for this test only."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a second user")
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        pytest.skip("useradd/userdel not installed")
    name = f"avsprobe{secrets.token_hex(3)}"
    made = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"useradd failed: {made.stderr.strip()}")
    try:
        import pwd

        entry = pwd.getpwnam(name)
        yield entry.pw_uid, entry.pw_gid
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def as_user(uid: int, gid: int, sockets: list[Path], rings: list[Path]) -> dict[str, str]:
    """Try every socket and ring as ``uid`` in a forked child; what happened to each, by path."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root for good, try, report, exit without running any clean-up
        outcome: dict[str, str] = {}
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            for path in sockets:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(str(path))
                    outcome[str(path)] = "connected"
                except OSError as exc:
                    outcome[str(path)] = type(exc).__name__
                finally:
                    sock.close()
            for path in rings:
                try:
                    fd = os.open(path, os.O_RDWR)
                    try:
                        mmap.mmap(fd, 4096).close()
                        outcome[str(path)] = "mapped"
                    finally:
                        os.close(fd)
                except OSError as exc:
                    outcome[str(path)] = type(exc).__name__
            os.write(write_fd, json.dumps(outcome).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return dict(json.loads(data))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def find_run_dir(name: str, timeout: float = 30) -> Path:
    """The run's private folder (``avs-*`` in the temp folder): the one whose spec names ``name``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for spec in Path("/tmp").glob("avs-*/spec.json"):
            try:
                if json.loads(spec.read_text()).get("name") == name:
                    return spec.parent
            except (OSError, ValueError):
                continue
        time.sleep(0.2)
    raise LookupError(name)


def test_ipc_sockets_and_rings_are_private_to_the_run_owner(port: int, tmp_path: Path,
                                                            other_user: tuple[int, int]) -> None:
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm")
    uid, gid = other_user
    name = f"perm{secrets.token_hex(4)}"
    status = tmp_path / "status.jsonl"
    endpoint = f"tcp://127.0.0.1:{port}"
    sub = Subscriber(endpoint, "highlight.")
    old_umask = os.umask(0o022)  # the usual umask: what made the files 0755 before
    try:
        run = start_run("highlight", "--input", "synthetic://scene?seed=8&duration=60", "--publish", endpoint,
                        "--set", f"name={name}", "--status-json", str(status), "--quiet")
    finally:
        os.umask(old_umask)
    try:
        sub.until(lambda m: m["header"]["kind"] == "highlight", timeout=60)  # frames have crossed the rings
        run_id = json.loads(status.read_text().splitlines()[-1])["run_id"]
        run_dir = find_run_dir(name)
        ring_dir = Path(f"/dev/shm/avstream-{run_id}")
        sockets = sorted(p for p in run_dir.iterdir() if stat.S_ISSOCK(p.lstat().st_mode))
        rings = sorted(ring_dir.glob("*.ring"))
        assert {"control", "results"} <= {p.name for p in sockets} and len(sockets) >= 4, sockets
        assert rings, list(ring_dir.iterdir())
        assert mode(run_dir) == 0o700 and mode(ring_dir) == 0o700
        assert {p.name: oct(mode(p)) for p in sockets} == {p.name: "0o600" for p in sockets}
        assert {p.name: oct(mode(p)) for p in rings} == {p.name: "0o600" for p in rings}

        # The owner can connect and map: the probe itself works.
        assert set(as_user(os.getuid(), os.getgid(), sockets[:1], rings[:1]).values()) == {"connected", "mapped"}
        # Another user, with the folders as the run made them.
        refused = as_user(uid, gid, sockets, rings)
        assert set(refused.values()) == {"PermissionError"}, refused
        # Another user allowed through the folders: the files' own modes still refuse.
        for folder in (run_dir, ring_dir):
            os.chmod(folder, 0o711)
        try:
            refused = as_user(uid, gid, sockets, rings)
        finally:
            for folder in (run_dir, ring_dir):
                os.chmod(folder, 0o700)
        assert set(refused.values()) == {"PermissionError"}, refused
        assert run.poll() is None
    finally:
        sub.close()
        _, err = stop(run)
    assert run.returncode == 0, err
