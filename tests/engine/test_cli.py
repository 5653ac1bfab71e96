"""The ``avstream`` command tree (SPEC §2): help, lazy loading, exit codes, no tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest

from avstream import __version__
from avstream.engine.cli import COMMANDS, EVAL_TASKS, main
from avstream.engine.cli_common import LazyGroup
from tests.conftest import invoke_cli, run_cli

TOP_LEVEL = ["run", "validate", "graph", "plugins", "eval", "export", "models", "serve", "report", "keys", "subscribe"]
HEAVY_MODULES = ("numpy", "av", "cv2", "onnxruntime", "torch", "matplotlib")


def command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group below ``group``, as the words a user types (loads the lazy ones)."""
    ctx = click.Context(group, info_name="avstream")
    paths: list[tuple[str, ...]] = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        paths.append((*prefix, name))
        if isinstance(command, click.Group):
            paths += command_paths(command, (*prefix, name))
    return paths


def test_help_lists_every_command_on_one_line_each() -> None:
    res = run_cli("--help", env={"COLUMNS": "80"})
    assert res.returncode == 0, res.stderr
    section = res.stdout.split("Commands:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split()[0] for line in section] == TOP_LEVEL  # no continuation lines, nothing unbuilt
    assert all(len(line.split(maxsplit=1)) == 2 for line in section), section


def test_help_and_version_import_no_heavy_module() -> None:
    probe = ("import sys\nfrom avstream.engine.cli import main\n"
             "for argv in (['--help'], ['--version'], ['eval', '--help']):\n"
             "    try:\n        main(argv, prog_name='avstream')\n    except SystemExit as exc:\n"
             "        assert exc.code == 0, (argv, exc.code)\n"
             f"print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules), file=sys.stderr)\n")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip() == "[]"
    assert "Commands:" in res.stdout and f"avstream {__version__}" in res.stdout


def test_version() -> None:
    res = invoke_cli("--version")
    assert res.exit_code == 0 and res.stdout == f"avstream {__version__}\n"


def test_lazy_summaries_are_the_commands_own() -> None:
    """The one-liners of ``--help`` (read without importing) match each command's help."""
    ctx = click.Context(main, info_name="avstream")
    eval_group = main.get_command(ctx, "eval")
    assert isinstance(eval_group, LazyGroup)
    for group, table in ((main, COMMANDS), (eval_group, EVAL_TASKS)):
        for name, lazy in table.items():
            command = group.get_command(ctx, name)
            assert command is not None and command.get_short_help_str(limit=1000) == lazy.summary, name


@pytest.mark.parametrize("path", command_paths(main), ids=" ".join)
def test_every_command_help_has_option_help_and_an_example(path: tuple[str, ...]) -> None:
    res = invoke_cli(*path, "--help")
    assert res.exit_code == 0, res.output
    example = res.stdout.split("Example", 1)[1]
    assert f"avstream {' '.join(path)}" in example, res.stdout
    ctx = click.Context(main, info_name="avstream")
    command: Any = main
    for name in path:
        command = command.get_command(ctx, name)
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{' '.join(path)} {param.opts[0]} has no help text"
            assert param.opts[0] in res.stdout


@pytest.mark.parametrize("args,message", [
    (["run", "highlight", "--bogus"], "No such option '--bogus'"),
    (["run", "highlight", "--duration", "soon"], "'soon' is not a valid float"),
    (["run", "no-such-pipeline.yaml"], "no-such-pipeline.yaml:0:0: no such file or built-in pipeline"),
    (["validate", "highlight", "--set", "nodes"], "<--set>:1:1: --set 'nodes': expected KEY=VALUE"),
    (["graph"], "Missing argument 'PIPELINE'"),
    (["frobnicate"], "No such command 'frobnicate'"),
    (["models", "frobnicate"], "No such command 'frobnicate'"),
    (["eval", "frobnicate"], "No such command 'frobnicate'"),
    (["export"], "give exactly one of --recipe, --module, --model, --build-engines"),
    (["export", "--recipe", "nope"], "'nope' is not one of"),
])
def test_usage_and_configuration_errors_exit_2_without_traceback(args: list[str], message: str) -> None:
    res = run_cli(*args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr


def test_a_bad_set_key_is_a_located_configuration_error() -> None:
    res = invoke_cli("validate", "highlight", "--set", "nodes.score.params.nope=1")
    assert res.exit_code == 2 and "Traceback" not in res.stderr
    assert "<--set>:1:1: nodes.score.params.nope: unknown key" in res.stderr.splitlines()[-1]


@pytest.mark.parametrize("code", [0, 1])
def test_run_passes_the_supervisor_exit_code_and_accepts_status_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    code: int) -> None:
    import avstream.engine.runtime.supervisor as supervisor

    started: list[Any] = []

    class FakeSupervisor:
        def __init__(self, spec: Any, **kwargs: Any) -> None:
            started.append(spec)

        def run(self) -> int:
            return code

    monkeypatch.setattr(supervisor, "Supervisor", FakeSupervisor)
    res = invoke_cli("run", "highlight", "--duration", "1", "--status-json", str(tmp_path / "status.jsonl"))
    assert res.exit_code == code, res.output
    assert [spec.name for spec in started] == ["highlight"]


def test_a_pipeline_name_no_file_can_have_is_a_usage_error() -> None:
    res = run_cli("validate", "x" * 5000)
    assert res.returncode == 2 and "no such file or built-in pipeline" in res.stderr, res.stderr[-500:]
    assert "Traceback" not in res.stderr
