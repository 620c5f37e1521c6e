import os
import shutil

import pytest

from imgsearch.errors import SourceError
from imgsearch.sources import ListingReport, image_id, list_images, normalize_uri, path_to_uri, uri_to_path


def test_lists_by_extension_or_content(tmp_path, photo_paths):
    shutil.copy(photo_paths[0], tmp_path / "a.png")
    shutil.copy(photo_paths[0], tmp_path / "no_extension")  # image by content only
    (tmp_path / "README.txt").write_text("notes")  # neither: skipped
    (tmp_path / "fake.jpg").write_text("text named .jpg")  # candidate by name; the engine records the failure
    (tmp_path / "sub").mkdir()
    shutil.copy(photo_paths[1], tmp_path / "sub" / "b.JPG")
    report = ListingReport()
    names = [os.path.basename(uri_to_path(f.uri)) for f in list_images(tmp_path, report)]
    assert names == ["a.png", "fake.jpg", "no_extension", "b.JPG"]
    assert report.skipped_non_images == 1 and report.candidates == 4


def test_ids_are_stable_and_uri_forms_agree(tmp_path):
    p = tmp_path / "my photo #1.jpg"
    uri = path_to_uri(p)
    assert uri.startswith("file:///") and " " not in uri
    assert uri_to_path(uri) == str(p)
    # Hadoop/Spark write file:/x; users write file:///x or plain paths: one id for all.
    hadoop_form = "file:" + uri[len("file://"):]
    assert normalize_uri(hadoop_form) == uri == normalize_uri(uri) == normalize_uri(str(p))
    assert image_id(uri) == image_id(normalize_uri(hadoop_form))
    assert len(image_id(uri)) == 32


def test_non_utf8_file_name_round_trips(tmp_path, photo_paths):
    raw = os.fsencode(tmp_path) + b"/caf\xe9.png"  # Latin-1 name, not valid UTF-8
    shutil.copy(photo_paths[0], raw)
    [f] = list(list_images(tmp_path))
    assert os.fsencode(uri_to_path(f.uri)) == raw
    f.uri.encode("utf-8")  # the URI itself is plain ASCII


def test_symlink_loop_terminates(tmp_path, photo_paths):
    shutil.copy(photo_paths[0], tmp_path / "a.png")
    os.symlink(tmp_path, tmp_path / "loop")
    assert len(list(list_images(tmp_path))) == 1


def test_missing_source_is_clear(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        list(list_images(tmp_path / "nope"))
    with pytest.raises(SourceError, match="engine spark"):
        list(list_images("hdfs://namenode/images"))
