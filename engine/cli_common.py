"""What every ``avstream`` command shares: lazily loaded subcommands, exit codes, help examples.

Kept apart from ``avstream.engine.cli`` so that command modules can import it without importing the
entry module a second time under ``python -m avstream.engine.cli``.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ParamSpec

import click

from avstream.engine.errors import AvstreamError, ConfigError, MissingDependencyError

USAGE_ERROR = 2  # SPEC §2: configuration or usage error (Click's own usage errors exit 2 as well)
RUNTIME_FAILURE = 1

P = ParamSpec("P")


@dataclass(frozen=True)
class LazyCommand:
    """A subcommand known by name and one-line summary; its module is imported only when needed."""

    target: str  # "package.module:attribute" of the click.Command
    summary: str  # the first sentence of that command's help, shown by the group's --help
    extra: str = ""  # the avstream extra that provides the module's imports, named when they fail
    # lazy subcommands of a LazyGroup target, declared by the caller: the group's own module need not
    # import their modules (engine.cli adds the exporters' ``models pull`` to the engine's models group)
    subcommands: dict[str, LazyCommand] = field(default_factory=dict)


class LazyGroup(click.Group):
    """A group whose heavy subcommands load on first use (the LazyGroup pattern of Click's docs).

    ``--help`` of the group lists the lazy ones from their summaries, so it imports none of them;
    running a subcommand, or asking for its own ``--help``, imports its module.
    """

    def __init__(self, *args: Any, lazy_commands: dict[str, LazyCommand] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*self.commands, *self.lazy_commands]  # the order they were declared in, not alphabetical

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        lazy = self.lazy_commands.get(cmd_name)
        if lazy is None:
            return super().get_command(ctx, cmd_name)
        module_name, _, attribute = lazy.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if not lazy.extra:
                raise
            click.echo(f"{ctx.command_path} {cmd_name} needs the {lazy.extra} extra: "
                       f"pip install 'avstream[{lazy.extra}]' ({exc})", err=True)
            ctx.exit(USAGE_ERROR)
        command = getattr(module, attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{lazy.target} is not a click command")
        if lazy.subcommands:
            if not isinstance(command, LazyGroup):
                raise TypeError(f"{lazy.target} is not a LazyGroup, so it cannot take lazy subcommands")
            command.lazy_commands.update(lazy.subcommands)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows: list[tuple[str, str]] = []
        for name in self.list_commands(ctx):
            if name in self.lazy_commands:
                rows.append((name, self.lazy_commands[name].summary))
            elif not self.commands[name].hidden:
                rows.append((name, self.commands[name].get_short_help_str(limit=formatter.width)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def examples(*command_lines: str) -> str:
    """A help epilog with example command lines, kept as written (Click rewraps text otherwise)."""
    label = "Example:" if len(command_lines) == 1 else "Examples:"
    return "\b\n" + label + "\n" + "\n".join(f"  {line}" for line in command_lines)


def reports_errors(prog: str, failure: int = USAGE_ERROR) -> Callable[[Callable[P, int]], Callable[P, int]]:
    """Turn avstream's errors into SPEC §2 exit codes and messages, never a traceback.

    A configuration error prints ``FILE:LINE:COL: key.path: message`` per problem and exits 2; a
    missing optional dependency names its extra and exits 2; any other avstream error prints one line
    and exits ``failure`` (1 for a runtime failure of ``run``; 2 where the error is the user's input).
    """

    def decorate(command: Callable[P, int]) -> Callable[P, int]:
        @functools.wraps(command)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> int:
            try:
                return command(*args, **kwargs)
            except ConfigError as exc:
                for problem in exc.problems:
                    click.echo(str(problem), err=True)
                return USAGE_ERROR
            except MissingDependencyError as exc:
                click.echo(f"{prog}: {exc}", err=True)
                return USAGE_ERROR
            except AvstreamError as exc:
                click.echo(f"{prog}: error: {exc}", err=True)
                return failure

        return wrapper

    return decorate
