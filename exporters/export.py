"""PyTorch → self-describing ONNX, with a parity check against PyTorch.

Conventions for an exportable module: ``forward`` takes the contract's inputs in the order video,
audio (only those the contract has), as raw values (uint8 BGR frames (B, T, H, W, 3), float32 samples
(B, N)), and returns one tensor per contract output, in the order of ``contract["outputs"]``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avstream.engine.errors import AvstreamError, MissingDependencyError
from avstream.engine.inference.contract import METADATA_KEY, ModelContract, contract_from_dict, read_model


class ExportError(AvstreamError, RuntimeError):
    """The module could not be exported (unsupported operator, checker failure...)."""


class ParityError(ExportError):
    """ONNX Runtime and PyTorch disagree beyond tolerance: the export is rejected."""


def import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise MissingDependencyError(
            "exporting models needs PyTorch and onnx: pip install 'avstream[export]'"
        ) from None
    return torch


@dataclass
class ParityRow:
    inputs: str  # "random" or "real[i]"
    output: str
    max_abs: float
    max_rel: float  # max |onnx - torch| / max |torch|
    ok: bool


@dataclass
class ExportReport:
    path: Path
    size_bytes: int
    opset: int
    simplified: bool
    export_s: float
    parity: list[ParityRow] = field(default_factory=list)
    atol: float = 1e-4
    rtol: float = 1e-3

    @property
    def max_abs(self) -> float:
        return max((r.max_abs for r in self.parity), default=0.0)

    @property
    def max_rel(self) -> float:
        return max((r.max_rel for r in self.parity), default=0.0)

    def lines(self) -> list[str]:
        out = [f"parity (atol {self.atol:g}, rtol {self.rtol:g}):"]
        out += [f"  {r.inputs:<8} {r.output:<18} max abs {r.max_abs:.3e}  max rel {r.max_rel:.3e}"
                f"  {'ok' if r.ok else 'FAIL'}" for r in self.parity]
        return out


def input_specs(contract: ModelContract) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, per-window shape, dtype) of the contract's inputs in forward-argument order."""
    specs: list[tuple[str, tuple[int, ...], str]] = []
    if contract.video:
        v = contract.video
        specs.append((v.name, (v.frames, v.height, v.width, 3), v.dtype))
    if contract.audio:
        specs.append((contract.audio.name, (contract.audio.samples,), "float32"))
    return specs


def random_inputs(contract: ModelContract, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Random raw inputs: uniform 0..255 frames, band-limited noise-ish audio in [-1, 1]."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, shape, dtype in input_specs(contract):
        if len(shape) == 4:
            x = rng.integers(0, 256, size=(batch, *shape), dtype=np.uint8)
            out[name] = x if dtype == "uint8" else x.astype(np.float32)
        else:
            out[name] = np.clip(rng.normal(0.0, 0.2, size=(batch, *shape)), -1, 1).astype(np.float32)
    return out


def _unsupported_op(exc: BaseException) -> str | None:
    """The operator named in a torch export error ("Exporting the operator 'aten::x' ...")."""
    text = str(exc)
    m = re.search(r"operator '([^']+)'", text) or re.search(r"\b(aten::\w+|prim::\w+)", text)
    return m.group(1) if m else None


@contextlib.contextmanager
def _capture_fd1(sink: io.StringIO) -> Iterator[None]:
    """Capture file descriptor 1 (the exporter prints its IR dump from C++, past ``sys.stdout``)."""
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            tmp.seek(0)
            sink.write(tmp.read().decode("utf-8", "replace"))


def _op_location(ir: str, op: str) -> str:
    """`` in module 'spec' (pkg.Inner) at file.py:5`` for ``op`` in the exporter's IR dump, or ''."""
    for line in ir.splitlines():
        if f"= {op}(" not in line:
            continue
        m = re.search(r"scope: (\S*)", line)
        scope = m.group(1) if m else ""
        where = re.search(r"# (\S+?):(\d+):\d+\s*$", line)
        parts = [p for p in scope.split("/") if p]
        last = parts[-1] if parts else ""
        cls, _, name = last.partition("::")
        node = ".".join(p.partition("::")[2] for p in parts[1:] if p.partition("::")[2])
        text = f" in module '{node or name or 'forward'}' ({cls or '?'})" if last else ""
        return text + (f" at {Path(where.group(1)).name}:{where.group(2)}" if where else "")
    return ""


def _dry_run(module: Any, inputs: Mapping[str, np.ndarray], names: Sequence[str]) -> None:
    """Run the module once on the contract's input shapes: a shape mismatch is named before exporting."""
    try:
        _torch_outputs(module, inputs, names)
    except ExportError:
        raise
    except Exception as exc:
        given = ", ".join(f"{n} {tuple(x.shape)} {x.dtype}" for n, x in inputs.items())
        raise ExportError(f"the module fails on the contract's inputs ({given}): {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''} (check the contract's frames/size/"
                          "samples against what forward() expects)") from None


def _torch_outputs(module: Any, inputs: Mapping[str, np.ndarray], names: Sequence[str]) -> list[np.ndarray]:
    torch = import_torch()
    with torch.no_grad():
        out = module(*[torch.from_numpy(np.ascontiguousarray(x)) for x in inputs.values()])
    if not isinstance(out, (tuple, list)):
        out = (out,)
    if len(out) != len(names):
        raise ExportError(f"module returns {len(out)} outputs, the contract names {len(names)}: {list(names)}")
    return [o.detach().cpu().numpy() for o in out]


def parity_check(
    module: Any,
    onnx_path: str | Path,
    input_sets: Sequence[tuple[str, Mapping[str, np.ndarray]]],
    output_names: Sequence[str],
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> list[ParityRow]:
    """Compare ONNX Runtime (CPU) and PyTorch on each input set; one row per (set, output)."""
    from avstream.engine.inference.runners import import_onnxruntime

    ort = import_onnxruntime()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rows = []
    for label, inputs in input_sets:
        ref = _torch_outputs(module, inputs, output_names)
        got = sess.run(list(output_names), dict(inputs))
        for name, r, g in zip(output_names, ref, got, strict=True):
            if r.shape != g.shape:
                rows.append(ParityRow(label, name, float("inf"), float("inf"), False))
                continue
            diff = np.abs(g.astype(np.float64) - r.astype(np.float64))
            max_abs = float(diff.max()) if diff.size else 0.0
            max_rel = max_abs / (float(np.abs(r).max()) + 1e-12) if diff.size else 0.0
            ok = bool(np.allclose(g, r, atol=atol, rtol=rtol))
            rows.append(ParityRow(label, name, max_abs, max_rel, ok))
    return rows


def export_onnx(
    module: Any,
    example_inputs: Mapping[str, np.ndarray] | None,
    contract: dict[str, Any],
    path: str | Path,
    opset: int = 17,
    dynamic_batch: bool = True,
    *,
    real_inputs: Sequence[Mapping[str, np.ndarray]] = (),
    atol: float = 1e-4,
    rtol: float = 1e-3,
    simplify: bool = True,
    progress: Callable[[str], None] = print,
) -> ExportReport:
    """Export ``module`` with the ``avstream`` metadata, check it, and verify parity with PyTorch.

    ``example_inputs`` maps input names to arrays with a batch axis (random ones when None);
    ``real_inputs`` are extra input sets for the parity check. Raises ExportError on an unsupported
    operator or a checker failure and ParityError (the file is renamed ``*.failed.onnx``) when ONNX
    Runtime and PyTorch differ by more than ``atol + rtol * |torch|``.
    """
    torch = import_torch()
    try:
        import onnx
    except ImportError:
        raise MissingDependencyError("exporting models needs onnx: pip install 'avstream[export]'") from None
    parsed = contract_from_dict(contract, "contract")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    specs = input_specs(parsed)
    if example_inputs is None:
        example_inputs = random_inputs(parsed, batch=1)
    missing = [n for n, _, _ in specs if n not in example_inputs]
    if missing:
        raise ExportError(f"example inputs lack {missing} (the contract's inputs: {[n for n, _, _ in specs]})")
    ordered = {n: example_inputs[n] for n, _, _ in specs}
    output_names = [o.name for o in parsed.outputs.values()]
    dyn = {n: {0: "batch"} for n in [*ordered, *output_names]} if dynamic_batch else None

    module = module.eval()
    t0 = time.perf_counter()
    _dry_run(module, ordered, output_names)
    progress(f"exporting to ONNX (opset {opset}) ...")
    ir_dump = io.StringIO()  # on failure the exporter prints its IR graph: we name the op's module from it
    try:
        with warnings.catch_warnings(), _capture_fd1(ir_dump):
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                module,
                tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in ordered.values()),
                str(path),
                input_names=list(ordered),
                output_names=output_names,
                dynamic_axes=dyn,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,  # the dynamo exporter needs onnxscript; TorchScript export is enough here
            )
    except Exception as exc:
        op = _unsupported_op(exc)
        if op and ("not supported" in str(exc) or "Unsupported" in str(exc) or "unsupported" in str(exc)):
            raise ExportError(
                f"unsupported operator {op} at opset {opset}{_op_location(ir_dump.getvalue(), op)}: rewrite it "
                f"with supported ops (or try another --opset); exporter said: {str(exc).splitlines()[0]}"
            ) from None
        raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None

    model = _finish_model(path, module, ordered, output_names, dynamic_batch, contract)
    simplified = False
    if simplify:
        try:
            import onnxsim  # optional: not a requirement of avstream
        except ImportError:
            progress("onnxsim not installed: skipping graph simplification")
        else:
            progress("simplifying the graph (onnxsim) ...")
            sim, ok = onnxsim.simplify(model)
            if ok:
                model, simplified = sim, True
    onnx.save(model, str(path))
    read_model(path)  # the engine's own reader must accept contract + graph
    export_s = time.perf_counter() - t0

    progress("parity check: ONNX Runtime vs PyTorch ...")
    sets: list[tuple[str, Mapping[str, np.ndarray]]] = [("random", random_inputs(parsed, batch=2, seed=1))]
    sets += [(f"real[{i}]", {n: x[n] for n, _, _ in specs}) for i, x in enumerate(real_inputs)]
    rows = parity_check(module, path, sets, output_names, atol=atol, rtol=rtol)
    report = ExportReport(path, path.stat().st_size, opset, simplified, export_s, rows, atol, rtol)
    return _conclude(report, progress)


def export_graph(
    module: Any,
    inputs: Mapping[str, np.ndarray],
    metadata: dict[str, Any],
    path: str | Path,
    output_names: Sequence[str],
    *,
    parity_sets: Sequence[tuple[str, Mapping[str, np.ndarray]]] = (),
    dynamic_batch: bool = True,
    opset: int = 17,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    progress: Callable[[str], None] = print,
) -> ExportReport:
    """Export a module whose inputs are not AV windows (a caption decoder step: int64 token ids and
    float memory) with free-form ``avstream`` metadata, with the checks of ``export_onnx``.

    ``inputs`` (batch axis first, dtypes kept: int64 stays int64) are the forward arguments in order and
    the first parity set; ``parity_sets`` add more. The metadata is not read as a window contract, so the
    caller validates it. Raises ExportError / ParityError like ``export_onnx``.
    """
    torch = import_torch()
    try:
        import onnx
    except ImportError:
        raise MissingDependencyError("exporting models needs onnx: pip install 'avstream[export]'") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(inputs)
    dyn = {n: {0: "batch"} for n in [*names, *output_names]} if dynamic_batch else None
    module = module.eval()
    t0 = time.perf_counter()
    progress(f"exporting {path.name} to ONNX (opset {opset}) ...")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in inputs.values()),
                              str(path), input_names=names, output_names=list(output_names), dynamic_axes=dyn,
                              opset_version=opset, do_constant_folding=True, dynamo=False)
    except Exception as exc:
        op = _unsupported_op(exc)
        hint = f"unsupported operator {op} at opset {opset}; " if op else ""
        raise ExportError(f"torch.onnx.export failed: {hint}{type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    model = _finish_model(path, module, inputs, output_names, dynamic_batch, metadata)
    onnx.save(model, str(path))
    export_s = time.perf_counter() - t0
    progress(f"parity check of {path.name}: ONNX Runtime vs PyTorch ...")
    rows = parity_check(module, path, [("example", inputs), *parity_sets], output_names, atol=atol, rtol=rtol)
    report = ExportReport(path, path.stat().st_size, opset, False, export_s, rows, atol, rtol)
    return _conclude(report, progress)


def _finish_model(path: Path, module: Any, inputs: Any, output_names: Sequence[str], dynamic_batch: bool,
                  metadata: dict[str, Any]) -> Any:
    """Load the exported file, make output shapes concrete, write the metadata, run the checker."""
    import onnx

    model = onnx.load(str(path))
    # the tracer names non-batch output dims symbolically ('Divvideo_embedding_dim_1'): make them concrete
    shapes = [o.shape for o in _torch_outputs(module, inputs, output_names)]
    for out, shape in zip(model.graph.output, shapes, strict=True):
        for axis, dim in enumerate(out.type.tensor_type.shape.dim):
            if axis > 0 or not dynamic_batch:
                dim.dim_value = int(shape[axis])
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata, sort_keys=False)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ExportError(f"onnx.checker rejected the exported model: {exc}") from None
    return model


def _conclude(report: ExportReport, progress: Callable[[str], None]) -> ExportReport:
    """Print the parity report; a failed check keeps the file as ``*.failed.onnx`` and raises."""
    for line in report.lines():
        progress(line)
    bad = [r for r in report.parity if not r.ok]
    if bad:
        failed = report.path.with_suffix(".failed.onnx")
        report.path.replace(failed)
        worst = max(bad, key=lambda r: r.max_abs)
        raise ParityError(
            f"parity check failed: output {worst.output!r} on {worst.inputs} inputs differs by "
            f"{worst.max_abs:.3e} (atol {report.atol:g}, rtol {report.rtol:g}); model kept as {failed} for inspection"
        )
    progress(f"wrote {report.path} ({report.size_bytes / 1e3:.1f} kB)")
    return report
