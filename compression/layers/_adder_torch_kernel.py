"""Adder convolution kernels in plain PyTorch operators: the portable path (any dtype, any device).

Computes the forward ``-sum_k |X - W|`` and the paper's gradients (see :mod:`compression.layers.adder`) with
chunked patch gathering; used for float64, for accelerators, and on the CPU when the compiled kernel of
:mod:`compression.layers._adder_native` is unavailable. All tricks below were measured with
``bench/bench_adder_layer.py`` (see docs/adder_layer.md). The straightforward implementation broadcasts
``X[:, None] - W[None, :, :, None]`` into a ``[N, out, K, positions]`` tensor (600 MB at CIFAR ResNet-20
shapes, batch 64); here nothing of that size is ever built:

The straightforward implementation broadcasts ``X[:, None] - W[None, :, :, None]`` into a
``[N, out, K, positions]`` tensor (600 MB at CIFAR ResNet-20 shapes, batch 64). Here nothing of that size
is ever built:

* *Patches gathered per chunk, never unfolded in full.* The input is copied once into a zero-padded
  channels-last buffer ``[N, Hp, Wp, C]``. Output positions are processed in chunks that form a regular
  grid (whole images if one fits the chunk budget, else bands of output rows, else pieces of one output
  row), so a chunk's receptive fields are a single strided view ``[images, rows, cols, kh, kw, C]`` of
  that buffer: one ``copy_`` gathers them into a reused ``[rows, kh * kw * C]`` buffer (``K`` is ordered
  ``(i, j, c)`` and the weight is permuted to match). Patch gradients go back with one strided ``add_``
  per kernel offset: within one offset every output position hits a different pixel, so no atomics are
  needed. (``index_select`` / ``index_add_`` with precomputed indices were tried first; ``index_add_``
  runs as ``scatter_add_`` on the CPU and was 3x slower than the strided adds at the benchmark shape.)
  The chunk budgets (``_CPU_PATCH_CHUNK_ELEMENTS``, ``_CPU_CLAMP_CHUNK_ELEMENTS``) keep the buffers in the
  L2 caches; they were tuned on the benchmark. Gathering all chunks takes ~1.3 ms there, against ~15 ms
  for one ``F.unfold`` (and ~30 ms for ``unfold`` plus the transpose ``cdist`` needs).
* *Forward* = ``torch.cdist(patches, weight_rows, p=1)``: cdist has a dedicated L1 kernel that
  accumulates ``|a - b|`` without materialising the difference tensor.
* *Weight gradient* is two matrix products, exactly:
  ``sum_{n,p} G[n,o,p] * (X[n,k,p] - W[o,k]) = (G^T X)[o,k] - W[o,k] * sum_{n,p} G[n,o,p]``;
  ``G^T X`` is accumulated chunk by chunk with ``addmm_``.
* *Input gradient* needs the elementwise clamp, so it is computed per chunk in a preallocated
  ``[rows, out, K]`` buffer: ``sub(out=) -> clamp_ -> bmm`` with ``bmm`` contracting the ``out`` axis
  against ``G`` (the ``[rows, out, K]`` buffer is a sub-chunk of the gathered patches, sized for L2).
  (The identity ``clamp(W - X, -1, 1) = W - clamp(X, W - 1, W + 1)`` would replace the subtraction by one
  more matmul and was ~8% faster in a micro-benchmark, but it subtracts two large numbers when
  ``|W| >> 1``, so the direct form is kept.)
* Only ``x`` and ``weight`` are saved for backward; the patches are gathered again (cheap: a few ms at
  the benchmark shape), so the layer keeps no more activation memory alive than an ``nn.Conv2d``.
* In inference (``torch.no_grad()`` or no input needing a gradient) the same forward kernel runs without
  autograd bookkeeping.
* For export (``torch.onnx.is_in_onnx_export()`` or ``torch.compiler.is_exporting()``) the layer uses a
  formulation in standard operators only: ``pad``, one strided slice per kernel offset, subtract, ``abs``,
  ``sum``. No ``cdist``, ``unfold`` or convolution, so any ONNX runtime can execute it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from compression.layers._args import IntOrPair, int_pair

# Chunk budgets on the CPU, in elements: the gathered patches of a chunk ([rows, K], 4 MiB in float32) and
# the [rows, out, K] buffer of the input gradient (2 MiB in float32, one core's L2 on the benchmark machine).
# Tuned over 2**17 .. 2**22 at the three CIFAR ResNet-20 stage shapes (see docs/adder_layer.md).
_CPU_PATCH_CHUNK_ELEMENTS = 1 << 20
_CPU_CLAMP_CHUNK_ELEMENTS = 1 << 19
# On accelerators the per-chunk launch overhead dominates instead, so chunks are much larger there.
_ACCELERATOR_CHUNK_ELEMENTS = 1 << 26


class Geometry(NamedTuple):
    """Stride, padding and dilation of an adder convolution, each as ``(height, width)``."""

    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    @classmethod
    def checked(cls, stride: IntOrPair, padding: IntOrPair, dilation: IntOrPair) -> Geometry:
        return cls(
            int_pair("stride", stride, minimum=1),
            int_pair("padding", padding, minimum=0),
            int_pair("dilation", dilation, minimum=1),
        )


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


class _ChunkBox(NamedTuple):
    """A chunk of output positions that forms a regular grid: images ``[n0, n0+images)``, output rows
    ``[h0, h0+rows)``, output columns ``[w0, w0+columns)``. In the row-major ``[N * Ho * Wo]`` order of
    output positions it is the contiguous range ``[start, start + positions)``."""

    start: int
    positions: int
    n0: int
    images: int
    h0: int
    rows: int
    w0: int
    columns: int


class _Patches:
    """Receptive fields of chunks of output positions, read from a padded channels-last copy of ``x``.

    The input is copied once into ``padded`` (``[N, Hp, Wp, C]``, zero borders). For a chunk that is a
    regular grid of output positions (:class:`_ChunkBox`), its patches are one strided view of
    ``padded`` of shape ``[images, rows, columns, kh, kw, C]``; :meth:`gather` copies it into a reused
    ``[positions, kh * kw * C]`` buffer (so ``K`` is ordered ``(i, j, c)``), and :meth:`scatter_add`
    adds patch gradients back with one strided ``add_`` per kernel offset (offsets overlap each other,
    but within one offset every output position hits a different input pixel, so each ``add_`` is safe).
    """

    def __init__(self, x: torch.Tensor, kernel: tuple[int, int], geometry: Geometry) -> None:
        batch, channels, height, width = x.shape
        pad_h, pad_w = geometry.padding
        self.kernel = kernel
        self.geometry = geometry
        self.batch, self.channels, self.height, self.width = batch, channels, height, width
        self.out_h = output_size(height, kernel[0], geometry.stride[0], pad_h, geometry.dilation[0])
        self.out_w = output_size(width, kernel[1], geometry.stride[1], pad_w, geometry.dilation[1])
        self.padded_h, self.padded_w = height + 2 * pad_h, width + 2 * pad_w
        self.patch_size = kernel[0] * kernel[1] * channels
        self.positions = batch * self.out_h * self.out_w
        self.padded = x.new_zeros(batch, self.padded_h, self.padded_w, channels)
        self.padded[:, pad_h : pad_h + height, pad_w : pad_w + width].copy_(x.permute(0, 2, 3, 1))

    def boxes(self, max_positions: int) -> list[_ChunkBox]:
        """Split the output positions into grid-shaped chunks of at most ``max_positions`` (at least one
        position): whole images if one fits, else bands of output rows, else pieces of one output row."""
        per_image = self.out_h * self.out_w
        boxes = []
        if max_positions >= per_image:
            step = max_positions // per_image
            for n0 in range(0, self.batch, step):
                images = min(step, self.batch - n0)
                boxes.append(_ChunkBox(n0 * per_image, images * per_image, n0, images, 0, self.out_h, 0, self.out_w))
        elif max_positions >= self.out_w:
            step = max_positions // self.out_w
            for n in range(self.batch):
                for h0 in range(0, self.out_h, step):
                    rows = min(step, self.out_h - h0)
                    start = n * per_image + h0 * self.out_w
                    boxes.append(_ChunkBox(start, rows * self.out_w, n, 1, h0, rows, 0, self.out_w))
        else:
            step = max(1, max_positions)
            for n in range(self.batch):
                for h in range(self.out_h):
                    for w0 in range(0, self.out_w, step):
                        columns = min(step, self.out_w - w0)
                        start = (n * self.out_h + h) * self.out_w + w0
                        boxes.append(_ChunkBox(start, columns, n, 1, h, 1, w0, columns))
        return boxes

    def _grid_view(self, image: torch.Tensor, box: _ChunkBox, with_taps: bool) -> torch.Tensor:
        """Strided view of ``image`` (shaped like ``padded``) at the box's receptive fields."""
        (stride_h, stride_w), (dil_h, dil_w) = self.geometry.stride, self.geometry.dilation
        s_n, s_h, s_w, s_c = image.stride()
        offset = image.storage_offset() + box.n0 * s_n + box.h0 * stride_h * s_h + box.w0 * stride_w * s_w
        size = [box.images, box.rows, box.columns]
        strides = [s_n, stride_h * s_h, stride_w * s_w]
        if with_taps:
            size += [self.kernel[0], self.kernel[1]]
            strides += [dil_h * s_h, dil_w * s_w]
        return image.as_strided([*size, self.channels], [*strides, s_c], offset)

    def gather(self, box: _ChunkBox, buffer: torch.Tensor) -> torch.Tensor:
        """Copy the box's patches into ``buffer`` and return them as ``[positions, kh * kw * C]``."""
        patches = buffer[: box.positions]
        kh, kw = self.kernel
        grid = patches.view(box.images, box.rows, box.columns, kh, kw, self.channels)
        grid.copy_(self._grid_view(self.padded, box, with_taps=True))
        return patches

    def scatter_add(self, grad_padded: torch.Tensor, box: _ChunkBox, patch_grad: torch.Tensor) -> None:
        """``grad_padded[receptive field of position r] += patch_grad[r]`` for every position of the box."""
        kh, kw = self.kernel
        (dil_h, dil_w), (s_h, s_w) = self.geometry.dilation, grad_padded.stride()[1:3]
        grid = patch_grad.view(box.images, box.rows, box.columns, kh, kw, self.channels)
        base = self._grid_view(grad_padded, box, with_taps=False)
        for i in range(kh):
            for j in range(kw):
                target = base.as_strided(
                    base.shape, base.stride(), base.storage_offset() + i * dil_h * s_h + j * dil_w * s_w
                )
                target.add_(grid[:, :, :, i, j])


def _weight_rows(weight: torch.Tensor) -> torch.Tensor:
    """``[out, in, kh, kw]`` -> ``[out, kh * kw * in]``, columns ordered like the gathered patches."""
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)


def _chunk_budgets(device: torch.device) -> tuple[int, int]:
    """(elements of a gathered patch chunk, elements of the input-gradient ``[rows, out, K]`` buffer)."""
    if device.type == "cpu":
        return _CPU_PATCH_CHUNK_ELEMENTS, _CPU_CLAMP_CHUNK_ELEMENTS
    return _ACCELERATOR_CHUNK_ELEMENTS, _ACCELERATOR_CHUNK_ELEMENTS


def adder_forward_kernel(x: torch.Tensor, weight: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """``-sum_k |X - W|`` via chunked patch gathering and ``cdist(p=1)``; returns ``[N, out, Ho, Wo]``."""
    out_channels = weight.shape[0]
    patches = _Patches(x, (weight.shape[2], weight.shape[3]), geometry)
    weight_rows = _weight_rows(weight)
    out_rows = x.new_empty(patches.positions, out_channels)
    patch_budget, _ = _chunk_budgets(x.device)
    boxes = patches.boxes(patch_budget // patches.patch_size)
    patch_buffer = x.new_empty(max(box.positions for box in boxes), patches.patch_size)
    for box in boxes:
        chunk = patches.gather(box, patch_buffer)
        out_rows[box.start : box.start + box.positions] = torch.cdist(chunk, weight_rows, p=1)
    out_rows.neg_()
    out = out_rows.view(x.shape[0], patches.out_h, patches.out_w, out_channels).permute(0, 3, 1, 2)
    return out.contiguous()


def adder_backward_kernel(
    grad_output: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    geometry: Geometry,
    need_input_grad: bool,
    need_weight_grad: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The paper's gradients (module docstring) without building any ``[.., out, K, ..]`` tensor."""
    out_channels, in_channels, kernel_h, kernel_w = weight.shape
    patches = _Patches(x, (kernel_h, kernel_w), geometry)
    weight_rows = _weight_rows(weight)
    grad_rows = grad_output.permute(0, 2, 3, 1).reshape(patches.positions, out_channels)

    patch_budget, clamp_budget = _chunk_budgets(x.device)
    boxes = patches.boxes(patch_budget // patches.patch_size)
    patch_buffer = x.new_empty(max(box.positions for box in boxes), patches.patch_size)
    grad_times_patches = x.new_zeros(out_channels, patches.patch_size) if need_weight_grad else None
    if need_input_grad:
        inner_rows = max(1, clamp_budget // (out_channels * patches.patch_size))
        inner_rows = min(inner_rows, patch_buffer.shape[0])
        clamp_buffer = x.new_empty(inner_rows, out_channels, patches.patch_size)
        patch_grad_buffer = torch.empty_like(patch_buffer)
        grad_padded = torch.zeros_like(patches.padded)

    for box in boxes:
        chunk = patches.gather(box, patch_buffer)
        chunk_grad = grad_rows[box.start : box.start + box.positions]
        if grad_times_patches is not None:
            grad_times_patches.addmm_(chunk_grad.T, chunk)  # (G^T X)[o, k]
        if need_input_grad:
            patch_grad = patch_grad_buffer[: box.positions]
            for first in range(0, box.positions, inner_rows):
                last = min(first + inner_rows, box.positions)
                # clamp(W[o,k] - X[r,k], -1, 1) for every (r, o, k), then contract o against G[r, o].
                hard_tanh = clamp_buffer[: last - first]
                torch.sub(weight_rows.unsqueeze(0), chunk[first:last].unsqueeze(1), out=hard_tanh)
                hard_tanh.clamp_(-1.0, 1.0)
                torch.bmm(chunk_grad[first:last].unsqueeze(1), hard_tanh, out=patch_grad[first:last].unsqueeze(1))
            patches.scatter_add(grad_padded, box, patch_grad)

    grad_weight = None
    if grad_times_patches is not None:
        # sum_{n,p} G (X - W) = G^T X - W * sum_{n,p} G
        grad_times_patches.sub_(weight_rows * grad_rows.sum(0).unsqueeze(1))
        grad_weight = grad_times_patches.view(out_channels, kernel_h, kernel_w, in_channels)
        grad_weight = grad_weight.permute(0, 3, 1, 2).contiguous()
    grad_input = None
    if need_input_grad:
        pad_h, pad_w = geometry.padding
        grad_image = grad_padded[:, pad_h : pad_h + patches.height, pad_w : pad_w + patches.width]
        grad_input = grad_image.permute(0, 3, 1, 2).contiguous()
    return grad_input, grad_weight
