"""Fixtures of the live tests live in servers.py."""

from tests.live.servers import clip, live_dir, pulse, servers  # noqa: F401
