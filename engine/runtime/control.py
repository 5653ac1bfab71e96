"""The supervisor's side of the control channel: what workers may say, and who counts as a worker.

Workers connect a DEALER to the supervisor's ROUTER and introduce themselves with
``{"type": "hello", "process", "pid"}``. A hello binds the connection (its ROUTER identity) to that
process only when the pid is the one the supervisor spawned for it; every later message for the
process must come over that connection. Messages are checked against the shapes the worker sends
(:data:`SHAPES`); anything else (wrong frame count, not JSON, wrong types, a stranger's connection)
is dropped and counted, and logged the first time, never raised.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from avstream.engine.transport.wire import Rejects

MAX_CONTROL_BYTES = 16 << 20  # the largest control message taken (a status report of many nodes)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return _is_int(v) or isinstance(v, float)


def _node_status(v: Any) -> bool:
    """One node's status report (engine/runtime/worker.py ``NodeRunner.status``)."""
    if not isinstance(v, dict):
        return False
    ints = all(_is_int(v.get(k, 0)) for k in ("in", "out", "queue", "drops"))
    last_t = v.get("last_t", {})
    return (ints and _is_number(v.get("latency_ms", 0.0)) and isinstance(v.get("state", ""), str)
            and isinstance(v.get("type", ""), str)
            and isinstance(last_t, dict) and all(isinstance(k, str) and _is_number(t) for k, t in last_t.items())
            and all(isinstance(v.get(k, {}), dict) for k in ("counters", "extra", "timings")))


def _statuses(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and _node_status(s) for k, s in v.items())


def _fallback(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(v.get(k), str) for k in ("node", "model", "why"))


def _str(v: Any) -> bool:
    return isinstance(v, str)


def _optional_str(v: Any) -> bool:
    return v is None or isinstance(v, str)


def _optional_bool(v: Any) -> bool:
    return v is None or isinstance(v, bool)


# per message type: field -> check of its value (a missing field is checked as None)
SHAPES: dict[str, dict[str, Callable[[Any], bool]]] = {
    "hello": {"pid": _is_int},
    "status": {"nodes": _statuses},
    "provider_fallback": {"report": _fallback},
    "drained": {},
    "log": {"level": _str, "message": _str},
    "error": {"node": _str, "message": _optional_str, "traceback": _optional_str, "fatal": _optional_bool},
    "bye": {"failed": _optional_bool},
}


class ControlError(ValueError):
    """A control message that is malformed or comes from someone who is not the worker."""


@dataclass
class ControlMessage:
    identity: bytes
    type: str
    process: str
    body: dict[str, Any]


def parse_control(frames: list[bytes]) -> ControlMessage:
    """A ROUTER message ``[identity, json]``; raises ControlError (only) for anything else."""
    if len(frames) != 2:
        raise ControlError(f"{len(frames)} frames, not 2")
    identity, raw = frames
    if len(raw) > MAX_CONTROL_BYTES:
        raise ControlError(f"a {len(raw)}-byte message")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ControlError(f"not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ControlError("not a JSON object")
    kind, process = body.get("type"), body.get("process")
    if not isinstance(kind, str) or kind not in SHAPES:
        raise ControlError(f"unknown message type {kind!r:.40}")
    if not isinstance(process, str):
        raise ControlError("no process name")
    for key, ok in SHAPES[kind].items():
        if not ok(body.get(key)):
            raise ControlError(f"{kind}.{key} is missing or of the wrong type")
    return ControlMessage(bytes(identity), kind, process, body)


class ControlGate:
    """Binds each worker process to the connection that said hello with its spawned pid."""

    def __init__(self, identities: dict[str, bytes]) -> None:
        self.identities = identities  # process name -> its ROUTER identity (the supervisor's own dict)
        self.rejects = Rejects("the control socket")

    def admit(self, frames: list[bytes], spawned_pid: Callable[[str], int | None]) -> ControlMessage | None:
        """The message when it is well formed and from the worker it names; else None (counted).
        ``spawned_pid(process)``: the pid the supervisor started for that process (None: none now).
        After a hello, the process's messages are taken from its connection only, also while the
        supervisor is between noticing its end and restarting it (its last reports)."""
        try:
            msg = parse_control(frames)
            if msg.type == "hello":
                expected = spawned_pid(msg.process)
                if expected is None or msg.body["pid"] != expected:
                    raise ControlError(f"hello for {msg.process!r:.60} from pid {msg.body['pid']}, not {expected}")
                self.identities[msg.process] = msg.identity
            elif self.identities.get(msg.process) != msg.identity:
                raise ControlError(f"a {msg.type!r} message for {msg.process!r:.60} from another connection")
            return msg
        except ControlError as exc:
            self.rejects.note(exc)
            return None
