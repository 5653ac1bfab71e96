"""Resumable training state shared by the recipes: model, optimiser, schedule and both RNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


def save_training(path: Path, model: torch.nn.Module, opt: Any, sched: Any, rng: np.random.Generator,
                  **extra: Any) -> None:
    """Write the state atomically (a killed run never leaves a torn checkpoint); ``extra`` is kept too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), **extra}, tmp)
    tmp.replace(path)


def load_training(path: Path | None, model: torch.nn.Module, opt: Any, sched: Any, rng: np.random.Generator,
                  config: Any = None) -> dict[str, Any] | None:
    """Restore a saved state into the given objects; None when there is none (or it is for another config)."""
    if path is None or not path.exists():
        return None
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)  # never code
    if config is not None and state.get("config") != config:
        return None
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    rng.bit_generator.state = state["rng"]
    torch.set_rng_state(state["torch_rng"])
    return state
