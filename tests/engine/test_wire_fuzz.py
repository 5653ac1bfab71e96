"""Fuzzing the message decoders: the data-plane wire format, shared-memory descriptors and the
supervisor's control messages. Whatever arrives, a decoder returns a value or raises its module's
own error type, never anything else, and never reads outside a ring."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avstream.engine.items import AudioChunk, AVWindow, Event, PreviewFrame, Result, StreamInfo, VideoFrame
from avstream.engine.runtime.control import ControlError, ControlGate, parse_control
from avstream.engine.transport.shm import FrameRing, RingReader
from avstream.engine.transport.wire import WireError, decode, encode, parse

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
FIELD_NAMES = ["type", "arrays", "shm", "to", "stream", "t", "wall", "image", "samples", "sample_rate", "frames",
               "audio", "kind", "t0", "t1", "capture_wall", "model", "fields", "payloads", "name", "detail",
               "jpeg", "width", "height", "has_video", "has_audio", "fps", "uri"]
TYPES = ["VideoFrame", "AudioChunk", "AVWindow", "Result", "Event", "EndOfStream", "StreamInfo", "PreviewFrame",
         "Nope", "__class__"]
array_specs = st.fixed_dictionaries(
    {},
    optional={
        "field": st.sampled_from(["image", "samples", "frames", "audio", "stream", "t"]),
        "payload": st.text(max_size=4),
        "bytes": st.sampled_from(["jpeg", "stream", "image"]),
        "dtype": st.sampled_from(["|u1", "<f4", "<f2", "<f8", "|O", "V8", "<U4", "[('a','<f4')]", "S3", "", "<i8",
                                  "float128", "?", "M8"]) | st.text(max_size=10),
        "shape": st.lists(st.integers(-3, 2**41), max_size=9) | json_values,
    },
)
headers = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | json_values},
    optional={
        "arrays": st.lists(array_specs | json_values, max_size=4) | json_values,
        "shm": json_values,
        "to": st.lists(st.integers(-2, 70000), max_size=3) | json_values,
        **{name: json_values for name in FIELD_NAMES[4:]},
    },
)
raw_frames = st.lists(st.binary(max_size=64), min_size=0, max_size=5)


def valid_messages() -> list[list[Any]]:
    items: list[Any] = [
        VideoFrame("cam0", 1.0, 2.0, np.zeros((4, 6, 3), np.uint8)),
        AudioChunk("cam0", 0.5, 2.0, np.zeros(32, np.float32), 16000),
        AVWindow("cam0", 0.0, 1.0, 2.0, np.zeros((2, 4, 4, 3), np.uint8), np.zeros(16, np.float32), 25.0, 16000),
        Result("highlight", "cam0", 0.0, 1.0, 2.0, "m@1", {"score": 0.5}, {"heatmap": np.zeros((2, 2), np.float16)}),
        Event("stream_down", "cam0", {"error": "x"}, 1.0, None),
        StreamInfo("cam0", True, True, 25.0, 6, 4, 16000, "synthetic://scene"),
        PreviewFrame("cam0", 1.0, 2.0, 6, 4, b"\xff\xd8"),
    ]
    return [[bytes(memoryview(f)) for f in encode(item)] for item in items]


def check_decodes_or_refuses(frames: list[Any]) -> None:
    try:
        decode(frames)
    except WireError:
        pass


@FUZZ
@given(header=headers, extra=raw_frames)
def test_structured_headers_decode_or_raise_wire_error(header: dict[str, Any], extra: list[bytes]) -> None:
    try:
        head = json.dumps(header).encode()
    except (ValueError, OverflowError):
        return
    check_decodes_or_refuses([head, *extra])


@FUZZ
@given(frames=raw_frames)
def test_random_frames_decode_or_raise_wire_error(frames: list[bytes]) -> None:
    check_decodes_or_refuses(frames)


@FUZZ
@given(which=st.integers(0, 6), data=st.data())
def test_mutated_valid_messages_decode_or_raise_wire_error(which: int, data: st.DataObject) -> None:
    """One byte, a frame or the frame count of a real message changed."""
    frames = valid_messages()[which]
    k = data.draw(st.integers(0, len(frames) - 1))
    how = data.draw(st.sampled_from(["flip", "truncate", "drop", "duplicate", "swap_header"]))
    if how == "flip" and frames[k]:
        pos = data.draw(st.integers(0, len(frames[k]) - 1))
        frames[k] = frames[k][:pos] + bytes([frames[k][pos] ^ data.draw(st.integers(1, 255))]) + frames[k][pos + 1:]
    elif how == "truncate":
        frames[k] = frames[k][: data.draw(st.integers(0, max(0, len(frames[k]) - 1)))]
    elif how == "drop":
        del frames[k]
    elif how == "duplicate":
        frames.insert(k, frames[k])
    else:
        header = json.loads(frames[0])
        key = data.draw(st.sampled_from(sorted(header)))
        header[key] = data.draw(json_values)
        try:
            frames[0] = json.dumps(header).encode()
        except (ValueError, OverflowError):
            return
    check_decodes_or_refuses(frames)


def test_valid_messages_still_round_trip() -> None:
    for frames in valid_messages():
        assert decode(frames) is not None


@pytest.mark.parametrize("frames, why", [
    ([b"{" * 100000], "not JSON"),  # nesting deep enough for a RecursionError
    ([b"[]"], "not a JSON object"),
    ([json.dumps({"type": "VideoFrame", "arrays": [], "stream": "s", "t": 0.0, "wall": 0.0}).encode()], "without"),
    ([json.dumps({"type": "AudioChunk", "stream": "s", "t": 0.0, "wall": 0.0, "sample_rate": 1,
                  "arrays": [{"field": "samples", "dtype": "<f4", "shape": [1000000]}]}).encode(), b"\0" * 16],
     "does not match"),  # a shape larger than its frame: would read past it
    ([json.dumps({"type": "Result", "kind": "k", "stream": "s", "t0": 0, "t1": 1, "capture_wall": 0, "model": "m",
                  "arrays": [{"payload": "p", "dtype": "|O", "shape": [1]}]}).encode(), b"\0" * 8], "numeric"),
    ([json.dumps({"type": "Event", "name": 3, "arrays": []}).encode()], "wrong type"),
    ([json.dumps({"type": "Event", "name": "x", "evil": 1, "arrays": []}).encode()], "no field"),
    ([json.dumps({"type": "EndOfStream", "stream": "s", "arrays": [], "t": float("nan")}).encode()], "no field"),
    ([json.dumps({"type": "VideoFrame", "stream": "s", "t": float("inf"), "wall": 0, "arrays": [],
                  "shm": {}}).encode()], "wrong type"),
])
def test_known_bad_messages_are_refused(frames: list[bytes], why: str) -> None:
    with pytest.raises(WireError, match=why):
        parse(frames)


# --- shared-memory descriptors ---

@pytest.fixture
def ring(tmp_path: Path) -> tuple[FrameRing, dict[str, Any]]:
    writer = FrameRing(tmp_path, "src", readers=2, slots=4)
    desc = writer.write(np.full((4, 6, 3), 7, np.uint8))
    return writer, desc


descriptor_changes = st.dictionaries(
    st.sampled_from(["ring", "slots", "readers", "slot_bytes", "slot", "gen", "shape", "dtype"]),
    st.integers(-(2**40), 2**40) | st.text(max_size=20) | st.sampled_from(["../x.ring", "/etc/passwd", "src.ring"])
    | st.lists(st.integers(-5, 2**33), max_size=5) | json_values,
    min_size=1, max_size=4,
)


@FUZZ
@given(change=descriptor_changes, reader=st.integers(0, 3))
def test_descriptors_view_inside_the_ring_or_raise_wire_error(ring: tuple[FrameRing, dict[str, Any]],
                                                             change: dict[str, Any], reader: int) -> None:
    writer, desc = ring
    assert writer.ring is not None
    reader_side = RingReader(writer.folder, reader)
    forged = {**desc, **change}
    try:
        got = reader_side.view(forged)
    except WireError:
        return
    if got is not None:
        view, slot = got
        start = view.__array_interface__["data"][0]
        base = np.frombuffer(reader_side.rings[forged["ring"]].mm, np.uint8)
        lo = base.__array_interface__["data"][0]
        assert lo <= start and start + view.nbytes <= lo + base.nbytes  # inside the mapping
        assert 0 <= slot < writer.ring.slots


def test_a_real_descriptor_still_maps(ring: tuple[FrameRing, dict[str, Any]]) -> None:
    writer, desc = ring
    got = RingReader(writer.folder, 1).view(desc)
    assert got is not None and int(got[0][0, 0, 0]) == 7


@pytest.mark.parametrize("change", [{"slot": 4}, {"readers": 1, "slots": 4}, {"ring": "../src.ring"},
                                    {"shape": [400, 600, 3]}, {"dtype": "<f8"}, {"slot_bytes": 1 << 40},
                                    {"gen": -1}, {"slot": True}])
def test_descriptors_outside_the_ring_are_refused(ring: tuple[FrameRing, dict[str, Any]], change: dict[str, Any]) -> None:
    writer, desc = ring
    with pytest.raises(WireError):
        RingReader(writer.folder, 1).view({**desc, **change})


# --- control messages ---

control_bodies = st.fixed_dictionaries(
    {},
    optional={"type": st.sampled_from(["hello", "status", "provider_fallback", "drained", "log", "error", "bye", "x"])
              | json_values, "process": st.sampled_from(["a", "b"]) | json_values, "pid": json_values,
              "nodes": json_values, "report": json_values, "level": json_values, "message": json_values,
              "node": json_values, "traceback": json_values, "fatal": json_values},
)


@FUZZ
@given(body=control_bodies, identity=st.binary(max_size=5), extra=st.lists(st.binary(max_size=8), max_size=2))
def test_control_messages_parse_or_raise_control_error(body: dict[str, Any], identity: bytes,
                                                       extra: list[bytes]) -> None:
    try:
        raw = json.dumps(body).encode()
    except (ValueError, OverflowError):
        return
    for frames in ([identity, raw], [identity, raw, *extra], [raw], [identity, raw[: len(raw) // 2]]):
        try:
            parse_control(frames)
        except ControlError:
            pass
        ControlGate({}).admit(frames, lambda p: 42)  # never raises


def test_control_gate_binds_the_spawned_pid_only() -> None:
    identities: dict[str, bytes] = {}
    gate = ControlGate(identities)
    pids = {"a": 1234}

    def msg(body: dict[str, Any]) -> str:
        return json.dumps({"process": "a", **body})

    assert gate.admit([b"evil", msg({"type": "hello", "pid": 99}).encode()], pids.get) is None
    assert gate.admit([b"evil", msg({"type": "drained"}).encode()], pids.get) is None
    assert gate.admit([b"good", msg({"type": "hello", "pid": 1234}).encode()], pids.get) is not None
    assert identities == {"a": b"good"}
    assert gate.admit([b"evil", msg({"type": "status", "nodes": {}}).encode()], pids.get) is None
    assert gate.admit([b"good", msg({"type": "status", "nodes": {}}).encode()], pids.get) is not None
    assert gate.admit([b"good", msg({"type": "status", "nodes": {"n": {"in": "x"}}}).encode()], pids.get) is None
    assert gate.rejects.count == 4


def test_atheris_finds_no_crash_in_the_decoders(tmp_path: Path) -> None:
    """Coverage-guided, bounded: 30 000 inputs or 60 s, whichever comes first (tests/engine/wire_atheris.py)."""
    pytest.importorskip("atheris")
    harness = Path(__file__).with_name("wire_atheris.py")
    res = subprocess.run([sys.executable, str(harness), "-runs=30000", "-max_total_time=60"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Done 30000 runs" in res.stderr or "DONE" in res.stderr
    assert not list(tmp_path.glob("crash-*"))
