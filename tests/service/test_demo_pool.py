"""The demo pool (built from packaged real images), ``condense pool demo``, ``condense serve``'s first start (the
demo pool, the first admin's token, Ctrl-C), and ``condense example``'s positives."""

from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pu_mining.pool import PoolStore
from service.cli import demo_pool, main
from service.cli.demo_pool import DEMO_POOL, DEMO_POOL_SIZE, demo_pool_config, demo_pool_exists, ensure_demo_pool
from service.cli.example import CLASS_FOLDERS, write_positives
from storage import LocalBlobStore
from tests.servers import free_port
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
SMALL = 60


@pytest.fixture
def store(tmp_path: Path) -> PoolStore:
    return PoolStore(LocalBlobStore(tmp_path / "blobs"), cache_dir=tmp_path / "cache")


def test_builds_once_from_every_source_with_progress(store: PoolStore) -> None:
    events: list[dict] = []
    assert not demo_pool_exists(store.blobs)
    assert ensure_demo_pool(store, events.append, size=SMALL, config=demo_pool_config(embedder_resolution=32))
    manifest = store.manifest(DEMO_POOL)
    assert demo_pool_exists(store.blobs)
    # Each source in proportion (2,000 : 1,000 : 1,000 : 500 of 4,500), 28x28 grey copies.
    assert manifest.sources == {"fashion-mnist-test": 27, "mnist-digits": 13, "animal-mnist": 13, "sklearn-digits": 7}
    assert (manifest.config.image_size, manifest.config.channels) == (28, 1)
    assert store.open(DEMO_POOL).images([0]).shape == (1, 28, 28)
    stages = [event["stage"] for event in events]
    assert stages[0] == "load" and stages[-1] == "done" and "ingest" in stages
    assert events[-1]["done"] == events[-1]["total"] == SMALL
    # A second call finds it and does nothing.
    events.clear()
    assert not ensure_demo_pool(store, events.append, size=SMALL)
    assert events == [] and store.manifest(DEMO_POOL).version == manifest.version


def test_a_missing_package_leaves_its_source_out(store: PoolStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> tuple[np.ndarray, np.ndarray]:
        raise ImportError("animal_mnist() needs the PyPI package animal-mnist")

    sources = tuple(
        demo_pool.DemoSource(s.name, s.count, s.spread, missing if s.name != "sklearn-digits" else s.load)
        for s in demo_pool.DEMO_SOURCES
    )
    monkeypatch.setattr(demo_pool, "DEMO_SOURCES", sources)
    events: list[dict] = []
    assert ensure_demo_pool(store, events.append, size=SMALL, config=demo_pool_config(embedder_resolution=32))
    assert store.manifest(DEMO_POOL).sources == {"sklearn-digits": 7}
    assert sum(event["stage"] == "missing" for event in events) == 3
    monkeypatch.setattr(demo_pool, "DEMO_SOURCES", tuple(s for s in sources if s.name != "sklearn-digits"))
    with pytest.raises(FileNotFoundError, match="no packaged images"):
        ensure_demo_pool(store, name="other", size=SMALL)


def test_bad_arguments(store: PoolStore) -> None:
    with pytest.raises(TypeError):
        ensure_demo_pool("not a store")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size"):
        ensure_demo_pool(store, size=DEMO_POOL_SIZE + 1)
    with pytest.raises(TypeError):
        ensure_demo_pool(store, size=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ensure_demo_pool(store, on_progress="print")  # type: ignore[arg-type]
    assert not demo_pool_exists(store.blobs)


def test_pool_demo_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("CONDENSE_DATA_DIR", str(tmp_path / "data"))
    for name in ("CONDENSE_BLOB_URL", "CONDENSE_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    assert main(["pool", "demo", "--size", "8"]) == 0
    err = capsys.readouterr().err
    assert "building the demo pool: " in err and "/8 images" in err and "demo pool built: 8 images" in err
    assert main(["pool", "demo"]) == 0
    assert "pool demo exists (8 images); nothing to do" in capsys.readouterr().out
    assert main(["pool", "demo", "--size", "0"]) == 2
    assert "size must be in" in capsys.readouterr().err


def test_example_positives_are_training_images_in_class_folders(tmp_path: Path) -> None:
    from pu_mining.sources import fashion_mnist

    path = tmp_path / "positives.zip"
    assert write_positives(path, per_class=3) == 15
    images, labels = fashion_mnist("train")
    with zipfile.ZipFile(path) as archive:
        names = sorted(archive.namelist())
        assert {name.split("/")[0] for name in names} == set(CLASS_FOLDERS)
        for name in names:
            folder, file = name.split("/")
            index = int(file.removeprefix("train-").removesuffix(".png"))
            assert labels[index] == CLASS_FOLDERS.index(folder)
            pixels = np.asarray(Image.open(io.BytesIO(archive.read(name))))
            assert np.array_equal(pixels, images[index])
    with pytest.raises(ValueError):
        write_positives(path, per_class=1)
    with pytest.raises(TypeError):
        write_positives(path, per_class="3")  # type: ignore[arg-type]


def _serve(data: Path, log: Path, **extra: str) -> subprocess.Popen:
    env = {name: value for name, value in os.environ.items() if not name.startswith("CONDENSE_")}
    env.update(CONDENSE_DATA_DIR=str(data), CONDENSE_BIND=f"127.0.0.1:{free_port()}", CONDENSE_WEB_WORKERS="1",
               CONDENSE_WORKERS="1", PYTHONPATH=str(REPO), **extra)  # fmt: skip
    with log.open("wb") as handle:
        return subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], cwd=REPO, env=env, stdout=handle,
                                stderr=subprocess.STDOUT)  # fmt: skip


def _wait_for(log: Path, text: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    wait_until(
        lambda: text in log.read_text(errors="replace"),
        f"{text!r} in {log.name}",
        timeout,
        0.1,
        give_up=lambda: None if process.poll() is None else "the process exited",
        details=lambda: log.read_text(errors="replace"),
    )


@pytest.mark.servers
def test_serve_first_start_interrupted_then_restarted(tmp_path: Path) -> None:
    """Ctrl-C while ``condense serve`` builds the demo pool stops it (status 130) with the first token kept; a later
    start with ``CONDENSE_DEMO_POOL=0`` serves without building it and makes no second admin."""
    data, log = tmp_path / "data", tmp_path / "serve.log"
    first = _serve(data, log)
    try:
        _wait_for(log, "building the demo pool", first)
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=60) == 130
    finally:
        if first.poll() is None:
            first.kill()
    text = log.read_text()
    assert "condense: stopped while building the demo pool" in text
    token_file = data / "first-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and token_file.read_text().startswith("cdn_")
    assert str(token_file) in text and token_file.read_text().strip() not in text  # not printed: not serving
    if not demo_pool_exists(LocalBlobStore(data / "blobs")):
        assert "it is built on the next start" in text
    second = _serve(data, tmp_path / "again.log", CONDENSE_DEMO_POOL="0")
    try:
        _wait_for(tmp_path / "again.log", "waiting for jobs", second)
        second.send_signal(signal.SIGINT)
        assert second.wait(timeout=60) == 0
    finally:
        if second.poll() is None:
            second.kill()
    again = (tmp_path / "again.log").read_text()
    assert "demo pool" not in again and "created the admin user" not in again
