"""The small pipeline the output tests configure: highlight on ``sample://demo``, outputs given.

Its ``outputs:`` key is line 8, so an outputs section starts on line 9 (located-error tests rely on it)."""

from __future__ import annotations

import textwrap
from pathlib import Path

_HEAD = """\
version: 1
name: {name}
streams:
  cam0: {{uri: "sample://demo"}}
nodes:
  window: {{type: avstream/av_window@v1, inputs: [cam0]}}
  score: {{type: avstream/highlight@v1, inputs: [window], params: {{model: builtin:highlight}}}}
outputs:
"""


def demo_pipeline(outputs: str, name: str = "demo") -> str:
    """The pipeline's text with ``outputs`` (YAML, as if at the top level) under ``outputs:``."""
    return _HEAD.format(name=name) + textwrap.indent(textwrap.dedent(outputs), "  ")


def write_demo_pipeline(folder: Path, outputs: str, name: str = "demo") -> str:
    path = folder / "p.yaml"
    path.write_text(demo_pipeline(outputs, name))
    return str(path)
