"""Procedural audio-visual scenes with known ground truth."""
