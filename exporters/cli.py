"""``avstream export``: build a self-describing ONNX model from a recipe or from the user's own module.

    avstream export --recipe highlight [--train-steps N] [--seed S] [--out models/highlight.onnx]
    avstream export --module my_pkg.my_mod:factory [--checkpoint ckpt.pt] --contract contract.json --out model.onnx
    avstream export --model model.onnx --quantize int8 --calibrate clip.mp4 [--out model.int8.onnx]
    avstream export --model model.onnx --precision fp16 | --format tensorrt [--precision int8 --calibrate URI]
    avstream export --build-engines pipeline.yaml

Exit codes: 0 written, 2 user error (bad arguments, missing module, bad checkpoint, unsupported
operator, parity failure), 1 unexpected failure.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from avstream.engine.errors import AvstreamError, MissingDependencyError, ModelError

RECIPES = ("highlight", "captions", "violence", "localization")


def _say(msg: str) -> None:
    print(f"[export] {msg}", flush=True)


def _load_factory(spec: str) -> Any:
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise ModelError(f"--module {spec!r}: expected 'package.module:factory'")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ModelError(f"--module {spec!r}: cannot import {mod_name!r}: {exc}") from None
    factory = getattr(mod, attr, None)
    if factory is None or not callable(factory):
        raise ModelError(f"--module {spec!r}: {mod_name} has no callable {attr!r}")
    return factory


def _load_checkpoint(module: Any, path: Path) -> None:
    import torch

    if not path.is_file():
        raise ModelError(f"--checkpoint {path}: file not found")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"--checkpoint {path}: cannot read it as a PyTorch checkpoint: {exc}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"--checkpoint {path}: expected a state_dict, got {type(state).__name__}")
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        raise ModelError(f"--checkpoint {path}: does not fit the module: {' '.join(s.strip() for s in first[:3])}") from None


def _export_module(args: argparse.Namespace) -> int:
    from .export import export_onnx, import_torch

    torch = import_torch()
    if not args.contract:
        raise ModelError("--module needs --contract contract.json (the model's metadata and input shapes)")
    if not args.out:
        raise ModelError("--module needs --out model.onnx")
    contract_path = Path(args.contract)
    try:
        contract = json.loads(contract_path.read_text())
    except OSError as exc:
        raise ModelError(f"--contract {contract_path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"--contract {contract_path}: not valid JSON: {exc}") from None
    from avstream.engine.inference.contract import contract_from_dict

    contract_from_dict(contract, str(contract_path))  # fail early, with the key, before building anything
    sys.path.insert(0, str(Path.cwd()))
    factory = _load_factory(args.module)
    _say(f"building {args.module}() ...")
    module = factory()
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"--module {args.module!r}: the factory returned {type(module).__name__}, not a torch.nn.Module")
    if args.checkpoint:
        _say(f"loading checkpoint {args.checkpoint}")
        _load_checkpoint(module, Path(args.checkpoint))
    export_onnx(module, None, contract, Path(args.out), opset=args.opset, atol=args.atol, rtol=args.rtol,
                progress=_say)
    return 0


def _export_recipe(args: argparse.Namespace) -> int:
    from .export import export_onnx, import_torch

    import_torch()
    if args.recipe == "captions":  # two graphs (encoder + decoder step): the recipe exports both
        from .recipes import captions

        return captions.export_recipe(args, _say)
    recipe = importlib.import_module(f"{__package__}.recipes.{args.recipe}")
    out = Path(args.out or f"models/{args.recipe}.onnx")
    t0 = time.perf_counter()
    if args.checkpoint:
        model = recipe.build_model()
        _load_checkpoint(model, Path(args.checkpoint))
        model.eval()
    else:
        _say(f"training recipe {args.recipe!r}: {args.train_steps} steps, seed {args.seed}")
        model, stats = recipe.train(args.train_steps, args.seed, args.cache_dir, progress=_say)
        _say(f"trained in {stats.seconds:.0f} s")
        if args.save_checkpoint:
            import torch

            torch.save(model.state_dict(), args.save_checkpoint)
            _say(f"checkpoint written to {args.save_checkpoint}")
    report = export_onnx(model, None, recipe.CONTRACT, out, opset=args.opset, real_inputs=recipe.real_inputs(),
                         atol=args.atol, rtol=args.rtol, progress=_say)
    from avstream.engine.inference.runners import measure_latency

    ms = measure_latency(out, runs=50, threads=1)
    _say(f"done in {time.perf_counter() - t0:.0f} s: {out} {report.size_bytes / 1e3:.0f} kB, "
         f"parity max abs {report.max_abs:.2e}, CPU latency {ms:.2f} ms/window (1 thread, batch 1)")
    return 0


def export_main(argv: list[str]) -> int:
    """Entry of ``avstream export``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="avstream export", description="Export a self-describing ONNX model.")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--recipe", choices=RECIPES, help="train and export a built-in model")
    src.add_argument("--module", help="your own model: 'package.module:factory' returning a torch.nn.Module")
    src.add_argument("--model", help="an avstream ONNX model (file or builtin:NAME) to convert: --quantize int8, "
                     "--precision fp16, --format qdq|tensorrt")
    src.add_argument("--build-engines", metavar="PIPELINE", help="build every TensorRT engine a pipeline needs "
                     "on this GPU (nodes with backend: tensorrt or the tensorrt provider)")
    parser.add_argument("--checkpoint", help="state_dict to load into the module (skips recipe training)")
    parser.add_argument("--contract", help="JSON file with the avstream metadata (needed with --module)")
    parser.add_argument("--out", help="output .onnx path (recipe default: models/<recipe>.onnx)")
    parser.add_argument("--train-steps", type=int, default=600, help="recipe training steps")
    parser.add_argument("--seed", type=int, default=0, help="recipe training seed")
    parser.add_argument("--cache-dir", default=None, help="cache rendered training scenes here")
    parser.add_argument("--save-checkpoint", default=None, help="also write the trained state_dict here")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset")
    parser.add_argument("--atol", type=float, default=1e-4, help="parity tolerance, absolute")
    parser.add_argument("--rtol", type=float, default=1e-3, help="parity tolerance, relative")
    lower = parser.add_argument_group("precision and TensorRT (with --model)")
    lower.add_argument("--quantize", choices=["int8"], help="INT8 static quantisation (needs --calibrate)")
    lower.add_argument("--precision", choices=["fp32", "fp16", "int8"], help="fp16: FP16 ONNX variant; with "
                       "--format tensorrt the engine's precision (default fp16)")
    lower.add_argument("--format", choices=["onnx", "qdq", "tensorrt"], default="onnx", help="onnx (INT8 with "
                       "integer operators for ONNX Runtime CPU/edge), qdq (INT8 Q/DQ model for TensorRT), "
                       "tensorrt (native engine + sidecar)")
    lower.add_argument("--calibrate", action="append", metavar="URI", help="media whose windows calibrate INT8 "
                       "(file, sample://, synthetic://, rtsp://...; repeatable)")
    lower.add_argument("--calibration-windows", type=int, default=64, help="calibration windows per URI")
    lower.add_argument("--quantize-front-end", action="store_true", help="also quantise the log-mel front end "
                       "(faster, less accurate on quiet audio)")
    lower.add_argument("--max-batch", type=int, default=16, help="TensorRT profile: batch 1..N")
    lower.add_argument("--engine-cache", default=None, help="TensorRT engine cache folder")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        if args.build_engines:
            from .tensorrt_build import build_pipeline_engines

            return build_pipeline_engines(args.build_engines, args.engine_cache, _say)
        if args.model:
            from .quantize import convert_main

            return convert_main(args, _say)
        if args.quantize or args.precision or args.format != "onnx" or args.calibrate:
            raise ModelError("--quantize/--precision/--format/--calibrate convert an exported model: "
                             "export first, then run avstream export --model OUT.onnx ...")
        return _export_recipe(args) if args.recipe else _export_module(args)
    except MissingDependencyError as exc:
        print(f"avstream export: error: {exc}", file=sys.stderr)
        return 2
    except AvstreamError as exc:
        print(f"avstream export: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(export_main(sys.argv[1:]))
