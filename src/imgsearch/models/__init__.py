"""Model registry, timm-style: `create_model(name)` returns an Embedder; each model file registers itself."""

from imgsearch.models.cpu import CpuFeatures, cpu_features
from imgsearch.models.registry import (
    ALLOCATOR_ENV,
    Embedder,
    ModelSpec,
    create_model,
    get_spec,
    list_models,
    register_model,
)

# Importing the modules registers their models.
from imgsearch.models import efficientnet as _efficientnet  # noqa: F401,E402
from imgsearch.models import resnet as _resnet  # noqa: F401,E402
from imgsearch.models import clip as _clip  # noqa: F401,E402

__all__ = ["ALLOCATOR_ENV", "CpuFeatures", "cpu_features", "Embedder", "ModelSpec", "create_model", "get_spec", "list_models", "register_model"]
