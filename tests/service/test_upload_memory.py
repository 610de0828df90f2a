"""Checking positives costs bounded memory: a compressed tar whose members arrive out of name order (each must wait
for its turn) keeps at most ``TAR_MEMORY_BUDGET`` bytes of them in memory; the rest wait in a temporary file."""

from __future__ import annotations

import io
import tarfile
import tracemalloc
from pathlib import Path

import numpy as np
from PIL import Image

import pu_mining.image_files as image_files
from service.jobs.checks import check_positives

MEMBERS = 240
SIDE = 96  # noise PNGs of 96x96x3 barely compress: ~28 KB each, ~6.6 MB in all


def _reversed_tar_gz(path: Path) -> int:
    rng = np.random.default_rng(0)
    total = 0
    with tarfile.open(path, "w:gz") as archive:
        for index in reversed(range(MEMBERS)):  # stream order is the reverse of name order
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)).save(buffer, format="PNG")
            data = buffer.getvalue()
            total += len(data)
            info = tarfile.TarInfo(f"class{index % 2}/{index:04d}.png")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return total


def test_out_of_order_tar_members_wait_on_disk_past_the_budget(tmp_path: Path, monkeypatch) -> None:
    archive = tmp_path / "reversed.tar.gz"
    total = _reversed_tar_gz(archive)
    budget = 512 * 1024
    monkeypatch.setattr(image_files, "TAR_MEMORY_BUDGET", budget, raising=False)

    def check():
        return check_positives(
            archive, filename="reversed.tar.gz", input_shape=(3, SIDE, SIDE), max_bytes=1024**3, max_files=1000
        )

    check()  # the modules it imports on first use are not what is measured
    tracemalloc.start()
    try:
        checked = check()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert checked.images == MEMBERS and checked.classes == {"class0": MEMBERS // 2, "class1": MEMBERS // 2}
    assert total > 6 * 1024 * 1024
    assert peak < budget + 2 * 1024 * 1024, f"peak {peak:,} bytes for {total:,} bytes of members"
