"""``avstream subscribe ENDPOINT``: the results of a running pipeline or daemon, one JSON line each.

Connects a SUB socket to a publisher (SPEC §4), with CURVE keys when the publisher has them (§9),
and writes each message as the JSONL sink writes it: the header object, each payload's values inline
under ``data`` (``--payloads``; without it the payload descriptions only). ``--topic`` filters by
prefix as ZeroMQ does (``violence.`` for one kind, ``violence.cam0`` for one kind of one stream);
``--stream`` picks streams exactly. A gap in ``seq`` is reported on standard error: results were dropped
(the first message of each stream and kind only sets where counting starts).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click
import zmq

from avstream.engine.cli_common import examples
from avstream.engine.runtime.outputs import jsonl_line
from avstream.engine.transport.curve import client_socket
from avstream.engine.transport.wire import WireError, array_of

POLL_MS = 200
MAX_MESSAGE_BYTES = 256 << 20  # a publisher (or impostor) sending more is disconnected


class SubscribeError(Exception):
    """A mistake in the command line or a key file: one line for the user, exit 2."""


def decode(frames: list[bytes], payloads: bool) -> dict[str, Any]:
    """One published message as a JSON object; ValueError for one that is not SPEC §4."""
    if len(frames) < 2:
        raise ValueError(f"{len(frames)} frame(s), expected a topic and a header")
    header = json.loads(frames[1])
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    if not payloads or not header.get("payloads"):
        return header
    descs = header["payloads"]
    if not isinstance(descs, list) or len(descs) != len(frames) - 2:
        raise ValueError(f"{len(frames) - 2} payload frame(s) for the header's {descs!r:.80}")
    try:
        arrays = [array_of(desc, buf) for desc, buf in zip(descs, frames[2:], strict=True)]
    except (WireError, AttributeError) as exc:  # AttributeError: a description that is not an object
        raise ValueError(str(exc)) from None
    return jsonl_line(header, arrays)


class SeqWatch:
    """Per (stream, kind): the next ``seq`` expected; reports gaps."""

    def __init__(self) -> None:
        self.next: dict[tuple[str, str], int] = {}

    def gap(self, header: dict[str, Any]) -> str | None:
        key, seq = (str(header.get("stream", "")), str(header.get("kind", ""))), header.get("seq")
        if not isinstance(seq, int):
            return None
        expected = self.next.get(key)
        self.next[key] = seq + 1
        if expected is not None and seq > expected:
            return f"{key[1]} {key[0]!r}: seq {expected}..{seq - 1} missing ({seq - expected} dropped)"
        return None


def open_socket(ctx: zmq.Context[Any], endpoint: str, topics: tuple[str, ...], server_key: Path | None,
                client_key: Path | None) -> zmq.Socket[Any]:
    if (server_key is None) != (client_key is None):
        raise SubscribeError("CURVE needs both --server-key (the publisher's server.key) and --client-key "
                             "(this subscriber's .key_secret)")
    for path in (server_key, client_key):
        if path is not None and not path.is_file():
            raise SubscribeError(f"no such key file: {path}")
    try:
        sock = client_socket(ctx, server_key, client_key)
    except (ValueError, OSError) as exc:
        raise SubscribeError(f"cannot use the keys: {exc}") from None
    except Exception as exc:  # zmq.auth's parser raises plain errors for a file that is not a key
        raise SubscribeError(f"not a ZeroMQ key file ({server_key}, {client_key}): {exc}") from None
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
    for topic in topics or ("",):
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        sock.close()
        raise SubscribeError(f"cannot connect to {endpoint!r}: {exc}") from None
    return sock


@click.command("subscribe", epilog=examples(
    "avstream subscribe tcp://127.0.0.1:5560",
    "avstream subscribe tcp://127.0.0.1:5560 --topic violence. --topic event.",
    "avstream subscribe tcp://10.0.0.5:5560 --server-key keys/server.key --client-key keys/client.key_secret",
    "avstream subscribe tcp://127.0.0.1:5560 --count 10 --timeout 30 --payloads > results.jsonl"))
@click.argument("endpoint")
@click.option("--topic", "topics", multiple=True, metavar="PREFIX",
              help="only messages whose topic starts with this (repeatable; e.g. violence. or caption.cam0)")
@click.option("--stream", "streams", multiple=True, help="only these stream ids (repeatable)")
@click.option("--server-key", type=click.Path(dir_okay=False, path_type=Path), help="the publisher's server.key (CURVE)")
@click.option("--client-key", type=click.Path(dir_okay=False, path_type=Path),
              help="this subscriber's .key_secret (CURVE; its public key is in the publisher's clients folder)")
@click.option("--payloads", is_flag=True, help="write payload values (e.g. heatmaps) inline, as the JSONL sink does")
@click.option("--count", type=click.IntRange(min=1), help="stop after this many messages")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
              help="stop after this many seconds without a message (exit 1 when --count was not reached)")
def subscribe_command(endpoint: str, topics: tuple[str, ...], streams: tuple[str, ...], server_key: Path | None,
                      client_key: Path | None, payloads: bool, count: int | None, timeout: float | None) -> int:
    """Print the results a run or daemon publishes as JSON lines.

    Exit codes: 0 stopped (--count reached, --timeout without --count, Ctrl-C), 1 --timeout before
    --count messages, 2 usage error (bad endpoint or key files).
    """
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        sock = open_socket(ctx, endpoint, topics, server_key, client_key)
    except SubscribeError as exc:
        click.echo(f"avstream subscribe: {exc}", err=True)
        ctx.destroy(linger=0)  # also closes a socket the key loader left open
        return 2
    stopping: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    received, last, timed_out = 0, time.monotonic(), False
    watch = SeqWatch()
    wanted = set(streams)
    try:
        while not stopping and (count is None or received < count):
            if not sock.poll(POLL_MS):
                if timeout is not None and time.monotonic() - last > timeout:
                    timed_out = True
                    break
                continue
            frames = sock.recv_multipart()
            last = time.monotonic()
            try:
                message = decode(frames, payloads)
            except (ValueError, KeyError, TypeError) as exc:
                click.echo(f"avstream subscribe: skipped a message that is not an avstream result: {exc}", err=True)
                continue
            if wanted and message.get("stream") not in wanted:
                continue
            gap = watch.gap(message)
            if gap:
                click.echo(f"avstream subscribe: {gap}", err=True)
            sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
            sys.stdout.flush()
            received += 1
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `| head`: the reader has gone, which is a normal end
        sys.stderr.close()
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
        ctx.term()
    if timed_out and count is not None and received < count:
        click.echo(f"avstream subscribe: received {received} of {count} messages before the "
                   f"{timeout:g} s timeout", err=True)
        return 1
    return 0
