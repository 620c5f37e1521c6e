"""What a model is, independent of the runtime that executes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from imgsearch.imaging import Preprocess


@dataclass(frozen=True)
class ModelSpec:
    """What a model is: its name, output dim, input preprocessing and how to build it (with optional weights file)."""

    name: str
    dim: int
    prep: Preprocess
    # Input normalisation in 0..255 units: x -> (x - mean) / std, per RGB channel.
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    build: Callable[[Path | None], "object"] = field(repr=False, compare=False)
    description: str = ""
