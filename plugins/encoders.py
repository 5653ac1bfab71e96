"""Encoder nodes: run a self-describing ONNX model on AV windows.

- ``avstream/onnx_encoder@v1`` runs any model with the ``avstream`` metadata and publishes its scalar
  outputs as result fields and its other outputs as payloads;
- ``avstream/highlight@v1`` turns the highlight model's per-window ``activation`` into a causal
  ``score`` in [0, 1], normalised per stream over a rolling horizon of past windows.

One node instance serves several streams; anything kept between windows is keyed by stream. The
math lives in pure functions/classes (``split_outputs``, ``RollingScore``) next to the nodes.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
from pydantic import Field, field_validator

from avstream.engine.errors import AvstreamError, ModelError
from avstream.engine.inference.contract import ModelContract, resolve_model
from avstream.engine.inference.runners import PROVIDERS, Runner, load_contract, require_onnxruntime
from avstream.engine.inference.threads import (
    AUTO,
    Spin,
    ThreadPlan,
    Threads,
    check_threads,
    describe,
    plan_threads,
)
from avstream.engine.items import AV_WINDOW, RESULT, AVWindow, Item, Result
from avstream.engine.node import CheckContext, Node, NodeContext, Params, WindowRequirement

DEFAULT_PROVIDERS = ["tensorrt", "cuda", "cpu"]


# --------------------------------------------------------------------------------------------------
# pure helpers
def split_outputs(contract: ModelContract, outputs: dict[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One window's outputs (no batch axis) → (fields: scalars as float, payloads: float32 arrays).

    Keys are the contract's output keys (its ``outputs`` object), not necessarily the graph names.
    """
    by_name = {spec.name: key for key, spec in contract.outputs.items()}
    fields: dict[str, Any] = {}
    payloads: dict[str, np.ndarray] = {}
    for name, value in outputs.items():
        key = by_name.get(name)
        if key is None:
            continue  # graph outputs the contract does not describe are not published
        arr = np.asarray(value)
        if arr.size == 1:
            fields[key] = float(arr.reshape(()))
        else:
            payloads[key] = np.ascontiguousarray(arr, dtype=np.float32)
    return fields, payloads


class RollingScore:
    """Causal per-stream normalisation of an activation: robust z-score → logistic, in [0, 1].

    The reference set is the stream's activations over the last ``horizon_s`` seconds of media time,
    the current window included; later windows never change an earlier score. ``prior`` = (median,
    scale, weight): the model's own statistics of its activation (from its contract), counted as
    ``weight`` windows next to the stream's, so the first windows of a stream are judged against what
    the model usually outputs rather than against a handful of windows.
    """

    def __init__(self, horizon_s: float, max_items: int = 10_000, prior: tuple[float, float, float] | None = None):
        self.horizon_s = horizon_s
        self.history: deque[tuple[float, float]] = deque(maxlen=max_items)
        self.prior = prior

    def update(self, t: float, activation: float) -> float:
        if not math.isfinite(activation):
            return 0.5
        if self.history and t < self.history[-1][0] - 1e-6:
            self.history.clear()  # media time went back (stream restarted): start over
        self.history.append((t, activation))
        while self.history and self.history[0][0] < t - self.horizon_s:
            self.history.popleft()
        values = np.fromiter((a for _, a in self.history), dtype=np.float64)
        median = float(np.median(values))
        spread = 1.4826 * float(np.median(np.abs(values - median)))
        if self.prior is not None:
            m0, s0, w = self.prior
            n = len(values)
            median = (n * median + w * m0) / (n + w)
            spread = math.sqrt((n * spread**2 + w * s0**2) / (n + w))
        scale = max(spread, 1e-3 * (1.0 + abs(median)))  # floor: a flat history is not all noise
        z = max(-30.0, min(30.0, (activation - median) / scale))
        return 1.0 / (1.0 + math.exp(-z))


def activation_prior(contract: ModelContract) -> tuple[float, float, float] | None:
    """(median, scale, windows) of ``outputs.activation.prior`` in the model's contract, if it has one."""
    spec = contract.raw.get("outputs", {}).get("activation", {})
    prior = spec.get("prior") if isinstance(spec, dict) else None
    if not isinstance(prior, dict):
        return None
    try:
        m, s, w = float(prior["median"]), float(prior["scale"]), float(prior.get("windows", 10))
    except (KeyError, TypeError, ValueError):
        return None
    return (m, s, w) if s > 0 and w >= 0 and math.isfinite(m) else None


def _model_problems(model: str, ctx: CheckContext, need_outputs: Sequence[str] = ()) -> list[tuple[str, str]]:
    """Problems of the ``model`` param and of the windows fed to it, without raising."""
    try:
        contract = load_contract(resolve_model(model, ctx.base_dir))
    except ModelError as exc:
        return [("model", str(exc))]
    problems = []
    for out in need_outputs:
        if out not in contract.outputs:
            problems.append(("model", f"{contract.ref} has no {out!r} output (outputs: {', '.join(contract.outputs)})"))
    want = contract.window_requirement()
    for got in ctx.downstream:  # the windows the upstream window node will make
        for attr in ("seconds", "fps", "frames", "height", "width", "sample_rate"):
            a, b = getattr(got, attr), getattr(want, attr)
            if b and a and abs(a - b) > 1e-6:
                problems.append(("model", f"{contract.ref} takes windows with {attr}={b:g}, its input gives {a:g}"))
    return problems


def _provider_problems(providers: Sequence[str]) -> list[tuple[str, str]]:
    known = set(PROVIDERS)
    return [(f"providers.{i}", f"unknown execution provider {p!r} (known: {', '.join(PROVIDERS)})")
            for i, p in enumerate(providers) if p.lower() not in known and not p.endswith("ExecutionProvider")]


# --------------------------------------------------------------------------------------------------
# nodes
class ModelParams(Params):
    model: str = Field(description="ONNX model with avstream metadata: a path (relative to the pipeline "
                                   "file) or builtin:NAME")
    providers: list[str] = Field(default_factory=lambda: list(DEFAULT_PROVIDERS),
                                 description="execution providers in order of preference (tensorrt, cuda, "
                                             "cpu...); unavailable ones are skipped with a logged reason")
    threads: Threads = Field(default=AUTO, description="ONNX Runtime intra-op threads: a number >= 1, or auto "
                             "(the node's share of the cores: `cpus`, else the cores the process may use divided "
                             "among the graph's sources and model nodes)")
    spin: Spin = Field(default=AUTO, description="let idle ONNX Runtime pool threads busy-wait (true/false); auto: "
                       "only when the node has more than one thread, all within its share of the cores")
    cpus: float = Field(default=0.0, ge=0, description="CPU budget of this node in cores, for threads: auto "
                        "(0: an equal share of the cores the process may use, cgroup quota aware)")

    @field_validator("threads", mode="before")
    @classmethod
    def _whole_threads(cls, value: Any) -> Threads:
        return check_threads(value)
    max_batch: int = Field(default=1, ge=1, le=1024, description="batch windows of all streams up to this many "
                           "per model call (1: no batching); also the TensorRT profile's largest batch")
    max_wait_ms: float = Field(default=10.0, ge=0, le=10_000, description="how long a batch waits for more "
                               "windows after its first one, in milliseconds")
    backend: Literal["onnxruntime", "tensorrt"] = Field(default="onnxruntime", description="onnxruntime "
                                                        "(execution providers below) or tensorrt (native "
                                                        "TensorRT engine, built and cached per GPU)")
    precision: Literal["fp32", "fp16", "int8"] = Field(default="fp32", description="TensorRT precision "
                                                       "(int8 needs a Q/DQ model from avstream export "
                                                       "--quantize int8); CUDA/CPU run the model as it is")
    device_id: int = Field(default=0, ge=0, description="GPU index for CUDA and TensorRT")
    engine_cache: str | None = Field(default=None, description="TensorRT engine cache folder (default: "
                                     "$AVSTREAM_ENGINE_CACHE or ~/.cache/avstream/engines)")


MP = TypeVar("MP", bound=ModelParams)


class ModelNode(Node[MP]):
    """Shared part of the encoder nodes: model lookup, validation, session, batched inference."""

    input_kinds: ClassVar[tuple[str, ...]] = (AV_WINDOW,)
    output_kind: ClassVar[str | None] = RESULT
    required_outputs: ClassVar[tuple[str, ...]] = ()
    uses_cores: ClassVar[bool] = True

    def __init__(self, ctx: NodeContext, params: MP):
        super().__init__(ctx, params)
        self.runner: Runner | None = None
        self.path: Path | None = None
        self._arrivals: dict[str, tuple[float, float]] = {}  # stream → (last arrival, interval estimate)

    @classmethod
    def window_requirement(cls, params: Any, base_dir: Path) -> WindowRequirement | None:
        p = cls.parse_params(params)
        return load_contract(resolve_model(p.model, base_dir)).window_requirement()

    @classmethod
    def supports_batching(cls) -> bool:
        """A subclass that overrides ``process`` but not ``process_batch`` handles items its own way."""
        return cls.process is ModelNode.process or cls.process_batch is not ModelNode.process_batch

    @classmethod
    def check(cls, params: Any, ctx: CheckContext) -> list[tuple[str, str]]:
        p = cls.parse_params(params)
        problems = _model_problems(p.model, ctx, cls.required_outputs) + _provider_problems(p.providers)
        if p.max_batch > 1 and not cls.supports_batching():
            problems.append(("max_batch", f"{cls.type_id} processes windows one by one: leave max_batch at 1"))
        return problems

    @classmethod
    def preflight(cls, params: Any) -> None:
        require_onnxruntime()  # names the extra to install when no runtime is there

    @property
    def contract(self) -> ModelContract:
        if self.runner is None:
            raise AvstreamError(f"{self.ctx.node_id}: model not loaded (on_start not called)")
        return self.runner.contract

    def thread_plan(self) -> ThreadPlan:
        """ONNX Runtime threads and spinning from the params and the graph's CPU consumers."""
        p = self.params
        return plan_threads(p.threads, p.spin, cpus=p.cpus, consumers=self.ctx.cpu_consumers)

    def on_start(self) -> None:
        p = self.params
        self.path = resolve_model(p.model, self.ctx.base_dir)
        plan = self.thread_plan()
        self.ctx.logger.info("%s: %s", self.ctx.node_id, describe(plan))
        # warmed up at batch 1 and max_batch before the node reports ready
        self.runner = Runner.open(self.path, providers=p.providers, threads=plan.intra, spin=plan.spin,
                                  node_id=self.ctx.node_id, precision=p.precision, max_batch=p.max_batch,
                                  device_id=p.device_id, backend=p.backend, engine_cache=p.engine_cache)
        missing = [o for o in self.required_outputs if o not in self.runner.contract.outputs]
        if missing:
            raise ModelError(f"{self.path}: {self.runner.contract.ref} lacks the output(s) {missing} "
                             f"that {self.type_id} needs")
        self.ctx.logger.info("%s: model %s on %s", self.ctx.node_id, self.runner.contract.ref,
                             ", ".join(self.runner.providers))

    def on_stop(self) -> None:
        windows, batches = self.ctx.counters.get("windows", 0.0), self.ctx.counters.get("batches", 0.0)
        if batches:
            self.ctx.logger.info("%s: %d windows in %d model calls (mean batch %.2f) on %s", self.ctx.node_id,
                                 windows, batches, windows / batches,
                                 self.runner.backend.name if self.runner else "no backend")
        self.runner = None

    def batch_limits(self) -> tuple[int, float] | None:
        """(max_batch, max_wait_s) for the worker's cross-stream batching (engine/inference/batching.py)."""
        if self.params.max_batch <= 1 or not self.supports_batching():
            return None
        return self.params.max_batch, self.params.max_wait_ms / 1000.0

    def batch_wait_s(self) -> float:
        """How long a batch starting now should wait: only for streams whose next window is due within
        ``max_wait_ms`` (from each stream's arrival rhythm), so staggered live streams don't each pay
        the full wait for windows that cannot come in time. Streams not seen yet get the full wait."""
        limit = self.params.max_wait_ms / 1000.0
        now = time.monotonic()
        due = []
        for stream in self.ctx.streams:
            seen = self._arrivals.get(stream)
            if seen is None:
                due.append(limit)
                continue
            left = seen[0] + seen[1] - now
            if -seen[1] < left <= limit:  # overdue by more than an interval: ended or stalled, not waited for
                due.append(max(0.0, left))
        return min(limit, max(due) + 0.25 * limit) if due else 0.0

    def _arrived(self, windows: Sequence[AVWindow]) -> None:
        now = time.monotonic()
        for w in windows:
            last = self._arrivals.get(w.stream)
            hop = self.runner.contract.window_hop if self.runner else 1.0
            interval = hop if last is None else 0.7 * last[1] + 0.3 * (now - last[0])
            self._arrivals[w.stream] = (now, interval)

    def infer(self, windows: Sequence[AVWindow]) -> list[dict[str, np.ndarray]]:
        """Run windows of any streams as one batch (what a batching scheduler calls)."""
        if self.runner is None:
            self.on_start()
        assert self.runner is not None
        started = time.perf_counter()
        outs = self.runner.run_windows(windows)
        self.ctx.observe("inference_seconds", time.perf_counter() - started, model=self.runner.contract.ref)
        self.ctx.count("windows", len(windows))
        self.ctx.count("batches")
        return outs

    def process_batch(self, windows: Sequence[AVWindow]) -> list[Result]:
        """Results for several windows (any streams), in order; ``process`` is the one-window case.

        The worker's batching passes its data items here; anything but an AVWindow is skipped.
        """
        windows = [w for w in windows if isinstance(w, AVWindow)]
        if not windows:
            return []
        self._arrived(windows)
        outs = self.infer(windows)
        return [self.make_result(w, o) for w, o in zip(windows, outs, strict=True)]

    def make_result(self, window: AVWindow, outputs: dict[str, np.ndarray]) -> Result:
        raise NotImplementedError

    def process(self, item: Item) -> Iterable[Item]:
        if not isinstance(item, AVWindow):
            return ()
        return self.process_batch([item])


class OnnxEncoderParams(ModelParams):
    kind: str | None = Field(default=None, description="result kind of the messages (default: the model's task)")


class OnnxEncoderNode(ModelNode[OnnxEncoderParams]):
    """Runs any self-describing ONNX model on each AV window: scalar outputs → fields, others → payloads."""

    type_id: ClassVar[str] = "avstream/onnx_encoder@v1"
    summary: ClassVar[str] = "generic encoder: any ONNX model with avstream metadata on AV windows"
    Params: ClassVar[type[Params]] = OnnxEncoderParams

    def make_result(self, window: AVWindow, outputs: dict[str, np.ndarray]) -> Result:
        fields, payloads = split_outputs(self.contract, outputs)
        return Result(kind=self.params.kind or self.contract.task, stream=window.stream, t0=window.t0,
                      t1=window.t1, capture_wall=window.wall, model=self.contract.ref, fields=fields,
                      payloads=payloads)


class HighlightParams(ModelParams):
    model: str = Field(default="builtin:highlight", description="highlight model (path or builtin:NAME) "
                       "with an 'activation' output")
    horizon_s: float = Field(default=60.0, gt=0, description="rolling normalisation horizon in seconds of "
                             "media time: each score compares the window with this much of the stream's past")
    use_prior: bool = Field(default=True, description="start the rolling statistics from the model's activation "
                            "prior (outputs.activation.prior in its contract) when it has one")
    prompt_weight: float = Field(default=0.5, ge=0.0, le=1.0, description="for a model with a 'prompt_score' "
                                 "output (a zero-shot highlight model): score = prompt_weight * prompt_score + "
                                 "(1 - prompt_weight) * the rolling score")


class HighlightNode(ModelNode[HighlightParams]):
    """Causal highlight score per stream from the model's representation activation (RASL-style).

    Fields: ``score`` in [0, 1] and the raw ``activation`` it was computed from. A model that also has
    a ``prompt_score`` output (a zero-shot highlight model: the absolute probability of its
    "interesting moment" prompts) gets it mixed into ``score`` by ``prompt_weight``, and published.
    """

    type_id: ClassVar[str] = "avstream/highlight@v1"
    summary: ClassVar[str] = "highlight score in [0,1] per window, causal, normalised per stream"
    Params: ClassVar[type[Params]] = HighlightParams
    required_outputs: ClassVar[tuple[str, ...]] = ("activation",)

    def __init__(self, ctx: NodeContext, params: HighlightParams):
        super().__init__(ctx, params)
        self.scores: dict[str, RollingScore] = {}
        self.latest: dict[str, float] = {}

    def make_result(self, window: AVWindow, outputs: dict[str, np.ndarray]) -> Result:
        name = self.contract.outputs["activation"].name
        activation = float(np.asarray(outputs[name]).reshape(-1)[0])
        roll = self.scores.get(window.stream)
        if roll is None:
            prior = activation_prior(self.contract) if self.params.use_prior else None
            roll = self.scores[window.stream] = RollingScore(self.params.horizon_s, prior=prior)
        score = roll.update(window.t1, activation)
        fields: dict[str, Any] = {"score": score, "activation": activation}
        prompt = self.contract.outputs.get("prompt_score")
        if prompt is not None:
            p = float(np.asarray(outputs[prompt.name]).reshape(-1)[0])
            w = self.params.prompt_weight
            fields.update(score=w * p + (1.0 - w) * score, prompt_score=p, rolling_score=score)
        self.latest[window.stream] = fields["score"]
        return Result(kind="highlight", stream=window.stream, t0=window.t0, t1=window.t1,
                      capture_wall=window.wall, model=self.contract.ref, fields=fields)

    def on_eos(self, stream: str) -> Iterable[Item]:
        self.scores.pop(stream, None)
        return ()

    def status(self) -> dict[str, Any]:
        return {"score": {s: round(v, 3) for s, v in self.latest.items()}}


def encoder_node_types() -> list[type[Node[Any]]]:
    """The encoder node types, for the builtin plugin entry point."""
    return [OnnxEncoderNode, HighlightNode]
