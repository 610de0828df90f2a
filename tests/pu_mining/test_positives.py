"""The user's labelled sample (pu_mining/positives.py): class folders, archives, .npz, conversion rules, hold-out."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skimage_data

from compression.teachers.preprocessing import adapt_images
from pu_mining.image_files import ImageDecodeError
from pu_mining.positives import Positives, fit_image, load_positives, split_holdout
from pu_mining.sources import FASHION_MNIST_CLASSES, fashion_mnist

CLASSES = ("Trouser", "Bag", "Sneaker")  # folder names; sorted: Bag, Sneaker, Trouser


@pytest.fixture(scope="module")
def fmnist() -> dict[str, np.ndarray]:
    """Eight real test images of each of three Fashion-MNIST classes, keyed by class name."""
    images, labels = fashion_mnist("test")
    return {name: images[labels == FASHION_MNIST_CLASSES.index(name)][:8].copy() for name in CLASSES}


def _png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def _members(fmnist: dict[str, np.ndarray], prefix: str = "") -> dict[str, bytes]:
    return {
        f"{prefix}{name}/{index:02d}.png": _png(image)
        for name, images in fmnist.items()
        for index, image in enumerate(images)
    }


def _write_folder(root: Path, members: dict[str, bytes]) -> Path:
    for name, data in members.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_class_folders_give_sorted_classes_and_right_labels(fmnist, tmp_path: Path) -> None:
    root = _write_folder(tmp_path / "positives", _members(fmnist))
    (root / "notes.txt").write_text("three classes\n")
    positives = load_positives(root, (1, 28, 28))
    assert positives.class_names == ["Bag", "Sneaker", "Trouser"]
    assert positives.images.shape == (24, 1, 28, 28) and positives.images.dtype == torch.float32
    assert positives.labels.dtype == torch.int64 and positives.class_counts() == dict.fromkeys(positives.class_names, 8)
    for image, label, name in zip(positives.images, positives.labels, positives.names, strict=True):
        class_name = positives.class_names[int(label)]
        assert name.startswith(class_name + "/")
        expected = fmnist[class_name][int(name[-6:-4])]
        torch.testing.assert_close(image[0] * 255, torch.from_numpy(expected).float())
    assert [item.name for item in positives.skipped] == ["notes.txt"]

    same = load_positives(root, (1, 28, 28))
    assert same.source_hash == positives.source_hash and len(positives.source_hash) == 64
    (root / "Bag/00.png").write_bytes(_png(fmnist["Bag"][1]))
    assert load_positives(root, (1, 28, 28)).source_hash != positives.source_hash

    given = load_positives(root, (1, 28, 28), class_names=["Trouser", "Sneaker", "Bag"])
    assert given.class_names == ["Trouser", "Sneaker", "Bag"]
    assert [given.class_names[int(label)] for label in given.labels] == [name.split("/")[0] for name in given.names]
    with pytest.raises(ValueError, match=r"\['Trouser'\] are not among"):
        load_positives(root, (1, 28, 28), class_names=["Bag", "Sneaker"])
    with pytest.raises(ValueError, match=r"classes without images: 'Sandal'"):
        load_positives(root, (1, 28, 28), class_names=["Bag", "Sneaker", "Trouser", "Sandal"])


def test_archives_with_and_without_a_wrapper_folder(fmnist, tmp_path: Path) -> None:
    reference = load_positives(_write_folder(tmp_path / "plain", _members(fmnist)), (1, 28, 28))
    wrapped = _members(fmnist, prefix="my_dataset/")
    zipped = tmp_path / "upload.zip"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in wrapped.items():
            archive.writestr(name, data)
        archive.writestr("__MACOSX/my_dataset/._Bag", b"\x00\x05\x16\x07")
    tarred = tmp_path / "upload.tar.gz"
    with tarfile.open(tarred, "w:gz") as archive:
        for name, data in _members(fmnist).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    for path in (zipped, tarred):
        positives = load_positives(path, (1, 28, 28))
        assert positives.class_names == reference.class_names
        assert positives.labels.tolist() == reference.labels.tolist()
        torch.testing.assert_close(positives.images, reference.images)
    assert load_positives(zipped, (1, 28, 28)).names[0] == "my_dataset/Bag/00.png"


def test_wrong_channels_and_sizes_are_converted(fmnist, tmp_path: Path) -> None:
    astronaut = skimage_data.astronaut()  # 512x512 RGB
    root = _write_folder(tmp_path / "mixed", {"Bag/gray.png": _png(fmnist["Bag"][0]), "Bag/rgb.png": _png(astronaut)})
    gray_teacher = load_positives(root, (1, 64, 64))
    assert gray_teacher.images.shape == (2, 1, 64, 64)
    expected = np.array(Image.fromarray(astronaut).convert("L").resize((64, 64), Image.Resampling.BILINEAR))
    converted = gray_teacher.images[gray_teacher.names.index("Bag/rgb.png"), 0] * 255
    assert (converted - torch.from_numpy(expected).float()).abs().mean() < 2.0  # luma + antialiased resize, as PIL

    rgb_teacher = load_positives(root, (3, 28, 28))
    gray = rgb_teacher.images[rgb_teacher.names.index("Bag/gray.png")]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    torch.testing.assert_close(gray[0] * 255, torch.from_numpy(fmnist["Bag"][0]).float())


def test_unsafe_conversions_are_refused_with_the_reason(fmnist, tmp_path: Path) -> None:
    photo = skimage_data.astronaut()
    with pytest.raises(ValueError, match=r"icon.png: a 8x8 image is too small .* enlarged 28.0 times"):
        fit_image(np.zeros((8, 8), np.uint8), (3, 224, 224), "icon.png")
    assert fit_image(fmnist["Bag"][0], (3, 224, 224)).shape == (3, 224, 224)  # 28 -> 224 is exactly 8x
    with pytest.raises(ValueError, match=r"banner.png: a 300x100 image is too far from the teacher's 32x32 aspect"):
        fit_image(np.zeros((100, 300, 3), np.uint8), (3, 32, 32), "banner.png")

    wide = photo[96:416]  # 512x320: 1.6 times wider than a square teacher: centre-cropped to 320x320
    cropped = fit_image(wide, (3, 64, 64))
    reference = fit_image(np.ascontiguousarray(wide[:, 96:416]), (3, 64, 64))
    torch.testing.assert_close(cropped, reference)
    slightly = fit_image(photo[:, :440], (3, 64, 64))  # 440x512: 1.16, stretched without cropping
    whole = torch.from_numpy(photo[:, :440].astype(np.float32) / 255).permute(2, 0, 1)[None]
    torch.testing.assert_close(slightly, adapt_images(whole, (3, 64, 64))[0])
    assert slightly.shape == (3, 64, 64) and float(slightly.min()) >= 0 and float(slightly.max()) <= 1

    root = _write_folder(tmp_path / "tiny", {**_members(fmnist), "Bag/icon.png": _png(np.full((6, 6), 200, np.uint8))})
    with pytest.raises(ValueError, match=r"Bag/icon.png: a 6x6 image is too small"):
        load_positives(root, (1, 224, 224))
    positives = load_positives(root, (1, 112, 112), on_error="skip")
    assert len(positives) == 24 and "too small" in positives.skipped[-1].reason
    assert positives.skipped[-1].name == "Bag/icon.png"


def test_folder_errors(fmnist, tmp_path: Path) -> None:
    root = _write_folder(tmp_path / "empty_class", _members(fmnist))
    (root / "Coat").mkdir()
    (root / "Coat/README.txt").write_text("to do\n")
    with pytest.raises(ValueError, match=r"classes without images: 'Coat'"):
        load_positives(root, (1, 28, 28))

    loose = _write_folder(tmp_path / "loose", {**_members(fmnist), "stray.png": _png(fmnist["Bag"][0])})
    with pytest.raises(ValueError, match=r"stray.png: not inside a class folder"):
        load_positives(loose, (1, 28, 28))
    assert len(load_positives(loose, (1, 28, 28), on_error="skip")) == 24

    broken = _write_folder(tmp_path / "broken", {**_members(fmnist), "Bag/cut.png": _png(fmnist["Bag"][0])[:60]})
    with pytest.raises(ImageDecodeError, match=r"Bag/cut.png"):
        load_positives(broken, (1, 28, 28))

    (tmp_path / "one.png").write_bytes(_png(fmnist["Bag"][0]))
    with pytest.raises(ValueError, match=r"a single image"):
        load_positives(tmp_path / "one.png", (1, 28, 28))
    np.save(tmp_path / "unlabelled.npy", fmnist["Bag"])
    with pytest.raises(ValueError, match=r"without labels"):
        load_positives(tmp_path / "unlabelled.npy", (1, 28, 28))
    with pytest.raises(ValueError, match=r"1 or 3 channels"):
        load_positives(root, (4, 28, 28))


def test_npz_positives(fmnist, tmp_path: Path) -> None:
    images = np.concatenate([fmnist[name] for name in CLASSES])
    labels = np.repeat(np.arange(3), 8)
    np.savez(tmp_path / "sample.npz", x=images, y=labels)
    positives = load_positives(tmp_path / "sample.npz", (1, 28, 28))
    assert positives.class_names == ["0", "1", "2"] and positives.labels.tolist() == labels.tolist()
    torch.testing.assert_close(positives.images[:, 0] * 255, torch.from_numpy(images).float())
    assert positives.names[3] == "index 3"
    named = load_positives(tmp_path / "sample.npz", (1, 28, 28), class_names=list(CLASSES))
    assert named.class_names == list(CLASSES)
    with pytest.raises(ValueError, match=r"labels \[2\] are outside 0..1"):
        load_positives(tmp_path / "sample.npz", (1, 28, 28), class_names=["a", "b"])
    with pytest.raises(ValueError, match=r"classes without images: '3'"):
        load_positives(tmp_path / "sample.npz", (1, 28, 28), class_names=["0", "1", "2", "3"])
    np.savez(tmp_path / "partly.npz", x=images, y=np.where(np.arange(24) == 5, -1, labels))
    with pytest.raises(ValueError, match=r"a label for every image .*index 5"):
        load_positives(tmp_path / "partly.npz", (1, 28, 28))
    np.savez(tmp_path / "no_y.npz", x=images)
    with pytest.raises(ValueError, match=r"a label for every image"):
        load_positives(tmp_path / "no_y.npz", (1, 28, 28))


def test_holdout_split_is_stratified_and_deterministic(fmnist, tmp_path: Path) -> None:
    members = _members(fmnist)
    members = {name: data for name, data in members.items() if not name.startswith("Trouser/") or "/00" in name}
    positives = load_positives(_write_folder(tmp_path / "uneven", members), (1, 28, 28))
    assert positives.class_counts() == {"Bag": 8, "Sneaker": 8, "Trouser": 1}
    kept, held = split_holdout(positives, 0.25, seed=7)
    assert held.class_counts() == {"Bag": 2, "Sneaker": 2, "Trouser": 0}
    assert kept.class_counts() == {"Bag": 6, "Sneaker": 6, "Trouser": 1}  # at least one kept per class
    assert sorted(kept.names + held.names) == sorted(positives.names) and not set(kept.names) & set(held.names)
    assert kept.names == sorted(kept.names, key=positives.names.index)  # original order kept
    for part in (kept, held):
        for image, name in zip(part.images, part.names, strict=True):
            assert torch.equal(image, positives.images[positives.names.index(name)])
    again_kept, again_held = split_holdout(positives, 0.25, seed=7)
    assert again_held.names == held.names and again_kept.names == kept.names
    other_seeds = {tuple(split_holdout(positives, 0.25, seed=seed)[1].names) for seed in range(8)}
    assert len(other_seeds) > 1
    assert len(split_holdout(positives, 0.0, seed=0)[1]) == 0
    _, most = split_holdout(positives, 0.99, seed=0)
    assert most.class_counts() == {"Bag": 7, "Sneaker": 7, "Trouser": 0}
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        split_holdout(positives, 1.0, seed=0)
    with pytest.raises(TypeError):
        split_holdout(positives, 0.2, seed="7")  # type: ignore[arg-type]
    assert isinstance(kept, Positives)
