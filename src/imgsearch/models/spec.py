"""What a model is, independent of the runtime that executes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from imgsearch.imaging import Preprocess


@dataclass(frozen=True)
class ModelSpec:
    """What a model is: its name, output dim, input preprocessing and how to build it (with optional weights file).

    `labels`: a classifier head's vocabulary. The built network then returns its `dim` features followed by one logit
    per label in one output, so every runtime (torch, ONNX) computes vectors and auto-tags in the same forward pass.
    `text`: the built network also has `encode_text(list[str]) -> (N, dim)` (an image-text model: CLIP).
    `revision` changes whenever the built graph does (it names cached exports).
    """

    name: str
    dim: int
    prep: Preprocess
    # Input normalisation in 0..255 units: x -> (x - mean) / std, per RGB channel.
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    build: Callable[[Path | None], "object"] = field(repr=False, compare=False)
    description: str = ""
    labels: tuple[str, ...] = field(default=(), repr=False)
    text: bool = False
    revision: int = 1
    extra: str = ""  # the pip extra that provides the model's code, if not installed by default
