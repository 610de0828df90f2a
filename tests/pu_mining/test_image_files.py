"""Reading user images (pu_mining/image_files.py): every accepted format from real images, and hostile uploads."""

from __future__ import annotations

import gzip
import io
import os
import stat
import struct
import tarfile
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from pu_mining.image_files import (
    ImageDecodeError,
    ReadLimits,
    UnsafeArchiveError,
    decode_image,
    iter_images,
)
from pu_mining.sources import fashion_mnist


@pytest.fixture(scope="module")
def fmnist() -> tuple[np.ndarray, np.ndarray]:
    images, labels = fashion_mnist("test")
    return images[:60].copy(), labels[:60].copy()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()[::4, ::4].copy()  # 128x128 RGB


def _encode(array: np.ndarray, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _write_zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return path


def _write_tar(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _raw_zip(path: Path, entries: list[dict]) -> Path:
    """A zip written byte by byte: each entry's ``data`` is stored as given, with the sizes and CRC it claims."""
    body, central = bytearray(), bytearray()
    for entry in entries:
        name = entry["name"].encode()
        offset = entry.get("offset", len(body))
        fields = (entry["method"], 0, 0, entry.get("crc", 0), len(entry["data"]), entry["size"], len(name))
        if "offset" not in entry:
            body += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, *fields, 0) + name + entry["data"]
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", (3 << 8) | 20, 20, 0, *fields, 0, 0, 0, 0,
                               entry.get("external_attr", 0), offset) + name  # fmt: skip
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(body), 0)
    path.write_bytes(bytes(body + central + end))
    return path


def _deflated_zeros(megabytes: int) -> bytes:
    """Raw deflate data that inflates to ``megabytes`` MiB of zeros, built in milliseconds (one block repeated)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return block * megabytes + compressor.flush()


@pytest.fixture(scope="module")
def dataset(fmnist, astronaut, tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """A class-folder dataset on disk (PNG, JPEG, BMP, GIF, TIFF, WebP, PPM) plus clutter, and the expected pixels."""
    images, labels = fmnist
    root = tmp_path_factory.mktemp("upload") / "dataset"
    expected: dict[str, np.ndarray] = {}
    formats = [("png", "PNG", {}), ("bmp", "BMP", {}), ("gif", "GIF", {}), ("tif", "TIFF", {}), ("ppm", "PPM", {})]
    for index in range(12):
        extension, fmt, options = formats[index % len(formats)]
        name = f"class_{labels[index]}/img_{index:02d}.{extension}"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(_encode(images[index], fmt, **options))
        expected[name] = images[index]
    (root / "photos").mkdir()
    (root / "photos/astronaut.png").write_bytes(_encode(astronaut))
    expected["photos/astronaut.png"] = astronaut
    (root / "photos/astronaut.webp").write_bytes(_encode(astronaut, "WEBP", lossless=True))
    expected["photos/astronaut.webp"] = astronaut
    (root / "photos/astronaut.jpg").write_bytes(_encode(astronaut, "JPEG", quality=95))
    expected["photos/astronaut.jpg"] = astronaut  # lossy: compared with a tolerance
    (root / "README.txt").write_text("class folders of Fashion-MNIST\n")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))
    (root / "photos/._astronaut.png").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    return root, expected


def _assert_pixels(records, expected: dict[str, np.ndarray], prefix: str = "") -> None:
    assert [record.name for record in records] == sorted(prefix + name for name in expected)
    for record in records:
        want = expected[record.name.removeprefix(prefix)]
        assert record.image.dtype == np.uint8 and record.image.shape == want.shape, record.name
        tolerance = 12 if record.name.endswith(".jpg") else 0
        assert np.abs(record.image.astype(int) - want).mean() <= tolerance, record.name


def test_folder_zip_and_tars_read_the_same_images_in_the_same_order(dataset, tmp_path: Path) -> None:
    root, expected = dataset
    reader = iter_images(root, labels_from_folders=True)
    records = list(reader)
    assert reader.format == "folder" and reader.count == len(expected)
    _assert_pixels(records, expected)
    assert all(record.label == record.name.split("/")[0] for record in records)
    assert records[-1].label == "photos" and records[-1].image.shape == (128, 128, 3)
    skipped = {item.name: item.reason for item in reader.skipped}
    assert skipped == {".DS_Store": "hidden file or folder", "README.txt": "not an image",
                       "photos/._astronaut.png": "macOS metadata"}  # fmt: skip
    folder_hash = reader.sha256

    paths = sorted(path for path in root.rglob("*") if path.is_file())
    files = {str(path.relative_to(root.parent)): path.read_bytes() for path in paths}
    files["__MACOSX/dataset/._README.txt"] = b"\x00\x05\x16\x07"
    files["dataset/" + "long_" * 30 + ".txt"] = b"a name over 100 characters: a pax header in tar"
    archives = [
        _write_zip(tmp_path / "upload.zip", files),
        _write_zip(tmp_path / "stored.zip", files, compression=zipfile.ZIP_STORED),
        _write_tar(tmp_path / "upload.tgz", files, "w:gz"),
        _write_tar(tmp_path / "upload.tar.bz2", files, "w:bz2"),
        _write_tar(tmp_path / "upload.tar.xz", files, "w:xz"),
        _write_tar(tmp_path / "upload.tar", files, "w"),
        _write_tar(tmp_path / "reversed.tar.gz", dict(reversed(files.items())), "w:gz"),
    ]
    for archive in archives:
        reader = iter_images(archive)
        records = list(reader)
        assert reader.format == ("zip" if archive.suffix == ".zip" else "tar"), archive
        _assert_pixels(records, expected, prefix="dataset/")
        assert all(record.label is None and record.source == str(archive) for record in records)
        assert "__MACOSX/dataset/._README.txt" in {item.name for item in reader.skipped}
        assert len(reader.sha256) == 64 and reader.sha256 != folder_hash

    again = iter_images(root)
    with pytest.raises(RuntimeError):
        _ = again.sha256  # a folder's digest needs every file read
    list(again)
    assert again.sha256 == folder_hash


def test_format_is_detected_from_content_not_name(dataset, fmnist, tmp_path: Path) -> None:
    root, expected = dataset
    png = (root / "class_9/img_00.png").read_bytes()
    (tmp_path / "photo.jpg").write_bytes(png)  # a PNG named .jpg
    reader = iter_images(tmp_path / "photo.jpg")
    (record,) = list(reader)
    assert reader.format == "image" and record.name == "photo.jpg"
    np.testing.assert_array_equal(record.image, expected["class_9/img_00.png"])

    _write_tar(tmp_path / "looks_like.zip", {"a/x.png": png}, "w:gz")
    assert iter_images(tmp_path / "looks_like.zip").format == "tar"
    images, labels = fmnist
    with (tmp_path / "arrays.bin").open("wb") as handle:
        np.savez(handle, x=images[:5], y=labels[:5])
    assert iter_images(tmp_path / "arrays.bin").format == "npz"

    (tmp_path / "notes.png").write_text("just text\n")
    with pytest.raises(ValueError, match=r"unrecognised format"):
        iter_images(tmp_path / "notes.png")
    with pytest.raises(FileNotFoundError):
        iter_images(tmp_path / "missing.zip")


def test_arrays_and_idx(fmnist, tmp_path: Path) -> None:
    images, labels = fmnist
    np.savez_compressed(tmp_path / "sample.npz", x=images[:20], y=labels[:20])
    reader = iter_images(tmp_path / "sample.npz")
    records = list(reader)
    assert reader.format == "npz" and [record.name for record in records] == [f"index {i}" for i in range(20)]
    assert [record.label for record in records] == labels[:20].tolist()
    np.testing.assert_array_equal(np.stack([record.image for record in records]), images[:20])

    rgb = np.repeat(images[:4, :, :, None], 3, axis=-1).astype(np.float32) / 255
    np.save(tmp_path / "pool.npy", rgb)
    records = list(iter_images(tmp_path / "pool.npy"))
    assert records[0].image.shape == (28, 28, 3) and records[0].label is None
    np.testing.assert_array_equal(records[3].image[..., 1], images[3])

    idx = struct.pack(">BBBB3I", 0, 0, 0x08, 3, 20, 28, 28) + images[:20].tobytes()
    (tmp_path / "images-idx3-ubyte").write_bytes(idx)
    (tmp_path / "images-idx3-ubyte.gz").write_bytes(gzip.compress(idx))
    for name in ("images-idx3-ubyte", "images-idx3-ubyte.gz"):
        reader = iter_images(tmp_path / name)
        records = list(reader)
        assert reader.format == "idx" and len(records) == 20
        np.testing.assert_array_equal(records[7].image, images[7])
    (tmp_path / "labels-idx1-ubyte.gz").write_bytes(gzip.compress(struct.pack(">BBBBI", 0, 0, 8, 1, 20) + bytes(20)))
    with pytest.raises(ValueError, match=r"labels"):
        list(iter_images(tmp_path / "labels-idx1-ubyte.gz"))
    (tmp_path / "lying-idx3-ubyte.gz").write_bytes(gzip.compress(struct.pack(">BBBB3I", 0, 0, 8, 3, 10**6, 28, 28)))
    with pytest.raises(UnsafeArchiveError, match=r"IDX header promises"):
        list(iter_images(tmp_path / "lying-idx3-ubyte.gz", ReadLimits(max_total_bytes=10**8)))

    real = iter_images("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
    first = next(real)
    np.testing.assert_array_equal(first.image, images[0])


def test_pickled_npy_is_refused_unopened(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = np.empty(2, dtype=object)
    payload[0] = _Exploit(marker)
    np.save(tmp_path / "evil.npy", payload, allow_pickle=True)
    with pytest.raises(ValueError, match=r"unpickling"):
        list(iter_images(tmp_path / "evil.npy"))
    np.savez(tmp_path / "evil.npz", x=payload)
    with pytest.raises(ValueError, match=r"unpickling"):
        list(iter_images(tmp_path / "evil.npz"))
    assert not marker.exists()


class _Exploit:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_image_modes_are_converted(fmnist, astronaut) -> None:
    gray = fmnist[0][0]
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 128, np.uint8)])
    out = decode_image(_encode(rgba))
    np.testing.assert_array_equal(out, (astronaut.astype(np.uint16) * 128 + 127) // 255)
    gray16 = gray.astype(np.uint16) * 257
    np.testing.assert_array_equal(decode_image(_encode(gray16)), gray)
    palette = Image.fromarray(astronaut).quantize(64)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG")
    np.testing.assert_array_equal(decode_image(buffer.getvalue()), np.asarray(palette.convert("RGB")))
    cmyk = _encode_image(Image.fromarray(astronaut).convert("CMYK"), "JPEG", quality=95)
    assert decode_image(cmyk).shape == astronaut.shape
    bilevel = _encode_image(Image.fromarray(gray).convert("1"), "PNG")
    assert set(np.unique(decode_image(bilevel)).tolist()) <= {0, 255}
    frames = [Image.fromarray(gray), Image.fromarray(255 - gray)]
    animated = io.BytesIO()
    frames[0].save(animated, format="GIF", save_all=True, append_images=frames[1:])
    np.testing.assert_array_equal(decode_image(animated.getvalue()), gray)  # the first frame


def _encode_image(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        ("../evil.png", "'..' component"),
        ("ok/../../evil.png", "'..' component"),
        ("/etc/evil.png", "absolute path"),
        ("C:/Windows/evil.png", "drive letter"),
        ("ok\\..\\..\\evil.png", "backslash"),
    ],
)
def test_path_tricks_are_refused(fmnist, tmp_path: Path, member: str, reason: str) -> None:
    png = _encode(fmnist[0][0])
    for archive in (
        _write_zip(tmp_path / "bad.zip", {"ok/a.png": png, member: png}),
        _write_tar(tmp_path / "bad.tar.gz", {"ok/a.png": png, member: png}),
    ):
        with pytest.raises(UnsafeArchiveError, match=reason) as caught:
            list(iter_images(archive))
        assert repr(member) in str(caught.value)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        (tarfile.SYMTYPE, "symbolic link"),
        (tarfile.LNKTYPE, "hard link"),
        (tarfile.CHRTYPE, "device or FIFO"),
        (tarfile.FIFOTYPE, "device or FIFO"),
    ],
)
def test_tar_links_and_devices_are_refused(fmnist, tmp_path: Path, kind: bytes, reason: str) -> None:
    path = tmp_path / "links.tar"
    with tarfile.open(path, "w") as archive:
        png = _encode(fmnist[0][0])
        info = tarfile.TarInfo("cls/a.png")
        info.size = len(png)
        archive.addfile(info, io.BytesIO(png))
        special = tarfile.TarInfo("cls/b.png")
        special.type = kind
        special.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else "cls/a.png"
        archive.addfile(special)
    with pytest.raises(UnsafeArchiveError, match=reason) as caught:
        list(iter_images(path))
    assert "'cls/b.png'" in str(caught.value)


def test_zip_symlink_entry_is_refused(fmnist, tmp_path: Path) -> None:
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("cls/a.png", _encode(fmnist[0][0]))
        link = zipfile.ZipInfo("cls/passwd.png")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match=r"symbolic link") as caught:
        list(iter_images(path))
    assert "'cls/passwd.png'" in str(caught.value)


def test_zip_bombs_are_refused_before_inflating(fmnist, tmp_path: Path) -> None:
    png = _encode(fmnist[0][0])
    ok = {"name": "a.png", "method": 0, "data": png, "size": len(png), "crc": zlib.crc32(png)}
    zeros = _deflated_zeros(2048)  # 2 MB that inflate to 2 GiB

    start = time.perf_counter()
    lying = _raw_zip(tmp_path / "lying.zip", [ok, {"name": "bomb.png", "method": 8, "data": zeros, "size": 1000}])
    with pytest.raises(UnsafeArchiveError, match=r"lying header") as caught:
        list(iter_images(lying))
    assert "'bomb.png'" in str(caught.value)

    honest = _raw_zip(tmp_path / "honest.zip", [ok, {"name": "bomb.png", "method": 8, "data": zeros, "size": 2**31}])
    with pytest.raises(UnsafeArchiveError, match=r"over the 33,554,432-byte limit") as caught:
        list(iter_images(honest))
    assert "'bomb.png'" in str(caught.value)
    with pytest.raises(UnsafeArchiveError, match=r"zip bomb") as caught:
        list(iter_images(honest, ReadLimits(max_file_bytes=2**32, max_total_bytes=2**33)))
    assert "'bomb.png'" in str(caught.value)

    # Headers within every limit (4 MiB from 2 MB) but the data inflates to 2 GiB: reading stops at 4 MiB.
    sneaky = _raw_zip(tmp_path / "sneaky.zip", [ok, {"name": "bomb.png", "method": 8, "data": zeros, "size": 4 << 20}])
    with pytest.raises(UnsafeArchiveError, match=r"does not match its header") as caught:
        list(iter_images(sneaky))
    assert "'bomb.png'" in str(caught.value)

    tar_bomb = _write_tar(tmp_path / "bomb.tar.gz", {"cls/a.png": png, "cls/zeros.bmp": bytes(16 << 20)})
    with pytest.raises(UnsafeArchiveError, match="decompression bomb") as caught:
        list(iter_images(tar_bomb))
    assert "'cls/zeros.bmp'" in str(caught.value)

    overlapping = _raw_zip(tmp_path / "overlap.zip", [ok, {**ok, "name": "b.png", "offset": 0}])
    with pytest.raises(UnsafeArchiveError, match=r"overlap"):
        list(iter_images(overlapping))
    assert time.perf_counter() - start < 5.0


def test_limits_on_counts_and_sizes(fmnist, tmp_path: Path) -> None:
    canvas = np.zeros((8, 112, 112), np.uint8)
    canvas[:, 42:70, 42:70] = fmnist[0][:8]  # mostly black BMPs: they deflate well
    members = {f"cls/{index}.bmp": _encode(image, "BMP") for index, image in enumerate(canvas)}
    zipped = _write_zip(tmp_path / "many.zip", members)
    tarred = _write_tar(tmp_path / "many.tar.gz", members)
    folder = tmp_path / "many"
    for name, data in members.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    for path in (zipped, tarred, folder):
        assert len(list(iter_images(path))) == 8
        with pytest.raises(UnsafeArchiveError, match=r"max_files"):
            list(iter_images(path, ReadLimits(max_files=5)))
        size = max(len(data) for data in members.values())
        with pytest.raises(UnsafeArchiveError, match=r"limit") as caught:
            list(iter_images(path, ReadLimits(max_file_bytes=size - 1)))
        assert "cls/" in str(caught.value)
        assert path.is_dir() or path.stat().st_size < 5 * size
        with pytest.raises(UnsafeArchiveError, match=r"more than [0-9,]+ bytes"):
            list(iter_images(path, ReadLimits(max_total_bytes=5 * size)))


def test_pixel_bombs_are_refused_from_the_header(tmp_path: Path) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)  # 10 gigapixels, a few bytes
    pixels = zlib.compress(bytes(1000))
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    _write_zip(tmp_path / "pixels.zip", {"cls/huge.png": bomb})
    saved = Image.MAX_IMAGE_PIXELS
    with pytest.raises(UnsafeArchiveError, match=r"pixel") as caught:
        list(iter_images(tmp_path / "pixels.zip"))
    assert "'cls/huge.png'" in str(caught.value) and saved == Image.MAX_IMAGE_PIXELS
    with pytest.raises(UnsafeArchiveError, match=r"pixel"):
        decode_image(_encode(np.zeros((200, 200), np.uint8)), ReadLimits(max_image_pixels=100 * 100))


def test_bad_images_raise_or_are_skipped(fmnist, tmp_path: Path) -> None:
    png = _encode(fmnist[0][0])
    members = {
        "cls/good.png": png,
        "cls/truncated.png": png[: len(png) // 2],
        "cls/notes.png": b"this is text, not a PNG\n",
        "cls/inner.zip": _write_zip(tmp_path / "inner.zip", {"x.png": png}).read_bytes(),
        "cls/arrays.npy": _npy_bytes(fmnist[0][:2]),
        "cls/readme.md": b"# hello\n",
    }
    archive = _write_zip(tmp_path / "mixed.zip", members)
    with pytest.raises(ImageDecodeError, match=r"cls/notes.png"):
        list(iter_images(archive))
    del members["cls/notes.png"]
    with pytest.raises(ImageDecodeError, match=r"cls/truncated.png"):
        list(iter_images(_write_zip(tmp_path / "mixed2.zip", members)))

    reader = iter_images(archive, on_error="skip")
    assert [record.name for record in reader] == ["cls/good.png"]
    reasons = {item.name: item.reason for item in reader.skipped}
    assert "truncated" in reasons["cls/truncated.png"] or "decode" in reasons["cls/truncated.png"]
    assert "not one" in reasons["cls/notes.png"]
    assert reasons["cls/inner.zip"].startswith("nested archive")
    assert "NumPy" in reasons["cls/arrays.npy"] and reasons["cls/readme.md"] == "not an image"

    (tmp_path / "broken.jpg").write_bytes(_encode(fmnist[0][1], "JPEG")[:200])
    with pytest.raises(ImageDecodeError, match=r"broken.jpg"):
        list(iter_images(tmp_path / "broken.jpg"))


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_zip_rules_on_duplicates_and_compression(fmnist, tmp_path: Path) -> None:
    png = _encode(fmnist[0][0])
    path = tmp_path / "twice.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("cls/a.png", png)
        archive.writestr("cls/./a.png", png)
    with pytest.raises(UnsafeArchiveError, match=r"listed twice"):
        list(iter_images(path))
    bzipped = tmp_path / "bzip2.zip"
    with zipfile.ZipFile(bzipped, "w") as archive:
        archive.writestr("cls/a.png", png, compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr("cls/b.png", png, compress_type=zipfile.ZIP_BZIP2)
    reader = iter_images(bzipped)
    assert [record.name for record in reader] == ["cls/a.png"]
    assert "bzip2" in reader.skipped[0].reason


def test_folder_symlinks_stay_inside(fmnist, tmp_path: Path) -> None:
    outside = tmp_path / "outside.png"
    outside.write_bytes(_encode(fmnist[0][0]))
    root = tmp_path / "upload"
    (root / "cls").mkdir(parents=True)
    (root / "cls/real.png").write_bytes(_encode(fmnist[0][1]))
    os.symlink(root / "cls/real.png", root / "cls/alias.png")
    os.symlink(outside, root / "cls/escape.png")
    os.symlink(tmp_path, root / "cls/loop")
    os.symlink(tmp_path / "nothing.png", root / "cls/dangling.png")
    os.mkfifo(root / "cls/pipe.png")
    reader = iter_images(root)
    assert [record.name for record in reader] == ["cls/alias.png", "cls/real.png"]
    reasons = {item.name: item.reason for item in reader.skipped}
    assert "outside the folder" in reasons["cls/escape.png"]
    assert "pointing outside" in reasons["cls/loop"] or "folder" in reasons["cls/loop"]
    assert "broken" in reasons["cls/dangling.png"]
    assert "not a regular file" in reasons["cls/pipe.png"]


def test_no_images_is_an_error_listing_what_was_seen(tmp_path: Path) -> None:
    archive = _write_zip(tmp_path / "empty.zip", {"docs/README.txt": b"hi", ".hidden.png": b"x"})
    with pytest.raises(ValueError, match=r"no images found") as caught:
        list(iter_images(archive))
    assert "docs/README.txt: not an image" in str(caught.value) and ".hidden.png" in str(caught.value)


def test_bad_arguments() -> None:
    with pytest.raises(TypeError):
        iter_images(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"on_error"):
        iter_images(".", on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"max_files"):
        ReadLimits(max_files=0)
    with pytest.raises(TypeError):
        ReadLimits(max_file_bytes=1.5)  # type: ignore[arg-type]
