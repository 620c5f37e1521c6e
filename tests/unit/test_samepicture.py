"""Same-picture verification and groups that do not chain, on cases worked out by hand: a real photo and edited
copies of it against look-alikes that are other pictures (a burst's other frame, a changed detail)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from imgsearch.duplicates import Links, cap_links, top_links, verified_groups
from imgsearch.samepicture import Sketches, same_picture, sketch_of


@pytest.fixture(scope="module")
def photo(photo_paths) -> Image.Image:
    with Image.open(next(p for p in photo_paths if "chelsea" in p.name)) as im:  # a cat: texture and detail
        return im.convert("RGB")


def _sk(im: Image.Image):
    return sketch_of(im, *im.size)


def _framed(im: Image.Image, pad: int, colour=(0, 0, 0)) -> Image.Image:
    out = Image.new("RGB", (im.width + 2 * pad, im.height + 2 * pad), colour)
    out.paste(im, (pad, pad))
    return out


def _captioned(im: Image.Image) -> Image.Image:
    out = im.copy()
    strip = im.height // 9
    ImageDraw.Draw(out).rectangle((0, im.height - strip, im.width, im.height), fill=(10, 10, 10))
    ImageDraw.Draw(out).text((8, im.height - strip + 4), "a caption over the bottom", fill=(255, 255, 255))
    return out


def test_edited_copies_are_the_same_picture(photo):
    w, h = photo.size
    copies = {"scaled": photo.resize((w // 3, h // 3), Image.Resampling.LANCZOS),
              "cropped": photo.crop((w // 20, h // 20, w - w // 20, h - h // 20)),
              "border": _framed(photo, 30),
              "band": _captioned(photo)}
    for edit, copy in copies.items():
        v = same_picture(_sk(photo), _sk(copy))
        assert v.same and edit in v.edits, (edit, v)
        assert same_picture(_sk(copy), _sk(photo)).same  # either way round


def test_look_alikes_are_other_pictures(photo):
    w, h = photo.size
    a = photo.crop((0, 0, int(w * 0.7), int(h * 0.7)))  # two frames of a burst: neither inside the other
    b = photo.crop((w - int(w * 0.7), h - int(h * 0.7), w, h))
    assert not same_picture(_sk(a), _sk(b)).same
    changed = photo.copy()  # a detail inside the picture changed (a clock's hands, a card's suit)
    ImageDraw.Draw(changed).ellipse((w * 0.4, h * 0.4, w * 0.55, h * 0.55), fill=(250, 20, 20))
    v = same_picture(_sk(photo), _sk(changed))
    assert not v.same and v.why == "differs inside the picture"
    umlaut = photo.copy()  # a change along the top that does not span the picture is no caption strip
    ImageDraw.Draw(umlaut).rectangle((w * 0.45, 2, w * 0.55, h * 0.08), fill=(0, 0, 0))
    assert not same_picture(_sk(photo), _sk(umlaut)).same


def test_unreadable_files_are_skipped_with_their_reason(tmp_path, photo):
    good = tmp_path / "a.png"
    photo.save(good)
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    sks = Sketches([str(good), str(bad), str(tmp_path / "gone.png")], lambda p: open(p, "rb").read(), 10**8)
    assert sks.verify(0, 1) is None and sks.verify(0, 2) is None
    assert set(sks.failed) == {1, 2} and "No such file" in sks.failed[2] and sks.get(0) is not None


def test_candidates_are_each_rows_nearest_and_capped():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 16)).astype(np.float32)
    links = top_links(x, k=3, floor=-1.0)
    sims = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (x / np.linalg.norm(x, axis=1, keepdims=True)).T
    np.fill_diagonal(sims, -np.inf)
    want = {(min(i, j), max(i, j)) for i in range(50) for j in np.argsort(-sims[i])[:3]}
    assert set(zip(links.i.tolist(), links.j.tolist())) == want
    assert len(top_links(x, k=3, floor=0.99).i) == 0  # nothing that similar
    capped = cap_links(Links(links.i, links.j, links.score), 50, 1)
    firsts = {(min(i, j), max(i, j)) for i in range(50) for j in np.argsort(-sims[i])[:1]}
    assert set(zip(capped.i.tolist(), capped.j.tolist())) == firsts


def test_groups_do_not_chain():
    """0 is the largest; 1 and 2 are its copies; 3 is a copy of 2 only (a crop of a crop that 0 does not verify):
    it does not join through 2. 4 and 5 verify with each other only: their own group."""
    same = {(0, 1), (0, 2), (2, 3), (1, 2), (4, 5)}
    links = Links(np.array([0, 0, 2, 1, 3, 4]), np.array([1, 2, 3, 2, 4, 5]), np.ones(6, np.float32))
    asked = []

    def verify(i, j):
        asked.append((i, j))
        return (min(i, j), max(i, j)) in same

    groups, runs = verified_groups(links, verify, pixels=[9, 5, 4, 3, 2, 1], same=bool)
    assert [g.members for g in groups] == [[0, 1, 2], [4, 5]]
    assert (0, 3) in asked  # 2's candidate was asked against the representative, and refused
    assert runs == len(asked)


def _clock(minute: int, side: int = 400) -> Image.Image:
    """A plain clock face: a ring, twelve ticks, an hour hand at three and a thin minute hand."""
    import math

    im = Image.new("RGB", (side, side), (255, 255, 255))
    d, c, r = ImageDraw.Draw(im), side / 2, side * 0.45
    d.ellipse((c - r, c - r, c + r, c + r), outline=(20, 20, 20), width=side // 60)
    for k in range(12):
        a = k * math.pi / 6
        d.line((c + 0.85 * r * math.sin(a), c - 0.85 * r * math.cos(a), c + r * math.sin(a), c - r * math.cos(a)),
               fill=(20, 20, 20), width=side // 100)
    d.line((c, c, c + 0.5 * r, c), fill=(20, 20, 20), width=side // 50)
    a = minute * math.pi / 30
    d.line((c, c, c + 0.8 * r * math.sin(a), c - 0.8 * r * math.cos(a)), fill=(20, 20, 20), width=side // 130)
    return im


def test_a_small_change_in_a_drawing_is_another_picture():
    """Two times on one clock face differ by a thin hand: the coarse blocks average it away, the fine ones see it;
    a half-size, low-quality JPEG copy of the drawing still is the same picture."""
    import io

    ten_past, twenty_past = _clock(10), _clock(20)
    v = same_picture(_sk(ten_past), _sk(twenty_past))
    assert not v.same and v.why == "differs inside the picture", v
    buf = io.BytesIO()
    ten_past.resize((200, 200), Image.Resampling.LANCZOS).save(buf, "JPEG", quality=30)
    copy = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    v = same_picture(_sk(ten_past), sketch_of(copy, 200, 200))
    assert v.same and "scaled" in v.edits, v


def _stripes(colours: list[tuple[int, int, int]], size=(600, 400)) -> Image.Image:
    """A flag of horizontal stripes of equal height, outlined as drawings of flags are."""
    im = Image.new("RGB", size)
    d, h = ImageDraw.Draw(im), size[1] / len(colours)
    for k, c in enumerate(colours):
        d.rectangle((0, round(k * h), size[0], round((k + 1) * h)), fill=c)
    d.rectangle((0, 0, size[0] - 1, size[1] - 1), outline=(60, 60, 60), width=3)
    return im


def test_a_plain_pattern_is_no_crop_of_another():
    """Red over white fits inside red-white-red anywhere along its stripes: that is no crop (another flag), while a
    half-size JPEG of the red-over-white flag is still a copy of it (the whole picture preferred to a crop); a band
    of one colour is too plain to verify."""
    import io

    red, white = (200, 16, 46), (255, 255, 255)
    austria, indonesia = _stripes([red, white, red]), _stripes([red, white], size=(600, 400))
    v = same_picture(_sk(austria), _sk(indonesia))
    assert not v.same and "not determined" in v.why, v
    buf = io.BytesIO()
    indonesia.resize((300, 200), Image.Resampling.LANCZOS).save(buf, "JPEG", quality=40)
    v = same_picture(_sk(indonesia), sketch_of(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), 300, 200))
    assert v.same and v.coverage >= 0.97, v
    band = Image.new("RGB", (600, 120), red)
    assert same_picture(_sk(austria), _sk(band)).why == "too plain to verify"
