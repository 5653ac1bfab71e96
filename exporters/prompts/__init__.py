"""Prompt sets for zero-shot heads (``avstream export zero-shot --prompts NAME``)."""
