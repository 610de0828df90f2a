"""Fused CPU kernels of the adder convolution, compiled at first use; float32 only.

The PyTorch-operator kernels (:mod:`compression.layers._adder_torch_kernel`) spend their time in ``cdist`` and in
the ``[rows, out, K]`` clamp buffer of the input gradient. Here the forward and the whole backward are two loops
in C++ that read the receptive fields straight from the zero-padded channels-last input ``[N, Hp, Wp, C]`` (no
patch gathering, no temporary tensors):

* forward: ``Y[n,p,o] = -sum_k |X[n,p,k] - W[o,k]|``, four filters at a time against 16-float vectors of the
  receptive field (one contiguous segment of ``kw * C`` floats per kernel row when the width dilation is 1);
* backward, one pass per output position and receptive-field vector ``x``: for every filter ``o`` with output
  gradient ``g = G[n,p,o]``, ``dX += g * clamp(W[o] - x, -1, 1)`` (the paper's HardTanh input gradient, eq. 6)
  and ``(G^T X)[o] += g * x``; the weight gradient is then ``G^T X - W * sum G`` (the paper's full-precision
  gradient ``X - W``, eq. 5), exactly as in the PyTorch kernels.

The vectors are GCC/Clang vector extensions (``vector_size(64)``), which the compiler lowers to AVX-512, AVX2,
SSE or NEON as the machine has (``-march=native``). The batch is split across ``torch.get_num_threads()`` Python
threads: ctypes releases the GIL during the call, so no OpenMP runtime is added next to PyTorch's. Each thread
writes its own images of the input gradient and its own partial ``G^T X``.

Build: ``g++`` (or ``$CXX``) compiles the source below into a shared library in the user's cache
(``$CONDENSE_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/condense/kernels``, else ``~/.cache/condense/kernels``),
named by a hash of the source, the flags, the compiler and the CPU, so a rebuild happens only when one of them
changes (about a second). Without a compiler, or if the build fails, :func:`load` returns None once with a
warning, and the adder layer keeps using the PyTorch kernels (same results, slower): no system requirement.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

__all__ = ["NativeKernel", "load", "unavailable_reason"]

_SOURCE = r"""
#include <cstdint>
#include <cstring>
#include <cmath>

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t i16 __attribute__((vector_size(64)));

static inline v16 load16(const float* p) { v16 v; std::memcpy(&v, p, sizeof v); return v; }
static inline void store16(float* p, v16 v) { std::memcpy(p, &v, sizeof v); }
static inline v16 abs16(v16 v) { return (v16)((i16)v & 0x7fffffff); }
static inline float hsum16(v16 v) {
    float s = 0.0f;
    for (int i = 0; i < 16; ++i) s += v[i];
    return s;
}
static inline v16 clamp16(v16 d) {
    const v16 one = v16{} + 1.0f, minus_one = v16{} - 1.0f;
    d = d > one ? one : d;
    return d < minus_one ? minus_one : d;
}
static inline float clamp1(float d) { return d > 1.0f ? 1.0f : (d < -1.0f ? -1.0f : d); }

struct Geometry {
    int64_t padded_h, padded_w, channels;   // padded channels-last input [N, Hp, Wp, C]
    int64_t out_channels, patch;            // weight rows [O, K], K = segments * segment
    int64_t out_h, out_w, stride_h, stride_w;
    int64_t segments, segment;              // receptive field = `segments` runs of `segment` floats
};

extern "C" void adder_forward_f32(
    const Geometry* g, const int64_t* offsets, const float* xp, const float* w, float* out,
    int64_t first_image, int64_t last_image)
{
    const int64_t K = g->patch, O = g->out_channels, S = g->segment;
    for (int64_t n = first_image; n < last_image; ++n)
    for (int64_t oh = 0; oh < g->out_h; ++oh)
    for (int64_t ow = 0; ow < g->out_w; ++ow) {
        const float* base = xp + ((n * g->padded_h + oh * g->stride_h) * g->padded_w + ow * g->stride_w) * g->channels;
        float* y = out + ((n * g->out_h + oh) * g->out_w + ow) * O;
        int64_t o = 0;
        for (; o + 4 <= O; o += 4) {
            const float *w0 = w + o * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
            v16 a0 = {}, a1 = {}, a2 = {}, a3 = {};
            float t0 = 0.0f, t1 = 0.0f, t2 = 0.0f, t3 = 0.0f;
            for (int64_t s = 0; s < g->segments; ++s) {
                const float* xs = base + offsets[s];
                const int64_t k0 = s * S;
                int64_t j = 0;
                for (; j + 16 <= S; j += 16) {
                    const v16 xv = load16(xs + j);
                    a0 += abs16(xv - load16(w0 + k0 + j));
                    a1 += abs16(xv - load16(w1 + k0 + j));
                    a2 += abs16(xv - load16(w2 + k0 + j));
                    a3 += abs16(xv - load16(w3 + k0 + j));
                }
                for (; j < S; ++j) {
                    const float xv = xs[j];
                    t0 += std::fabs(xv - w0[k0 + j]);
                    t1 += std::fabs(xv - w1[k0 + j]);
                    t2 += std::fabs(xv - w2[k0 + j]);
                    t3 += std::fabs(xv - w3[k0 + j]);
                }
            }
            y[o] = -(hsum16(a0) + t0);
            y[o + 1] = -(hsum16(a1) + t1);
            y[o + 2] = -(hsum16(a2) + t2);
            y[o + 3] = -(hsum16(a3) + t3);
        }
        for (; o < O; ++o) {
            const float* w0 = w + o * K;
            v16 a0 = {};
            float t0 = 0.0f;
            for (int64_t s = 0; s < g->segments; ++s) {
                const float* xs = base + offsets[s];
                const int64_t k0 = s * S;
                int64_t j = 0;
                for (; j + 16 <= S; j += 16) a0 += abs16(load16(xs + j) - load16(w0 + k0 + j));
                for (; j < S; ++j) t0 += std::fabs(xs[j] - w0[k0 + j]);
            }
            y[o] = -(hsum16(a0) + t0);
        }
    }
}

// grad_padded (may be null): [N, Hp, Wp, C], zero-initialised, receives sum_o G * clamp(W - X, -1, 1).
// grad_times_x (may be null): [O, K], zero-initialised, receives sum_p G[p, o] * X[p, k] over the images.
extern "C" void adder_backward_f32(
    const Geometry* g, const int64_t* offsets, const float* xp, const float* w, const float* grad_out,
    float* grad_padded, float* grad_times_x, int64_t first_image, int64_t last_image)
{
    const int64_t K = g->patch, O = g->out_channels, S = g->segment;
    for (int64_t n = first_image; n < last_image; ++n)
    for (int64_t oh = 0; oh < g->out_h; ++oh)
    for (int64_t ow = 0; ow < g->out_w; ++ow) {
        const int64_t base_offset =
            ((n * g->padded_h + oh * g->stride_h) * g->padded_w + ow * g->stride_w) * g->channels;
        const float* gp = grad_out + ((n * g->out_h + oh) * g->out_w + ow) * O;
        for (int64_t s = 0; s < g->segments; ++s) {
            const float* xs = xp + base_offset + offsets[s];
            float* dxs = grad_padded ? grad_padded + base_offset + offsets[s] : nullptr;
            const int64_t k0 = s * S;
            int64_t j = 0;
            for (; j + 16 <= S; j += 16) {
                const v16 xv = load16(xs + j);
                v16 acc = {};
                for (int64_t o = 0; o < O; ++o) {
                    const float go = gp[o];
                    const float* wo = w + o * K + k0 + j;
                    if (dxs) acc += go * clamp16(load16(wo) - xv);
                    if (grad_times_x) {
                        float* gx = grad_times_x + o * K + k0 + j;
                        store16(gx, load16(gx) + go * xv);
                    }
                }
                if (dxs) store16(dxs + j, load16(dxs + j) + acc);
            }
            for (; j < S; ++j) {
                const float xv = xs[j];
                float acc = 0.0f;
                for (int64_t o = 0; o < O; ++o) {
                    const float go = gp[o];
                    if (dxs) acc += go * clamp1(w[o * K + k0 + j] - xv);
                    if (grad_times_x) grad_times_x[o * K + k0 + j] += go * xv;
                }
                if (dxs) dxs[j] += acc;
            }
        }
    }
}
"""

_IMAGES_PER_PARTIAL = 8
_FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-std=c++17", "-fno-math-errno")


class _CGeometry(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_int64)
        for name in (
            "padded_h",
            "padded_w",
            "channels",
            "out_channels",
            "patch",
            "out_h",
            "out_w",
            "stride_h",
            "stride_w",
            "segments",
            "segment",
        )
    ]


class NativeKernel:
    """The compiled library and a thread pool that splits the batch across ``torch.get_num_threads()`` threads."""

    def __init__(self, library: ctypes.CDLL) -> None:
        pointer, int64 = ctypes.c_void_p, ctypes.c_int64
        self._forward = library.adder_forward_f32
        self._forward.argtypes = [pointer] * 5 + [int64, int64]
        self._forward.restype = None
        self._backward = library.adder_backward_f32
        self._backward.argtypes = [pointer] * 7 + [int64, int64]
        self._backward.restype = None
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._pool_pid = 0  # a forked child (e.g. a DataLoader worker) inherits the pool but not its threads
        self._lock = threading.Lock()

    def _image_ranges(self, batch: int) -> list[tuple[int, int]]:
        parts = max(1, min(torch.get_num_threads(), batch))
        bounds = [batch * i // parts for i in range(parts + 1)]
        return [(bounds[i], bounds[i + 1]) for i in range(parts)]

    def _run(self, calls: list) -> None:
        """Run the argument-free callables, the first on this thread and the others on the pool."""
        if len(calls) == 1:
            calls[0]()
            return
        with self._lock:
            if self._pool is None or self._pool_size < len(calls) - 1 or self._pool_pid != os.getpid():
                if self._pool is not None and self._pool_pid == os.getpid():
                    self._pool.shutdown(wait=True)
                self._pool_pid = os.getpid()
                self._pool_size = len(calls) - 1
                self._pool = ThreadPoolExecutor(self._pool_size, thread_name_prefix="adder-kernel")
            pool = self._pool
        futures = [pool.submit(call) for call in calls[1:]]
        calls[0]()
        for future in futures:
            future.result()

    def forward(self, layout: NativeLayout) -> torch.Tensor:
        """``[N, Ho, Wo, O]`` channels-last output of the layer, from a :class:`NativeLayout`."""
        geometry = layout.geometry
        out = layout.padded.new_empty(layout.batch, geometry.out_h, geometry.out_w, geometry.out_channels)
        args = (ctypes.byref(geometry), layout.offsets.data_ptr(), layout.padded.data_ptr(), layout.rows.data_ptr())
        out_ptr = out.data_ptr()
        self._run(
            [
                (lambda first=first, last=last: self._forward(*args, out_ptr, first, last))
                for first, last in self._image_ranges(layout.batch)
            ]
        )
        return out

    def backward(
        self, layout: NativeLayout, grad_rows: torch.Tensor, need_input_grad: bool, need_weight_grad: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(gradient of the padded input ``[N, Hp, Wp, C]`` or None, ``G^T X`` as ``[O, K]`` or None).

        ``grad_rows``: contiguous ``[N, Ho, Wo, O]`` output gradient."""
        geometry = layout.geometry
        # G^T X is accumulated per chunk of a few images and the chunks summed afterwards: float32 sums over a
        # whole batch of positions would lose ~1e-5 of relative precision.
        chunks = [
            (first, min(first + _IMAGES_PER_PARTIAL, layout.batch))
            for first in range(0, layout.batch, _IMAGES_PER_PARTIAL)
        ]
        grad_padded = torch.zeros_like(layout.padded) if need_input_grad else None
        partials = (
            layout.padded.new_zeros(len(chunks), geometry.out_channels, geometry.patch) if need_weight_grad else None
        )
        args = (
            ctypes.byref(geometry),
            layout.offsets.data_ptr(),
            layout.padded.data_ptr(),
            layout.rows.data_ptr(),
            grad_rows.data_ptr(),
            grad_padded.data_ptr() if grad_padded is not None else None,
        )

        def work(indices: list[int]) -> None:
            for index in indices:
                partial_ptr = partials[index].data_ptr() if partials is not None else None
                self._backward(*args, partial_ptr, *chunks[index])

        threads = max(1, min(torch.get_num_threads(), len(chunks)))
        self._run([(lambda part=part: work(list(range(part, len(chunks), threads)))) for part in range(threads)])
        return grad_padded, (partials.sum(0) if partials is not None else None)


class NativeLayout:
    """The compiled kernels' view of one call: padded channels-last input, weight rows, segment offsets."""

    def __init__(
        self,
        x: torch.Tensor,
        weight: torch.Tensor,
        stride: tuple[int, int],
        padding: tuple[int, int],
        dilation: tuple[int, int],
        out_size: tuple[int, int],
    ) -> None:
        batch, channels, height, width = x.shape
        out_channels, _, kernel_h, kernel_w = weight.shape
        pad_h, pad_w = padding
        padded_h, padded_w = height + 2 * pad_h, width + 2 * pad_w
        self.batch, self.height, self.width, self.padding = batch, height, width, padding
        self.weight_shape = tuple(weight.shape)
        self.padded = x.new_zeros(batch, padded_h, padded_w, channels)
        self.padded[:, pad_h : pad_h + height, pad_w : pad_w + width].copy_(x.permute(0, 2, 3, 1))
        # K ordered (i, j, c) like the padded buffer; one segment per kernel row if the columns are adjacent.
        self.rows = weight.detach().permute(0, 2, 3, 1).contiguous().view(out_channels, -1)
        if dilation[1] == 1:
            offsets = [i * dilation[0] * padded_w * channels for i in range(kernel_h)]
            segment = kernel_w * channels
        else:
            offsets = [
                (i * dilation[0] * padded_w + j * dilation[1]) * channels
                for i in range(kernel_h)
                for j in range(kernel_w)
            ]
            segment = channels
        self.offsets = torch.tensor(offsets, dtype=torch.int64)
        self.geometry = _CGeometry(
            padded_h,
            padded_w,
            channels,
            out_channels,
            kernel_h * kernel_w * channels,
            out_size[0],
            out_size[1],
            stride[0],
            stride[1],
            len(offsets),
            segment,
        )

    def unpad(self, grad_padded: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` (channels-last strides) gradient of the unpadded input."""
        pad_h, pad_w = self.padding
        inner = grad_padded[:, pad_h : pad_h + self.height, pad_w : pad_w + self.width]
        return inner.permute(0, 3, 1, 2)


_state_lock = threading.Lock()
_kernel: NativeKernel | None = None
_failure: str | None = None


def unavailable_reason() -> str | None:
    """Why the compiled kernel could not be loaded (None if it loaded or was not tried yet)."""
    return _failure


def load() -> NativeKernel | None:
    """The compiled kernel, building it on first use; None (with one warning) if that is impossible."""
    global _kernel, _failure
    if _kernel is not None or _failure is not None:
        return _kernel
    with _state_lock:
        if _kernel is None and _failure is None:
            try:
                _kernel = NativeKernel(ctypes.CDLL(str(_build())))
            except (OSError, RuntimeError, subprocess.SubprocessError) as error:
                _failure = str(error)
                warnings.warn(
                    f"compiled adder kernel unavailable ({_failure}); using the PyTorch kernel "
                    "(same results, several times slower)",
                    RuntimeWarning,
                    stacklevel=3,
                )
    return _kernel


def _cache_dir() -> Path:
    if os.environ.get("CONDENSE_KERNEL_CACHE"):
        return Path(os.environ["CONDENSE_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "condense" / "kernels"


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build() -> Path:
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if not compiler:
        raise RuntimeError("no C++ compiler found (g++, c++, clang++ or $CXX)")
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256(
        "\n".join([_SOURCE, " ".join(_FLAGS), version, platform.machine(), _cpu_signature()]).encode()
    ).hexdigest()[:16]
    directory = _cache_dir()
    library = directory / f"adder_{key}.so"
    if library.exists():
        return library
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        source = Path(scratch) / "adder.cpp"
        source.write_text(_SOURCE, encoding="utf-8")
        target = Path(scratch) / "adder.so"
        result = subprocess.run(
            [compiler, *_FLAGS, "-o", str(target), str(source)], capture_output=True, text=True, timeout=300
        )
        if result.returncode != 0:
            raise RuntimeError(f"{Path(compiler).name} failed: {result.stderr.strip()[-500:]}")
        os.replace(target, library)  # atomic: concurrent builders of the same key write the same file
    return library
