import numpy as np
import pytest
import torch

from imgsearch.errors import ModelError
from imgsearch.imaging import decode_image
from imgsearch.models import create_model, get_spec, list_models


def test_registry_lists_models():
    names = {s.name: s.dim for s in list_models()}
    assert names["efficientnet_lite0"] == 1280 and names["resnet50"] == 2048
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        create_model("nope")


def crops(paths, prep, n=8):
    return np.stack([decode_image(p.read_bytes(), prep, 10**8).pixels for p in paths[:n]])


def test_lite0_vectors_are_unit_float32(lite0, photo_paths):
    v = lite0.embed(crops(photo_paths, lite0.prep))
    assert v.dtype == np.float32 and v.shape == (8, 1280)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    # batch composition does not change a vector
    single = lite0.embed(crops(photo_paths, lite0.prep, 1))
    np.testing.assert_allclose(single[0], v[0], atol=1e-5)


def test_lite0_has_real_imagenet_weights(lite0, photos_dir):
    """The bundled weights classify the scikit-image cat photo as a cat (ImageNet classes 281-285)."""
    px = decode_image((photos_dir / "skimage_chelsea.png").read_bytes(), lite0.prep, 10**8).pixels[None]
    x = torch.from_numpy(px.copy()).permute(0, 3, 1, 2).float()
    x = (x - 127.0) / 128.0
    with torch.inference_mode():
        logits = get_spec("efficientnet_lite0").build(None).inner.eval()(x)
    top5 = set(logits.topk(5).indices[0].tolist())
    assert top5 & {281, 282, 283, 284, 285}, top5


def test_resnet50_from_weights_file(tmp_path, photo_paths, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    weights = tmp_path / "resnet50-made-here.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), weights)
    model = create_model("resnet50", weights=weights, device="cpu")
    v = model.embed(crops(photo_paths, model.prep, 4))
    assert v.shape == (4, 2048) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_resnet50_without_weights_names_both_ways(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelError) as err:
        create_model("resnet50", device="cpu")
    msg = str(err.value)
    assert "--weights" in msg and "empty-cache" in msg and "resnet50-11ad3fa6.pth" in msg


def test_bad_weights_file_is_clear(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot load resnet50 weights"):
        create_model("resnet50", weights=bad, device="cpu")
    with pytest.raises(ModelError, match="weights file not found"):
        create_model("resnet50", weights=tmp_path / "missing.pth", device="cpu")


def test_bf16_close_to_fp32(lite0, photo_paths):
    bf16 = create_model("efficientnet_lite0", device="cpu", precision="bf16")
    px = crops(photo_paths, lite0.prep)
    cos = (lite0.embed(px) * bf16.embed(px)).sum(1)
    assert cos.min() >= 0.99, cos


def test_bf16_retrieval_same_as_fp32(lite0, photo_paths, tmp_path):
    """bf16 vectors give the same search results as fp32: each edited copy's nearest photo is the same one, and so
    is whether its original is in the top 3 (ranks 2-3 hold unrelated photos at near-equal scores, which may swap)."""
    from imgsearch.vectors import top_k
    from imgsearch.samples import write_variants

    bf16 = create_model("efficientnet_lite0", device="cpu", precision="bf16")
    copies = [c for cs in write_variants(photo_paths, tmp_path, kinds=("crop80", "jpeg40", "rotate10")).values()
              for c in cs]
    index, queries = crops(photo_paths, lite0.prep, n=None), crops(copies, lite0.prep, n=None)
    fp32_top = top_k(lite0.embed(queries), lite0.embed(index), 3)
    bf16_top = top_k(bf16.embed(queries), bf16.embed(index), 3)
    assert (fp32_top[:, 0] == bf16_top[:, 0]).all()
    original = np.repeat(np.arange(len(photo_paths)), 3)
    assert ((fp32_top == original[:, None]).any(1) == (bf16_top == original[:, None]).any(1)).all()
