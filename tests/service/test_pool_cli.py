"""``condense pool ingest | list | show | delete`` on real image files, through the real CLI entry point."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pu_mining.sources import fashion_mnist, mnist_digits
from service.cli import main


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CONDENSE_DATA_DIR", str(tmp_path / "data"))
    for name in ("CONDENSE_BLOB_URL", "CONDENSE_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_ingest_list_show_delete(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images, _ = fashion_mnist("test")
    np.savez(env / "fashion.npz", x=images[:40])
    digits, _ = mnist_digits()
    folder = env / "digits"
    folder.mkdir()
    for index in range(10):
        Image.fromarray(digits[index]).save(folder / f"{index}.png")
    with tarfile.open(env / "more.tar.gz", "w:gz") as archive:
        archive.add(folder, arcname="digits")  # the same 10 digits again: exact duplicates
    assert (
        main(
            [
                "pool",
                "ingest",
                "demo",
                str(env / "fashion.npz"),
                str(folder),
                "--image-size",
                "28",
                "--resolution",
                "32",
                "--quiet",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "50 added" in out and "index flat" in out
    assert main(["pool", "ingest", "demo", str(env / "more.tar.gz"), "--quiet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["added"] == 0 and report["duplicates"] == 10 and report["version"] == 2
    assert main(["pool", "list"]) == 0
    assert "demo" in capsys.readouterr().out
    assert main(["pool", "show", "demo", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["count"] == 50 and shown["sources"] == {"fashion.npz": 40, "digits": 10}
    assert shown["index_kind"] == "flat" and shown["bytes_on_disk"] > 0
    assert main(["pool", "show", "demo"]) == 0
    assert "28x28, 1 channel" in capsys.readouterr().out
    assert main(["pool", "delete", "demo"]) == 0
    capsys.readouterr()
    assert main(["pool", "show", "demo"]) == 2
    assert "no pool named 'demo'" in capsys.readouterr().err


def test_bad_sources_are_one_line_errors(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pool", "ingest", "demo", str(env / "missing.npz"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("condense pool: error:") and len(err.strip().splitlines()) == 1
    (env / "notes.txt").write_text("not images")
    assert main(["pool", "ingest", "demo", str(env / "notes.txt"), "--quiet"]) == 2
    assert "error" in capsys.readouterr().err
    assert main(["pool", "ingest", "Bad Name", str(env), "--quiet"]) == 2
    assert "pool name" in capsys.readouterr().err
