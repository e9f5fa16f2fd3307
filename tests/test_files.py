"""planner.files: what qplan reads and writes for the user (issue classes: FIFOs, devices, links, races,
kills, pairs of files, outputs that are inputs, non-UTF-8)."""

from __future__ import annotations

import os
import threading

import pytest

from planner.errors import QPlanError
from planner.files import check_output, read_text, write_file, write_files


def test_read_refuses_a_fifo_instead_of_blocking(tmp_path):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    with pytest.raises(QPlanError, match="is not a regular file"):
        read_text(fifo, "config")


def test_read_refuses_non_utf8_in_one_line(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b'{"model": "\xff"}')
    with pytest.raises(QPlanError, match=r"is not UTF-8 text \(byte 11\)"):
        read_text(path, "config")


def test_existing_output_needs_force_and_stays_untouched(tmp_path):
    out = tmp_path / "out.json"
    out.write_text("mine")
    with pytest.raises(QPlanError, match="already exists; pass --force"):
        write_file(out, "new")
    assert out.read_text() == "mine"
    write_file(out, "new", force=True)
    assert out.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temp file left


@pytest.mark.parametrize("kind", ["symlink", "folder", "device"])
def test_force_never_replaces_what_is_not_a_regular_file(tmp_path, kind):
    target = tmp_path / "victim"
    target.write_text("keep")
    out = tmp_path / "out"
    if kind == "symlink":
        out.symlink_to(target)
    elif kind == "folder":
        out.mkdir()
    else:
        out = os.devnull
    with pytest.raises(QPlanError, match="is not a regular file"):
        write_file(out, "new", force=True)
    assert target.read_text() == "keep"
    if kind == "symlink":
        assert (tmp_path / "out").is_symlink()


def test_output_that_is_an_input_is_refused(tmp_path):
    base = tmp_path / "base.json"
    base.write_text("{}")
    with pytest.raises(QPlanError, match="is one of this command's inputs"):
        check_output(tmp_path / "." / "base.json", force=True, inputs=[base])


def test_two_writers_cannot_both_create_the_file(tmp_path):
    out = tmp_path / "out.json"
    results: list[str] = []
    barrier = threading.Barrier(8)

    def writer(n: int) -> None:
        barrier.wait()
        try:
            write_file(out, f"writer {n}")
            results.append("won")
        except QPlanError:
            results.append("lost")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("won") == 1 and results.count("lost") == 7
    assert out.read_text().startswith("writer ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_a_pair_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    report, png = tmp_path / "report.md", tmp_path / "report.png"
    real_link = os.link

    def link_then_fail(src, dst):
        if str(dst).endswith(".md"):
            raise KeyboardInterrupt  # killed between the two files
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link_then_fail)
    with pytest.raises(KeyboardInterrupt):
        write_files({png: b"png", report: "md"})
    assert list(tmp_path.iterdir()) == []  # neither file, no temp file: a re-run is not blocked
    monkeypatch.setattr(os, "link", real_link)
    assert write_files({png: b"png", report: "md"}) == [png, report]


def test_unwritable_output_is_one_line(tmp_path):
    parent = tmp_path / "file"
    parent.write_text("x")
    with pytest.raises(QPlanError, match="cannot write"):
        write_file(parent / "out.json", "data")
