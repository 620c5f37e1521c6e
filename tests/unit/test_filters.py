"""Filters: parsing and its messages, the Arrow side on a hand-made table, the Milvus side's text, and the folder
tree's top folder."""

from datetime import datetime, timezone

import pyarrow as pa
import pytest

from imgsearch.browse import common_folder
from imgsearch.filters import FilterError, folder_uri, micros, parse
from imgsearch.store import CURRENT_FIELDS, CollectionInfo, _filter

T = [micros(datetime(2020, 1, d, 12, tzinfo=timezone.utc)) for d in (1, 2, 3)]
TABLE = pa.table({"path": ["file:///a/x.jpg", "file:///a/b/y.png", "file:///ab/z.jpg"], "mtime_us": T,
                  "width": [100, 2000, 640], "height": [80, 1500, 480], "format": ["JPEG", "PNG", "JPEG"]})


def rows(**kw):
    expr = parse(**kw).arrow()
    return TABLE.filter(expr)["path"].to_pylist() if expr is not None else TABLE["path"].to_pylist()


def test_each_filter_on_a_table():
    assert rows() == TABLE["path"].to_pylist()
    assert rows(folder="/a") == ["file:///a/x.jpg", "file:///a/b/y.png"]  # /a is not a prefix of /ab
    assert rows(folder="file:///a/b/") == ["file:///a/b/y.png"]
    assert rows(date_from="2020-01-02") == ["file:///a/b/y.png", "file:///ab/z.jpg"]
    assert rows(date_to="2020-01-02") == ["file:///a/x.jpg", "file:///a/b/y.png"]  # the end day is included
    assert rows(min_width=600, max_height=500) == ["file:///ab/z.jpg"]
    assert rows(formats=["jpg"]) == ["file:///a/x.jpg", "file:///ab/z.jpg"]
    assert rows(formats=["png,jpeg"]) == TABLE["path"].to_pylist()


@pytest.mark.parametrize("kw, message", [
    ({"date_from": "2020-13-01"}, "date_from: '2020-13-01' is not a date; use YYYY-MM-DD"),
    ({"date_to": "soon"}, "date_to: 'soon' is not a date"),
    ({"date_from": "2020-02-01", "date_to": "2020-01-01"}, "date_to (2020-01-01) is before date_from (2020-02-01)"),
    ({"min_width": -5}, "min_width: -5 is outside"),
    ({"min_height": 10, "max_height": 5}, "max_height (5) is below min_height (10)"),
    ({"formats": ["svg"]}, "format: 'svg' is not one of"),
    ({"folder": "photos/2024"}, "folder: 'photos/2024' is neither an absolute path nor a URI"),
])
def test_bad_values_name_the_field(kw, message):
    with pytest.raises(FilterError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(**kw)


def test_milvus_expression():
    info = CollectionInfo("c", "m", 4, 1, "FLAT", fields=CURRENT_FIELDS)
    f = parse(folder="/a b", date_from="2020-01-01", min_width=10, formats=["png"]).with_tags(("tabby", 'say "hi"'))
    assert _filter(info, None, None, f) == (
        '(path >= "file:///a%20b/" and path < "file:///a%20b0") and (mtime_us >= 1577836800000000) and '
        '(width >= 10) and (format in ["PNG"]) and (array_contains_any(tags, ["tabby", "say \\"hi\\""]))')
    old = CollectionInfo("c", "m", 4, 1, "FLAT", fields=frozenset({"path", "width"}))
    with pytest.raises(FilterError, match="indexed before formats were stored"):
        _filter(old, None, None, parse(formats=["png"]))


def test_folder_uris_and_the_top_folder():
    assert folder_uri("/data/a b") == "file:///data/a%20b/" and folder_uri("s3://bkt/x") == "s3://bkt/x/"
    assert common_folder(["file:///d/a/", "file:///d/a/b/", "file:///d/c/"]) == "file:///d/"
    assert common_folder(["file:///d/a/"]) == "file:///d/a/"
    assert common_folder(["file:///d/ab/", "file:///d/ac/"]) == "file:///d/"
    assert common_folder([]) == ""
