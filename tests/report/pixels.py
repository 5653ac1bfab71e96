"""Reading what a report's PNG shows: pixels of a colour inside one axes' box."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np


def rgb(hex_color: str) -> tuple[int, int, int]:
    value = hex_color.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def load_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None and image.size > 0, f"{path} is not a readable PNG"
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def colour_pixels(image: np.ndarray, box: list[int], hex_color: str, tolerance: int = 14) -> int:
    """Pixels within ``tolerance`` (per channel) of the colour, inside ``box`` = [left, top, right, bottom]."""
    left, top, right, bottom = box
    crop = image[top:bottom, left:right].astype(np.int16)
    close = np.abs(crop - np.asarray(rgb(hex_color), dtype=np.int16)).max(axis=2) <= tolerance
    return int(close.sum())


def manifest(out_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out_dir / "manifest.json").read_text())
    return data


def figure(out_dir: Path, stream: str, what: str) -> dict[str, Any]:
    found = [f for f in manifest(out_dir)["figures"] if f["stream"] == stream and f["what"] == what]
    assert len(found) == 1, f"{what} figures of {stream}: {found}"
    return found[0]
