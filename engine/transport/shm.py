"""Shared-memory frame ring: video frames cross processes without a copy on the socket.

A ring is one file in ``/dev/shm`` with a small header and ``slots`` equal slots. The writer copies a
frame into a free slot and sends only a descriptor (ring name, slot, generation, shape) on the
socket. Each reader (one per consuming edge) owns one flag byte per slot: the writer sets the flags
of the readers it sends the frame to when it fills the slot, a reader clears its own flag when it
releases the frame. Every byte has
a single writer at a time, so no cross-process lock is needed.

A slot is reused only when every reader's flag is clear, or when it has been held longer than
``stale_after_s`` (a reader that died or hangs): the writer then reclaims it and bumps its
generation, and a reader that later sees a changed generation drops the frame as stale.
"""

from __future__ import annotations

import math
import mmap
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from avstream.engine.transport.wire import WireError, check_shape

HEADER_ALIGN = 4096
RING_NAME = re.compile(r"^[^/\x00]{1,250}\.ring$")  # a file name of this folder, never a path
MAX_SLOTS = 1 << 16
MAX_READERS = 1 << 12
MAX_SLOT_BYTES = 1 << 34


def check_descriptor(desc: Any, reader: int) -> None:
    """Raise WireError unless ``desc`` is a descriptor :meth:`FrameRing.write` could have made for a
    ring this reader (index ``reader``) has a flag in: a name inside the ring folder, a slot inside
    the ring, and a frame that fits its slot."""
    if not isinstance(desc, dict):
        raise WireError("shared-memory descriptor is not an object")
    raw = {k: desc.get(k) for k in ("slots", "readers", "slot_bytes", "slot", "gen")}
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in raw.values()):
        raise WireError(f"bad shared-memory descriptor numbers {raw!r}")
    ints: dict[str, int] = {k: int(v) for k, v in raw.items() if v is not None}
    name = desc.get("ring")
    if not isinstance(name, str) or not RING_NAME.match(name) or name.startswith("."):
        raise WireError(f"bad ring name {name!r:.80}")
    if not (0 < ints["slots"] <= MAX_SLOTS and 0 < ints["readers"] <= MAX_READERS
            and 0 < ints["slot_bytes"] <= MAX_SLOT_BYTES):
        raise WireError(f"absurd ring layout {ints!r}")
    if not ints["slot"] < ints["slots"] or not reader < ints["readers"]:
        raise WireError(f"slot {ints['slot']} / reader {reader} outside a ring of {ints['slots']} x {ints['readers']}")
    dtype = desc.get("dtype")
    if dtype != "|u1":  # the rings carry video frames: uint8 only
        raise WireError(f"bad frame dtype {dtype!r:.40} in a ring")
    shape = check_shape(desc.get("shape"))
    if len(shape) != 3 or math.prod(shape) > ints["slot_bytes"]:
        raise WireError(f"frame {list(shape)} does not fit a {ints['slot_bytes']}-byte slot")


def _layout(slots: int, readers: int) -> tuple[int, int, int]:
    """Offsets of (generations, publish times, flags) and the data start."""
    gens = 0
    times = gens + 8 * slots
    flags = times + 8 * slots
    data = flags + slots * max(readers, 1)
    return times, flags, (data + HEADER_ALIGN - 1) // HEADER_ALIGN * HEADER_ALIGN


class _Mapped:
    def __init__(self, path: Path, slots: int, readers: int, slot_bytes: int, create: bool):
        self.path = path
        self.slots, self.readers, self.slot_bytes = slots, readers, slot_bytes
        times_off, flags_off, self.data_off = _layout(slots, readers)
        size = self.data_off + slots * slot_bytes
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, size)
            self.mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.gens = np.ndarray((slots,), np.uint64, self.mm, 0)
        self.times = np.ndarray((slots,), np.float64, self.mm, times_off)
        self.flags = np.ndarray((slots, max(readers, 1)), np.uint8, self.mm, flags_off)

    def view(self, slot: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        return np.ndarray(shape, np.dtype(dtype), self.mm, self.data_off + slot * self.slot_bytes)


class FrameRing:
    """Writer side of a ring. Grows into a new ring file when a larger frame arrives."""

    def __init__(self, folder: Path, name: str, readers: int, slots: int = 12, stale_after_s: float = 5.0):
        self.folder, self.name, self.readers = folder, name, readers
        self.slots, self.stale_after_s = slots, stale_after_s
        self.ring: _Mapped | None = None
        self.generation = 0
        self.stale_reclaims = 0
        self.full_waits = 0

    def _open(self, nbytes: int) -> _Mapped:
        if self.ring is not None and nbytes <= self.ring.slot_bytes:
            return self.ring
        old = self.ring
        self.generation += 1
        # The pid keeps a restarted writer off the rings its killed predecessor left behind.
        path = self.folder / f"{self.name}.{os.getpid()}.{self.generation}.ring"
        self.ring = _Mapped(path, self.slots, self.readers, max(nbytes, 1), create=True)
        if old is not None:  # readers keep their mappings; the name just goes away
            old.path.unlink(missing_ok=True)
        return self.ring

    def acquire(self, nbytes: int, stop: float | None = None) -> tuple[_Mapped, int]:
        """A free slot; waits while all are held, reclaiming one held past ``stale_after_s``."""
        ring = self._open(nbytes)
        started = time.monotonic()
        delay = 0.0002
        while True:
            # Lowest free slot first: with a fast reader the same few slots stay in the CPU cache.
            free = np.flatnonzero(~ring.flags.any(axis=1))
            if len(free):
                return ring, int(free[0])
            if time.monotonic() - started > self.stale_after_s:
                slot = int(np.argmin(ring.times))
                self.stale_reclaims += 1
                ring.gens[slot] += 1  # readers still holding it see the change and drop it
                ring.flags[slot, :] = 0
                return ring, slot
            self.full_waits += 1
            time.sleep(delay)
            delay = min(delay * 2, 0.005)

    def write(self, image: np.ndarray, readers: Sequence[int] | None = None) -> dict[str, Any]:
        """Copy ``image`` into a slot and return its descriptor for the socket.

        ``readers``: the readers that get this frame (default: all). Only their flags are set, so a
        reader that is not sent the frame never holds its slot.
        """
        image = np.ascontiguousarray(image)
        ring, slot = self.acquire(image.nbytes)
        ring.gens[slot] += 1
        ring.view(slot, image.shape, image.dtype.str)[...] = image
        ring.times[slot] = time.monotonic()
        if readers is None:
            ring.flags[slot, :] = 1
        else:
            ring.flags[slot, list(readers)] = 1  # the slot was free: every other flag is clear
        return {
            "ring": ring.path.name, "slots": ring.slots, "readers": ring.readers, "slot_bytes": ring.slot_bytes,
            "slot": slot, "gen": int(ring.gens[slot]), "shape": list(image.shape), "dtype": image.dtype.str,
        }

    def close(self) -> None:
        if self.ring is not None:
            self.ring.path.unlink(missing_ok=True)
            self.ring = None


class RingReader:
    """Reader side: maps rings by name on first use and hands out zero-copy views."""

    def __init__(self, folder: Path, reader: int):
        self.folder = folder
        self.reader = reader
        self.rings: dict[str, _Mapped] = {}
        self.stale = 0

    def _ring(self, desc: dict[str, Any]) -> _Mapped | None:
        check_descriptor(desc, self.reader)
        name = str(desc["ring"])
        ring = self.rings.get(name)
        if ring is None:
            try:
                ring = _Mapped(self.folder / name, int(desc["slots"]), int(desc["readers"]),
                               int(desc["slot_bytes"]), create=False)
            except FileNotFoundError:  # the writer grew past this ring before we mapped it
                return None
            except (OSError, ValueError) as exc:  # not a ring file, or smaller than the layout says
                raise WireError(f"cannot map ring {name}: {exc}") from exc
            self.rings[name] = ring
        elif (ring.slots, ring.readers, ring.slot_bytes) != (desc["slots"], desc["readers"], desc["slot_bytes"]):
            raise WireError(f"descriptor does not match the layout of ring {name}")
        return ring

    def view(self, desc: dict[str, Any]) -> tuple[np.ndarray, int] | None:
        """The frame as a numpy view and its slot, or None when the slot was reclaimed (or its ring
        replaced by a larger one before this reader first mapped it)."""
        ring = self._ring(desc)
        if ring is None:
            self.stale += 1
            return None
        slot = int(desc["slot"])
        if int(ring.gens[slot]) != int(desc["gen"]):
            self.stale += 1
            return None
        shape = tuple(int(x) for x in desc["shape"])
        return ring.view(slot, shape, str(desc["dtype"])), slot

    def still_valid(self, desc: dict[str, Any]) -> bool:
        ring = self.rings.get(str(desc["ring"]))
        return ring is not None and int(ring.gens[int(desc["slot"])]) == int(desc["gen"])  # desc checked on view

    def release(self, desc: dict[str, Any]) -> None:
        """Clear this reader's flag on the descriptor's slot (unless it was reclaimed meanwhile)."""
        ring = self._ring(desc)
        slot = int(desc["slot"])
        if ring is not None and int(ring.gens[slot]) == int(desc["gen"]):
            ring.flags[slot, self.reader] = 0
