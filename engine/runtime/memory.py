"""Process-wide memory settings of the supervisor and its workers (measured with bench/monitor.py).

- Before forking a worker, the supervisor freezes the garbage collector's view of every object it
  has (``gc.freeze``): the worker inherits those objects (modules, node types, the pipeline) on
  pages shared with the supervisor, and a collection in either process would otherwise write to each
  object's header and so copy every page. The monitor pipeline: 7 MB less PSS over its processes.
- glibc gives each thread that allocates its own malloc arena (up to 8 per core); a worker runs a
  thread per node and per input edge, each arena keeping freed memory of its own. Two arenas per
  process: 3 MB less PSS for the monitor pipeline, no measurable CPU cost.
"""

from __future__ import annotations

import ctypes
import gc

MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas of this process (and of the processes it forks); False off glibc."""
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # not glibc (musl, macOS): its allocator has no such knob
        return False


def before_fork() -> None:
    """Keep what a forked worker inherits on shared pages (see the module docstring)."""
    limit_malloc_arenas()
    gc.freeze()
