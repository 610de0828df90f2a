"""Every registered student: shapes, gradients, the paper's sizes, budgets and in-place conversion."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compression import convert_, create_student, list_students
from compression.layers import AdderConv2d, BinaryConv2d, GhostModule
from compression.metrics import count_ops, count_parameters
from compression.students import Budget, family_defaults, fit_width

# Full width is slow for the big ImageNet/VGG architectures on 2 cores; their structure is what is tested.
TEST_WIDTH = {"ghostnet": 0.25, "vgg16": 0.25, "ghost_vgg16": 0.25}


def _make(name: str, input_shape=(1, 28, 28), num_classes: int = 5) -> nn.Module:
    return create_student(name, num_classes=num_classes, input_shape=input_shape, width=TEST_WIDTH.get(name, 0.5))


@pytest.mark.parametrize("name", list_students())
def test_forward_backward_every_parameter_gets_a_gradient(name: str) -> None:
    model = _make(name)
    x = torch.randn(4, 1, 28, 28)
    logits = model(x)
    assert logits.shape == (4, 5)
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing}"
    assert model.forward_head(model.forward_features(x)).shape == (4, 5)


@pytest.mark.parametrize("input_shape", [(3, 32, 32), (3, 224, 224), (4, 40, 24)])
@pytest.mark.parametrize("name", ["ghost", "binary", "adder", "resnet20", "ghostnet"])
def test_any_input_shape_and_class_count(name: str, input_shape: tuple[int, int, int]) -> None:
    model = _make(name, input_shape, num_classes=17).eval()
    with torch.no_grad():
        assert model(torch.randn(2, *input_shape)).shape == (2, 17)


def test_large_inputs_use_a_strided_stem() -> None:
    small = count_ops(_make("resnet20", (3, 56, 56)), (3, 56, 56)).total.macs
    large = count_ops(_make("resnet20", (3, 224, 224)), (3, 224, 224)).total.macs
    assert large < 2 * small  # 16x the pixels, but the stem reduces 224 to 56


def test_family_names_resolve_to_defaults() -> None:
    defaults = family_defaults()
    assert set(defaults) == {"plain", "slim", "ghost", "binary", "adder", "qnn4", "qnn2"}
    for family, arch in defaults.items():
        assert arch in list_students(family)
    assert any(isinstance(m, GhostModule) for m in _make("ghost").modules())
    assert any(isinstance(m, BinaryConv2d) for m in _make("binary").modules())
    assert any(isinstance(m, AdderConv2d) for m in _make("adder").modules())


def test_unknown_student_lists_known_names() -> None:
    with pytest.raises(ValueError, match=r"unknown student 'resnet99'.*ghost_resnet56"):
        create_student("resnet99")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"input_shape": (1, 28)}, ValueError),
        ({"input_shape": (1, 4, 4)}, ValueError),
        ({"num_classes": 1}, ValueError),
        ({"num_classes": 2.5}, TypeError),
        ({"width": -1.0}, ValueError),
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        create_student("resnet20", **kwargs)


def test_explicit_stage_widths_and_vgg_layouts() -> None:
    model = create_student("binary_resnet20", num_classes=5, input_shape=(1, 28, 28), stage_widths=(8, 12, 20))
    assert model.stage_widths == (8, 12, 20)
    assert [stage[-1].conv2.out_channels for stage in model.stages] == [8, 12, 20]
    assert create_student("resnet20", width=0.5).stage_widths == (8, 16, 32)
    with pytest.raises(ValueError, match="layout must hold channel counts"):
        create_student("vgg16", layout=(64, "M", "X"))
    with pytest.raises(ValueError, match="layout must hold channel counts"):
        create_student("vgg16", layout=(64, "M", 0))


def test_family_layers_keep_stem_and_classifier_full_precision() -> None:
    for family in ("binary", "adder"):
        model = _make(family)
        assert type(model.stem[0]) is nn.Conv2d
        assert type(model.classifier) is nn.Linear


def test_binary_blocks_keep_a_full_precision_residual_stream() -> None:
    """A binary ResNet block's output is the unclipped sum of its branch and shortcut (Bi-Real Net); a plain
    block's is the ReLU of it."""
    torch.manual_seed(0)
    binary = create_student("binary_resnet20", num_classes=5, input_shape=(1, 28, 28)).eval()
    plain = create_student("resnet20", num_classes=5, input_shape=(1, 28, 28)).eval()
    x = 3.0 * torch.randn(4, binary.stage_widths[0], 28, 28)
    with torch.no_grad():
        binary_out = binary.stages[0][0](x)
        plain_out = plain.stages[0][0](x[:, : plain.stage_widths[0]])
    assert binary_out.abs().max() > 1.5  # a Hardtanh after the sum would clip the stream to [-1, 1]
    assert binary_out.min() < 0
    assert plain_out.min() >= 0


# (name, parameters, multiply-adds) on 32x32 CIFAR-10 input, from GhostNet (arXiv:1911.11907) table 4 and 5.
PAPER_SIZES = [
    ("resnet56", 0.85e6, 125e6),
    ("ghost_resnet56", 0.43e6, 63e6),
    ("vgg16", 15e6, 313e6),
    ("ghost_vgg16", 7.7e6, 158e6),
]


@pytest.mark.parametrize(("name", "params", "macs"), PAPER_SIZES)
def test_sizes_match_the_ghostnet_paper_within_5_percent(name: str, params: float, macs: float) -> None:
    model = create_student(name, num_classes=10, input_shape=(3, 32, 32))
    counted_params = count_parameters(model)
    counted_macs = count_ops(model, (3, 32, 32)).total.macs
    assert abs(counted_params / params - 1) <= 0.05, counted_params
    assert abs(counted_macs / macs - 1) <= 0.05, counted_macs


@pytest.mark.parametrize("metric", ["macs", "params"])
def test_budget_picks_the_widest_student_within_it(metric: str) -> None:
    teacher = create_student("resnet20", num_classes=5, input_shape=(1, 28, 28), width=2.0)
    budget = Budget.from_teacher(teacher, (1, 28, 28), ratio=0.25, metric=metric)
    width = fit_width("ghost_resnet20", budget, 5, (1, 28, 28))
    student = create_student("ghost_resnet20", num_classes=5, input_shape=(1, 28, 28), budget=budget)
    cost = count_ops(student, (1, 28, 28)).total.macs if metric == "macs" else count_parameters(student)
    assert cost <= budget.limit
    wider = create_student("ghost_resnet20", num_classes=5, input_shape=(1, 28, 28), width=width * 1.1)
    wider_cost = count_ops(wider, (1, 28, 28)).total.macs if metric == "macs" else count_parameters(wider)
    assert wider_cost > budget.limit  # the search did not stop early


def test_budget_too_small_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="cannot fit a budget"):
        create_student("ghostnet", num_classes=5, input_shape=(1, 28, 28), budget=Budget(1000, 0.25))
    with pytest.raises(ValueError, match="either width or budget"):
        create_student("resnet20", width=1.0, budget=Budget(10**9))


class _Teacher(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.body = nn.Sequential(
            nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),  # depthwise: no family replaces it
            nn.Conv2d(16, 16, 1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
        )
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)).mean((2, 3)))


@pytest.mark.parametrize(
    ("family", "layer"), [("ghost", GhostModule), ("binary", BinaryConv2d), ("adder", AdderConv2d)]
)
def test_convert_in_place(family: str, layer: type[nn.Module]) -> None:
    model = _Teacher()
    original = model.body[0].weight.detach().clone()
    report = convert_(model, family)
    assert report.converted == ["body.0", "body.4"]
    assert set(report.kept) == {"stem", "body.3"}
    assert "first convolution" in report.kept["stem"] and "groups 16" in report.kept["body.3"]
    assert isinstance(model.body[0], layer) and isinstance(model.body[4], layer)
    assert type(model.stem) is nn.Conv2d and type(model.head) is nn.Linear
    if family != "ghost":
        torch.testing.assert_close(model.body[0].weight.detach(), original)
    if family == "binary":
        assert report.replaced_activations == ["body.2", "body.6"]
        assert not any(type(m) is nn.ReLU for m in model.modules())
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 3)


def test_convert_with_filter_and_bad_family() -> None:
    model = _Teacher()
    report = convert_(model, "adder", filter_fn=lambda conv, name: conv.kernel_size == (1, 1))
    assert report.converted == ["body.4"]
    assert report.kept["body.0"] == "filtered out"
    with pytest.raises(ValueError, match="families are"):
        convert_(model, "ternary")
    with pytest.raises(TypeError):
        convert_("not a model", "ghost")
