"""compression.files.atomic_path: the destination holds the old file or the whole new one, never a part."""

from __future__ import annotations

from pathlib import Path

import pytest

from compression.files import atomic_path, atomic_write_text


def test_the_new_file_replaces_the_old_one_and_no_temporary_file_stays(tmp_path: Path) -> None:
    destination = tmp_path / "sub" / "model.bin"
    destination.parent.mkdir()
    destination.write_bytes(b"old")
    with atomic_path(destination) as temporary:
        assert temporary.parent == destination.parent and temporary != destination
        temporary.write_bytes(b"new contents")
        assert destination.read_bytes() == b"old"  # not visible before the block ends
    assert destination.read_bytes() == b"new contents"
    assert sorted(p.name for p in destination.parent.iterdir()) == ["model.bin"]


def test_an_exception_leaves_the_destination_and_removes_the_temporary_file_and_its_sidecars(tmp_path: Path) -> None:
    destination = tmp_path / "model.onnx"
    destination.write_bytes(b"old")
    with (
        pytest.raises(RuntimeError, match="exporter broke"),
        atomic_path(destination, suffix=".tmp.onnx", sidecar_suffixes=(".data",)) as temporary,
    ):
        temporary.write_bytes(b"half")
        temporary.with_name(temporary.name + ".data").write_bytes(b"weights")
        raise RuntimeError("exporter broke")
    assert destination.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_a_block_that_writes_nothing_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    destination = tmp_path / "cache.json"
    with pytest.raises(FileNotFoundError, match="nothing was written"), atomic_path(destination):
        pass
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_text_creates_missing_folders(tmp_path: Path) -> None:
    destination = tmp_path / "a" / "b" / "widths.json"
    atomic_write_text(destination, '{"widths": [8, 16, 32]}')
    assert destination.read_text(encoding="utf-8") == '{"widths": [8, 16, 32]}'
