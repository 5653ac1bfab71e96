"""avstream: a streaming, real-time audio-visual inference engine."""

__version__ = "0.1.0"
