"""The avstream engine: graph, node API, transport, supervisor, capture, inference, CLI."""

ENGINE_API_VERSION = 1
