"""The released violence model's operating points, for ``avstream export --recipe violence``.

Kept out of the recipe so that the evaluation (which imports the recipe) and the recipe do not import
each other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .violence_clips import ClipData


def calibrate(clips: Sequence[ClipData], steps: int, seed: int, cache: Path,
              progress: Callable[[str], None] = print) -> dict[str, Any]:
    """The released model's operating points: grouped 5-fold CV of this recipe (same steps and seed) on
    the development clips, thresholds chosen on the out-of-fold scores with audio as recorded (cached)."""
    import json

    from .eval_violence import cross_validate
    from .recipes.violence import Learner, operating_points_path, save_operating_points

    path = operating_points_path(cache, steps, seed, len(clips))
    if path.is_file():
        progress(f"operating points from {path}")
        points: dict[str, Any] = json.loads(path.read_text())
        return points
    progress("choosing the operating points: grouped 5-fold cross-validation of this recipe ...")
    cv = cross_validate(clips, Learner(progress, steps, cache), folds=5, seed=seed, progress=progress, rounds=10,
                        continuous=False)
    return save_operating_points(cv["operating_points"]["recorded"], path, len(clips))


