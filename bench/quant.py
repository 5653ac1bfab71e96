"""INT8 vs FP32 on CPU for every built-in model: latency ratio and accuracy delta, same run.

For each ``models/*.onnx``:

- AV-window models: INT8 static quantisation (``exporters/quantize.py``, QOperator format, 7-bit
  weights, log-mel front end and output heads in float) calibrated on windows of synthetic scenes with training seeds (< 1,000,000),
  evaluated on windows of held-out scenes (seeds >= 1,000,000): per-output max abs difference and
  correlation with the FP32 model, and the paired latency ratio (rounds alternate FP32/INT8, best round
  counts) at batch 1 and batch 8, one ORT thread. Where an evaluation module exists
  (``exporters/eval_*.py``) the task metric of both models is computed on the same held-out scenes.
- Models that are not AV-window models (the caption decoder step) get dynamic INT8 quantisation (no
  calibration: weights int8 with 7 bits used, activations quantised per call), evaluated on decoding steps fed by the
  FP32 caption encoder on held-out windows: next-token agreement and logits difference.

INT8 agreement depends on the CPU (ORT's u8 x s8 kernels saturate on AVX2 without VNNI), so the run
starts by naming the CPU features it measures on, and the JSON rows carry them.

    python bench/quant.py [--calib-scenes 6] [--eval-scenes 6] [--task-scenes 24] [--only NAME]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from avstream.engine.inference.contract import ModelContract, builtin_models, read_contract, read_metadata
from avstream.engine.inference.onnx_header import read_onnx_header
from avstream.exporters.cpu_features import cpu_features
from avstream.exporters.quantize import (
    REDUCE_RANGE,
    calibration_feeds,
    compare,
    cpu_session,
    paired_latency,
    quantize_int8,
)

CALIB_SEED0, EVAL_SEED0 = 500_000, 1_000_300


def feeds_of(model: Path, seed0: int, scenes: int, per_scene: int) -> list[dict[str, np.ndarray]]:
    out = []
    for k in range(scenes):
        out += calibration_feeds(model, f"synthetic://scene?seed={seed0 + k}&duration={per_scene + 1}", per_scene)
    return out


def batch_speed(ref: Path, new: Path, feeds: list[dict[str, np.ndarray]], batch: int) -> tuple[float, float]:
    feed = {k: np.concatenate([f[k] for f in (feeds * batch)[:batch]]) for k in feeds[0]}
    a, b = paired_latency([cpu_session(ref), cpu_session(new)], feed, runs=max(3, 30 // batch))
    return a, b


def task_metric(task: str, fp32: Path, int8: Path, scenes: int) -> dict[str, Any] | str:
    """The task metric of both models where an evaluation module for the task exists."""
    try:
        if task == "highlight":
            from avstream.exporters import eval_tasks as ev

            methods = [ev.model_method("fp32", fp32, "activation"), ev.model_method("int8", int8, "activation")]
            res = ev.evaluate_highlight(methods, seeds=ev.HIGH_SEEDS[:scenes], progress=lambda m: None)
            return {k: {"mAP": round(v["mAP"], 4), "P@5": round(v["P@5"], 4)} for k, v in res.items()}
        if task == "localization":
            from avstream.exporters import eval_tasks as ev

            methods = [ev.model_method("fp32", fp32, "heatmap"), ev.model_method("int8", int8, "heatmap")]
            res = ev.evaluate_localization(methods, seeds=ev.LOC_SEEDS[:scenes], progress=lambda m: None)
            return {k: {"cIoU@0.5": round(v["ciou@0.5"], 4), "AUC": round(v["auc"], 4)} for k, v in res.items()}
        if task == "violence":
            from avstream.exporters import eval_violence as ev

            scenes = ev.synthetic_scenes(read_contract(fp32).window_requirement(), n=scenes)
            return {name: {"frame AP (synthetic)": round(ev.synthetic_frame_ap(ev.node_scorer(str(p)), scenes,
                                                                                rounds=50).value, 4)}
                    for name, p in (("fp32", fp32), ("int8", int8))}
        if task == "caption_encoder":
            from avstream.exporters import eval_captions as ec

            caps = [ec._learned(str(p), "", 1, "av", name) for name, p in (("fp32", fp32), ("int8", int8))]
            scores = ec.evaluate(caps, seeds=ec.EVAL_SEEDS[:scenes], progress=lambda m: None)
            return {s.name: {"event-word F1": round(s.f1, 4), "BLEU-4": round(s.bleu4, 4)} for s in scores}
    except (ImportError, AttributeError, TypeError, KeyError) as exc:
        return f"no task metric ({type(exc).__name__}: {exc})"
    return f"no evaluation module for task {task!r}: output agreement only"


def bench_av_model(name: str, path: Path, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    contract = read_contract(path)
    t0 = time.perf_counter()
    calib = feeds_of(path, CALIB_SEED0, args.calib_scenes, args.per_scene)
    held = feeds_of(path, EVAL_SEED0, args.eval_scenes, args.per_scene)
    out = quantize_int8(path, tmp / f"{name}.int8.onnx", calib)
    companion = contract.raw.get("decoder")  # a caption encoder names its decoder step file, next to it
    if isinstance(companion, str) and (path.parent / companion).is_file():
        shutil.copy(path.parent / companion, tmp / companion)
    cmp = compare(path, out, held, runs=10)
    row: dict[str, Any] = {"model": contract.ref, "task": contract.task, "calibration windows": len(calib),
                           "held-out windows": len(held), "size kB": [round(path.stat().st_size / 1e3),
                                                                       round(out.stat().st_size / 1e3)]}
    for batch in (1, 8):
        a, b = batch_speed(path, out, held, batch)
        row[f"batch {batch} ms fp32/int8"] = [round(a, 2), round(b, 2)]
        row[f"batch {batch} speed-up"] = round(a / b, 2)
    row["outputs"] = {d.name: {"max abs": float(f"{d.max_abs:.3g}"), "range": float(f"{d.ref_range:.3g}"),
                               "corr": round(d.corr, 4)} for d in cmp.deltas}
    if args.task_scenes > 0:
        row["task metric"] = task_metric(contract.task, path, out, args.task_scenes)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def bench_decoder_step(name: str, path: Path, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Dynamic INT8 of a caption decoder step, fed by its FP32 encoder on held-out windows."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    meta = json.loads(read_onnx_header(path).metadata["avstream"])
    enc_ref = meta.get("encoder", "")
    encoder = next((p for n, p in builtin_models().items() if p != path and enc_ref and
                    json.loads(read_onnx_header(p).metadata.get("avstream", "{}")).get("id") == enc_ref.split("@")[0]),
                   None)
    if encoder is None:
        return {"skipped": f"its encoder {enc_ref!r} is not a built-in model"}
    out = tmp / f"{name}.int8.onnx"
    # 7-bit weights for the same reason as the static variants: no int16 saturation on AVX2 CPUs
    quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8, reduce_range=REDUCE_RANGE)
    held = feeds_of(encoder, EVAL_SEED0, args.eval_scenes, args.per_scene)
    enc = cpu_session(encoder)
    memory = np.concatenate([enc.run(["memory"], f)[0] for f in held])
    a, b = cpu_session(path), cpu_session(out)
    length, bos, pad = meta["inputs"]["tokens"]["length"], meta["vocabulary"]["bos"], meta["vocabulary"]["pad"]
    tokens = np.full((len(memory), length), pad, np.int64)
    tokens[:, 0] = bos
    agree, steps, diffs = 0, 0, []
    for step in range(1, 9):  # greedy steps of the FP32 decoder; both models see the same prefixes
        la = a.run(None, {"tokens": tokens, "memory": memory})[0]
        lb = b.run(None, {"tokens": tokens, "memory": memory})[0]
        agree += int((la.argmax(1) == lb.argmax(1)).sum())
        steps += len(la)
        diffs.append(float(np.abs(la - lb).max()))
        tokens[:, step] = la.argmax(1)
    feed = {"tokens": tokens[:1], "memory": memory[:1]}
    ra, rb = paired_latency([a, b], feed, runs=30)
    return {"model": f"{meta['id']}@{meta['version']}", "quantisation": f"dynamic ({7 if REDUCE_RANGE else 8}-bit int8 weights)",
            "decoding steps": steps, "next-token agreement": round(agree / steps, 4),
            "logits max abs": round(max(diffs), 4), "batch 1 ms fp32/int8": [round(ra, 2), round(rb, 2)],
            "batch 1 speed-up": round(ra / rb, 2),
            "size kB": [round(path.stat().st_size / 1e3), round(out.stat().st_size / 1e3)]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calib-scenes", type=int, default=6, help="calibration scenes (training seeds)")
    ap.add_argument("--eval-scenes", type=int, default=6, help="held-out scenes for agreement and speed")
    ap.add_argument("--per-scene", type=int, default=8, help="windows per scene")
    ap.add_argument("--task-scenes", type=int, default=24, help="held-out scenes for the task metric, as many as the evaluation protocols use (0: skip)")
    ap.add_argument("--only", default="", help="one built-in model name")
    ap.add_argument("--json", default="", help="also write the rows here")
    args = ap.parse_args()
    cpu = cpu_features()
    print(f"measured on {cpu.line()}", flush=True)
    rows: dict[str, Any] = {"cpu": cpu.as_dict()}
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in builtin_models().items():
            if args.only and name != args.only:
                continue
            print(f"== {name}", flush=True)
            try:
                # a window model, or a caption decoder step fed by its encoder's memory
                av_model = isinstance(read_metadata(path)[0], ModelContract)
                row = (bench_av_model if av_model else bench_decoder_step)(name, path, args, Path(tmp))
            except Exception as exc:  # one model failing does not stop the others
                row = {"failed": f"{type(exc).__name__}: {exc}"}
            rows[name] = row
            print(json.dumps(row, indent=1), flush=True)
    print(f"summary ({cpu.line()}):")
    for name, row in rows.items():
        if name == "cpu":
            continue
        if "failed" in row or "skipped" in row:
            print(f"  {name}: {row.get('failed') or row.get('skipped')}")
            continue
        sp = " ".join(f"{k.split()[1]}: x{v}" for k, v in row.items() if k.endswith("speed-up"))
        if "outputs" in row:
            worst = min((o["corr"] for o in row["outputs"].values() if not math.isnan(o["corr"])), default=float("nan"))
            acc = f"min output corr {worst:.4f}"
        else:
            acc = f"next-token agreement {row['next-token agreement']:.3f}"
        metric = row.get("task metric")
        extra = f"; task {json.dumps(metric)}" if isinstance(metric, dict) else ""
        print(f"  {name}: speed-up (batch {sp}); {acc}{extra}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
