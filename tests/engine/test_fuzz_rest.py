"""Fuzzing the daemon's REST API (SPEC §6) over HTTP: whatever the body, path or query, a real
``avstream serve`` answers 4xx with a JSON error (or 2xx), never 500, and logs no traceback."""

from __future__ import annotations

import json
import string
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi", reason="the serve extra is not installed")
from tests.engine.test_serve import Daemon, Reply  # noqa: E402

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])
MAX_BODY = 65536

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=2**64, max_value=2**300),
                    st.floats(allow_nan=False), st.text(max_size=30), st.text(min_size=2000, max_size=6000))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                    max_leaves=15)
IDS = st.one_of(st.text(max_size=80), st.sampled_from(["cam", "a" * 64, "a" * 65, "cam\n", "ca m", "é", "-_",
                                                       "../etc", "x/y", "%2e%2e", ""]))
STREAM_KEYS = ["pipeline", "uri", "video", "audio", "realtime", "loop", "fps", "sample_rate", "live", "outputs"]


@st.composite
def stream_bodies(draw: st.DrawFn) -> Any:
    """Mostly almost-right stream entries (the schema's keys, random values), sometimes anything."""
    if draw(st.integers(0, 4)) == 0:
        return draw(JSON)
    body: dict[str, Any] = {"id": draw(st.one_of(IDS, JSON)),
                            "pipeline": draw(st.one_of(st.sampled_from(["highlight", "monitor", "nonesuch"]), JSON)),
                            "uri": draw(st.one_of(st.sampled_from(["missing.mp4", "rtsp://u:p@[::1", "sample://x",
                                                                  "synthetic://scene?fps=0", "v4l2:///dev/nope"]),
                                                  JSON))}
    for key in draw(st.lists(st.sampled_from(STREAM_KEYS), max_size=4)):
        body[key] = draw(JSON)
    if draw(st.booleans()):
        body[draw(st.text(max_size=10))] = draw(JSON)
    return body


def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


RAW_BODIES = st.one_of(
    st.binary(max_size=200),
    st.integers(1000, MAX_BODY // 2 - 10).map(_deep),  # deeper than the JSON parser's stack, under the size limit
    st.integers(1000, 30_000).map(lambda n: b'{"id": ' + b"9" * n + b"}"),  # more digits than int() takes
    st.sampled_from([b"", b"null", b"\xff\xfe", b'{"id": "a", "id": "b"}', b"NaN", b'"\\ud800"']),
)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("fuzz_serve"), "{}")
    yield d
    if d.proc.poll() is None:
        d.stop()
    log = d.log.read_text()
    assert "Traceback" not in log and "Internal Server Error" not in log, log[-4000:]


def _clean(reply: Reply, *allowed: int) -> None:
    assert reply.status_code < 500, (reply.status_code, reply.text[:500])
    if allowed:
        assert reply.status_code in allowed, (reply.status_code, reply.text[:500])
    if reply.status_code >= 400:
        detail = reply.json()["detail"]
        assert detail and "Traceback" not in json.dumps(detail)


@FUZZ
@given(stream_bodies())
def test_posted_stream_bodies(daemon: Daemon, body: Any) -> None:
    content = json.dumps(body).encode()
    reply = daemon.client.post("/api/streams", content=content)
    # a device path is only opened when the stream starts: such an entry is valid, and started
    _clean(reply, *((413,) if len(content) > MAX_BODY else (201, 409, 422)))
    if reply.status_code == 201:
        assert body["uri"].startswith("v4l2://"), body
        _clean(daemon.client.delete("/api/streams/" + urllib.parse.quote(body["id"], safe="")), 200)


@FUZZ
@given(RAW_BODIES)
def test_raw_request_bodies(daemon: Daemon, content: bytes) -> None:
    _clean(daemon.client.post("/api/streams", content=content), 413, 422)


@FUZZ
@given(IDS, st.sampled_from([("GET", ""), ("DELETE", ""), ("POST", "/restart")]))
def test_stream_ids_in_paths(daemon: Daemon, sid: str, route: tuple[str, str]) -> None:
    method, tail = route
    path = "/api/streams/" + urllib.parse.quote(sid, safe="") + tail
    reply = daemon.client.request(method, path)
    # an empty or slash-holding id routes elsewhere: the list (GET), or no route at all
    _clean(reply, 200, 307, 404, 405) if sid in ("", ".", "..") or "/" in sid else _clean(reply, 404)


@FUZZ
@given(st.dictionaries(st.sampled_from(["stream", "name", "since", "other"]),
                       st.one_of(st.text(max_size=40), st.sampled_from(["nan", "inf", "-1e309", "1" * 500])),
                       max_size=4))
def test_event_queries(daemon: Daemon, params: dict[str, str]) -> None:
    reply = daemon.client.get("/api/events", params=params)
    _clean(reply, 200, 422)
    if reply.status_code == 200:
        assert isinstance(reply.json(), list)


def test_a_body_nested_too_deeply_is_a_422_not_a_500(daemon: Daemon) -> None:
    reply = daemon.client.post("/api/streams", content=_deep(20_000))
    assert reply.status_code == 422 and "not JSON" in reply.json()["detail"][0], reply.text


def test_a_stream_id_with_a_trailing_newline_is_refused(daemon: Daemon) -> None:
    reply = daemon.client.post("/api/streams", json={"id": "cam\n", "pipeline": "highlight", "uri": "missing.mp4"})
    assert reply.status_code == 422 and reply.json()["detail"][0].startswith("<request>:1:1: id: "), reply.text


def test_a_pipeline_name_no_file_can_have_is_a_422(daemon: Daemon) -> None:
    """A name longer than a file name made the file check itself raise (found by the fuzzing)."""
    reply = daemon.client.post("/api/streams", json={"id": "cam", "pipeline": "0" * 5000, "uri": "missing.mp4"})
    assert reply.status_code == 422 and "pipeline" in reply.text, reply.text


def test_the_daemon_still_serves_after_the_fuzzing(daemon: Daemon, tmp_path: Path) -> None:
    assert daemon.client.get("/healthz").json() == {"status": "ok"}
    assert daemon.streams() == {} or all(s["uri"].startswith("v4l2://") for s in daemon.streams().values())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.one_of(st.sampled_from(["http://[", "http://[::1", "://", "null", "http://127.0.0.1:1", ""]),
                 st.text(string.printable.strip(), max_size=30)))
def test_live_feed_origins(daemon: Daemon, origin: str) -> None:
    """An Origin header no URL parser reads ("http://[") raised in the handshake check."""
    from websockets.exceptions import ConnectionClosed, InvalidHandshake
    from websockets.sync.client import connect

    url = daemon.url.replace("http://", "ws://") + "/api/live"
    try:
        with connect(url, origin=origin or None, additional_headers={"Authorization": f"Bearer {daemon.token}"},  # type: ignore[arg-type]
                     open_timeout=10) as ws:
            ws.recv(timeout=10)
    except ConnectionClosed as closed:
        assert closed.rcvd is not None and closed.rcvd.code in (4401, 1000, 1001), closed
    except (InvalidHandshake, TimeoutError):
        pass  # refused before the upgrade, or a feed that sends nothing: both fine, no crash
