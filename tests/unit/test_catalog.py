"""What a rerun must do, decided on synthetic dataset state (no images, no model): new, changed, unchanged, failed,
removed, crash leftovers, and compaction to one row per file."""

from datetime import timedelta

import pytest

from helpers import T0, synthetic_record as rec, write_synthetic as write
from imgsearch import catalog
from imgsearch.errors import DatasetError

def test_first_run_embeds_everything(tmp_path):
    plan = catalog.plan_run([rec("a"), rec("b")], catalog.read_state(tmp_path / "empty"), "file:///src")
    assert (plan.new, plan.changed, plan.unchanged) == (2, 0, 0) and len(plan.todo) == 2 and not plan.removed


def test_rerun_classifies_every_file(tmp_path):
    a, b, c, d = rec("a"), rec("b"), rec("c"), rec("d")
    write(tmp_path, [a, b, c, d], failed=("d",))
    state = catalog.read_state(tmp_path)
    assert state.models == {"m"} and len(state.ids) == 4
    b2 = rec("b", size=101)  # changed size
    c2 = rec("c", mtime=T0 + timedelta(milliseconds=5))  # changed mtime, to the millisecond
    a_same = rec("a", mtime=T0 + timedelta(microseconds=400))  # sub-millisecond: Hadoop cannot see it -> same file
    e = rec("e")
    plan = catalog.plan_run([a_same, b2, c2, d, e], state, "file:///src")
    assert (plan.new, plan.changed, plan.unchanged, plan.failed_unchanged) == (1, 2, 1, 1)
    assert [r.uri for r in plan.todo] == [b2.uri, c2.uri, e.uri]
    retry = catalog.plan_run([a, b, c, d], state, "file:///src", retry_failed=True)
    assert retry.retried == 1 and [r.uri for r in retry.todo] == [d.uri]


def test_removed_only_under_the_source_and_not_under_unlisted_folders(tmp_path):
    keep, gone, locked = rec("a"), rec("gone"), rec("locked/x")
    other = rec("z", root="file:///elsewhere")
    write(tmp_path, [keep, gone, locked, other])
    plan = catalog.plan_run([keep], catalog.read_state(tmp_path), "file:///src", unlisted=["file:///src/locked"])
    assert plan.removed == [(gone.id, gone.uri)]  # not the other source's file, not the unlistable folder's


def test_compact_keeps_one_current_row_per_file(tmp_path):
    a, b = rec("a"), rec("b")
    write(tmp_path, [a, b])
    b2 = rec("b", size=999)
    write(tmp_path, [b2])  # the changed file re-embedded
    write(tmp_path, [b2])  # a crash between commit and compaction left a duplicate
    plan = catalog.plan_run([a, b2], catalog.read_state(tmp_path), "file:///src")
    assert plan.todo == [] and plan.unchanged == 2
    rep = catalog.compact(tmp_path, plan, sync=False)
    state = catalog.read_state(tmp_path)
    assert sorted(state.ids) == sorted([a.id, b.id]) and rep.dropped == 2
    assert dict(zip(state.ids, state.keys))[b.id] == catalog.record_key(b2)


def test_sync_drops_removed_files_only_when_asked(tmp_path):
    a, gone = rec("a"), rec("gone")
    write(tmp_path, [a, gone])
    plan = catalog.plan_run([a], catalog.read_state(tmp_path), "file:///src")
    catalog.compact(tmp_path, plan, sync=False)
    assert len(catalog.read_state(tmp_path).ids) == 2
    catalog.compact(tmp_path, plan, sync=True)
    assert catalog.read_state(tmp_path).ids == [a.id]


def test_one_writer_per_folder(tmp_path):
    with catalog.FolderLock(tmp_path):
        with pytest.raises(DatasetError, match="being written by another imgsearch job"):
            with catalog.FolderLock(tmp_path):
                pass
    with catalog.FolderLock(tmp_path):  # released
        pass
