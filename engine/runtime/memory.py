"""Process-wide memory settings of the supervisor and its workers (measured with bench/monitor.py).

- Before forking a worker, the supervisor freezes the garbage collector's view of every object it
  has (``gc.freeze``): the worker inherits those objects (modules, node types, the pipeline) on
  pages shared with the supervisor, and a collection in either process would otherwise write to each
  object's header and so copy every page. The monitor pipeline: 7 MB less PSS over its processes.
- glibc gives each thread that allocates its own malloc arena (up to 8 per core); a worker runs a
  thread per node and per input edge, each arena keeping freed memory of its own. Two arenas per
  process: 3 MB less PSS for the monitor pipeline, no measurable CPU cost.
- glibc serves blocks over its mmap threshold with their own mapping, returned to the system on
  free, but raises that threshold to the size of each such block freed, up to 32 MB. A worker's
  large blocks (stacked window frames, model inputs and outputs, received buffers) then come from
  the heap, where blocks of slowly varying sizes fragment it and the process grows over hours. A
  fixed threshold keeps them mapped (docs/reliability.md, soak).
"""

from __future__ import annotations

import ctypes
import gc

MALLOC_ARENAS = 2
MMAP_THRESHOLD = 256 * 1024  # bytes: blocks this large get a mapping of their own
_M_ARENA_MAX = -8  # glibc's mallopt parameters
_M_MMAP_THRESHOLD = -3


def _mallopt(param: int, value: int) -> bool:
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(param, value))
    except (OSError, AttributeError):  # not glibc (musl, macOS): its allocator has no such knob
        return False


def tune_malloc(arenas: int = MALLOC_ARENAS) -> bool:
    """glibc's malloc settings of this process (and of the processes it forks): at most ``arenas``
    arenas, and a fixed mmap threshold (see the module docstring). False off glibc."""
    return _mallopt(_M_ARENA_MAX, arenas) and _mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def before_fork() -> None:
    """Keep what a forked worker inherits on shared pages (see the module docstring)."""
    tune_malloc()
    gc.freeze()
