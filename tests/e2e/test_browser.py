"""Acceptance: a person's path through the page, in headless Debian Chromium driven by Playwright.

Open the page, upload a photo, see k results, change k, click a result and see its neighbours. Saves a screenshot
(set IMGSEARCH_UPDATE_SCREENSHOT=1 to refresh docs/web-page.png, which the README shows).
"""

import json
import re
import os
import shutil
import urllib.request

import pytest

from imgsearch.samples import write_variants

from imgsearch.server.live import live_server

from helpers import REPO, index_photos

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def launch(pw):
    return pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"])


def search_words(browser, url: str, placeholder: str, words: str):
    """Open the page, check the search box says what it searches (its placeholder), type words and submit."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/")
    expect(page.locator("#q")).to_have_attribute("placeholder", re.compile(placeholder))
    page.fill("#q", words)
    page.press("#q", "Enter")
    return page, errors, page.locator("#results .card")


@pytest.fixture(scope="module")
def served(tmp_path_factory, photo_paths):
    db, src = index_photos(tmp_path_factory, photo_paths, "browser")
    with live_server(db) as url:
        yield url, src, db.parent


def test_upload_change_k_and_more_like_this(served):
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium is not installed (make test installs it: apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    url, src, work = served
    [query] = write_variants([src / "skimage_coffee.png"], work / "q", kinds=("crop80",))[src / "skimage_coffee.png"]
    shot = work / "web-page.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/")
            expect(page.locator("#stats")).to_contain_text("21 images indexed")

            page.set_input_files("#file", str(query))
            cards = page.locator("#results .card")
            # the server's first query loads its model: seconds more when another test worker shares the cores
            expect(cards).to_have_count(10, timeout=30_000)
            expect(page.locator("#preview")).to_be_visible()
            expect(cards.first.locator(".name")).to_contain_text("skimage_coffee.png")
            expect(page.locator("#status")).to_contain_text("10 results")

            page.select_option("#k", "5")
            expect(cards).to_have_count(5)
            expect(cards.first.locator(".name")).to_contain_text("skimage_coffee.png")
            # thumbnails really load
            page.wait_for_function("Array.from(document.querySelectorAll('#results img')).every(i => i.complete && i.naturalWidth > 0)")
            page.screenshot(path=str(shot), full_page=True)

            second = cards.nth(1)
            clicked_id = second.get_attribute("data-id")
            clicked_name = re.sub(r"^\d+\.\s*", "", second.locator(".name").inner_text()).strip()
            second.click()
            expect(page.locator("#status")).to_contain_text(f"more like {clicked_name}")
            with urllib.request.urlopen(f"{url}/api/images/{clicked_id}/similar?k=5") as r:
                expected = [x["id"] for x in json.load(r)["results"]]
            expect(cards).to_have_count(5)
            shown = [cards.nth(i).get_attribute("data-id") for i in range(5)]
            assert shown == expected and clicked_id not in shown

            # an error state: a text file renamed .jpg
            bad = work / "bad.jpg"
            bad.write_text("not an image")
            page.set_input_files("#file", str(bad))
            expect(page.locator("#error")).to_contain_text("not an image")
            assert not errors, errors
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("IMGSEARCH_UPDATE_SCREENSHOT"):
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copy(shot, REPO / "docs" / "web-page.png")


def test_keyword_search_tags_details_and_shared_link(served):
    """Type a keyword, see the tagged image with its tag chips; open its details (metadata, tags); click a tag to
    search by it; the search is in the URL, and opening that URL shows the same results."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium is not installed (make test installs it: apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    url, src, work = served
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page, errors, cards = search_words(browser, url, "tag", "espresso")
            expect(cards).to_have_count(1)
            expect(cards.first.locator(".name")).to_contain_text("skimage_coffee.png")
            expect(cards.first.locator(".tag").first).to_have_text("espresso")
            expect(page.locator("#status")).to_contain_text("tag espresso")
            assert "tag=espresso" in page.url

            cards.first.locator(".open").click()
            viewer = page.locator("#viewer")
            expect(viewer).to_be_visible()
            expect(page.locator("#viewer-name")).to_have_text("skimage_coffee.png")
            expect(page.locator("#viewer-meta")).to_contain_text("600 × 400 px")
            expect(page.locator("#viewer-meta")).to_contain_text("PNG")
            expect(page.locator("#viewer-tags .tag").first).to_have_text("espresso")
            page.wait_for_function("document.getElementById('viewer-img').naturalWidth > 0")

            # a word that only prefixes labels, then a tag chip of a result: both become tag searches
            page.locator("#viewer-tags .tag").first.click()
            expect(viewer).to_be_hidden()
            expect(cards).to_have_count(1)
            page.fill("#q", "cat")
            page.press("#q", "Enter")
            expect(page.locator("#status")).to_contain_text("tag cat")
            expect(cards.first.locator(".name")).to_contain_text("chelsea")

            # the shared link
            other = browser.new_page(viewport={"width": 390, "height": 844})  # a phone-sized window
            other.goto(url + "/?tag=espresso")
            expect(other.locator("#results .card")).to_have_count(1)
            expect(other.locator("#results .card .name")).to_contain_text("skimage_coffee.png")

            page.fill("#q", "zzzz")
            page.press("#q", "Enter")
            expect(page.locator("#error")).to_contain_text("no tag matches")
            assert not errors, errors
        finally:
            browser.close()


def test_text_search_on_a_clip_collection(tmp_path, photo_paths, clip_weights):
    """A CLIP collection (random weights from a file, served with IMGSEARCH_WEIGHTS): type words, see results,
    the same as the API's for that text."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium is not installed (make test installs it: apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    from helpers import copy_photos, settings
    from imgsearch import pipeline

    weights = str(clip_weights("mobileclip2_s0"))
    src = copy_photos(photo_paths, tmp_path / "photos")
    db = tmp_path / "clip.db"
    pipeline.index(str(src), str(db), "mobileclip2_s0", settings(), weights=weights, progress=False)
    with live_server(db, env={"IMGSEARCH_WEIGHTS": weights}) as url, sync_playwright() as pw:
        with urllib.request.urlopen(f"{url}/api/search?text=a+cat+on+a+sofa&k=10") as r:
            expected = [x["id"] for x in json.load(r)["results"]]
        browser = launch(pw)
        try:
            page, errors, cards = search_words(browser, url, "Describe", "a cat on a sofa")
            expect(cards).to_have_count(10)
            expect(page.locator("#status")).to_contain_text('"a cat on a sofa"')
            assert [cards.nth(i).get_attribute("data-id") for i in range(10)] == expected
            page.fill("#q", "tag:espresso")
            page.press("#q", "Enter")
            expect(page.locator("#error")).to_contain_text("gives no tags")
            assert not errors, errors
        finally:
            browser.close()
