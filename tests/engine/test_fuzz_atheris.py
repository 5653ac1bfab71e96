"""Coverage-guided fuzzing (atheris, libFuzzer) of the model-metadata parser, the ONNX header reader and
the URI parser, each for a bounded number of runs and time, from a seed corpus of valid inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from avstream.engine.inference.contract import builtin_models
from tests.conftest import REPO

pytest.importorskip("atheris", reason="atheris is not installed (it has no wheel for this Python)")
pytest.importorskip("onnx")
from avstream.exporters.testing import TINY_CONTRACT, contract_variant, tiny_model  # noqa: E402
from tests.engine.test_fuzz_uris import VALID as VALID_URIS  # noqa: E402

RUNS = 30_000
MAX_TOTAL_TIME_S = 15


def _seeds(target: str, folder: Path) -> None:
    folder.mkdir()
    if target == "metadata":
        seeds = [TINY_CONTRACT, contract_variant(inputs__audio=None), contract_variant(window=None),
                 {"schema": 1, "id": "d", "version": "1", "task": "caption_decoder_step",
                  "inputs": {"tokens": {"length": 8}, "memory": {"dim": 4}}, "outputs": {"logits": {}},
                  "vocabulary": {"words": ["<pad>", "<bos>", "<eos>", "<unk>", "a"]}}]
        for i, seed in enumerate(seeds):
            (folder / f"seed{i}").write_text(json.dumps(seed))
    elif target == "uri":
        for i, uri in enumerate(VALID_URIS):
            (folder / f"seed{i}").write_text(uri)
    else:
        (folder / "tiny").write_bytes(tiny_model(folder.parent / "tiny.onnx").read_bytes())
        for name, path in list(builtin_models().items())[:1]:
            (folder / name).write_bytes(path.read_bytes()[:4096])


@pytest.mark.parametrize("target", ["metadata", "uri", "onnx_header"])
def test_coverage_guided_fuzzing_finds_no_crash(tmp_path: Path, target: str) -> None:
    corpus = tmp_path / "corpus"
    _seeds(target, corpus)
    got = subprocess.run(
        [sys.executable, str(REPO / "tests" / "engine" / "atheris_targets.py"), target, f"-runs={RUNS}",
         f"-max_total_time={MAX_TOTAL_TIME_S}", "-max_len=8192", "-timeout=10", "-rss_limit_mb=2048", str(corpus)],
        capture_output=True, text=True, timeout=MAX_TOTAL_TIME_S + 90, cwd=tmp_path)
    said = got.stdout + got.stderr
    crashes = sorted(p.name for p in tmp_path.glob("*") if p.name.startswith(("crash-", "timeout-", "oom-")))
    assert got.returncode == 0 and not crashes, f"{crashes}\n{said[-4000:]}"
    assert "Done" in said and "DONE" in said, said[-2000:]
