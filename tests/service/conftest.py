"""Fixtures of the service tests: settings in a temporary data folder, the Flask app with two users, and real inputs.

- ``teacher_file``: a tiny real TorchScript model (``torch.jit.script`` of a small conv net for 1x28x28 images).
- ``positives_zip``: a zip of real PNG images from Fashion-MNIST's test split, one folder per class.
- ``service_env`` / ``make_settings``: ``CONDENSE_*`` variables pointing everything into ``tmp_path`` (SQLite,
  local blobs, SQLite queue), with short leases and intervals so fault tests take seconds, and no demo pool built
  by ``condense serve``.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pu_mining.sources import fashion_mnist
from service.app import create_app
from service.context import service_context
from service.settings import Settings

CLASS_NAMES = ("tshirt", "trouser", "pullover")
IMAGES_PER_CLASS = 4


class _TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, len(CLASS_NAMES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


@pytest.fixture(scope="session")
def service_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A TorchScript teacher, a zip of PNG positives in class folders, and a pickled (refused) model."""
    folder = tmp_path_factory.mktemp("service-inputs")
    teacher = folder / "teacher.pt"
    torch.jit.save(torch.jit.script(_TinyNet().eval()), str(teacher))
    pickled = folder / "state_dict.pt"
    torch.save(_TinyNet().state_dict(), pickled)
    images, labels = fashion_mnist("test")
    positives = folder / "positives.zip"
    with zipfile.ZipFile(positives, "w") as archive:
        for label, name in enumerate(CLASS_NAMES):
            for index in np.flatnonzero(labels == label)[:IMAGES_PER_CLASS]:
                buffer = io.BytesIO()
                Image.fromarray(images[index]).save(buffer, format="PNG")
                archive.writestr(f"{name}/{index}.png", buffer.getvalue())
    return {"teacher": teacher, "positives": positives, "pickled": pickled}


def service_env(root: Path, **extra: str) -> dict[str, str]:
    """``CONDENSE_*`` variables for a service whose every file lives under ``root``."""
    env = {
        "CONDENSE_DATA_DIR": str(root),
        "CONDENSE_LEASE_S": "2",
        "CONDENSE_POLL_S": "0.2",
        "CONDENSE_REAPER_INTERVAL_S": "0.5",
        "CONDENSE_CHECKPOINT_SYNC_S": "0.3",
        "CONDENSE_SSE_MAX_S": "5",
        "CONDENSE_SSE_KEEPALIVE_S": "0.2",
        "CONDENSE_LOG_LEVEL": "INFO",
        "CONDENSE_DEMO_POOL": "0",  # tests that need a pool build a small one (tests/service/test_e2e.py)
    }
    env.update(extra)
    return env


def make_settings(root: Path, **extra: str) -> Settings:
    return Settings.from_env(service_env(root, **extra))


@dataclass
class ApiFixture:
    """The app, its test client, its job service and two users' auth headers."""

    app: object
    client: object
    settings: Settings
    alice: dict[str, str]
    bob: dict[str, str]

    @property
    def jobs(self):
        return service_context(self.app).jobs


def build_api(settings: Settings, *, max_running: int = 2) -> ApiFixture:
    app = create_app(settings)
    jobs = service_context(app).jobs
    headers = {}
    for name in ("alice", "bob"):
        jobs.metadata.create_user(name, max_running_jobs=max_running)
        headers[name] = {"Authorization": f"Bearer {jobs.metadata.create_token(name)}"}
    return ApiFixture(app, app.test_client(), settings, headers["alice"], headers["bob"])


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiFixture]:
    fixture = build_api(make_settings(tmp_path / "data"))
    yield fixture
    service_context(fixture.app).close()
