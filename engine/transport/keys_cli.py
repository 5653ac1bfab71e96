"""``avstream keys --out DIR``: CURVE key pairs for a publisher and one subscriber (SPEC §9).

Writes, in ``zmq.auth`` format (``.key``: public only; ``.key_secret``: public and secret)::

    DIR/server.key            the publisher's public key: give it to subscribers
    DIR/server.key_secret     the publisher's secret key (0600): outputs.publish.curve.secret_key
    DIR/client.key_secret     the subscriber's key pair (0600): stays with the subscriber
    DIR/clients/client.key    the subscriber's public key: DIR/clients is outputs.publish.curve.clients

Secret files are created 0600 (the umask is tightened while writing, so they are never readable by
others even for a moment) and a folder made here is 0700.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import click
import zmq.auth

from avstream.engine.cli_common import examples

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def key_files(out: Path, client: str) -> dict[str, Path]:
    return {
        "server public key": out / "server.key",
        "server secret key": out / "server.key_secret",
        "client secret key": out / f"{client}.key_secret",
        "client public key": out / "clients" / f"{client}.key",
    }


def write_keys(out: Path, client: str = "client", force: bool = False, server: bool = True) -> dict[str, Path]:
    """Create the key files; raises FileExistsError naming what exists unless ``force``. With
    ``server=False`` only a new client pair is made (the server's keys must exist already)."""
    files = key_files(out, client)
    if not server:
        files = {k: v for k, v in files.items() if k.startswith("client")}
        if not (out / "server.key_secret").is_file():
            raise FileNotFoundError(f"no server keys in {out}: run `avstream keys --out {out}` first")
    existing = [p for p in files.values() if p.exists()]
    if existing and not force:
        raise FileExistsError(", ".join(str(p) for p in existing))
    old_umask = os.umask(0o077)
    try:
        for folder in (out, out / "clients"):
            if not folder.is_dir():
                folder.mkdir(mode=0o700, parents=True)
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            made = Path(tmp)
            pairs = (("server", "server"), (client, "client")) if server else ((client, "client"),)
            for name, role in pairs:
                public, secret = zmq.auth.create_certificates(made, name)
                os.chmod(secret, 0o600)
                if role == "server":
                    os.replace(public, files["server public key"])
                    os.chmod(files["server public key"], 0o644)
                    os.replace(secret, files["server secret key"])
                else:
                    os.replace(public, files["client public key"])
                    os.chmod(files["client public key"], 0o644)
                    os.replace(secret, files["client secret key"])
    finally:
        os.umask(old_umask)
    return files


@click.command("keys", epilog=examples("avstream keys --out keys/",
                                       "avstream keys --out keys/ --client viewer2 --add-client"))
@click.option("--out", "out_dir", default="keys", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="folder for the key files (made 0700 if missing)")
@click.option("--client", default="client", show_default=True, help="name of the subscriber's key pair")
@click.option("--add-client", is_flag=True, help="only make a new client pair next to existing server keys")
@click.option("--force", is_flag=True, help="overwrite existing key files")
def keys_command(out_dir: Path, client: str, add_client: bool, force: bool) -> int:
    """Write CURVE key pairs for publishing results over the network."""
    if not NAME.match(client):
        click.echo("avstream keys: --client is letters, digits, '-' and '_' (at most 64)", err=True)
        return 2
    try:
        files = write_keys(out_dir, client, force=force, server=not add_client)
    except FileExistsError as exc:
        click.echo(f"avstream keys: refusing to overwrite existing keys: {exc} (use --force to replace them)", err=True)
        return 2
    except FileNotFoundError as exc:
        click.echo(f"avstream keys: {exc}", err=True)
        return 2
    except OSError as exc:
        click.echo(f"avstream keys: cannot write keys in {out_dir}: {exc.strerror or exc}", err=True)
        return 2
    for what, path in files.items():
        mode = "0600" if path.name.endswith(".key_secret") else "0644"
        click.echo(f"wrote {what}: {path} ({mode})")
    where = out_dir.resolve()
    click.echo(f"""
publisher (pipeline YAML):
  outputs:
    publish:
      endpoint: tcp://0.0.0.0:5560
      curve: {{secret_key: {where / 'server.key_secret'}, clients: {where / 'clients'}}}
subscriber (shell):
  avstream subscribe tcp://HOST:5560 --server-key {where / 'server.key'} --client-key {where / f'{client}.key_secret'}
subscriber (Python):
  from avstream.engine.transport.curve import client_socket
  sock = client_socket(zmq.Context(), server_public_key="{where / 'server.key'}",
                       client_key="{where / f'{client}.key_secret'}")
Give the subscriber server.key and {client}.key_secret only; the secret files never leave their owner.""")
    return 0
