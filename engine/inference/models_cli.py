"""``avstream models list``, ``inspect FILE|builtin:NAME`` and the ``.onnx`` half of ``pull``.

The ``pull`` command itself is in ``avstream.exporters.pull_cli`` (it also imports pretrained
checkpoints, which needs the exporters); ``engine.cli`` adds it to this group lazily, and it calls
:func:`pull` here for an ``.onnx`` URL or file.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from avstream.engine.cli_common import LazyGroup, examples, reports_errors
from avstream.engine.errors import AvstreamError, ModelError
from avstream.engine.inference.contract import (
    METADATA_KEY,
    DecoderSpec,
    ModelContract,
    builtin_models,
    read_metadata,
    resolve_model,
)
from avstream.engine.inference.onnx_header import OnnxHeader
from avstream.engine.inference.runners import create_session, measure_latency


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _list(out: Any) -> int:
    models = builtin_models()
    if not models:
        print("no built-in models installed", file=out)
        return 0
    rows = [("NAME", "ID@VERSION", "TASK", "SIZE", "INPUTS")]
    for name, path in models.items():
        size = _size(path.stat().st_size)
        try:
            meta, _ = read_metadata(path)
        except ModelError as exc:  # a damaged file still gets its row, with the reason
            rows.append((f"builtin:{name}", "?", "?", size, f"unreadable: {exc}"))
            continue
        rows.append((f"builtin:{name}", meta.ref, meta.task, size, meta.inputs_summary()))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(x.ljust(w) for x, w in zip(r, widths, strict=False)) + "  " + r[4], file=out)
    return 0


def _window_model_lines(contract: ModelContract, header: OnnxHeader) -> list[str]:
    lines = [f"window:      {contract.window_seconds:g} s, hop {contract.window_hop:g} s", "inputs:"]
    for t in header.inputs:
        extra = ""
        if contract.video and t.name == contract.video.name:
            v = contract.video
            extra = f"  video {v.layout} {v.pixel_format}, {v.frames} frames @ {v.fps:g} fps"
        elif contract.audio and t.name == contract.audio.name:
            extra = f"  audio mono, {contract.audio.sample_rate} Hz, {contract.audio.seconds:g} s"
        lines.append(f"  {t.name:<18} {t.dtype:<8} {list(t.shape)}{extra}")
    lines.append("outputs:")
    meanings = {s.name: s.meaning for s in contract.outputs.values()}
    lines += [f"  {t.name:<18} {t.dtype:<8} {list(t.shape)}  {meanings.get(t.name, '')}" for t in header.outputs]
    if contract.labels:
        lines.append(f"labels:      {', '.join(contract.labels)}")
    if contract.preprocessing:
        lines.append(f"preprocessing: {contract.preprocessing}")
    return lines


def _decoder_step_lines(spec: DecoderSpec, header: OnnxHeader) -> list[str]:
    words = len(spec.vocab) - len(spec.vocab.specials)
    lines = [f"decodes:     {spec.encoder or '(any encoder)'}: {spec.min_tokens}..{spec.max_tokens} words per caption",
             f"vocabulary:  {len(spec.vocab)} tokens ({words} words + pad, bos, eos, unk)", "inputs:"]
    meanings = {spec.tokens_name: spec.inputs.tokens.meaning or "token ids",
                spec.memory_name: spec.inputs.memory.meaning or f"encoder memory, {spec.memory_dim}-d"}
    lines += [f"  {t.name:<18} {t.dtype:<8} {list(t.shape)}  {meanings.get(t.name, '')}" for t in header.inputs]
    lines.append("outputs:")
    lines += [f"  {t.name:<18} {t.dtype:<8} {list(t.shape)}  "
              f"{spec.outputs.logits.meaning if t.name == spec.logits_name else ''}" for t in header.outputs]
    return lines


def _decoder_step_latency(path: Path, spec: DecoderSpec, header: OnnxHeader, runs: int) -> float:
    """Mean milliseconds of one batch-1 decoder step (BOS then PAD, zero memory) on the CPU provider."""
    import numpy as np

    session = create_session(path, providers=("cpu",), threads=1)
    memory = next(t for t in header.inputs if t.name == spec.memory_name)
    slots = memory.shape[1] if isinstance(memory.shape[1], int) else (spec.inputs.memory.tokens or 1)
    tokens = np.full((1, spec.length), spec.vocab.pad, dtype=np.int64)
    tokens[0, 0] = spec.vocab.bos
    feed = {spec.tokens_name: tokens, spec.memory_name: np.zeros((1, slots, spec.memory_dim), np.float32)}
    session.run([spec.logits_name], feed)
    t = time.perf_counter()
    for _ in range(runs):
        session.run([spec.logits_name], feed)
    return (time.perf_counter() - t) / runs * 1e3


def _inspect(ref: str, out: Any, runs: int) -> int:
    path = resolve_model(ref, Path.cwd()).resolve()  # a file and its builtin: name print the same
    meta, header = read_metadata(path)
    p = lambda *a: print(*a, file=out)  # noqa: E731
    p(f"file:        {path}")
    p(f"size:        {_size(path.stat().st_size)}")
    p(f"model:       {meta.ref}  (task: {meta.task})")
    if meta.description:
        p(f"description: {meta.description}")
    opsets = ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in header.opsets.items())
    p(f"onnx:        IR {header.ir_version}, opset {opsets}, producer {header.producer or '?'}")
    lines = (_window_model_lines(meta, header) if isinstance(meta, ModelContract)
             else _decoder_step_lines(meta, header))
    for line in lines:
        p(line)
    others = {k: v for k, v in header.metadata.items() if k != METADATA_KEY}
    for key, value in others.items():
        p(f"metadata {key}: {value}")
    if runs > 0:
        try:
            ms = (measure_latency(path, runs=runs) if isinstance(meta, ModelContract)
                  else _decoder_step_latency(path, meta, header, runs))
            what = "window" if isinstance(meta, ModelContract) else "decoder step"
            p(f"latency:     {ms:.2f} ms per {what} (batch 1, CPU, 1 thread, mean of {runs} runs)")
        except AvstreamError as exc:
            p(f"latency:     not measured ({exc})")
    return 0


def pull(source: str, folder: Path, out: Any) -> int:
    """Fetch a model from an http(s) URL or a file, check its avstream contract, keep it in ``folder``.

    A file without a readable contract is not kept, so what lies in the folder always runs.
    """
    name = Path(source.split("?", 1)[0].rstrip("/")).name or "model.onnx"
    if not name.endswith(".onnx"):
        raise ModelError(f"{source}: expected an .onnx file")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=folder, suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as dst:
            if source.startswith(("http://", "https://")):
                try:
                    with urllib.request.urlopen(source, timeout=30) as src:  # noqa: S310 - user-given URL
                        shutil.copyfileobj(src, dst)
                except (urllib.error.URLError, OSError) as exc:
                    raise ModelError(f"{source}: download failed: {getattr(exc, 'reason', exc)}") from None
            else:
                try:
                    with open(source, "rb") as src:
                        shutil.copyfileobj(src, dst)
                except OSError as exc:
                    raise ModelError(f"{source}: {exc.strerror or exc}") from None
        meta, _ = read_metadata(tmp)  # raises ModelError naming what is wrong
        target = folder / name
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"{meta.ref} ({meta.task}) -> {target}", file=out)
    if isinstance(meta, DecoderSpec):
        encoder = f" of {meta.encoder}" if meta.encoder else ""
        print(f"a caption decoder step{encoder}: use it in avstream/captions@v1 as  "
              f"params: {{decoder: \"{target}\"}}", file=out)
    else:
        print(f"use it in a pipeline as  params: {{model: \"{target}\"}}", file=out)
    return 0


@click.group("models", cls=LazyGroup, epilog=examples(
    "avstream models list", "avstream models inspect builtin:highlight", "avstream models pull clip-vit-b-32",
    "avstream models pull https://example.org/my_model.onnx"))
def models_group() -> None:
    """List, inspect and pull models."""


@models_group.command("list", epilog=examples("avstream models list"))
@reports_errors("avstream models")
def list_command() -> int:
    """Built-in models shipped with avstream.

    One row per model: name, id@version, task, size and inputs.
    """
    return _list(sys.stdout)


@models_group.command("inspect", epilog=examples("avstream models inspect builtin:highlight --runs 0",
                                                 "avstream models inspect my_model.onnx"))
@click.argument("model")
@click.option("--runs", type=int, default=20, show_default=True, help="latency runs (0: skip the latency figure)")
@reports_errors("avstream models")
def inspect_command(model: str, runs: int) -> int:
    """Contract, shapes, opset and CPU latency of one model.

    MODEL is an ONNX file or builtin:NAME.
    """
    return _inspect(model, sys.stdout, runs)
