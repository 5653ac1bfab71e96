"""``avstream models list``, ``inspect FILE|builtin:NAME`` and ``pull URL|FILE``."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from avstream.engine.errors import AvstreamError, ModelError
from avstream.engine.inference.contract import (
    METADATA_KEY,
    builtin_models,
    read_contract,
    read_model,
    resolve_model,
)
from avstream.engine.inference.runners import measure_latency


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _list(out: Any) -> int:
    models = builtin_models()
    if not models:
        print("no built-in models installed", file=out)
        return 0
    rows = [("NAME", "ID@VERSION", "TASK", "SIZE", "INPUTS")]
    for name, path in models.items():
        try:
            c = read_contract(path)
            rows.append((f"builtin:{name}", c.ref, c.task, _size(path.stat().st_size), c.inputs_summary()))
        except ModelError as exc:
            # a caption decoder step has no window contract, but metadata of its own
            from avstream.engine.inference.decoder_contract import DECODER_TASK, read_decoder_spec

            try:
                d = read_decoder_spec(path)
                rows.append((f"builtin:{name}", d.ref, DECODER_TASK, _size(path.stat().st_size),
                              f"tokens {d.length} + memory {d.memory_dim}-d, {len(d.vocab)} tokens (decodes {d.encoder})"))
            except ModelError:
                rows.append((f"builtin:{name}", "?", "?", _size(path.stat().st_size), f"unreadable: {exc}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(x.ljust(w) for x, w in zip(r, widths, strict=False)) + "  " + r[4], file=out)
    return 0


def _inspect(ref: str, out: Any, runs: int) -> int:
    path = resolve_model(ref, Path.cwd())
    contract, header = read_model(path)
    p = lambda *a: print(*a, file=out)  # noqa: E731
    p(f"file:        {path}")
    p(f"size:        {_size(path.stat().st_size)}")
    p(f"model:       {contract.ref}  (task: {contract.task})")
    if contract.description:
        p(f"description: {contract.description}")
    opsets = ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in header.opsets.items())
    p(f"onnx:        IR {header.ir_version}, opset {opsets}, producer {header.producer or '?'}")
    p(f"window:      {contract.window_seconds:g} s, hop {contract.window_hop:g} s")
    p("inputs:")
    for t in header.inputs:
        extra = ""
        if contract.video and t.name == contract.video.name:
            v = contract.video
            extra = f"  video {v.layout} {v.pixel_format}, {v.frames} frames @ {v.fps:g} fps"
        elif contract.audio and t.name == contract.audio.name:
            extra = f"  audio mono, {contract.audio.sample_rate} Hz, {contract.audio.seconds:g} s"
        p(f"  {t.name:<18} {t.dtype:<8} {list(t.shape)}{extra}")
    p("outputs:")
    meanings = {s.name: s.meaning for s in contract.outputs.values()}
    for t in header.outputs:
        p(f"  {t.name:<18} {t.dtype:<8} {list(t.shape)}  {meanings.get(t.name, '')}")
    if contract.labels:
        p(f"labels:      {', '.join(contract.labels)}")
    if contract.preprocessing:
        p(f"preprocessing: {contract.preprocessing}")
    others = {k: v for k, v in header.metadata.items() if k != METADATA_KEY}
    for key, value in others.items():
        p(f"metadata {key}: {value}")
    if runs > 0:
        try:
            ms = measure_latency(path, runs=runs)
            p(f"latency:     {ms:.2f} ms per window (batch 1, CPU, 1 thread, mean of {runs} runs)")
        except AvstreamError as exc:
            p(f"latency:     not measured ({exc})")
    return 0


def default_model_dir() -> Path:
    """Where pulled models go: $AVSTREAM_MODELS, else ~/.cache/avstream/models."""
    return Path(os.environ.get("AVSTREAM_MODELS") or Path.home() / ".cache" / "avstream" / "models")


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
        contract = read_contract(tmp)  # raises ModelError naming what is wrong
        target = folder / name
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"{contract.ref} ({contract.task}) -> {target}", file=out)
    print(f"use it in a pipeline as  params: {{model: \"{target}\"}}", file=out)
    return 0


def models_main(argv: list[str]) -> int:
    """``avstream models list | inspect FILE|builtin:NAME | pull URL|FILE``; 2 on a user error."""
    parser = argparse.ArgumentParser(prog="avstream models", description="List and inspect avstream models.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="built-in models shipped with avstream")
    ins = sub.add_parser("inspect", help="contract, shapes, opset and CPU latency of one model")
    ins.add_argument("model", help="an ONNX file or builtin:NAME")
    ins.add_argument("--runs", type=int, default=20, help="latency runs (0: skip the latency figure)")
    pl = sub.add_parser("pull", help="fetch a model (http(s) URL or file), check its contract, keep it locally")
    pl.add_argument("source", help="an http(s) URL or a path of an .onnx file with avstream metadata")
    pl.add_argument("--dir", type=Path, default=None, help="where to keep it (default: $AVSTREAM_MODELS or "
                    "~/.cache/avstream/models)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        if args.cmd == "list":
            return _list(sys.stdout)
        if args.cmd == "pull":
            return pull(args.source, args.dir or default_model_dir(), sys.stdout)
        return _inspect(args.model, sys.stdout, args.runs)
    except AvstreamError as exc:
        print(f"avstream models: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(models_main(sys.argv[1:]))
