import io

import numpy as np
import pytest
from PIL import Image

from imgsearch.imaging import DecodeError, Preprocess, decode_image, sniff_format

PREP = Preprocess(crop=224, resize=256)
BIG = 100_000_000


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def gradient(w=320, h=240) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.uint8)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], axis=-1), "RGB")


@pytest.mark.parametrize("mode", ["RGB", "L", "1", "P", "RGBA", "LA", "CMYK", "I;16", "I", "F"])
def test_every_mode_becomes_rgb_crop(mode):
    im = gradient()
    if mode == "I;16":
        arr = (np.asarray(im.convert("L")).astype(np.uint16) * 257)
        im = Image.fromarray(arr)
        assert im.mode == "I;16"
        data = encode(im, "PNG")
    elif mode in ("I", "F"):
        data = encode(im.convert("L").convert(mode), "TIFF")
    elif mode == "CMYK":
        data = encode(im.convert("CMYK"), "JPEG", quality=95)
    else:
        data = encode(im.convert(mode), "PNG" if mode != "CMYK" else "JPEG")
    out = decode_image(data, PREP, BIG)
    assert out.pixels.shape == (224, 224, 3) and out.pixels.dtype == np.uint8
    assert (out.width, out.height) == (320, 240)
    # Not a blank or clipped image: 16-bit and float inputs are rescaled, not saturated.
    assert out.pixels.std() > 20, mode


def test_sixteen_bit_is_rescaled_not_clipped():
    arr = np.full((64, 64), 32768, dtype=np.uint16)  # mid-grey in 16 bits
    out = decode_image(encode(Image.fromarray(arr), "PNG"), PREP, BIG)
    assert 120 <= int(out.pixels.mean()) <= 135


def test_transparency_composited_on_white():
    im = Image.new("RGBA", (100, 100), (255, 0, 0, 0))  # fully transparent red
    out = decode_image(encode(im, "PNG"), PREP, BIG)
    assert out.pixels.min() == 255
    pal = Image.new("P", (50, 50), 0)
    pal.putpalette([0, 0, 0] * 256)
    out = decode_image(encode(pal, "PNG", transparency=0), PREP, BIG)
    assert out.pixels.min() == 255


def test_exif_orientation_applied():
    im = gradient(400, 200)  # landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW when displayed
    data = encode(im, "JPEG", quality=95, exif=exif.tobytes())
    out = decode_image(data, PREP, BIG)
    assert (out.width, out.height) == (200, 400)
    upright = np.asarray(im.transpose(Image.Transpose.ROTATE_270))  # what a viewer shows
    ref = decode_image(encode(Image.fromarray(upright), "JPEG", quality=95), PREP, BIG)
    assert np.abs(out.pixels.astype(int) - ref.pixels.astype(int)).mean() < 3


def test_jpeg_draft_matches_full_decode():
    im = gradient(2400, 1800)
    data = encode(im, "JPEG", quality=92)
    drafted = decode_image(data, PREP, BIG)
    # reference: full decode, shorter side -> 256 (341x256), centre crop 224
    full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((341, 256), Image.Resampling.BILINEAR)
                      .crop((58, 16, 282, 240)))
    assert drafted.pixels.shape == (224, 224, 3)
    assert np.abs(drafted.pixels.astype(int) - full.astype(int)).mean() < 4


def test_center_crop_keeps_centre():
    arr = np.zeros((300, 600, 3), np.uint8)
    arr[:, 200:400] = 255  # a white vertical band in the middle third
    out = decode_image(encode(Image.fromarray(arr), "PNG"), PREP, BIG)
    # the 224 crop of the 256x512-resized image spans x in [144, 368) of 512 -> the band covers its central ~78%
    assert out.pixels[:, 112].min() == 255 and out.pixels[:, 2].max() == 0


def test_animated_gif_first_frame():
    frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
    out = decode_image(buf.getvalue(), PREP, BIG)
    r, g, b = out.pixels.reshape(-1, 3).mean(0)
    assert r > 200 and b < 50


@pytest.mark.parametrize("data,reason", [
    (b"", "empty file"),
    (b"hello, this is text\n" * 10, "not an image"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 20, "cannot decode"),
])
def test_bad_bytes_give_reason(data, reason):
    with pytest.raises(DecodeError, match=reason):
        decode_image(data, PREP, BIG)


def test_truncated_jpeg_and_png_are_errors():
    for fmt in ("JPEG", "PNG"):
        data = encode(gradient(640, 480), fmt)
        with pytest.raises(DecodeError):
            decode_image(data[: len(data) // 2], PREP, BIG)


def test_pixel_guard_refuses_before_decoding():
    data = encode(Image.new("L", (4000, 3000)), "PNG")
    with pytest.raises(DecodeError, match="too large"):
        decode_image(data, PREP, max_pixels=10_000_000)
    assert decode_image(data, PREP, max_pixels=12_000_000).width == 4000


def test_sniff_format():
    assert sniff_format(encode(gradient(8, 8), "PNG")[:16]) == "PNG"
    assert sniff_format(encode(gradient(8, 8), "JPEG")[:16]) == "JPEG"
    assert sniff_format(encode(gradient(8, 8), "WEBP")[:16]) == "WEBP"
    assert sniff_format(b"RIFF\x00\x00\x00\x00WAVEfmt ") is None
    assert sniff_format(b"just text") is None
