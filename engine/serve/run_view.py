"""``avstream run PIPELINE --view``: one run with the live web viewer of ``avstream serve``.

The viewer's hub becomes a sink of the run's publisher and takes the sources' preview frames; the
page is served by uvicorn on a thread (the REST API's server), on loopback, with a fresh token per
run printed once as a URL. The page stays up until the run ends, and then says so.
"""

from __future__ import annotations

import secrets
import sys
import time
from typing import Any

from avstream.engine.errors import MissingDependencyError
from avstream.engine.runtime.graph import PipelineSpec
from avstream.engine.runtime.supervisor import Supervisor

DEFAULT_PORT = 8760
LAST_MESSAGES_S = 0.5  # after the run's final status: time for the pages to get "run ended"


def stream_ids(spec: PipelineSpec) -> list[str]:
    return list(dict.fromkeys(s for n in spec.nodes.values() if n.is_source for s in n.streams))


def run_with_viewer(spec: PipelineSpec, port: int, *, quiet: bool, status_json: str | None) -> int:
    """Run ``spec`` as ``avstream run`` does, the viewer on 127.0.0.1:``port``; exit 2 if it cannot listen."""
    try:
        from avstream.engine.serve.api import ApiServer
        from avstream.engine.serve.viewer import ViewerHub
        from avstream.engine.serve.web import create_run_app
    except ImportError as exc:
        raise MissingDependencyError(f"--view needs the web server: pip install 'avstream[serve]' ({exc.name})") from exc
    token = secrets.token_urlsafe(24)
    hub = ViewerHub(stream_ids(spec))
    supervisor: Supervisor | None = None

    def recorder() -> Any:
        sinks = supervisor.publisher.sinks.sinks if supervisor is not None and hasattr(supervisor, "publisher") else []
        return next((s for s in sinks if s.name == "record"), None)

    app = create_run_app(hub, token, recorder, title=f"avstream run {spec.name}")
    listen = f"127.0.0.1:{port}"
    try:
        server = ApiServer(app, listen)
    except OSError as exc:
        print(f"avstream: error: the viewer cannot listen on {listen}: {exc.strerror or exc} "
              "(choose another port with --port)", file=sys.stderr)
        return 2
    server.start()
    deadline = time.monotonic() + 10
    while not server.started() and not server.failed() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started():
        print(f"avstream: error: the viewer did not start on {listen}", file=sys.stderr)
        server.stop()
        return 1
    print(f"viewer: http://{listen}/?token={token}", file=sys.stderr, flush=True)
    supervisor = Supervisor(spec, quiet=quiet, status_json=status_json)
    supervisor.viewer = hub
    try:
        return supervisor.run()
    finally:
        if hub.wanted_streams():
            time.sleep(LAST_MESSAGES_S)
        server.stop()
