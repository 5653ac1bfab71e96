"""Shared-memory frame ring: zero-copy views, release by every reader, stale reclaim, growth."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avstream.engine.transport.shm import FrameRing, RingReader


def frame(value: int, shape: tuple[int, ...] = (4, 6, 3)) -> np.ndarray:
    return np.full(shape, value, np.uint8)


def test_reader_gets_a_view_not_a_copy(tmp_path: Path) -> None:
    ring = FrameRing(tmp_path, "n", readers=1, slots=2)
    desc = ring.write(frame(7))
    reader = RingReader(tmp_path, 0)
    got = reader.view(desc)
    assert got is not None
    view, slot = got
    assert view.base is not None and not view.flags.owndata
    assert (view == 7).all()
    ring.ring.view(slot, (4, 6, 3), "|u1")[0, 0, 0] = 9  # type: ignore[union-attr]
    assert view[0, 0, 0] == 9  # same memory


def test_slot_reused_only_after_every_reader_released(tmp_path: Path) -> None:
    ring = FrameRing(tmp_path, "n", readers=2, slots=2, stale_after_s=0.2)
    r0, r1 = RingReader(tmp_path, 0), RingReader(tmp_path, 1)
    d1 = ring.write(frame(1))
    d2 = ring.write(frame(2))
    assert d1["slot"] != d2["slot"]
    r0.release(d1)
    # reader 1 still holds slot of d1, reader 0 released: no free slot until r1 releases
    r1.view(d1)
    r1.release(d1)
    d3 = ring.write(frame(3))
    assert d3["slot"] == d1["slot"]
    assert ring.stale_reclaims == 0


def test_stale_reader_slot_is_reclaimed_and_detected(tmp_path: Path) -> None:
    ring = FrameRing(tmp_path, "n", readers=1, slots=1, stale_after_s=0.05)
    reader = RingReader(tmp_path, 0)
    d1 = ring.write(frame(1))
    assert reader.view(d1) is not None
    d2 = ring.write(frame(2))  # nobody released: reclaimed after stale_after_s
    assert ring.stale_reclaims == 1
    assert not reader.still_valid(d1)
    assert reader.view(d1) is None and reader.stale == 1
    got = reader.view(d2)
    assert got is not None and (got[0] == 2).all()


def test_ring_grows_for_larger_frames(tmp_path: Path) -> None:
    ring = FrameRing(tmp_path, "n", readers=1, slots=2)
    small = ring.write(frame(1, (2, 2, 3)))
    big = ring.write(frame(5, (720, 1280, 3)))
    assert big["ring"] != small["ring"]
    reader = RingReader(tmp_path, 0)
    got = reader.view(big)
    assert got is not None and got[0].shape == (720, 1280, 3) and (got[0] == 5).all()
    ring.close()
    assert not list(tmp_path.glob("*.ring"))


def test_a_reader_not_sent_a_frame_never_holds_its_slot(tmp_path: Path) -> None:
    ring = FrameRing(tmp_path, "n", readers=3, slots=2, stale_after_s=0.2)
    r0, r2 = RingReader(tmp_path, 0), RingReader(tmp_path, 2)
    big = ring.write(frame(1, (8, 8, 3)), readers=[0, 2])  # reader 1 is not sent this one
    assert ring.ring is not None and ring.ring.flags[big["slot"]].tolist() == [1, 0, 1]
    small = ring.write(frame(2), readers=[1])
    assert ring.ring.flags[small["slot"]].tolist() == [0, 1, 0]
    r0.release(big)
    r2.release(big)  # its readers are done: the slot is free, whatever reader 1 does
    again = ring.write(frame(3), readers=[1])
    assert again["slot"] == big["slot"] and ring.full_waits == 0 and ring.stale_reclaims == 0
