"""systemd readiness (``Type=notify``): datagrams to ``$NOTIFY_SOCKET``, no dependency."""

from __future__ import annotations

import os
import socket


def sd_notify(state: str) -> bool:
    """Send ``state`` (e.g. ``READY=1``) to systemd; False when not run under a notify unit."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)  # a reader that stopped reading must never stall the service
            sock.connect(address)
            sock.send(state.encode())
    except OSError:
        return False
    return True
