"""Fuzzing the pipeline validator: documents built from the real schema (the installed node types and
their params, the stream and output keys) with random keys, values and types, and random ``--set``
overrides, go through ``avstream validate``: exit 0 or 2 with located messages, never a traceback."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avstream.engine.runtime.config import NODE_KEYS, SOURCE_TYPE, TOP_KEYS, OutputsOptions
from avstream.engine.runtime.registry import load_registry
from tests.conftest import invoke_cli
from tests.engine.test_fuzz_uris import URIS

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

REGISTRY = load_registry()
TYPES = sorted(REGISTRY.types)
PARAMS = {t: sorted(REGISTRY.get(t).Params.model_fields) for t in TYPES}
STREAM_KEYS = PARAMS[SOURCE_TYPE]
OUTPUT_KEYS = {name: sorted(getattr(field.annotation, "model_fields", {}) or ["path"])
               for name, field in OutputsOptions.model_fields.items()}

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63, max_value=2**200),
                    st.floats(), st.text(max_size=20),
                    st.sampled_from(["sample://demo", "synthetic://scene?duration=2", "builtin:highlight", "x.mp4",
                                     "tcp://127.0.0.1:5560", "ipc:///tmp/x", "-", "1x1", "auto", "", "~"]))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                     st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                    max_leaves=10)


def _some(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """A mapping of some of ``keys`` (and now and then an unknown one) to random values."""
    return st.dictionaries(st.one_of(st.sampled_from(keys), st.text(max_size=8)) if keys else st.text(max_size=8),
                           JSON, max_size=4)


@st.composite
def pipelines(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON)  # not even a mapping
    streams = draw(st.dictionaries(st.sampled_from(["cam0", "cam1", "bad id", "0"]), _some(STREAM_KEYS),
                                   min_size=0, max_size=2))
    ids = [*streams, "window", "score"]
    nodes: dict[str, Any] = {}
    for nid in draw(st.lists(st.sampled_from(["window", "score", "extra", "cam0"]), unique=True, max_size=3)):
        kind = draw(st.one_of(st.sampled_from(TYPES), st.text(max_size=12)))
        node: dict[str, Any] = {"type": kind}
        if draw(st.booleans()):
            node["inputs"] = draw(st.one_of(st.lists(st.sampled_from(ids), max_size=3), JSON))
        if draw(st.booleans()):
            node["params"] = draw(_some(PARAMS.get(kind, [])))
        for key in draw(st.lists(st.sampled_from([*NODE_KEYS, "nope"]), max_size=2)):
            node[key] = draw(JSON)
        nodes[nid] = node
    doc: dict[str, Any] = {"version": draw(st.sampled_from([1, 1, 2, "1", None])), "name": draw(SCALARS),
                           "streams": streams, "nodes": nodes}
    if draw(st.booleans()):
        doc["outputs"] = {k: draw(_some(OUTPUT_KEYS[k])) for k in draw(st.lists(st.sampled_from(sorted(OUTPUT_KEYS)),
                                                                                 unique=True))}
    for key in draw(st.lists(st.sampled_from([*TOP_KEYS, "extra"]), max_size=2)):
        doc[key] = draw(JSON)
    return doc


def _validate(*args: str) -> None:
    got = invoke_cli("validate", *args)
    said = got.stdout + (got.stderr if got.stderr_bytes is not None else "")
    assert got.exit_code in (0, 2), (got.exit_code, said[-3000:], got.exception)
    assert "Traceback" not in said, said[-3000:]
    assert got.exception is None or isinstance(got.exception, SystemExit), repr(got.exception)
    if got.exit_code == 2:
        assert said.strip(), "exit 2 without a message"


@FUZZ
@given(pipelines())
def test_random_pipeline_documents_validate_or_fail_cleanly(doc: Any) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "p.yaml"
        path.write_text(yaml.safe_dump(doc, allow_unicode=True))
        _validate(str(path))


@FUZZ
@given(st.lists(st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["streams.cam0.uri", "streams.cam0.realtime", "nodes.window.params",
                                                        "nodes.score.params.model", "nodes.score.type", "outputs",
                                                        "streams.cam0", "nodes.score.inputs.0", "nodes.score.inputs.99",
                                                        "version", "a.b.c", "nodes..x", "streams.cam0.live.clock"]),
              st.one_of(st.text(max_size=30), st.sampled_from(["[", "{a: [", "!!python/object:os.system", "*x",
                                                               "&a [*a]", "1e999", "null", "-1"]))),
    st.text(max_size=30)), min_size=1, max_size=3))
def test_random_set_overrides_validate_or_fail_cleanly(sets: list[str]) -> None:
    args: list[str] = []
    for one in sets:
        args += ["--set", one]
    _validate("highlight", *args)


@FUZZ
@given(URIS.filter(lambda uri: "\x00" not in uri))  # a NUL cannot be passed in a command-line argument
def test_random_input_uris_validate_or_fail_cleanly(uri: str) -> None:
    _validate("highlight", "--input", uri)


def test_a_null_document_is_a_located_error(tmp_path: Path) -> None:
    """A file holding only ``null`` parsed fine, so the error had no problem in it: exit 2, nothing said."""
    for text in ("null\n", "~\n", "--- null\n"):
        (tmp_path / "p.yaml").write_text(text)
        got = invoke_cli("validate", str(tmp_path / "p.yaml"))
        assert got.exit_code == 2
        assert f"{tmp_path / 'p.yaml'}:1:1: expected a mapping" in got.stderr, got.stderr
