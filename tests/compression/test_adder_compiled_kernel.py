"""The compiled adder kernel (compression/layers/_adder_native.py) against the PyTorch-operator kernel.

Same numbers as the PyTorch kernel: forward relative error <= 1e-5, gradients (the paper's full-precision weight
gradient and HardTanh-clipped input gradient, Chen et al., arXiv:1912.13200) with cosine >= 0.9999 and relative
error <= 1e-5; and a clean fallback with a warning when no compiler is available.
"""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F

from compression.layers import _adder_native
from compression.layers.adder import AdderConv2d, adder_conv2d, adder_kernel, scale_adder_gradients_, set_adder_kernel

GEOMETRIES = [  # (kernel, stride, padding, dilation), as in test_adder_layer.py
    ((3, 3), 1, 1, 1),
    ((1, 1), 1, 0, 1),
    ((2, 3), (2, 1), (0, 2), (1, 2)),
    ((3, 2), 3, (2, 1), (2, 1)),
    ((5, 5), 2, 2, 1),
    ((1, 4), (1, 3), (0, 1), 1),
]

needs_compiler = pytest.mark.skipif(
    not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")), reason="no C++ compiler"
)


@pytest.fixture
def kernel_choice(request):
    """Restore the kernel choice after the test."""
    previous = set_adder_kernel("auto")
    request.addfinalizer(lambda: set_adder_kernel(previous))


def _run(choice: str, x, weight, grad_output, stride, padding, dilation, bias=None):
    set_adder_kernel(choice)
    x = x.detach().clone().requires_grad_(x.requires_grad)
    weight = weight.detach().clone().requires_grad_(weight.requires_grad)
    out = adder_conv2d(x, weight, bias, stride, padding, dilation)
    out.backward(grad_output)
    return out.detach(), x.grad, weight.grad


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def _cosine(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return F.cosine_similarity(actual.flatten().double(), expected.flatten().double(), dim=0).item()


@needs_compiler
@pytest.mark.parametrize(("kernel", "stride", "padding", "dilation"), GEOMETRIES)
@pytest.mark.parametrize(("batch", "in_channels", "out_channels"), [(3, 5, 7), (2, 17, 33), (1, 16, 16)])
def test_compiled_matches_torch_kernel(
    kernel_choice, kernel, stride, padding, dilation, batch, in_channels, out_channels
):
    generator = torch.Generator().manual_seed(batch * 100 + in_channels)
    x = torch.randn(batch, in_channels, 11, 10, generator=generator, requires_grad=True)
    weight = torch.randn(out_channels, in_channels, *kernel, generator=generator, requires_grad=True)
    probe = adder_conv2d(x.detach(), weight.detach(), None, stride, padding, dilation)
    grad_output = torch.randn(probe.shape, generator=generator)
    expected = _run("torch", x, weight, grad_output, stride, padding, dilation)
    actual = _run("compiled", x, weight, grad_output, stride, padding, dilation)
    assert adder_kernel() == "compiled"
    assert actual[0].shape == expected[0].shape
    assert _relative_error(actual[0], expected[0]) <= 1e-5
    for got, want in zip(actual[1:], expected[1:], strict=True):
        assert got.shape == want.shape
        assert _cosine(got, want) >= 0.9999
        assert _relative_error(got, want) <= 1e-5


@needs_compiler
def test_compiled_gradients_after_adaptive_scaling_and_for_one_argument(kernel_choice) -> None:
    torch.manual_seed(3)
    layers = {}
    for choice in ("torch", "compiled"):
        set_adder_kernel(choice)
        torch.manual_seed(3)
        layer = AdderConv2d(8, 12, 3, padding=1, bias=True)
        x = torch.randn(4, 8, 9, 9)
        out = layer(x)
        out.backward(torch.linspace(-1, 1, out.numel()).view(out.shape))
        assert scale_adder_gradients_(layer) == 1
        layers[choice] = layer
    for name in ("weight", "bias"):
        got, want = layers["compiled"].get_parameter(name).grad, layers["torch"].get_parameter(name).grad
        assert _cosine(got, want) >= 0.9999 and _relative_error(got, want) <= 1e-5

    x = torch.randn(2, 4, 6, 6)
    weight = torch.randn(5, 4, 3, 3)
    grad_output = torch.randn(2, 5, 6, 6)
    for needs_input in (True, False):
        x.requires_grad_(needs_input)
        weight.requires_grad_(not needs_input)
        expected = _run("torch", x, weight, grad_output, 1, 1, 1)
        actual = _run("compiled", x, weight, grad_output, 1, 1, 1)
        index = 1 if needs_input else 2
        assert actual[3 - index] is None
        assert _relative_error(actual[index], expected[index]) <= 1e-5


@needs_compiler
def test_compiled_forward_without_grad_and_float64_uses_torch(kernel_choice) -> None:
    x, weight = torch.randn(2, 3, 7, 7), torch.randn(4, 3, 3, 3)
    with torch.no_grad():
        set_adder_kernel("torch")
        expected = adder_conv2d(x, weight, None, 2, 1)
        set_adder_kernel("compiled")
        actual = adder_conv2d(x, weight, None, 2, 1)
    assert _relative_error(actual, expected) <= 1e-5
    assert adder_kernel(x.double()) == "torch"


def test_missing_compiler_falls_back_with_a_warning(kernel_choice, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(_adder_native, "_kernel", None)
    monkeypatch.setattr(_adder_native, "_failure", None)
    monkeypatch.setenv("CONDENSE_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    x, weight = torch.randn(2, 3, 6, 6, requires_grad=True), torch.randn(4, 3, 3, 3, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="compiled adder kernel unavailable"):
        out = adder_conv2d(x, weight, None, 1, 1)
    assert adder_kernel() == "torch"
    out.sum().backward()
    assert x.grad is not None and weight.grad is not None
    set_adder_kernel("torch")
    torch.testing.assert_close(out, adder_conv2d(x, weight, None, 1, 1))
    set_adder_kernel("compiled")
    with pytest.raises(RuntimeError, match="compiled adder kernel unavailable"):
        adder_conv2d(x, weight, None, 1, 1)


def test_invalid_kernel_choice() -> None:
    with pytest.raises(ValueError, match="adder kernel must be one of"):
        set_adder_kernel("fast")  # type: ignore[arg-type]
