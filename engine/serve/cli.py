"""``avstream serve CONFIG.yaml``: the monitoring daemon (SPEC §6)."""

from __future__ import annotations

import sys

import click

from avstream.engine.cli_common import examples
from avstream.engine.errors import ConfigError
from avstream.engine.serve.api import ApiServer, create_app, load_or_create_token  # needs avstream[serve]
from avstream.engine.serve.config import load_serve_config
from avstream.engine.serve.service import ServiceSupervisor
from avstream.engine.serve.viewer import ViewerHub


@click.command("serve", epilog=examples(
    "avstream serve avstream.yaml",
    "curl -H \"Authorization: Bearer $(cat token)\" http://127.0.0.1:8760/api/streams",
    "kill -HUP $(pidof avstream)        # apply the edited config: only what changed"))
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--quiet", is_flag=True, help="Only warnings and errors.")
def serve_command(config: str, quiet: bool) -> None:
    """Run many streams as one daemon with a REST API.

    Streams naming the same pipeline share its models; metrics, MQTT, webhooks and clips come from the
    config's sections.

    CONFIG is a YAML file (version, server, streams, mqtt, webhooks, record). The bearer token is
    written to server.token_file (0600) on first start. SIGHUP re-reads CONFIG and applies only the
    difference; SIGINT/SIGTERM stop everything.
    """
    try:
        cfg = load_serve_config(config)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        sys.exit(2)
    token_path = cfg.path(cfg.server.token_file)
    try:
        token = load_or_create_token(token_path)
    except OSError as exc:
        click.echo(f"error: cannot read or create the token file {token_path}: {exc.strerror or exc}", err=True)
        sys.exit(1)
    if token_path.stat().st_mode & 0o077:
        click.echo(f"warning: {token_path} is readable by other users: chmod 600 it", err=True)
    service = ServiceSupervisor(cfg, quiet=quiet)
    if cfg.server.viewer:
        service.viewer = ViewerHub(list(cfg.streams))
    try:
        api = ApiServer(create_app(service, token), cfg.server.listen)
    except OSError as exc:
        service.discard()
        click.echo(f"error: the REST API cannot listen on {cfg.server.listen}: {exc.strerror or exc}", err=True)
        sys.exit(1)
    service.api_started = api.started
    service.api_failed = api.failed
    api.start()
    service.view.line(f"REST API on http://{cfg.server.listen} (token in {token_path})"
                      + (f"; viewer at http://{cfg.server.listen}/" if cfg.server.viewer else ""))
    if cfg.server.listen.rpartition(":")[0] not in ("127.0.0.1", "localhost", "::1", "[::1]"):
        service.view.line("warning: the REST API listens beyond this machine over plain HTTP: "
                          "put a TLS proxy in front of it", important=True)
    try:
        rc = service.run()
    finally:
        api.stop()
    sys.exit(rc)
