"""Fuzzing the model-metadata parser: whatever a model file's ``avstream`` metadata holds, reading it
gives a valid contract with sane sizes or a ModelError, never another exception or a huge allocation."""

from __future__ import annotations

import copy
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avstream.engine.errors import ModelError
from avstream.engine.inference.contract import (
    MAX_FPS,
    MAX_FRAMES,
    MAX_SAMPLE_RATE,
    MAX_SIDE,
    MAX_WINDOW_BYTES,
    MAX_WINDOW_S,
    ModelContract,
    metadata_from_dict,
    read_metadata,
)
from avstream.engine.inference.onnx_header import OnnxHeader, parse_onnx_header
from tests.conftest import REPO, run_cli

pytest.importorskip("onnx")
from avstream.exporters.testing import TINY_CONTRACT, tiny_model  # noqa: E402

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# numbers a hostile or corrupt file may hold: huge, negative, zero, non-finite, bools posing as ints
NUMBERS = st.one_of(
    st.integers(), st.integers(min_value=2**31, max_value=2**200), st.integers(max_value=0),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0, -1, 1e308, -1e308, 2**63, 1e-320]),
    st.booleans())
SCALARS = st.one_of(st.none(), NUMBERS, st.text(max_size=40))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=20)


def _paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    return out


PATHS = _paths(TINY_CONTRACT)


@st.composite
def mutated_contracts(draw: st.DrawFn) -> dict[str, Any]:
    """TINY_CONTRACT with a few keys replaced by random JSON, deleted, or added."""
    meta = copy.deepcopy(TINY_CONTRACT)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(PATHS))
        node: Any = meta
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        action = draw(st.sampled_from(["replace", "number", "delete", "add"]))
        if action == "delete":
            node.pop(path[-1], None)
        elif action == "add":
            node[draw(st.text(min_size=1, max_size=10))] = draw(JSON)
        else:
            node[path[-1]] = draw(NUMBERS if action == "number" else JSON)
    if draw(st.booleans()):
        meta["task"] = draw(st.sampled_from(["tinytask", "caption_decoder_step"]))
    return meta


def _check_sane(meta: Any) -> None:
    """A contract that validates asks for windows of bounded size."""
    if not isinstance(meta, ModelContract):
        return
    req = meta.window_requirement()
    assert 0 < req.seconds <= MAX_WINDOW_S and 0 < req.hop <= MAX_WINDOW_S
    assert 0 <= req.fps <= MAX_FPS and 0 <= req.frames <= MAX_FRAMES
    assert 0 <= req.height <= MAX_SIDE and 0 <= req.width <= MAX_SIDE
    assert req.frames * req.height * req.width * 3 <= MAX_WINDOW_BYTES
    assert 0 <= req.sample_rate <= MAX_SAMPLE_RATE and req.audio_samples * 4 <= MAX_WINDOW_BYTES
    assert all(math.isfinite(x) for x in (req.seconds, req.hop, req.fps))


def _parse(meta: Any) -> None:
    try:
        parsed = metadata_from_dict(meta, "fuzz.onnx")
    except ModelError as exc:
        text = str(exc)
        assert text.startswith("fuzz.onnx: ") and "\n" not in text, text
        return
    _check_sane(parsed)


@FUZZ
@given(mutated_contracts())
def test_mutated_metadata_is_a_contract_or_a_model_error(meta: dict[str, Any]) -> None:
    _parse(meta)


@FUZZ
@given(JSON)
def test_any_json_value_is_a_contract_or_a_model_error(meta: Any) -> None:
    _parse(meta)


@pytest.mark.parametrize("key,value,message", [
    ("inputs.video.width", 10**9, "must be <= 16384"),
    ("inputs.video.fps", 1e300, "must be <= 1000"),
    ("inputs.audio.sample_rate", 2**40, "must be <= 384000"),
    ("window.seconds", 1e9, "must be <= 3600"),
    ("inputs.video.frames", -4, "must be > 0"),
])
def test_absurd_sizes_are_refused_with_a_clear_message(key: str, value: Any, message: str) -> None:
    meta = copy.deepcopy(TINY_CONTRACT)
    node = meta
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    with pytest.raises(ModelError, match=f"{key}: {message}"):
        metadata_from_dict(meta, "m.onnx")


def test_a_window_too_big_for_memory_is_refused() -> None:
    meta = copy.deepcopy(TINY_CONTRACT)
    meta["inputs"]["video"].update(frames=2000, height=8000, width=8000, fps=1000.0)
    meta["window"] = {"seconds": 2.0}
    meta["inputs"]["audio"].update(seconds=2.0, samples=160)
    with pytest.raises(ModelError, match=r"inputs\.video\.frames: a window of 2000x8000x8000x3 uint8 is"):
        metadata_from_dict(meta, "m.onnx")


def test_audio_seconds_times_rate_overflowing_is_a_model_error() -> None:
    meta = copy.deepcopy(TINY_CONTRACT)
    meta["inputs"]["audio"] = {"sample_rate": 384000, "seconds": 1e308}
    with pytest.raises(ModelError, match="inputs.audio.seconds: must be <= 3600"):
        metadata_from_dict(meta, "m.onnx")


def test_a_huge_vocabulary_with_duplicates_is_checked_quickly() -> None:
    """Repeated words were found with list.count per word: quadratic, minutes for a big vocabulary."""
    meta = {"schema": 1, "id": "d", "version": "1", "task": "caption_decoder_step",
            "inputs": {"tokens": {"length": 8}, "memory": {"dim": 4}}, "outputs": {"logits": {}},
            "vocabulary": {"words": [f"w{i % 150_000}" for i in range(300_000)]}}
    with pytest.raises(ModelError, match="words must be distinct"):
        metadata_from_dict(meta, "d.onnx")


# ---------------------------------------------------------------------------------------------------
# metadata text in real ONNX files

TEXTS = st.one_of(
    st.text(max_size=200),
    JSON.map(json.dumps),
    mutated_contracts().map(json.dumps),
    st.integers(1, 200_000).map(lambda n: "[" * n + "]" * n),  # nesting deeper than the parser's stack
    st.integers(4301, 20_000).map(lambda n: '{"schema": ' + "7" * n + "}"),  # more digits than int() takes
    mutated_contracts().map(lambda m: json.dumps(m).replace("4", "4" * 5000, 1)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXTS)
def test_metadata_text_in_a_model_file_is_read_or_refused(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = tiny_model(Path(folder) / "m.onnx", meta=text)
        try:
            meta, _ = read_metadata(path)
        except ModelError as exc:
            assert str(exc).startswith(str(path)) and "\n" not in str(exc)
        else:
            _check_sane(meta)


@pytest.mark.parametrize("name,text", [
    ("deep", "[" * 100_000 + "]" * 100_000),
    ("digits", '{"schema": ' + "9" * 10_000 + "}"),
    ("huge_width", json.dumps({**TINY_CONTRACT, "inputs": {"video": {**TINY_CONTRACT["inputs"]["video"],
                                                                     "width": 2**62}}})),
    ("nan", json.dumps({**TINY_CONTRACT, "window": {"seconds": float("nan")}})),
    ("wrong_types", json.dumps({**TINY_CONTRACT, "inputs": [1, 2], "outputs": "x"})),
])
def test_avstream_validate_refuses_a_bad_model_file_with_exit_2(tmp_path: Path, name: str, text: str) -> None:
    model = tiny_model(tmp_path / f"{name}.onnx", meta=text)
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(f"""\
version: 1
name: bad_model
streams:
  cam0: {{uri: "sample://demo"}}
nodes:
  window: {{type: avstream/av_window@v1, inputs: [cam0]}}
  score: {{type: avstream/onnx_encoder@v1, inputs: [window], params: {{model: "{model}"}}}}
""")
    got = run_cli("validate", str(pipeline), timeout=120, cwd=REPO)
    assert got.returncode == 2, got.stdout + got.stderr
    assert "Traceback" not in got.stderr + got.stdout
    assert f"{name}.onnx" in got.stderr + got.stdout
    got = run_cli("models", "inspect", str(model), "--runs", "0", timeout=120, cwd=REPO)
    assert got.returncode in (1, 2) and "Traceback" not in got.stderr + got.stdout, got.stderr
    assert f"{name}.onnx" in got.stderr


# ---------------------------------------------------------------------------------------------------
# the ONNX header reader (protobuf without the onnx package)

@st.composite
def mutated_model_bytes(draw: st.DrawFn) -> bytes:
    """A real tiny model's bytes with a few bytes changed, cut, or repeated."""
    data = bytearray(_TINY_BYTES)
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["set", "cut", "repeat", "varint"]))
        if action == "set":
            data[pos] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[pos:]
            if not data:
                break
        elif action == "repeat":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 64))] * draw(st.integers(1, 50))
        else:  # a length or tag as a huge varint
            data[pos:pos] = b"\xff" * draw(st.integers(1, 12)) + b"\x01"
    return bytes(data)


with tempfile.TemporaryDirectory() as _folder:
    _TINY_BYTES = tiny_model(Path(_folder) / "m.onnx").read_bytes()


@FUZZ
@given(st.one_of(mutated_model_bytes(), st.binary(max_size=300)))
def test_any_bytes_are_an_onnx_header_or_a_model_error(data: bytes) -> None:
    try:
        header = parse_onnx_header(data, "fuzz.onnx")
    except ModelError as exc:
        assert str(exc).startswith("fuzz.onnx: ") and "\n" not in str(exc)
        return
    assert isinstance(header, OnnxHeader) and header.ir_version > 0 and header.opsets


def test_a_key_with_a_newline_gives_a_one_line_error() -> None:
    """Found by atheris: an unknown key holding a newline split the error over two lines."""
    meta = copy.deepcopy(TINY_CONTRACT)
    meta["inputs"]["audio"]["bad\nkey"] = 1
    with pytest.raises(ModelError) as caught:
        metadata_from_dict(meta, "m.onnx")
    assert "\n" not in str(caught.value) and "inputs.audio.bad\\nkey: unknown key" in str(caught.value)
