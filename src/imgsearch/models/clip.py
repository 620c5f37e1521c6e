"""Image-text models (CLIP family) through open_clip (`pip install 'imgsearch[clip]'`): images and text queries are
embedded into one space, so a collection indexed with one of these is searchable by words.

Weights: a file given with --weights (an open_clip state dict: the hub repo's open_clip_model.safetensors or
open_clip_pytorch_model.bin), else the Hugging Face hub cache, else a download where the hub is reachable. Offline
and uncached, loading stops with one line naming the file to get.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from imgsearch.errors import ModelError
from imgsearch.imaging import Preprocess
from imgsearch.models.registry import ModelSpec, register_model

OPENAI_MEAN = (0.48145466 * 255, 0.4578275 * 255, 0.40821073 * 255)
OPENAI_STD = (0.26862954 * 255, 0.26130258 * 255, 0.27577711 * 255)


@dataclass(frozen=True)
class ClipVariant:
    name: str  # our registry name
    arch: str  # open_clip model name
    tag: str  # open_clip pretrained tag (names the hub weights)
    hub: str  # the Hugging Face repo that holds those weights
    quick_gelu: bool  # OpenAI's weights were trained with QuickGELU: the architecture must match them


def _open_clip():
    try:
        import open_clip
    except ImportError:
        raise ModelError("CLIP models need open_clip: pip install 'imgsearch[clip]'") from None
    return open_clip


def hub_weights_hint(v: ClipVariant) -> str:
    return (f"get open_clip_model.safetensors (or open_clip_pytorch_model.bin) from https://huggingface.co/{v.hub} "
            "and pass --weights FILE, or run once where huggingface.co is reachable")


def wrap(model, tokenizer):
    """The network the runtimes run (forward: pixels -> image vectors) that also encodes text for queries."""
    import torch

    class ClipTowers(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.tokenizer = tokenizer

        def forward(self, x):
            return self.inner.encode_image(x)

        def encode_text(self, texts: list[str]):
            device = next(self.inner.parameters()).device
            return self.inner.encode_text(self.tokenizer(texts).to(device))

    return ClipTowers(model).eval()


def create_architecture(v: ClipVariant):
    """The model with random weights (what tests save to a file: they never download)."""
    return _open_clip().create_model(v.arch, pretrained=None, force_quick_gelu=v.quick_gelu)


def builder(v: ClipVariant):
    def build(weights: Path | None):
        open_clip = _open_clip()
        if weights is None:
            from huggingface_hub import try_to_load_from_cache

            cached = any(isinstance(try_to_load_from_cache(v.hub.rstrip("/"), f), str)
                         for f in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"))
            if not cached and os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", ""):
                raise ModelError(f"{v.name}: weights not found offline; {hub_weights_hint(v)}")
            pretrained = v.tag
        else:
            pretrained = str(weights)
        try:
            model = open_clip.create_model(v.arch, pretrained=pretrained, force_quick_gelu=v.quick_gelu)
        except Exception as exc:  # hub errors, bad files and shape mismatches all mean "no usable weights"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            where = f"from {weights}" if weights else "from the hub"
            raise ModelError(f"{v.name}: cannot load weights {where} ({first[:200]}); {hub_weights_hint(v)}") from None
        return wrap(model, open_clip.get_tokenizer(v.arch))

    return build


def clip_spec(v: ClipVariant, crop: int, mean, std, what: str, trace: tuple[str, ...]) -> ModelSpec:
    return ModelSpec(name=v.name, dim=512, prep=Preprocess(crop=crop, resize=crop), mean=mean, std=std,
                     build=builder(v), description=f"{what}; searches by text; open_clip weights "
                     f"({v.arch}, {v.tag}) from the hub or --weights FILE", text=True, extra="clip", trace=trace)


VARIANTS = {
    "clip_vit_b32": ClipVariant("clip_vit_b32", "ViT-B-32", "openai", "timm/vit_base_patch32_clip_224.openai", True),
    "clip_vit_b16": ClipVariant("clip_vit_b16", "ViT-B-16", "openai", "timm/vit_base_patch16_clip_224.openai", True),
    "mobileclip2_s0": ClipVariant("mobileclip2_s0", "MobileCLIP2-S0", "dfndr2b", "timm/MobileCLIP2-S0-OpenCLIP", False),
}

# trace: as `python -m bench models` measured (bench/results.json, section models): a traced ViT in bf16 took
# 2.3 GB (B/32) and 5.5 GB (B/16) more at load and ran no faster; in fp32 B/32 gained, B/16 did not. MobileCLIP2-S0
# gained 1.1-1.7x in fp32 and lost in bf16.
register_model(clip_spec(VARIANTS["clip_vit_b32"], 224, OPENAI_MEAN, OPENAI_STD, "OpenAI CLIP ViT-B/32, 512-d",
                         trace=("fp32",)))
register_model(clip_spec(VARIANTS["clip_vit_b16"], 224, OPENAI_MEAN, OPENAI_STD, "OpenAI CLIP ViT-B/16, 512-d",
                         trace=()))
# MobileCLIP2 takes pixels in 0..1 without mean/std normalisation
register_model(clip_spec(VARIANTS["mobileclip2_s0"], 256, (0.0, 0.0, 0.0), (255.0, 255.0, 255.0),
                         "Apple MobileCLIP2-S0 (small, fast), 512-d", trace=("fp32",)))
