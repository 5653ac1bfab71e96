"""Fuzzing the input URI parser and the redaction of credentials (SPEC §3, §9).

Any string is either accepted or refused with a one-line reason, never an exception; a password in a
URI never shows in a redacted URI, an error message or a log line, whatever characters it holds."""

from __future__ import annotations

import logging
import string

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from avstream.engine.capture.base import NETWORK_SCHEMES, redact_text, redact_uri, source_error
from avstream.engine.capture.camera import check_v4l2_uri
from avstream.engine.capture.schemes import check_uri, open_reader, uri_scheme
from avstream.engine.errors import SourceError
from avstream.engine.serve.api import RedactingFilter

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID = [
    "clip.mp4", "file:///tmp/clip.mp4", "sample://demo", "synthetic://scene?seed=3&duration=5&fps=10",
    "synthetic://sync?duration=2", "rtsp://user:pw@cam.local:554/h264", "rtsps://cam/x", "rtmp://h/live/key",
    "http://h:8080/s.ts?token=abc", "https://h/x.m3u8", "srt://h:9000?passphrase=abcdefghij&mode=caller",
    "udp://@:1234", "tcp://127.0.0.1:5000", "v4l2:///dev/video0?format=mjpeg&size=1280x720&fps=30",
    "mic://default", "mic://2",
]
SPECIALS = "@/:?#&=%[]\\ \n\t\x00'\"é🙂"


@st.composite
def mutated_uris(draw: st.DrawFn) -> str:
    """A valid URI of some scheme with characters inserted, deleted or replaced."""
    uri = list(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(uri)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "repeat"]))
        char = draw(st.one_of(st.sampled_from(list(SPECIALS)), st.characters()))
        if action == "insert":
            uri.insert(pos, char)
        elif action == "repeat":
            uri.insert(pos, char * draw(st.integers(2, 5000)))
        elif uri and pos < len(uri):
            if action == "delete":
                del uri[pos]
            else:
                uri[pos] = char
    return "".join(uri)


URIS = st.one_of(mutated_uris(), st.text(max_size=100),
                 st.builds(lambda s, t: f"{s}://{t}", st.sampled_from([*NETWORK_SCHEMES, "v4l2", "mic", "sample",
                                                                     "synthetic", "file", "nope"]), st.text()))


def _one_line(text: str | None) -> None:
    assert text is None or (isinstance(text, str) and text and "\n" not in text.strip()), text


@FUZZ
@given(URIS)
def test_any_uri_is_checked_without_an_exception(uri: str) -> None:
    _one_line(check_uri(uri))
    assert uri_scheme(uri) == uri_scheme(uri).lower()
    redacted = redact_uri(uri)
    assert redact_uri(redacted) == redacted  # masking is idempotent: no half-masked secret left


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mutated_uris().filter(lambda u: uri_scheme(u) in ("synthetic", "sample")),
                 st.builds(lambda q: "synthetic://scene?" + q, st.text(max_size=60))))
def test_generated_inputs_open_or_fail_with_a_source_error(uri: str) -> None:
    """The inputs that need no device or network are really opened."""
    try:
        reader = open_reader(uri, stream="s")
    except SourceError as exc:
        assert str(exc).startswith("stream 's': ")
        _one_line(str(exc))
    else:
        reader.close()


@pytest.mark.parametrize("uri", ["rtsp://[::1/x", "http://[abc", "synthetic://[scene"])
def test_an_unclosed_ipv6_bracket_is_an_invalid_uri(uri: str) -> None:
    assert "not a valid URI" in (check_uri(uri) or "")
    with pytest.raises(SourceError, match="not a valid URI"):
        open_reader(uri, stream="s")


@pytest.mark.parametrize("size", ["640x480%0A", "640x480x", "0x480", "640x0", "99999x99999", "640 x480", "x480"])
def test_camera_sizes_must_match_in_full(size: str) -> None:
    assert "bad size" in (check_v4l2_uri(f"v4l2:///dev/video0?size={size}") or "")


@pytest.mark.parametrize("fps", ["nan", "inf", "-5", "0", "1e9", "x"])
def test_camera_frame_rates_are_bounded(fps: str) -> None:
    assert "bad fps" in (check_v4l2_uri(f"v4l2:///dev/video0?fps={fps}") or "")


def test_a_good_camera_uri_passes() -> None:
    assert check_v4l2_uri("v4l2:///dev/video0?format=mjpeg&size=1280x720&fps=30") is None


# ---------------------------------------------------------------------------------------------------
# credentials

USER = st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=12)
PASSWORD = st.text(string.ascii_letters + string.digits + string.punctuation.replace("'", "").replace('"', ""),
                   min_size=4, max_size=24)
# what a query value may hold unescaped
QUERY_VALUE = st.text(string.ascii_letters + string.digits + "-._~%@:/!$'()*+,;", min_size=4, max_size=24)
HOST = st.sampled_from(["cam.local", "10.0.0.7", "[::1]", "host-1.example"])
PORT = st.sampled_from(["", ":554", ":8080"])
PATH = st.sampled_from(["", "/", "/h264", "/live/stream@main", "/a:b/c"])
# every message the test redacts, around the URI
MESSAGES = ("{uri}", "[rtsp @ 0x55] could not open {uri}: 401 Unauthorized", "stream 'cam': {uri}: Connection refused",
            "request failed: POST /api/streams {{'uri': '{uri}'}}")
QUERY = st.sampled_from(["", "?tcp", "?a=1&b=2", "?email=x@y.z", "?transport=tcp#frag"])


@st.composite
def credentialed_uris(draw: st.DrawFn) -> tuple[str, str]:
    scheme = draw(st.sampled_from([*NETWORK_SCHEMES, "v4l2", "mic"]))
    password = draw(PASSWORD)
    rest = draw(HOST) + draw(PORT) + draw(PATH) + draw(QUERY)
    user = draw(USER)
    # a password that the correctly redacted messages hold anyway (say 'ream' in "stream 'cam'") is no leak
    assume(not any(password in message.format(uri=f"{scheme}://{user}:***@{rest}") for message in MESSAGES))
    return f"{scheme}://{user}:{password}@{rest}", password


def _log_line(message: str) -> str:
    record = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "request failed: %s", (message,), None)
    assert RedactingFilter().filter(record)
    return record.getMessage()


@FUZZ
@given(credentialed_uris())
def test_a_password_never_shows_when_redacted(case: tuple[str, str]) -> None:
    uri, password = case
    assert password not in redact_uri(uri)
    assert password not in redact_text(f"[rtsp @ 0x55] could not open {uri}: 401 Unauthorized")
    assert password not in str(source_error("cam", uri, "Connection refused"))
    assert password not in _log_line(f"POST /api/streams {{'uri': '{uri}'}}")
    assert password not in (check_uri(uri) or "")


@FUZZ
@given(st.sampled_from(["password", "passwd", "pwd", "token", "access_token", "key", "api_key", "passphrase",
                        "secret", "auth", "sig", "signature", "X-Amz-Signature", "PASSWORD"]), QUERY_VALUE,
       st.sampled_from(["", "a=1&", "x=@y&"]))
def test_secret_query_values_never_show(key: str, secret: str, before: str) -> None:
    uri = f"srt://h:9000?{before}{key}={secret}&mode=caller"
    assume(secret not in uri.replace(f"={secret}", "=***"))
    assert secret not in redact_uri(uri)
    if "@" not in uri:  # with an '@' the key may be masked too, as part of a would-be password
        assert f"{key}=***" in redact_uri(uri)


@pytest.mark.parametrize("uri,shown", [
    ("srt://h:9000?password=@000&mode=caller", "srt://h:***&mode=caller"),
    ("rtsp://admin:pa/ss@cam:554/x", "rtsp://admin:***@cam:554/x"),
    ("rtsp://admin:p@ss@cam/x", "rtsp://admin:***@cam/x"),
    ("rtsp://admin:p:a@s/s@cam/x", "rtsp://admin:***@cam/x"),
    ("rtsp://viewer@cam/x", "rtsp://viewer@cam/x"),
    ("http://h/x?token=abc&w=1#f", "http://h/x?token=***&w=1#f"),
    ("http://h:80/?e=a@b&token=z", "http://h:***@b&token=***"),
])
def test_known_shapes(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown
    assert _log_line(uri) == f"request failed: {shown}"
