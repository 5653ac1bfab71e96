"""Coverage-guided fuzzing (atheris) of the message decoders: data-plane messages, ring descriptors
and control messages, built from the fuzzer's bytes. Any exception but the decoders' own error types
is a crash that atheris reports (and exits non-zero for).

    python tests/engine/wire_atheris.py -runs=20000 [-max_total_time=30]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import atheris
import numpy as np

from avstream.engine.items import AudioChunk, Event, Item, Result, VideoFrame
from avstream.engine.runtime.control import ControlError, parse_control
from avstream.engine.transport.shm import FrameRing, RingReader
from avstream.engine.transport.wire import WireError, encode, parse

RING_DIR = Path(tempfile.mkdtemp(prefix="avs-fuzz-"))
RING = FrameRing(RING_DIR, "src", readers=1, slots=2)
REAL_DESC = RING.write(np.zeros((4, 4, 3), np.uint8))
READER = RingReader(RING_DIR, 0)
# real messages whose header fields the fuzzer replaces (so it reaches past the JSON parser)
SEED_ITEMS: list[tuple[Item, dict[str, Any] | None]] = [
    (VideoFrame("s", 1.0, 2.0, np.zeros((2, 2, 3), np.uint8)), None),
    (VideoFrame("s", 1.0, 2.0, np.zeros((4, 4, 3), np.uint8)), REAL_DESC),
    (AudioChunk("s", 0.0, 1.0, np.zeros(8, np.float32), 16000), None),
    (Result("k", "s", 0.0, 1.0, 1.0, "m@1", {"score": 0.5}, {"h": np.zeros((2, 2), np.float16)}), None),
    (Event("x", "s", {"a": 1}), None),
]
SEEDS = [[bytes(memoryview(f)) for f in encode(item, desc)] for item, desc in SEED_ITEMS]


def fuzzed_value(fdp: atheris.FuzzedDataProvider) -> object:
    kind = fdp.ConsumeIntInRange(0, 6)
    if kind == 0:
        return fdp.ConsumeInt(8)
    if kind == 1:
        return fdp.ConsumeRegularFloat()
    if kind == 2:
        return fdp.ConsumeUnicodeNoSurrogates(12)
    if kind == 3:
        return [fdp.ConsumeInt(6) for _ in range(fdp.ConsumeIntInRange(0, 5))]
    if kind == 4:
        return {fdp.ConsumeUnicodeNoSurrogates(6): fdp.ConsumeInt(4)}
    if kind == 5:
        return None
    return fdp.ConsumeBool()


def mutated_seed(fdp: atheris.FuzzedDataProvider) -> list[bytes]:
    frames = list(SEEDS[fdp.ConsumeIntInRange(0, len(SEEDS) - 1)])
    header = json.loads(frames[0])
    for _ in range(fdp.ConsumeIntInRange(1, 3)):
        target = header
        arrays = header.get("arrays")
        if fdp.ConsumeBool() and isinstance(arrays, list) and arrays and isinstance(arrays[0], dict):
            target = arrays[0]
        elif fdp.ConsumeBool() and isinstance(header.get("shm"), dict):
            target = header["shm"]
        keys = sorted(target) + ["extra"]
        target[keys[fdp.ConsumeIntInRange(0, len(keys) - 1)]] = fuzzed_value(fdp)
    frames[0] = json.dumps(header).encode()
    if fdp.ConsumeBool() and len(frames) > 1:
        frames[1] = frames[1][: fdp.ConsumeIntInRange(0, len(frames[1]))]
    return frames


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    what = fdp.ConsumeIntInRange(0, 3)
    if what <= 1:  # a data-plane message: a real one changed, or raw frames
        if what == 0:
            frames = mutated_seed(fdp)
        else:
            frames = [fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512)) for _ in range(fdp.ConsumeIntInRange(0, 4))]
        try:
            msg = parse(frames)
            if msg.shm is not None:
                got = READER.view(msg.shm)
                if got is not None:
                    READER.release(msg.shm)
        except WireError:
            pass
    elif what == 2:  # a shared-memory descriptor as JSON
        try:
            desc = json.loads(fdp.ConsumeUnicodeNoSurrogates(256))
        except ValueError:
            return
        try:
            READER.view(desc)
        except WireError:
            pass
    else:
        frames = [fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256)) for _ in range(fdp.ConsumeIntInRange(0, 3))]
        try:
            parse_control(frames)
        except ControlError:
            pass


if __name__ == "__main__":
    atheris.instrument_all()
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
