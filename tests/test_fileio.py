"""Atomic writes: usual permissions, flushed, and a clear one-line error where nothing can be written."""

import os

import pytest

from exporter.errors import UserError
from exporter.fileio import atomic_path, check_writable, read_json, write_text_atomic


def test_atomic_write_gets_umask_permissions_and_leaves_no_temp_file(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "a" / "report.md", "hello")
    finally:
        os.umask(old)
    assert path.read_text() == "hello" and (path.stat().st_mode & 0o777) == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.md"]


def test_failure_inside_the_block_keeps_the_old_file(tmp_path):
    path = write_text_atomic(tmp_path / "model.bin", "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]


def test_unwritable_destination_is_a_user_error_naming_it(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match=r"file/out.json: cannot write"):
        write_text_atomic(blocker / "out.json", "{}")
    with pytest.raises(UserError, match="cannot create output folder"):
        check_writable(blocker / "out.json")
    with pytest.raises(UserError, match="is a folder"):
        check_writable(tmp_path)


@pytest.mark.parametrize("text,problem", [("{", "unreadable"), ("[1]", "not a JSON object")])
def test_read_json_names_the_file(tmp_path, text, problem):
    path = tmp_path / "state.json"
    path.write_text(text)
    with pytest.raises(UserError, match=f"state.json: .*{problem}"):
        read_json(path, "state")
