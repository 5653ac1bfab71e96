"""GPU check of every built-in model through every GPU path installed here (run by ``bench/gpu_check.sh``).

Paths, each checked against ONNX Runtime on the CPU (the reference) on the same random inputs, with
latency per batch size (1, 4, 16):

- ``ort-cuda``:   ONNX Runtime CUDA execution provider, through avstream's session code (IO binding on);
- ``ort-trt``:    ONNX Runtime TensorRT execution provider (FP16, engine cache in a temp folder);
- ``trt-native``: the native TensorRT runner (``engine/tensorrt.py``: build with a batch profile, FP16);
- ``torch``:      the same ONNX graph evaluated by PyTorch on CUDA (``bench/onnx_torch.py``), TF32 off.

A path that is not installed is named on a ``SKIP`` line with the reason; nothing is installed. Only
numpy, onnx, onnxruntime and (for the torch path) torch are needed; avstream's pure-python modules are
imported from the source tree (the shell script puts a package layout on PYTHONPATH).

    bash bench/gpu_check.sh [--device cuda|cpu] [--batches 1,4,16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DEADLINE_S = 270.0  # the whole check stays under 5 minutes: later heavy paths are skipped past this
T0 = time.monotonic()


def say(msg: str) -> None:
    print(msg, flush=True)


def stub_pydantic() -> None:
    """avstream's model-contract reader imports the node module, which imports pydantic; the GPU box may
    not have it. A stand-in lets the import succeed: nothing here validates node params."""
    try:
        import pydantic  # noqa: F401
    except ImportError:
        mod = types.ModuleType("pydantic")

        class BaseModel:  # noqa: D401 - a stand-in
            model_config: dict[str, Any] = {}

        mod.BaseModel = BaseModel  # type: ignore[attr-defined]
        mod.ConfigDict = dict  # type: ignore[attr-defined]
        mod.Field = lambda *a, **k: None  # type: ignore[attr-defined]
        sys.modules["pydantic"] = mod
        say("note: pydantic is not installed; a stand-in is used for importing avstream's model reader")


def random_feed(inputs: list[tuple[str, list[Any], str]], batch: int, meta: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feed = {}
    vocab = meta.get("vocabulary") or {}
    for name, shape, typ in inputs:
        dims = [batch if i == 0 or not isinstance(d, int) or d <= 0 else d for i, d in enumerate(shape)]
        if typ == "tensor(uint8)":
            feed[name] = rng.integers(0, 256, dims, dtype=np.uint8)
        elif typ == "tensor(int64)":
            n = len(vocab.get("words", [])) or 8
            x = rng.integers(4 if n > 4 else 0, n, dims).astype(np.int64)
            if x.ndim == 2 and vocab:  # BOS, a few words, then PAD (a decoding prefix)
                x[:, 0] = vocab.get("bos", 1)
                x[:, 6:] = vocab.get("pad", 0)
            feed[name] = x
        else:
            feed[name] = np.clip(rng.normal(0, 0.2, dims), -1, 1).astype(np.float32)
    return feed


def timed(fn: Callable[[], Any], sync: Callable[[], None], runs: int = 20) -> float:
    for _ in range(3):
        fn()
    sync()
    t = time.perf_counter()
    for _ in range(runs):
        fn()
    sync()
    return (time.perf_counter() - t) / runs * 1e3


def worst_diff(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> tuple[float, float]:
    """(max abs difference, the same relative to the output's largest magnitude), worst output."""
    worst, rel = 0.0, 0.0
    for name, r in ref.items():
        g = np.asarray(got[name], np.float64)
        d = float(np.abs(g - r).max()) if r.size else 0.0
        worst = max(worst, d)
        rel = max(rel, d / (float(np.abs(r).max()) + 1e-12))
    return worst, rel


class Paths:
    """Which GPU paths exist here, each with a builder ``make(model) -> run(feed) -> outputs`` or a reason."""

    def __init__(self, device: str):
        import onnxruntime as ort

        self.ort = ort
        self.device = device
        self.available = list(ort.get_available_providers())
        self.skip: dict[str, str] = {}
        self.tol: dict[str, float] = {"ort-cuda": 1e-3, "ort-trt": 3e-2, "trt-native": 3e-2, "torch": 1e-3}
        if "CUDAExecutionProvider" not in self.available:
            self.skip["ort-cuda"] = (f"onnxruntime {ort.__version__} has no CUDA provider (providers: "
                                     f"{', '.join(self.available)}); it needs onnxruntime-gpu")
        if "TensorrtExecutionProvider" not in self.available:
            self.skip["ort-trt"] = (f"onnxruntime {ort.__version__} has no TensorRT provider; it needs "
                                    "onnxruntime-gpu with TensorRT libraries")
        try:
            import tensorrt

            from avstream.engine.inference.tensorrt import gpu_info

            if gpu_info() is None:
                self.skip["trt-native"] = "tensorrt is installed but no CUDA device was found by the driver"
            else:
                self.trt_version = tensorrt.__version__
        except ImportError as exc:
            self.skip["trt-native"] = f"TensorRT is not installed ({exc})"
        try:
            import torch

            if device == "cuda" and not torch.cuda.is_available():
                self.skip["torch"] = f"torch {torch.__version__} sees no CUDA device"
            self.torch = torch
        except ImportError as exc:
            self.skip["torch"] = f"torch is not installed ({exc})"

    def make(self, path: str, model: Path, tmp: Path, max_batch: int) -> tuple[Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], Callable[[], None], str]:
        """(run, sync, note) for one path and model."""
        if path in ("ort-cuda", "ort-trt"):
            from avstream.engine.inference.runners import OrtBackend, create_session

            providers = ["cuda"] if path == "ort-cuda" else ["tensorrt", "cuda"]
            session = create_session(model, providers=providers, precision="fp16", trt_cache_dir=tmp,
                                     max_batch=max_batch, warm_up=False)
            backend = OrtBackend(session)
            note = f"{session.get_providers()[0]}, IO binding {backend.io_binding}"
            return backend.run, lambda: None, note
        if path == "trt-native":
            from avstream.engine.inference.tensorrt import TensorRTBackend, build_engine

            t = time.perf_counter()
            data = build_engine(model, "fp16", max_batch, progress=lambda m: None)
            backend = TensorRTBackend(data)
            return backend.run, lambda: None, f"TensorRT {self.trt_version} FP16, built in {time.perf_counter() - t:.0f} s"
        if path == "torch":
            import onnx

            torch = self.torch
            sys.path.insert(0, str(HERE))
            from onnx_torch import TorchGraph

            torch.backends.cuda.matmul.allow_tf32 = False  # parity at float32, not TF32
            torch.backends.cudnn.allow_tf32 = False
            graph = TorchGraph(onnx.load(str(model)), self.device)
            dev = torch.device(self.device)

            def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
                out = graph({k: torch.from_numpy(v).to(dev) for k, v in feed.items()})
                return {k: v.float().cpu().numpy() for k, v in out.items()}

            sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
            name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu"
            return run, sync, f"torch {torch.__version__} on {name}"
        raise ValueError(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="device of the torch path "
                    "(cpu: a self-test of this script on a machine without a GPU)")
    ap.add_argument("--batches", default="1,4,16")
    ap.add_argument("--models", default=str(HERE.parent / "models"))
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    stub_pydantic()
    import onnxruntime as ort

    paths = Paths(args.device)
    say(f"python {platform.python_version()}, numpy {np.__version__}, onnxruntime {ort.__version__} "
        f"({', '.join(paths.available)})" + (f", torch {paths.torch.__version__} (CUDA "
                                             f"{'yes' if paths.torch.cuda.is_available() else 'no'})"
                                             if hasattr(paths, "torch") else ""))
    if hasattr(paths, "torch") and paths.torch.cuda.is_available():
        say(f"GPU: {paths.torch.cuda.get_device_name(0)}, compute capability "
            f"{'.'.join(map(str, paths.torch.cuda.get_device_capability(0)))}")
    for name, why in paths.skip.items():
        say(f"SKIP {name}: {why}")
    order = [p for p in ("ort-cuda", "ort-trt", "trt-native", "torch") if p not in paths.skip]
    results: list[dict[str, Any]] = []
    import tempfile

    with tempfile.TemporaryDirectory() as tmp_root:
        for model in sorted(Path(args.models).glob("*.onnx")):
            ref_sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
            meta = json.loads(ref_sess.get_modelmeta().custom_metadata_map.get("avstream", "{}") or "{}")
            inputs = [(i.name, list(i.shape), i.type) for i in ref_sess.get_inputs()]
            names = [o.name for o in ref_sess.get_outputs()]
            say(f"== {model.name} ({meta.get('id', '?')}@{meta.get('version', '?')})")
            feeds = {b: random_feed(inputs, b, meta) for b in batches}
            refs = {b: dict(zip(names, ref_sess.run(None, feeds[b]), strict=True)) for b in batches}
            cpu_ms = {b: timed(lambda f=feeds[b], s=ref_sess: s.run(None, f), lambda: None, 10) for b in batches}
            say("  ort-cpu      " + "  ".join(f"b{b}: {cpu_ms[b]:7.2f} ms" for b in batches) + "  (reference)")
            for path in order:
                if time.monotonic() - T0 > DEADLINE_S:
                    say(f"  SKIP {path}: the 5-minute budget of this check is used up")
                    continue
                folder = Path(tmp_root) / f"{model.stem}-{path}"
                folder.mkdir()
                try:
                    run, sync, note = paths.make(path, model, folder, max(batches))
                    row: dict[str, Any] = {"model": model.name, "path": path, "note": note, "batches": {}}
                    ok = True
                    for b in batches:
                        got = run(feeds[b])
                        d, rel = worst_diff(refs[b], got)
                        ms = timed(lambda f=feeds[b], r=run: r(f), sync)
                        good = rel <= paths.tol[path]
                        ok &= good
                        row["batches"][b] = {"ms": round(ms, 3), "max_abs": d, "max_rel": rel, "parity": good}
                    row["parity"] = ok
                    results.append(row)
                    say(f"  {path:<11}  " + "  ".join(f"b{b}: {v['ms']:7.2f} ms" for b, v in row["batches"].items())
                        + f"  parity {'OK' if ok else 'FAIL'} (worst rel {max(v['max_rel'] for v in row['batches'].values()):.1e}"
                        f", tol {paths.tol[path]:g})  [{note}]")
                except Exception as exc:  # one path failing on one model does not stop the check
                    results.append({"model": model.name, "path": path, "error": f"{type(exc).__name__}: {exc}"})
                    say(f"  {path:<11}  ERROR {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    ran = sorted({r["path"] for r in results if "error" not in r})
    failed = [r for r in results if "error" in r or not r.get("parity", True)]
    say(f"paths run: {', '.join(ran) or 'none'}; skipped: {', '.join(paths.skip) or 'none'}; "
        f"{len(failed)} failure(s) in {time.monotonic() - T0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"skipped": paths.skip, "results": results}, indent=1, default=float))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
