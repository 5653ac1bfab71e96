"""Coverage-guided fuzz targets for atheris (libFuzzer), run by test_fuzz_atheris.py in a subprocess.

    python tests/engine/atheris_targets.py metadata|uri|onnx_header -runs=N -max_total_time=S [CORPUS_DIR]

A target returns normally for an input that is accepted or refused with the module's own error; any
other exception ends the run as a crash (libFuzzer prints it and writes the input to crash-*).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Any

import atheris

from avstream.engine.capture.base import redact_uri
from avstream.engine.capture.schemes import check_uri, uri_scheme
from avstream.engine.errors import ModelError
from avstream.engine.inference.contract import parse_metadata_text
from avstream.engine.inference.onnx_header import parse_onnx_header


def _text(data: bytes) -> str:
    # the bytes as UTF-8, so the seed corpus (valid JSON, valid URIs) means what it says; a
    # FuzzedDataProvider would read its first byte as the string's encoding
    return data.decode("utf-8", "surrogateescape")


def metadata(data: bytes) -> None:
    text = _text(data)
    try:
        parse_metadata_text(text, "fuzz.onnx")
    except ModelError as exc:
        if "\n" in str(exc):
            raise AssertionError(f"a multi-line model error: {exc!r}") from None


def uri(data: bytes) -> None:
    text = _text(data)
    problem = check_uri(text)
    if problem is not None and "\n" in problem:
        raise AssertionError(f"a multi-line URI problem: {problem!r}")
    uri_scheme(text)
    once = redact_uri(text)
    if redact_uri(once) != once:
        raise AssertionError(f"redaction is not idempotent: {text!r}")


def onnx_header(data: bytes) -> None:
    try:
        parse_onnx_header(data, "fuzz.onnx")
    except ModelError:
        pass


def instrument_engine() -> int:
    """Instrument the functions and methods of the loaded ``avstream`` modules (the editable install's
    import finder bypasses ``atheris.instrument_imports``; ``instrument_all`` takes a minute on every
    library loaded). Returns how many were instrumented."""
    done = 0
    for name, module in list(sys.modules.items()):
        if not name.startswith("avstream."):
            continue
        for value in list(vars(module).values()):
            members: list[Any] = [value]
            if inspect.isclass(value) and value.__module__ == name:
                members = [getattr(m, "__func__", m) for m in vars(value).values()]
            for func in members:
                if inspect.isfunction(func) and func.__module__ == name:
                    atheris.instrument_func(func)
                    done += 1
    return done


TARGETS: dict[str, Callable[[bytes], None]] = {"metadata": metadata, "uri": uri, "onnx_header": onnx_header}

if __name__ == "__main__":
    target = TARGETS[sys.argv[1]]
    print(f"instrumented {instrument_engine()} functions of the engine", flush=True)
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()
