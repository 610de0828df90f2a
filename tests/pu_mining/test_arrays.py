"""Images from .npz/.npy files (pu_mining/arrays.py): layouts, scaling, labels, and files that must be refused."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from pu_mining.arrays import images_to_tensor, read_image_arrays
from tests.fashion_mnist import task_images


@pytest.fixture(scope="module")
def real_uint8() -> tuple[np.ndarray, np.ndarray]:
    images, labels = task_images("test", 20)
    return (images[:, 0] * 255).round().to(torch.uint8).numpy(), labels.numpy()


def test_npz_round_trip_of_real_images(real_uint8, tmp_path: Path) -> None:
    pixels, labels = real_uint8
    path = tmp_path / "positives.npz"
    np.savez_compressed(path, x=pixels, y=labels)
    read = read_image_arrays(path)
    assert read.images.shape == (20, 1, 28, 28) and read.images.dtype == torch.float32
    torch.testing.assert_close(read.images[:, 0] * 255, torch.from_numpy(pixels).float())
    assert read.labels is not None and read.labels.tolist() == labels.tolist()


@pytest.mark.parametrize("layout", ["nhw", "nchw", "nhwc", "rgb_nhwc"])
def test_layouts(real_uint8, layout: str) -> None:
    pixels, _ = real_uint8
    arrays = {
        "nhw": pixels,
        "nchw": pixels[:, None],
        "nhwc": pixels[..., None],
        "rgb_nhwc": np.repeat(pixels[..., None], 3, axis=-1),
    }
    tensor = images_to_tensor(arrays[layout])
    assert tensor.shape == (20, 3 if layout == "rgb_nhwc" else 1, 28, 28)
    torch.testing.assert_close(tensor[:, 0] * 255, torch.from_numpy(pixels).float())


def test_npy_and_float_images(real_uint8, tmp_path: Path) -> None:
    pixels, _ = real_uint8
    path = tmp_path / "pool.npy"
    np.save(path, pixels.astype(np.float32) / 255)
    read = read_image_arrays(path)
    assert read.labels is None and read.images.shape == (20, 1, 28, 28)
    assert float(read.images.min()) >= 0 and float(read.images.max()) <= 1


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"images_are_missing": np.zeros(3)}, "no 'x' array"),
        ({"x": np.zeros((4, 28, 28), np.float32) + 2.0}, "must be in \\[0, 1\\]"),
        ({"x": np.zeros((4, 28, 28), np.float32) * np.nan}, "NaN"),
        ({"x": np.zeros((4, 5, 28, 28), np.uint8)}, "1 or 3 channels"),
        ({"x": np.zeros((4, 4, 4), np.uint8)}, "too small"),
        ({"x": np.zeros((0, 28, 28), np.uint8)}, "no images"),
        ({"x": np.zeros((28, 28), np.uint8)}, "must be \\[N, H, W\\]"),
        ({"x": np.zeros((4, 28, 28), np.uint8), "y": np.zeros(3, np.int64)}, "shape \\(4,\\)"),
        ({"x": np.zeros((4, 28, 28), np.uint8), "y": np.array([0, 1, -2, 0])}, ">= 0"),
        ({"x": np.zeros((4, 28, 28), np.uint8), "y": np.array([0.5, 1, 2, 0])}, "whole numbers"),
        ({"x": np.full((4, 28, 28), 300, np.int32)}, "0..255"),
    ],
)
def test_bad_arrays_are_refused_with_the_reason(arrays: dict, message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message):
        read_image_arrays(path)


def test_object_arrays_are_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    payload = np.empty(1, dtype=object)
    payload[0] = _Exploit(marker)
    np.savez(path, x=payload)
    with pytest.raises(ValueError, match="unpickling"):
        read_image_arrays(path)
    np.save(tmp_path / "evil.npy", payload, allow_pickle=True)
    with pytest.raises(ValueError, match="unpickling"):
        read_image_arrays(tmp_path / "evil.npy")
    assert not marker.exists()


class _Exploit:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_zip_bomb_is_refused_before_inflating(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((2000, 28, 28), np.uint8))  # 1.5 MB of zeros: compresses to almost nothing
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", buffer.getvalue())
    assert path.stat().st_size < 10_000
    with pytest.raises(ValueError, match="over the limit"):
        read_image_arrays(path, max_bytes=1_000_000)
    assert len(read_image_arrays(path)) == 2000  # within the default limit it reads


def test_corrupt_and_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(ValueError, match="not a NumPy file"):
        read_image_arrays(tmp_path / "photo.png")
    np.savez(tmp_path / "ok.npz", x=np.zeros((4, 28, 28), np.uint8))
    data = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError):
        read_image_arrays(tmp_path / "cut.npz")
    with pytest.raises(FileNotFoundError):
        read_image_arrays(tmp_path / "missing.npz")
