"""The ``--model`` path of ``avstream export``: a lower-precision ONNX variant or a TensorRT engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from avstream.engine.errors import ModelError
from avstream.engine.inference.contract import read_contract, resolve_model
from avstream.exporters.quantize import (
    Progress,
    calibration_feeds,
    calibration_windows,
    compare,
    convert_fp16,
    point_at_decoder,
    quantize_decoder_step_int8,
    quantize_int8,
    window_feeds,
)
from avstream.exporters.tensorrt_build import build_from_model


def convert_main(args: Any, say: Progress) -> int:
    """The ``--model`` path of ``avstream export``: a lower-precision ONNX variant or a TensorRT engine,
    with the accuracy delta and the speed-up measured on real windows."""
    model = resolve_model(args.model, Path.cwd())
    read_contract(model)  # an avstream model, or a clear error naming the file and key
    fmt = args.format or "onnx"
    precision = "int8" if (args.quantize == "int8" or fmt == "qdq") else (args.precision or "")
    calibrate = list(args.calibrate or [])
    out = Path(args.out) if args.out else None
    if fmt == "tensorrt":
        build_from_model(model, out, precision or "fp16", args.max_batch, calibrate, args.calibration_windows,
                         args.engine_cache, say)
        return 0
    if precision not in ("int8", "fp16"):
        raise ModelError("--model needs what to make of it: --quantize int8, --precision fp16, or --format tensorrt")
    out = out or model.with_name(f"{model.stem}.{precision}.onnx")
    if out.resolve() == model.resolve():
        raise ModelError(f"--out {out} would overwrite the source model")
    if precision == "int8":
        if not calibrate:
            raise ModelError("--quantize int8 needs --calibrate URI: a clip or stream (file, sample://, synthetic://, "
                             "rtsp://...) whose windows look like what the model will see; repeat it for several")
        windows = [w for uri in calibrate for w in calibration_windows(model, uri, 2 * args.calibration_windows, say)]
        # alternate windows calibrate and evaluate, so the reported delta is not on the calibration data
        calib, held_out = window_feeds(model, windows[0::2]), window_feeds(model, windows[1::2])
        quantize_int8(model, out, calib, fmt="qdq" if fmt == "qdq" else "qoperator",
                      keep_front_end=not args.quantize_front_end, progress=say)
        if fmt != "qdq":
            int8_decoder_step(model, out, say)
        eval_feeds, label = held_out or calib, "held-out windows of the calibration input(s)"
    else:
        convert_fp16(model, out, progress=say)
        uri = calibrate[0] if calibrate else "sample://demo"
        eval_feeds, label = calibration_feeds(model, uri, args.calibration_windows), f"windows of {uri}"
    variant = read_contract(out)  # the engine's own reader accepts the variant
    companion = variant.raw.get("decoder")
    if isinstance(companion, str) and not (out.parent / companion).exists():
        say(f"note: {variant.ref} names its decoder step {companion!r}: put it next to {out.name}")
    say(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB, {model.stat().st_size / 1e3:.0f} kB before), "
        f"model {variant.ref}")
    result = compare(model, out, eval_feeds)
    say(f"compared with {model.name} on {len(eval_feeds)} {label}:")
    for line in result.lines():
        say("  " + line)
    return 0


def int8_decoder_step(encoder: Path, out: Path, say: Progress) -> None:
    """A caption encoder's decoder step gets its INT8 variant next to the INT8 encoder, which then names it:
    ``X_encoder.onnx`` -> ``X_decoder_step.onnx`` (else ``OUT_decoder_step.onnx``)."""
    named = read_contract(encoder).raw.get("decoder")
    if not isinstance(named, str) or not (encoder.parent / named).is_file():
        return
    stem = out.stem.removesuffix("_encoder")
    decoder = out.with_name(f"{stem}_decoder_step.onnx")
    if decoder.resolve() == (encoder.parent / named).resolve():
        raise ModelError(f"--out {out}: its decoder step {decoder.name} would overwrite the source's")
    quantize_decoder_step_int8(encoder.parent / named, decoder, say)
    point_at_decoder(out, decoder.name)
    say(f"wrote {decoder} ({decoder.stat().st_size / 1e3:.0f} kB, "
        f"{(encoder.parent / named).stat().st_size / 1e3:.0f} kB before), named by {out.name}")
