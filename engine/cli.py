"""The ``avstream`` command line (SPEC §2): one Click command tree.

Exit codes: 0 normal end, 2 configuration or usage error, 1 runtime failure. User mistakes print a
one-line message per problem and no Python traceback. ``avstream --help`` imports none of the heavy
modules (numpy, PyAV, ONNX Runtime, torch): those load inside a command, or with a lazily loaded
command's module (``export``, ``models``, the ``eval`` tasks).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from avstream import __version__
from avstream.engine.cli_common import LazyCommand, LazyGroup, examples, reports_errors

F = TypeVar("F", bound=Callable[..., Any])

COMMANDS = {
    "export": LazyCommand("avstream.exporters.cli:export_command",
                          "Build an ONNX model, or a lower-precision/TensorRT one.",
                          extra="export"),
    "models": LazyCommand("avstream.engine.inference.models_cli:models_group", "List, inspect and pull models.",
                          subcommands={"pull": LazyCommand(
                              "avstream.exporters.pull_cli:pull_command",
                              "Fetch a model or a pretrained checkpoint, check it, keep it locally.")}),
    "serve": LazyCommand("avstream.engine.serve.cli:serve_command",
                         "Run many streams as one daemon with a REST API.",
                         extra="serve"),
    "report": LazyCommand("avstream.engine.report.cli:report_command",
                          "Write an HTML + PNG report of a finished run.",
                          extra="report"),
    "keys": LazyCommand("avstream.engine.transport.keys_cli:keys_command",
                        "Write CURVE key pairs for publishing results over the network."),
    "subscribe": LazyCommand("avstream.engine.transport.subscribe_cli:subscribe_command",
                             "Print the results a run or daemon publishes as JSON lines."),
}
EVAL_TASKS = {
    "localization": LazyCommand("avstream.exporters.eval_tasks:localization_command",
                                "Sound-source localization: cIoU@0.5 and AUC."),
    "highlight": LazyCommand("avstream.exporters.eval_tasks:highlight_command",
                             "Highlight detection: mAP and P@5."),
    "violence": LazyCommand("avstream.exporters.eval_violence:violence_command",
                            "Violence detection: grouped CV and frame AP."),
    "captions": LazyCommand("avstream.exporters.eval_captions:captions_command",
                            "Captions: event-word F1 and BLEU-4."),
}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=examples("avstream run highlight --jsonl -", "avstream COMMAND --help"))
@click.version_option(__version__, "--version", prog_name="avstream", message="%(prog)s %(version)s")
def main() -> None:
    """Streaming real-time audio-visual inference engine."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@main.result_callback()
def _exit_with(code: int | None) -> None:
    """Every command returns its exit code (SPEC §2); Click would otherwise end with 0."""
    click.get_current_context().exit(code or 0)


def pipeline_options(command: F) -> F:
    """PIPELINE and what the command line changes in it; run, validate and graph share them."""
    options = [
        click.argument("pipeline"),
        click.option("--input", "input_uri", metavar="URI",
                     help="replace the source(s) of the pipeline's only stream with this URI"),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                     help="override any key of the YAML (YAML-typed value; list items by index); repeatable"),
        click.option("--duration", type=float, metavar="SECONDS",
                     help="stop after this much media time (files, sample://, synthetic://) or wall time (live)"),
        click.option("--publish", metavar="ENDPOINT", help="ZeroMQ PUB endpoint of the results"),
        click.option("--jsonl", metavar="PATH", help="also write the results as JSON lines ('-': standard output)"),
        click.option("--backend", type=click.Choice(["local", "ray"]), default=None,
                     help="where the process groups run: local processes, or Ray actors (over the YAML's backend:)"),
        click.option("--address", metavar="ADDR", help="the Ray cluster to join (host:port); with --backend ray"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.command("run", epilog=examples("avstream run highlight --input clip.mp4 --jsonl -",
                                     "avstream run my_pipeline.yaml --set nodes.score.params.threshold=0.6 --duration 30"))
@pipeline_options
@click.option("--quiet", is_flag=True, help="no status view, only warnings and errors")
@click.option("--status-json", metavar="PATH|-", help="write per-node counters and per-stream state as JSON lines, "
              "once per second, to PATH or standard output")
@click.option("--view", is_flag=True, help="serve the live web viewer of this run on 127.0.0.1 (URL with a "
              "fresh token printed at start)")
@click.option("--port", type=click.IntRange(1, 65535), default=8760, show_default=True, help="the viewer's port")
@reports_errors("avstream", failure=1)
def run_command(pipeline: str, quiet: bool, status_json: str | None, view: bool, port: int,
                **overrides: Any) -> int:
    """Run a pipeline (a YAML file or a built-in name).

    PIPELINE is a pipeline YAML file or the name of a built-in pipeline (highlight, localization,
    violence, captions, monitor). It runs until its input ends, --duration passes, or SIGINT/SIGTERM
    (exit 0); a configuration error exits 2, a runtime failure 1. With --view, the live web viewer of
    `avstream serve` shows this run at the URL printed at start (a fresh token each run).
    """
    return cmd_run(pipeline, overrides, quiet=quiet, status_json=status_json, view_port=port if view else None)


@main.command("validate", epilog=examples("avstream validate my_pipeline.yaml"))
@pipeline_options
@reports_errors("avstream", failure=1)
def validate_command(pipeline: str, **overrides: Any) -> int:
    """Check a pipeline; every problem listed at once.

    PIPELINE is a pipeline YAML file or the name of a built-in pipeline. Nothing is started; the exit
    code is 0 when the pipeline is valid, else 2 with one FILE:LINE:COL: key.path: message per problem.
    """
    return cmd_validate(pipeline, overrides)


@main.command("graph", epilog=examples("avstream graph highlight"))
@pipeline_options
@reports_errors("avstream", failure=1)
def graph_command(pipeline: str, **overrides: Any) -> int:
    """Print a pipeline's nodes, processes, edges, endpoints.

    PIPELINE is a pipeline YAML file or the name of a built-in pipeline.
    """
    return cmd_graph(pipeline, overrides)


@main.command("plugins", epilog=examples("avstream plugins"))
@reports_errors("avstream", failure=1)
def plugins_command() -> int:
    """List installed node types, versions and params."""
    return cmd_plugins()


@main.group("eval", cls=LazyGroup, lazy_commands=EVAL_TASKS,
            epilog=examples("avstream eval highlight --clips 4 --no-random"))
def eval_group() -> None:
    """Measure the built-in models on their protocols.

    Each task scores a model on held-out data next to its baselines (and, where it applies, the same
    network with random weights).
    """


def _load(pipeline: str, overrides: dict[str, Any]) -> Any:
    from avstream.engine.runtime.config import Overrides, load_pipeline

    return load_pipeline(pipeline, Overrides(**{**overrides, "sets": list(overrides["sets"])}))


def cmd_run(pipeline: str, overrides: dict[str, Any], quiet: bool, status_json: str | None,
            view_port: int | None = None) -> int:
    from avstream.engine.runtime.supervisor import Supervisor

    if view_port is not None:
        from avstream.engine.runtime.graph import PreviewSpec

        overrides = {**overrides, "preview": PreviewSpec()}
    spec = _load(pipeline, overrides)
    from avstream.engine.runtime.registry import load_registry

    registry = load_registry()
    for node in spec.nodes.values():  # e.g. "install an inference runtime" before anything starts
        cls = registry.get(node.type_id)
        cls.preflight(cls.Params.model_validate(node.params))
    if quiet:
        logging.getLogger().setLevel(logging.WARNING)
    if spec.backend.kind == "ray":
        if view_port is not None:
            print("error: --view runs with the local backend only", file=sys.stderr)
            return 2
        from avstream.engine.runtime.raybackend import RaySupervisor

        return RaySupervisor(spec, quiet=quiet, status_json=status_json).run()
    if view_port is not None:
        from avstream.engine.serve.run_view import run_with_viewer

        return run_with_viewer(spec, view_port, quiet=quiet, status_json=status_json)
    return Supervisor(spec, quiet=quiet, status_json=status_json).run()


def cmd_validate(pipeline: str, overrides: dict[str, Any]) -> int:
    spec = _load(pipeline, overrides)
    print(f"{spec.file}: ok ({len(spec.nodes)} nodes, {len(spec.edges)} edges)")
    return 0


def cmd_graph(pipeline: str, overrides: dict[str, Any]) -> int:
    from avstream.engine.inference.threads import describe, plan_threads
    from avstream.engine.runtime.registry import load_registry

    spec = _load(pipeline, overrides)
    registry = load_registry()
    print(f"pipeline {spec.name} ({spec.file})")
    print("nodes:")
    for node in spec.nodes.values():
        extra = ""
        if node.is_source:
            from avstream.engine.capture.base import redact_uri
            from avstream.engine.capture.schemes import uri_scheme

            p = node.params
            uris = [redact_uri(str(p[k])) for k in ("uri", "video", "audio") if p.get(k)]
            scaled = p.get("min_size") and uri_scheme(str(p.get("uri") or "")) == "file"
            size = f", frames scaled to cover {p['min_size'][0]}x{p['min_size'][1]}" if scaled else ""
            fits = [e.fit for e in spec.outputs_of(node.id) if e.fit is not None]
            made = sorted({f.size for f in fits if f.size}, key=lambda wh: -wh[0] * wh[1])
            size += f", frames made at {', '.join(f'{w}x{h}' for w, h in made)} (once each)" if made else ""
            rate = f", audio {p['sample_rate']} Hz" if p.get("sample_rate") else ""
            extra = f"  {' + '.join(uris)}, video at {p.get('fps') or 'native'} fps{size}{rate}"
        if node.window is not None:
            w = node.window
            extra = f"  window {w.seconds}s hop {w.hop}s, {w.frames} frames @ {w.fps} fps {w.width}x{w.height}, audio {w.sample_rate} Hz"
        if registry.get(node.type_id).uses_cores and "threads" in node.params:
            p = node.params  # what the node will ask ONNX Runtime for on this machine (a CPU provider)
            plan = plan_threads(p["threads"], p.get("spin", "auto"), cpus=float(p.get("cpus") or 0.0),
                                consumers=spec.cpu_consumers)
            extra = f"  {describe(plan)}"
        print(f"  {node.id:<14} {node.type_id:<28} process={node.process}  streams={','.join(node.streams)}{extra}")
        if node.is_source:
            fit_rates = [e.fit.fps if e.fit is not None else 0.0 for e in spec.outputs_of(node.id)]
            print(" " * 18 + _source_decoding(node.params, spec.base_dir, fit_rates))
    print("processes:")
    for name, nodes in spec.processes().items():
        print(f"  {name}: {', '.join(nodes)}")
    print("edges:")
    for edge in spec.edges:
        dst = "outputs" if edge.dst == "@outputs" else edge.dst
        how = "shared memory + ipc" if edge.kind == "media" else "ipc"
        fit = edge.fit
        takes = ""
        if fit is not None:
            frames = f"{fit.width}x{fit.height}" if fit.size else "native size"
            takes = f", frames {frames} @ {f'{fit.fps:g} fps' if fit.fps else 'every frame'}"
        print(f"  {edge.src} -> {dst}  [{edge.kind}, {edge.policy}, queue {edge.size}, {how}{takes}]")
    print("endpoints:")
    print(f"  publish  {spec.outputs.publish} (ZeroMQ PUB)")
    if spec.outputs.jsonl:
        print(f"  jsonl    {spec.outputs.jsonl}")
    print("  data/control: ipc:// sockets in a per-run folder, allocated at start")
    return 0


def _source_decoding(params: dict[str, Any], base_dir: str, fit_rates: list[float]) -> str:
    """How a source node decodes its video (skip mode, sampled rate, decoder threading); the rate it
    keeps is its own ``fps`` or, when its consumers each took a grid (``fit_rates``), the fastest."""
    from pathlib import Path

    from avstream.engine.capture.describe import describe
    from avstream.engine.capture.schemes import resolve_file

    uri = params.get("video") or params.get("uri")
    if not uri:
        return "decode: no video input"
    fps = float(params.get("fps") or 0.0)
    if not fps and fit_rates and all(r > 0 for r in fit_rates):
        fps = max(fit_rates)
    return describe(resolve_file(str(uri), Path(base_dir)), fps=fps,
                    skip=str(params.get("skip") or "auto"), threading=str(params.get("decode_threading") or "auto"),
                    options={str(k): str(v) for k, v in (params.get("options") or {}).items()})


def cmd_plugins() -> int:
    from avstream.engine.runtime.registry import load_registry

    registry = load_registry()
    for type_id, info in sorted(registry.types.items()):
        cls = info.cls
        ins = ", ".join(cls.input_kinds) or "-"
        print(f"{type_id}  ({info.distribution} {info.version}, plugin '{info.plugin}')")
        print(f"    {cls.summary}")
        print(f"    inputs: {ins}   output: {cls.output_kind or '-'}")
        for name, field in cls.Params.model_fields.items():
            default = "required" if field.is_required() else f"default {field.get_default(call_default_factory=True)!r}"
            print(f"    {name}: {field.description or ''} ({default})")
    for err in registry.load_errors:
        print(f"error: {err}", file=sys.stderr)
    return 1 if registry.load_errors else 0


if __name__ == "__main__":
    main(prog_name="avstream")
