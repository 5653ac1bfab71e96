"""Cross-stream dynamic batching for consumer nodes.

A node that declares ``batch_limits() -> (max_batch, max_wait_s) | None`` and implements
``process_batch(items) -> Iterable[Item]`` gets its data items in batches: after the first item the
worker drains up to ``max_batch`` items from its inbox, waiting at most ``max_wait_s`` for more, and
calls ``process_batch`` once. Items keep their arrival order (so each stream's order is kept), and a
control item (an ``Event`` or ``EndOfStream``) ends the batch early: the batch is processed first and
the control item after it, exactly as without batching.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from avstream.engine.items import EndOfStream, Event, Item


def is_control(item: Item) -> bool:
    """Items that the worker handles itself and that must not be reordered with data."""
    return isinstance(item, (Event, EndOfStream))


class Batching:
    """How a node batches: its ``process_batch``, ``max_batch`` and the wait of the next batch.

    ``max_wait_s`` is read when a batch starts. A node with ``batch_wait_s()`` may shorten it (e.g.
    wait only for streams whose next window is due within the limit); it never exceeds the limit.
    """

    def __init__(self, process: Callable[[list[Item]], Iterable[Item]], max_batch: int, max_wait_s: float,
                 wait_fn: Callable[[], float] | None = None):
        self.process = process
        self.max_batch = max_batch
        self.limit_s = max_wait_s
        self.wait_fn = wait_fn

    @property
    def max_wait_s(self) -> float:
        if self.wait_fn is None:
            return self.limit_s
        return min(self.limit_s, max(0.0, float(self.wait_fn())))


def batch_limits(node: Any) -> Batching | None:
    """The node's batching when it declares one with ``max_batch > 1``, else None (one by one)."""
    fn = getattr(node, "batch_limits", None)
    process = getattr(node, "process_batch", None)
    if not callable(fn) or not callable(process):
        return None
    limits = fn()
    if limits is None or int(limits[0]) <= 1:
        return None
    wait_fn = getattr(node, "batch_wait_s", None)
    return Batching(process, int(limits[0]), max(0.0, float(limits[1])), wait_fn if callable(wait_fn) else None)


def collect_batch(
    get: Callable[[float], Item | None],
    first: Item,
    max_batch: int,
    max_wait_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[list[Item], Item | None]:
    """``first`` plus up to ``max_batch - 1`` more data items from ``get(timeout)``.

    Waits at most ``max_wait_s`` after the first item; items already queued when the wait is over are
    still taken (``get(0)``). Returns the batch and the control item that cut it short, if any (the
    caller handles it after the batch).
    """
    batch = [first]
    deadline = clock() + max_wait_s
    while len(batch) < max_batch:
        item = get(max(0.0, deadline - clock()))
        if item is None:
            break
        if is_control(item):
            return batch, item
        batch.append(item)
    return batch, None
