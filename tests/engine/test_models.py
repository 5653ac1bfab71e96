"""Model contract (SPEC §5): metadata round trip, validation messages, lookup, ``avstream models``."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from avstream.engine.errors import ModelError
from avstream.engine.inference.contract import (
    ContractError,
    DecoderSpec,
    contract_from_dict,
    metadata_from_dict,
    metadata_json_schema,
    read_contract,
    read_decoder_spec,
    read_metadata,
    resolve_model,
)
from avstream.engine.inference.models_cli import _list, pull
from avstream.engine.inference.onnx_header import read_onnx_header
from tests.conftest import invoke_cli

pytest.importorskip("onnx")
from avstream.exporters.testing import TINY_CONTRACT as CONTRACT  # noqa: E402
from avstream.exporters.testing import contract_variant as variant  # noqa: E402
from avstream.exporters.testing import tiny_model as make_model  # noqa: E402


def test_round_trip(tmp_path: Path) -> None:
    path = make_model(tmp_path / "m.onnx")
    c = read_contract(path)
    assert c.ref == "tiny@1" and c.task == "tinytask"
    assert c.video is not None and c.video.frames == 4 and c.video.height == 4 and c.video.width == 6
    assert c.audio is not None and c.audio.samples == 160 and c.audio.sample_rate == 80
    assert c.to_dict() == CONTRACT
    req = c.window_requirement()
    assert (req.seconds, req.hop, req.fps, req.frames, req.height, req.width) == (2.0, 1.0, 2.0, 4, 4, 6)
    assert (req.sample_rate, req.audio_samples, req.source) == (80, 160, "tiny@1")


def test_header_without_onnx_package(tmp_path: Path) -> None:
    h = read_onnx_header(make_model(tmp_path / "m.onnx"))
    assert h.opsets[""] == 17 and h.ir_version == 8
    assert [(t.name, t.dtype, t.shape) for t in h.inputs] == [
        ("video", "uint8", ("B", 4, 4, 6, 3)), ("audio", "float32", ("B", 160))]
    assert {t.name for t in h.outputs} == {"frame_mean", "activation"}


@pytest.mark.parametrize("video,audio", [(True, False), (False, True)])
def test_single_modality(tmp_path: Path, video: bool, audio: bool) -> None:
    meta = variant(inputs__audio=None) if not audio else variant(inputs__video=None)
    if not video:
        meta["outputs"].pop("frame_mean")
    c = read_contract(make_model(tmp_path / "m.onnx", meta, video=video, audio=audio))
    assert (c.video is not None, c.audio is not None) == (video, audio)
    assert (c.window_requirement().sample_rate > 0) == audio


def test_missing_metadata(tmp_path: Path) -> None:
    path = make_model(tmp_path / "plain.onnx", meta=None)
    with pytest.raises(ModelError, match=r"plain\.onnx: no 'avstream' metadata"):
        read_contract(path)


def test_bad_json(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not valid JSON"):
        read_contract(make_model(tmp_path / "m.onnx", meta="{nope"))


@pytest.mark.parametrize(
    "meta,key",
    [
        (variant(inputs__video__fps="x"), "inputs.video.fps"),
        (variant(inputs__video__frames=7), "inputs.video.frames"),
        (variant(inputs__video__layout="NCHW"), "inputs.video.layout"),
        (variant(inputs__audio__samples=100), "inputs.audio.samples"),
        (variant(id=None), "id"),
        (variant(schema=2), "schema"),
        (variant(outputs={}), "outputs"),
        (variant(inputs={}), "inputs"),
        (variant(inputs__depth={}), "inputs.depth"),
        (variant(window__hop=-1), "window.hop"),
    ],
)
def test_bad_keys_are_named(tmp_path: Path, meta: dict[str, Any], key: str) -> None:
    with pytest.raises(ModelError) as err:
        read_contract(make_model(tmp_path / "m.onnx", meta))
    assert "m.onnx" in str(err.value) and f"{key}:" in str(err.value)


def test_contract_must_match_graph(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="graph has no input 'frames'"):
        read_contract(make_model(tmp_path / "a.onnx", variant(inputs__video__name="frames")))
    with pytest.raises(ModelError, match="graph has no output 'score'"):
        read_contract(make_model(tmp_path / "b.onnx", variant(outputs={"score": {"name": "score"}})))
    with pytest.raises(ModelError, match="axis 2 is 4, the contract says 8"):
        read_contract(make_model(tmp_path / "c.onnx", variant(inputs__video__height=8)))


def test_not_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"\xff\xff\xff\xff garbage")
    with pytest.raises(ModelError, match="not an ONNX model"):
        read_contract(bad)
    with pytest.raises(ModelError, match="not found"):
        read_contract(tmp_path / "missing.onnx")


def test_contract_from_dict_defaults() -> None:
    meta = variant(window=None)
    meta["inputs"]["audio"].pop("samples")
    c = contract_from_dict(meta)
    assert c.window_seconds == 2.0 and c.window_hop == 2.0 and c.audio is not None and c.audio.samples == 160


def test_resolve_model(tmp_path: Path) -> None:
    path = make_model(tmp_path / "m.onnx")
    assert resolve_model("m.onnx", tmp_path) == path
    assert resolve_model(str(path), Path("/")) == path
    with pytest.raises(ModelError, match="not found"):
        resolve_model("nope.onnx", tmp_path)
    builtin = resolve_model("builtin:highlight", tmp_path)
    assert builtin.name == "highlight.onnx" and builtin.is_file()
    assert read_contract(builtin).ref == "highlight@2"
    with pytest.raises(ModelError, match="builtin:highlight"):
        resolve_model("builtin:nope", tmp_path)


def test_models_cli(tmp_path: Path) -> None:
    res = invoke_cli("models", "list")
    assert res.exit_code == 0 and "builtin:highlight" in res.stdout and "highlight@2" in res.stdout
    path = make_model(tmp_path / "m.onnx")
    res = invoke_cli("models", "inspect", str(path), "--runs", "3")
    assert res.exit_code == 0
    out = res.stdout
    assert "tiny@1" in out and "opset ai.onnx 17" in out and "latency:" in out and "frame_mean" in out
    res = invoke_cli("models", "inspect", str(tmp_path / "missing.onnx"))
    err = res.stderr
    assert res.exit_code == 2 and err.count("\n") == 1 and "not found" in err and "Traceback" not in err
    assert invoke_cli("models", "frobnicate").exit_code == 2


def test_models_pull_from_a_local_http_server_and_from_a_file(tmp_path: Path) -> None:
    import functools
    import http.server
    import io
    import threading

    from avstream.engine.inference.models_cli import pull

    served = tmp_path / "served"
    served.mkdir()
    make_model(served / "tiny.onnx")
    (served / "broken.onnx").write_bytes(b"not a model")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    store = tmp_path / "store"
    try:
        assert invoke_cli("models", "pull", f"{base}/tiny.onnx", "--dir", str(store)).exit_code == 0
        assert read_contract(store / "tiny.onnx").ref == "tiny@1"
        assert invoke_cli("models", "pull", f"{base}/broken.onnx", "--dir", str(store)).exit_code == 2
        assert invoke_cli("models", "pull", f"{base}/missing.onnx", "--dir", str(store)).exit_code == 2
    finally:
        server.shutdown()
        server.server_close()
    assert sorted(p.name for p in store.iterdir()) == ["tiny.onnx"]  # nothing half-written or unreadable kept
    other = tmp_path / "other"
    assert pull(str(served / "tiny.onnx"), other, io.StringIO()) == 0
    assert (other / "tiny.onnx").exists()


SHIPPED = ("highlight", "violence", "localization", "captions_encoder", "captions_decoder_step")
REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "avstream.engine.cli", "models", *args], capture_output=True,
                          text=True, timeout=60, cwd=REPO)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_model_inspects_by_file_and_by_builtin_name(name: str) -> None:
    by_file, by_name = _cli("inspect", f"models/{name}.onnx", "--runs", "0"), _cli("inspect", f"builtin:{name}", "--runs", "0")
    assert (by_file.returncode, by_name.returncode) == (0, 0), by_file.stderr + by_name.stderr
    meta, _ = read_metadata(REPO / "models" / f"{name}.onnx")
    assert f"model:       {meta.ref}  (task: {meta.task})" in by_file.stdout and "inputs:" in by_file.stdout
    if resolve_model(f"builtin:{name}", REPO).samefile(REPO / "models" / f"{name}.onnx"):
        assert by_file.stdout == by_name.stdout
    else:  # an installed wheel: another file with the same content
        assert by_file.stdout.splitlines()[1:] == by_name.stdout.splitlines()[1:]


def test_models_list_reads_every_builtin() -> None:
    out = io.StringIO()
    assert _list(out) == 0
    rows = {line.split()[0]: line.split()[1:3] for line in out.getvalue().splitlines()[1:]}
    assert {f"builtin:{n}" for n in SHIPPED} <= set(rows)
    assert rows["builtin:captions_decoder_step"] == ["captions_decoder@1", "caption_decoder_step"]
    assert "?" not in {ref for ref, _ in rows.values()}


def test_every_problem_is_reported_at_once_with_its_key_path() -> None:
    meta = variant(id=None, inputs__video__fps=-1, inputs__audio__sample_rte=16000, window__hop="x", outputs={},
                   labels=["ok", 3])
    with pytest.raises(ContractError) as err:
        contract_from_dict(meta, "model.onnx")
    paths = [path for path, _ in err.value.problems]
    assert paths == ["id", "inputs.video.fps", "inputs.audio.sample_rte", "window.hop", "outputs", "labels.1"]
    text = str(err.value)
    assert "\n" not in text and text.startswith("model.onnx: metadata 'avstream': id: missing")
    assert "inputs.video.fps: must be > 0 (got -1)" in text and "did you mean 'sample_rate'?" in text
    # checks across keys also come together once each key is valid on its own
    with pytest.raises(ContractError) as err:
        contract_from_dict(variant(inputs__video__frames=7, inputs__audio__seconds=1.5, inputs__audio__samples=None))
    assert [p for p, _ in err.value.problems] == ["inputs.video.frames", "inputs.audio.seconds"]


def test_graph_mismatches_are_reported_together(tmp_path: Path) -> None:
    meta = variant(inputs__video__height=8, outputs={"score": {"name": "score"}})
    with pytest.raises(ContractError) as err:
        read_contract(make_model(tmp_path / "m.onnx", meta))
    assert [p for p, _ in err.value.problems] == ["inputs.video", "outputs.score"]


def test_unknown_tasks_and_extra_keys() -> None:
    # any task but a decoder step is a window model (the generic encoder runs it; results take the task as kind)
    c = contract_from_dict(variant(task="loudness", precision="int8", outputs__activation__prior={"median": 0.5}))
    assert c.task == "loudness" and c.raw["precision"] == "int8"  # extension keys are kept, not interpreted
    assert c.raw["outputs"]["activation"]["prior"] == {"median": 0.5}
    # inside an input, an unknown key is a mistake (a misspelt pixel_format would silently flip channels)
    with pytest.raises(ModelError, match=r"inputs\.video\.pixelformat: unknown key \(did you mean 'pixel_format'\?\)"):
        contract_from_dict(variant(inputs__video__pixelformat="rgb24"))
    with pytest.raises(ModelError, match=r"inputs\.depth: unknown key \(allowed: video, audio\)"):
        contract_from_dict(variant(inputs__depth={}))


def test_decoder_step_metadata_validates_and_is_told_apart() -> None:
    decoder = REPO / "models" / "captions_decoder_step.onnx"
    data = json.loads(read_onnx_header(decoder).metadata["avstream"])
    spec = metadata_from_dict(data, "d.onnx")
    assert isinstance(spec, DecoderSpec) and spec.ref == "captions_decoder@1" and spec.encoder == "captions@1"
    assert (spec.length, spec.memory_dim, spec.tokens_name, spec.logits_name) == (24, 128, "tokens", "logits")
    assert read_decoder_spec(decoder) == read_metadata(decoder)[0]
    with pytest.raises(ModelError, match="task: 'caption_decoder_step' is a caption decoder step, not a window model"):
        read_contract(decoder)
    with pytest.raises(ModelError, match="expected 'caption_decoder_step'"):
        read_decoder_spec(REPO / "models" / "highlight.onnx")
    broken = {**data, "inputs": {"tokens": {"length": 1}, "memory": {"dim": 0}}, "min_tokens": -1}
    with pytest.raises(ContractError) as err:
        metadata_from_dict(broken, "d.onnx")
    assert [p for p, _ in err.value.problems] == ["inputs.tokens.length", "inputs.memory.dim", "min_tokens"]


def test_metadata_json_schema_covers_both_kinds() -> None:
    schema = json.dumps(metadata_json_schema())
    assert '"ModelContract"' in schema and '"DecoderSpec"' in schema and '"pixel_format"' in schema


def test_models_pull_of_a_decoder_step(tmp_path: Path) -> None:
    out = io.StringIO()
    assert pull(str(REPO / "models" / "captions_decoder_step.onnx"), tmp_path, out) == 0
    assert "captions_decoder@1 (caption_decoder_step)" in out.getvalue() and "decoder:" in out.getvalue()
    assert read_decoder_spec(tmp_path / "captions_decoder_step.onnx").ref == "captions_decoder@1"
