"""Checking positives costs bounded memory: a compressed tar whose members arrive out of name order (each must wait
for its turn) keeps at most ``TAR_MEMORY_BUDGET`` bytes of them in memory; the rest wait in a temporary file."""

from __future__ import annotations

import io
import tarfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
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


def _rss_mib() -> tuple[float, float]:
    """(peak, current) resident set of this process in MiB."""
    status = Path("/proc/self/status").read_text()
    fields = {line.split(":")[0]: line.split()[1] for line in status.splitlines() if line.startswith("Vm")}
    return int(fields["VmHWM"]) / 1024, int(fields["VmRSS"]) / 1024


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs")
@pytest.mark.parametrize("model_format", ["torchscript", "onnx"])
def test_checking_a_large_teacher_costs_little_resident_memory(tmp_path: Path, model_format: str) -> None:
    """The web process memory-maps a teacher and parses an ONNX file's structure only: a 48 MB teacher costs a few
    MiB of resident memory (reading it whole cost its size, and parsing ONNX as much again)."""
    import torch
    from torch import nn

    from service.jobs.checks import check_teacher
    from service.options import JobOptions

    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 15_000), nn.ReLU(), nn.Linear(15_000, 5)).eval()
    small = nn.Sequential(nn.Flatten(), nn.Linear(784, 5)).eval()
    example = torch.rand(1, 1, 28, 28)
    paths = {}
    for name, module in (("small", small), ("large", model)):
        paths[name] = tmp_path / f"{name}.{'pt' if model_format == 'torchscript' else 'onnx'}"
        if model_format == "torchscript":
            torch.jit.script(module).save(str(paths[name]))
        else:
            torch.onnx.export(module, example, str(paths[name]), dynamo=False)
    del model
    options = JobOptions(input_shape=(1, 28, 28))
    check_teacher(paths["small"], filename="small", max_bytes=512 * 1024**2, options=options)  # imports on first use
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current resident set
    baseline = _rss_mib()[1]
    checked = check_teacher(paths["large"], filename="large", max_bytes=512 * 1024**2, options=options)
    growth = _rss_mib()[0] - baseline
    size_mib = paths["large"].stat().st_size / 1024**2
    assert checked.format == model_format and checked.num_classes in (None, 5)
    assert size_mib > 40
    assert growth < 16, f"checking a {size_mib:.0f} MiB teacher raised the peak resident set by {growth:.0f} MiB"
