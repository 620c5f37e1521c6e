"""The `imgsearch quantize` use case: build a model's int8 version for this machine's CPU kind from real images.

The images should look like the collection that will be indexed (the collection itself is best): the tuning learns
to reproduce the fp32 vectors on them. A spread sample is taken (every k-th listed file), decoded as the engines
decode; files that fail to decode are skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from imgsearch.config import Settings, cache_dir_of
from imgsearch.errors import ImgSearchError
from imgsearch.imaging import DecodeError, decode_image
from imgsearch.models import cpu_features, get_spec
from imgsearch.models.int8 import BuiltInt8, build_int8, read_report, recipe_for
from imgsearch.sources import list_images, read_bytes


def sample_crops(src: str, prep, limit: int, max_pixels: int, max_bytes: int) -> np.ndarray:
    """Up to `limit` decoded crops from files spread evenly over the listing of `src`."""
    records = list(list_images(src))
    if not records:
        raise ImgSearchError(f"no images under {src}")
    step = max(1, len(records) // limit)
    crops = []
    for rec in records[::step]:
        if len(crops) == limit:
            break
        try:
            crops.append(decode_image(read_bytes(rec.uri, max_bytes), prep, max_pixels).pixels)
        except (DecodeError, OSError):
            continue
    return np.stack(crops) if crops else np.zeros((0, prep.crop, prep.crop, 3), np.uint8)


def quantize(src: str, model: str, settings: Settings, *, steps: int, limit: int = 2000, weights: str | None = None,
             progress: Callable[[int, float], None] | None = None) -> BuiltInt8:
    spec = get_spec(model)
    recipe = recipe_for(cpu_features().vnni, steps)
    crops = sample_crops(src, spec.prep, limit, settings.max_pixels, settings.max_file_bytes)
    cache = cache_dir_of(settings)
    path = build_int8(spec, Path(weights) if weights else None, crops, recipe, cache, progress)
    return BuiltInt8(path, read_report(path) or {})
