"""The ``avstream`` command line (SPEC §2).

Exit codes: 0 normal end, 2 configuration or usage error, 1 runtime failure. User mistakes print a
one-line message per problem and no Python traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from avstream.engine.errors import AvstreamError, ConfigError, MissingDependencyError

USAGE_ERROR = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own exit code is 2 as well; keep its usage line
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(USAGE_ERROR)


def _pipeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("pipeline", help="a pipeline YAML file or the name of a built-in pipeline")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override any key of the YAML (YAML-typed value; list items by index)")
    p.add_argument("--input", dest="input_uri", metavar="URI", help="replace the source(s) of the only stream")
    p.add_argument("--publish", metavar="ENDPOINT", help="ZeroMQ PUB endpoint of the results")
    p.add_argument("--jsonl", metavar="PATH", help="also write the results as JSON lines ('-' for stdout)")
    p.add_argument("--duration", type=float, metavar="SECONDS",
                   help="stop after this much media time (files, sample://, synthetic://) or wall time (live)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="avstream", description="Streaming real-time audio-visual inference engine.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run a pipeline")
    _pipeline_args(run)
    run.add_argument("--quiet", action="store_true", help="no status view, only warnings and errors")
    run.add_argument("--status-json", metavar="PATH", help="write the run's status as JSON lines, one a second ('-' for stdout)")
    val = sub.add_parser("validate", help="check a pipeline; every problem is listed at once")
    _pipeline_args(val)
    graph = sub.add_parser("graph", help="print the node graph: nodes, processes, edges, endpoints")
    _pipeline_args(graph)
    sub.add_parser("plugins", help="installed node types with their versions and params")
    sub.add_parser("export", help="export a model to ONNX (see `avstream export --help`)", add_help=False)
    sub.add_parser("models", help="list / inspect models", add_help=False)
    sub.add_parser("eval", help="measure the built-in models: avstream eval [localization|highlight|violence|captions]",
                   add_help=False)
    serve = sub.add_parser("serve", help="long-running daemon (planned)")
    serve.add_argument("config")
    return parser


def _version() -> str:
    from avstream import __version__

    return f"avstream {__version__}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if argv and argv[0] in ("export", "models", "eval"):
        return _delegate(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "validate":
            return cmd_validate(args)
        if args.command == "graph":
            return cmd_graph(args)
        if args.command == "plugins":
            return cmd_plugins()
        if args.command == "serve":
            print("avstream serve: not available in this version (planned)", file=sys.stderr)
            return USAGE_ERROR
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return USAGE_ERROR
    except MissingDependencyError as exc:
        print(f"avstream: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except AvstreamError as exc:
        print(f"avstream: error: {exc}", file=sys.stderr)
        return 1
    return USAGE_ERROR


def _delegate(command: str, rest: list[str]) -> int:
    try:
        if command == "export":
            try:
                from avstream.exporters.cli import export_main
            except ImportError as exc:
                print(f"avstream export needs the export extra: pip install 'avstream[export]' ({exc})", file=sys.stderr)
                return USAGE_ERROR
            return export_main(rest)
        if command == "eval":
            return _eval(rest)
        from avstream.engine.inference.models_cli import models_main

        return models_main(rest)
    except MissingDependencyError as exc:
        print(f"avstream: {exc}", file=sys.stderr)
        return USAGE_ERROR


def _eval(rest: list[str]) -> int:
    """``avstream eval [TASK] [options]``: each task's protocol, with its baselines and random weights."""
    task = rest[0] if rest and not rest[0].startswith("-") else "all"
    options = rest[1:] if rest and not rest[0].startswith("-") else rest
    if task == "violence":
        from avstream.exporters.eval_violence import main as violence_main

        return violence_main(options)
    if task == "captions":
        from avstream.exporters.eval_captions import main as captions_main

        return captions_main(options)
    if task not in ("all", "localization", "highlight"):
        print(f"avstream eval: unknown task {task!r} (localization, highlight, violence, captions)", file=sys.stderr)
        return USAGE_ERROR
    from avstream.exporters.eval_tasks import eval_main

    return eval_main(options if task == "all" else ["--task", task, *options])


def _load(args: argparse.Namespace) -> Any:
    from avstream.engine.runtime.config import Overrides, load_pipeline

    overrides = Overrides(sets=args.sets, input_uri=args.input_uri, publish=args.publish, jsonl=args.jsonl,
                          duration=args.duration)
    return load_pipeline(args.pipeline, overrides)


def cmd_run(args: argparse.Namespace) -> int:
    from avstream.engine.runtime.supervisor import Supervisor

    spec = _load(args)
    from avstream.engine.runtime.registry import load_registry

    registry = load_registry()
    for node in spec.nodes.values():  # e.g. "install an inference runtime" before anything starts
        cls = registry.get(node.type_id)
        cls.preflight(cls.Params.model_validate(node.params))
    if args.quiet:
        logging.getLogger().setLevel(logging.WARNING)
    return Supervisor(spec, quiet=args.quiet, status_json=args.status_json).run()


def cmd_validate(args: argparse.Namespace) -> int:
    spec = _load(args)
    print(f"{spec.file}: ok ({len(spec.nodes)} nodes, {len(spec.edges)} edges)")
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    spec = _load(args)
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
            extra = f"  {' + '.join(uris)}, video at {p.get('fps') or 'native'} fps{size}"
        if node.window is not None:
            w = node.window
            extra = f"  window {w.seconds}s hop {w.hop}s, {w.frames} frames @ {w.fps} fps {w.width}x{w.height}, audio {w.sample_rate} Hz"
        print(f"  {node.id:<14} {node.type_id:<28} process={node.process}  streams={','.join(node.streams)}{extra}")
    print("processes:")
    for name, nodes in spec.processes().items():
        print(f"  {name}: {', '.join(nodes)}")
    print("edges:")
    for edge in spec.edges:
        dst = "outputs" if edge.dst == "@outputs" else edge.dst
        how = "shared memory + ipc" if edge.kind == "media" else "ipc"
        print(f"  {edge.src} -> {dst}  [{edge.kind}, {edge.policy}, queue {edge.size}, {how}]")
    print("endpoints:")
    print(f"  publish  {spec.outputs.publish} (ZeroMQ PUB)")
    if spec.outputs.jsonl:
        print(f"  jsonl    {spec.outputs.jsonl}")
    print("  data/control: ipc:// sockets in a per-run folder, allocated at start")
    return 0


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
    sys.exit(main())
