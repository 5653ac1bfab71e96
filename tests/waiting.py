"""Waiting for something a real process or server does: poll until true, fail with what was awaited."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(check: Callable[[], Any], what: str, timeout: float = 60.0, every: float = 0.1,
               detail: Callable[[], Any] | None = None) -> Any:
    """``check()``'s first truthy value; AssertionError naming ``what`` (and ``detail()``) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            extra = f"; got {detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        time.sleep(every)
