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


def test_bucket_uri_rule():
    from imgsearch.buckets import normalize_bucket_uri, split_bucket_uri

    one = "s3://b/dir/%C3%A9t%C3%A9%201.jpg"
    for spelling in ("s3://b/dir/été 1.jpg", "s3a://b/dir/été 1.jpg", "S3N://b/dir/%C3%A9t%C3%A9%201.jpg", one):
        assert normalize_bucket_uri(spelling) == one == normalize_uri(spelling)
    assert split_bucket_uri(one) == ("s3", "b/dir/été 1.jpg")
    assert normalize_bucket_uri("gcs://b/x y.png") == "gs://b/x%20y.png"
    with pytest.raises(SourceError):
        normalize_bucket_uri("s3:///no-bucket.jpg")


def test_bucket_errors_map_to_local_kinds(monkeypatch):
    """A denied object is a PermissionError (-> a 'permission' failure row), a gone one FileNotFoundError; other
    errors keep the server's reason. (moto's server does not enforce access rules, so denial is simulated here.)"""
    from imgsearch import buckets, core
    from imgsearch.failures import Reason
    from imgsearch.sources import FileRecord, read_bytes

    errors = {"denied": OSError("When reading information for key 'k' in bucket 'b': AWS Error ACCESS_DENIED "
                                "during HeadObject operation: No response body."),
              "gone": FileNotFoundError(2, "Path does not exist 'b/k'"),
              "flaky": OSError("AWS Error NETWORK_CONNECTION during GetObject operation: curlCode: 7")}

    class FakeFS:
        def open_input_file(self, path):
            raise errors[path.split("/")[-1]]

    monkeypatch.setattr(buckets, "filesystem", lambda scheme, config: FakeFS())
    with pytest.raises(PermissionError):
        read_bytes("s3://b/denied")
    with pytest.raises(FileNotFoundError):
        read_bytes("s3://b/gone")
    with pytest.raises(OSError, match="NETWORK_CONNECTION"):
        read_bytes("s3://b/flaky")
    rows = {k: core.read_record(FileRecord(f"s3://b/{k}", k, 10, None), read_bytes) for k in errors}
    assert rows["denied"].error == Reason.PERMISSION.message()
    assert rows["gone"].error == Reason.DISAPPEARED.message()
    assert "NETWORK_CONNECTION" in rows["flaky"].error
