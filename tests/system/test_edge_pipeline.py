"""The edge pipeline as a user runs it: its INT8 built-ins, all four tasks, its process layout, its memory."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import pytest

from avstream.engine.inference.contract import read_contract, resolve_model
from tests.system.helpers import start_run, stop

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.timeout(150)

KINDS = {"highlight", "violence", "localization", "caption"}
# generous: the target is 200 MB summed PSS (bench/edge.py measures ~185 MB on x86-64)
PSS_BOUND_MB = 320


def tree_pss(pid: int) -> tuple[float, set[str]]:
    """PSS summed over the process tree (MB) and the names of its processes."""
    total, names = 0.0, set[str]()
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_full_info().pss
            names.add(proc.name())
        except psutil.Error:
            continue
    return total / 1e6, names


def test_edge_models_are_int8_builtins() -> None:
    # violence runs FP32 on the edge: its INT8 variant does not hold on AVX2-only CPUs (models/int8.md)
    for name in ("highlight_int8", "localization_int8", "captions_int8_encoder"):
        contract = read_contract(resolve_model(f"builtin:{name}", Path.cwd()))
        assert contract.raw.get("precision") == "int8" and contract.ref.endswith("+int8"), contract.ref
        assert contract.raw["quantization"]["weight_bits"] == 7, name  # no int16 saturation on AVX2-only CPUs
    encoder = read_contract(resolve_model("builtin:captions_int8_encoder", Path.cwd()))
    assert encoder.raw["decoder"] == "captions_int8_decoder_step.onnx"


def test_edge_pipeline_runs_all_four_tasks(tmp_path: Path, port: int) -> None:
    out = tmp_path / "edge.jsonl"
    proc = start_run("edge", "--duration", "12", "--jsonl", str(out), "--quiet", "--publish",
                     f"tcp://127.0.0.1:{port}")
    peak, names = 0.0, set[str]()
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            pss, seen = tree_pss(proc.pid)
        except psutil.NoSuchProcess:
            break
        peak, names = max(peak, pss), names | seen
        time.sleep(0.5)
    _, err = stop(proc)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    msgs = [json.loads(line) for line in out.read_text().splitlines()]
    by_kind: dict[str, list[dict]] = {}
    for m in msgs:
        by_kind.setdefault(m["kind"], []).append(m)
    assert KINDS <= by_kind.keys(), sorted(by_kind)
    for kind in KINDS - {"violence"}:  # every result names the INT8 variant that made it
        assert all(m["model"].endswith("+int8") for m in by_kind[kind]), kind
    assert all(m["model"] == "violence@2" for m in by_kind["violence"])  # FP32 (models/int8.md)
    assert all(m["text"] for m in by_kind["caption"])
    assert all(0.0 <= m["score"] <= 1.0 for k in ("highlight", "violence", "localization") for m in by_kind[k])
    # edge rates: violence every 1 s, highlight every 2 s over 12 s of media
    assert 8 <= len(by_kind["violence"]) <= 12 and 4 <= len(by_kind["highlight"]) <= 6
    assert {"avs:capture", "avs:models"} <= names, names
    assert 0 < peak < PSS_BOUND_MB, peak
