"""What a model is, independent of the runtime that executes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

from imgsearch.imaging import Preprocess


@dataclass(frozen=True)
class ModelSpec:
    """What a model is: its name, output dim, input preprocessing and how to build it (with optional weights file).

    `labels` (from `label_source`, read on first use: importing a vocabulary may be slow): a classifier head's
    vocabulary. The built network then returns its `dim` features followed by one logit per label in one output, so
    every runtime (torch, ONNX) computes vectors and auto-tags in the same forward pass.
    `text`: the built network also has `encode_text(list[str]) -> (N, dim)` (an image-text model: CLIP).
    `revision` changes whenever the built graph does (it names cached exports).
    `trace`: the precisions in which the torch runtime TorchScript-traces the network, as `python -m bench models`
    measured them (speed and peak memory, traced vs eager, per CPU kind; its `trace_pays` is what to copy here).
    Tracing made the CNNs 1.1-1.4x faster for little memory, while a traced ViT in bf16 took gigabytes at load for no
    speed: so a model is traced only in the precisions where that benchmark showed it pays.
    """

    name: str
    dim: int
    prep: Preprocess
    # Input normalisation in 0..255 units: x -> (x - mean) / std, per RGB channel.
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    build: Callable[[Path | None], "object"] = field(repr=False, compare=False)
    description: str = ""
    label_source: Callable[[], tuple[str, ...]] | None = field(default=None, repr=False, compare=False)
    text: bool = False
    revision: int = 1
    trace: tuple[str, ...] = ()
    extra: str = ""  # the pip extra that provides the model's code, if not installed by default

    @property
    def tags(self) -> bool:
        """Whether the model auto-tags (has a classifier head), without reading the vocabulary."""
        return self.label_source is not None

    @property
    def labels(self) -> tuple[str, ...]:
        return _labels(self.label_source) if self.label_source is not None else ()


@lru_cache(maxsize=None)
def _labels(source: Callable[[], tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(source())
