"""The pool embedder (pu_mining/embedder.py): output contract, preprocessing, real-image sanity, safe weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from pu_mining.embedder import (
    EFFICIENTNET_LITE0_SHA256,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Embedder,
    load_embedder,
)
from pu_mining.sources import fashion_mnist, mnist_digits

RESOLUTION = 32  # small for speed; the default resolution is measured in docs/pool_index.md


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return load_embedder(resolution=RESOLUTION, num_threads=1)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return fashion_mnist("test")[0][:12]


def test_output_shape_dtype_and_unit_norm(embedder: Embedder, images: np.ndarray) -> None:
    vectors = embedder(images)
    assert embedder.name == "efficientnet-lite0" and embedder.dim == 1280 and embedder.resolution == RESOLUTION
    assert vectors.shape == (len(images), 1280) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder(images[:0]).shape == (0, 1280)


def test_deterministic_and_batch_size_independent(embedder: Embedder, images: np.ndarray) -> None:
    first = embedder(images)
    np.testing.assert_array_equal(first, embedder(images))
    calls: list[tuple[int, int]] = []
    small_batches = embedder(images, batch_size=5, progress=lambda done, total: calls.append((done, total)))
    np.testing.assert_allclose(small_batches, first, atol=1e-5)
    assert calls == [(5, 12), (10, 12), (12, 12)]


def test_grey_equals_replicated_rgb_in_every_layout(embedder: Embedder, images: np.ndarray) -> None:
    grey = embedder(images)
    rgb_last = np.repeat(images[..., None], 3, axis=3)
    floats = torch.from_numpy(images).float().div(255).unsqueeze(1)
    for other in (
        embedder(rgb_last),  # uint8 [N, H, W, 3]
        embedder(images[..., None]),  # uint8 [N, H, W, 1]
        embedder(floats),  # float [N, 1, H, W]
        embedder(floats.expand(-1, 3, -1, -1).contiguous()),  # float [N, 3, H, W]
        embedder(floats.squeeze(1).numpy()),  # float numpy [N, H, W]
    ):
        np.testing.assert_allclose(other, grey, atol=1e-6)


def test_fingerprint_names_network_weights_and_preprocessing(embedder: Embedder) -> None:
    fingerprint = embedder.fingerprint
    for part in ("efficientnet-lite0", EFFICIENTNET_LITE0_SHA256, f"resolution={RESOLUTION}", "bilinear", "dim=1280"):
        assert part in fingerprint


def test_torch_backend_agrees_with_onnxruntime(embedder: Embedder, images: np.ndarray) -> None:
    reference = load_embedder(resolution=RESOLUTION, backend="torch", num_threads=1)
    assert reference.fingerprint == embedder.fingerprint
    np.testing.assert_allclose(reference(images[:4]), embedder(images[:4]), atol=1e-4)


def test_trousers_are_closer_to_trousers_than_to_digits(embedder: Embedder) -> None:
    """Semantic sanity on real images: 30 Fashion-MNIST trousers and 30 MNIST digits."""
    fashion, labels = fashion_mnist("test")
    trousers = embedder(fashion[labels == 1][:30])
    digits = embedder(mnist_digits()[0][::167][:30])
    within = trousers @ trousers.T
    mean_within = (within.sum() - np.trace(within)) / (30 * 29)
    mean_across = float((trousers @ digits.T).mean())
    assert mean_within > mean_across + 0.1
    nearest_is_trouser = [(row.max() > (trousers[i] @ digits.T).max()) for i, row in enumerate(within - 2 * np.eye(30))]
    assert np.mean(nearest_is_trouser) >= 0.9


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ([[0, 1]], TypeError),  # not an array
        (np.zeros((2, 28, 28), dtype=np.int32), TypeError),  # ambiguous pixel range
        (np.zeros((2, 28, 28, 4), dtype=np.uint8), ValueError),  # four channels
        (np.zeros((2, 4, 28, 28), dtype=np.float32), ValueError),
        (np.full((2, 28, 28), 255.0, dtype=np.float32), ValueError),  # 0-255 floats
        (np.full((2, 28, 28), np.nan, dtype=np.float32), ValueError),
        (np.zeros((28, 28), dtype=np.uint8), ValueError),  # one image without batch axis
    ],
)
def test_bad_images_are_refused(embedder: Embedder, bad: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        embedder(bad)  # type: ignore[arg-type]


def test_bad_arguments_are_refused(embedder: Embedder, images: np.ndarray) -> None:
    with pytest.raises(ValueError, match="unknown embedder"):
        load_embedder("resnet-9000")
    with pytest.raises(ValueError, match="unknown torchvision"):
        load_embedder("torchvision:not_a_net", weights="x.pth")
    with pytest.raises(ValueError, match="needs weights"):
        load_embedder("torchvision:resnet18", resolution=RESOLUTION)
    with pytest.raises(ValueError, match="does not exist"):
        load_embedder(weights="/nonexistent/weights.pth", resolution=RESOLUTION)
    with pytest.raises(ValueError):
        load_embedder(resolution=4)
    with pytest.raises(ValueError):
        embedder(images, batch_size=0)


# ------------------------------------------------------------------------------------------- torchvision + weights


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(model.state_dict(), path)
    return path, model


def test_torchvision_network_with_a_local_state_dict(resnet18_weights: tuple[Path, nn.Module]) -> None:
    path, model = resnet18_weights
    embedder = load_embedder("torchvision:resnet18", resolution=RESOLUTION, weights=path, num_threads=1)
    assert embedder.dim == 512 and "torchvision:resnet18" in embedder.fingerprint
    images = torch.rand(3, 3, 20, 24, generator=torch.Generator().manual_seed(2))
    resized = F.interpolate(images, size=(RESOLUTION, RESOLUTION), mode="bilinear", antialias=True)
    normalised = (resized - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    trunk = nn.Sequential(*list(model.children())[:-1])  # everything before fc: the pooled features
    with torch.no_grad():
        expected = F.normalize(trunk(normalised).flatten(1), dim=1).numpy()
    np.testing.assert_allclose(embedder(images), expected, atol=1e-4)


def test_mismatched_weights_are_refused(resnet18_weights: tuple[Path, nn.Module], tmp_path: Path) -> None:
    path, _ = resnet18_weights
    with pytest.raises(ValueError, match="do not match"):
        load_embedder("torchvision:resnet34", resolution=RESOLUTION, weights=path)
    with pytest.raises(ValueError, match="do not match"):
        load_embedder("efficientnet-lite0", resolution=RESOLUTION, weights=path)
    not_a_state_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], not_a_state_dict)
    with pytest.raises(ValueError, match="state dict"):
        load_embedder("torchvision:resnet18", resolution=RESOLUTION, weights=not_a_state_dict)


class _Payload:
    """Unpickling this would create a marker file: proof that arbitrary code ran."""

    marker: Path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (str(self.marker), "pwned"))  # type: ignore[return-value]


def test_pickled_objects_are_refused_unopened(tmp_path: Path) -> None:
    whole_module = tmp_path / "module.pth"
    torch.save(nn.Linear(2, 2), whole_module)
    with pytest.raises(ValueError, match="weights_only"):
        load_embedder("torchvision:resnet18", resolution=RESOLUTION, weights=whole_module)
    marker = tmp_path / "marker.txt"
    payload = _Payload()
    payload.marker = marker
    evil = tmp_path / "evil.pth"
    torch.save({"fc.weight": payload}, evil)
    with pytest.raises(ValueError):
        load_embedder("torchvision:resnet18", resolution=RESOLUTION, weights=evil)
    assert not marker.exists()
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file at all")
    with pytest.raises(ValueError):
        load_embedder("torchvision:resnet18", resolution=RESOLUTION, weights=garbage)
