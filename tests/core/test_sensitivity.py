"""The sensitivity engines: exactness of the fast path, Distiller's fixed faults, coupled groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruning_core.datasets import load_dataset, make_loader
from pruning_core.models import create_model
from pruning_core.sensitivity import analyze, iter_sensitivity
from pruning_core.training import evaluate

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits_loader():
    return make_loader(load_dataset("digits", "test"), batch_size=128)


@pytest.fixture(scope="module")
def cifar_loader():
    return make_loader(load_dataset("synthetic", "test", n=48, shape=(3, 32, 32), classes=10), batch_size=16)


def assert_same(a, b):
    assert [(p.parameter, p.sparsity) for p in a] == [(p.parameter, p.sparsity) for p in b]
    for p, q in zip(a, b, strict=True):
        assert (p.top1, p.top5, p.samples, p.nnz, p.macs, p.params_left, p.measured) == \
               (q.top1, q.top5, q.samples, q.nnz, q.macs, q.params_left, q.measured), (p, q)
        assert p.loss == pytest.approx(q.loss, rel=1e-5)


def both(model, loader, **kw):
    """The reference and the fast engine; the fast one evaluates in 4-sample chunks, smaller than every
    batch here, so its chunking is exercised too."""
    plain = analyze(model, loader, engine="plain", device="cpu", **kw)
    fast = analyze(model, loader, engine="fast", device="cpu", cpu_chunk=4, **kw)
    assert (plain.engine, fast.engine) == ("plain", "fast")
    return plain, fast


def test_fast_equals_plain_on_digits(trained_digits, digits_loader):
    plain, fast = both(trained_digits, digits_loader, levels="0,0.3,0.6,0.9")
    assert len(fast.points) == 4 * 4
    assert_same(plain.points, fast.points)


@pytest.mark.parametrize("group,coupled", [("element", False), ("filter", False), ("filter", True),
                                           ("channel", True)])
def test_fast_equals_plain_on_residual_net(cifar_loader, group, coupled):
    model = create_model("resnet20-cifar")
    params = ["conv1.weight", "layer1.0.conv2.weight", "layer2.0.conv1.weight", "layer2.0.downsample.0.weight",
              "layer3.2.conv2.weight", "fc.weight"]
    plain, fast = both(model, cifar_loader, levels="0,0.5,0.8", params=params, group=group, coupled=coupled)
    assert fast.points and all(p.mode == ("coupled" if coupled else "independent") for p in fast.points)
    assert_same(plain.points, fast.points)
    if group != "element":
        assert all(p.macs is not None and p.params_left is not None for p in fast.points)


def test_fast_equals_plain_on_mobilenet_v2():
    """Inverted residuals, depthwise convs and in-place ReLU6: fx must trace them and the cache survive them."""
    model = create_model("mobilenet_v2", num_classes=10)
    loader = make_loader(load_dataset("synthetic", "test", n=16, shape=(3, 32, 32), classes=10), batch_size=8)
    params = ["features.0.0.weight", "features.2.conv.1.0.weight", "features.3.conv.2.weight",
              "features.10.conv.0.0.weight", "features.18.0.weight", "classifier.1.weight"]
    plain, fast = both(model, loader, levels="0,0.5,0.9", params=params)
    assert [p.parameter for p in fast.points[::3]] == params
    assert_same(plain.points, fast.points)
    assert any(p.top1 != fast.points[0].top1 or p.loss != fast.points[0].loss for p in fast.points)


def test_coupled_filter_latency_falls_with_the_level(cifar_loader):
    model = create_model("resnet20-cifar")
    result = analyze(model, cifar_loader, levels="0,0.75", params=["layer1.0.conv2.weight"], group="filter",
                     coupled=True, latency=True, device="cpu")
    low, high = result.points
    assert low.latency_ms > 0 and high.latency_ms > 0
    assert high.macs < low.macs
    assert high.latency_ms < low.latency_ms  # 75 % of layer1's residual channels gone: far beyond the noise
    with pytest.raises(ValueError, match="structured"):
        analyze(model, cifar_loader, levels="0.5", latency=True, device="cpu")


def test_zero_level_is_the_unpruned_evaluation(trained_digits, digits_loader):
    ref = evaluate(trained_digits, digits_loader, device="cpu")
    points = [p for p in iter_sensitivity(trained_digits, digits_loader, levels="0,0.5", device="cpu")
              if p.sparsity == 0]
    assert points
    for p in points:
        assert (p.top1, p.top5, p.samples) == (ref.top1, ref.top5, ref.samples)
        assert p.loss == pytest.approx(ref.loss, rel=1e-6)


def test_curves_fall_and_weights_are_restored(trained_digits, digits_loader):
    before = {k: v.clone() for k, v in trained_digits.state_dict().items()}
    result = analyze(trained_digits, digits_loader, levels="0,0.9", group="filter", device="cpu")
    top1 = {(p.parameter, p.sparsity): p.top1 for p in result.points}
    for name in {p.parameter for p in result.points}:
        assert top1[(name, 0.9)] < top1[(name, 0.0)], name
    assert all(torch.equal(before[k], v) for k, v in trained_digits.state_dict().items())


def test_unsorted_levels_give_the_sorted_points(trained_digits, digits_loader):
    kw = dict(params=["conv2.weight"], device="cpu")
    unsorted = analyze(trained_digits, digits_loader, levels=[0.9, 0.1, 0.5], **kw).points
    ordered = analyze(trained_digits, digits_loader, levels=[0.1, 0.5, 0.9], **kw).points
    assert_same(sorted(unsorted, key=lambda p: p.sparsity), ordered)


def test_skipped_parameters_are_reported(trained_digits, digits_loader):
    result = analyze(trained_digits, digits_loader, levels="0,0.5", group="filter", device="cpu",
                     params=["bn1.bias", "conv1.weight", "fc.weight"])
    reasons = {s.parameter: s.reason for s in result.skipped}
    assert set(reasons) == {"bn1.bias", "fc.weight"}
    assert "1-D" in reasons["bn1.bias"] and "output" in reasons["fc.weight"]
    assert {p.parameter for p in result.points} == {"conv1.weight"}
    with pytest.raises(ValueError, match="matches no parameter"):
        analyze(trained_digits, digits_loader, levels="0", params=["nope.*"], device="cpu")


def test_exact_names_do_not_match_by_substring():
    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(11)])
    loader = [(torch.randn(8, 4), torch.randint(0, 4, (8,)))]
    result = analyze(model, loader_of(loader), levels="0.5", params=["10.weight"], device="cpu")
    assert [p.parameter for p in result.points] == ["10.weight"]


def loader_of(batches):
    """A DataLoader over fixed tensors (analyze reads .dataset only for --samples)."""
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)


class ResidualNet(nn.Module):
    """stem -> [conv_a -> bn_a -> relu -> conv_b -> bn_b] + stem -> relu -> head: conv_b couples the stem."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv_a = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn_a = nn.BatchNorm2d(8)
        self.conv_b = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn_b = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 4, 1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        s = torch.relu(self.bn0(self.stem(x)))
        y = self.bn_b(self.conv_b(torch.relu(self.bn_a(self.conv_a(s)))))
        z = torch.relu(self.head(torch.relu(y + s)))
        return self.fc(z.mean(dim=(2, 3)))


def test_coupled_filters_zero_the_whole_dependency_group():
    from pruning_core.coupled import CoupledGroups

    torch.manual_seed(0)
    model = ResidualNet().eval()
    masks = CoupledGroups(model, torch.randn(1, 3, 8, 8)).masks(model.conv_b, True, [2, 5])
    pruned = {name: sorted(set(torch.nonzero(~m, as_tuple=True)[1 if name in ("conv_a.weight", "head.weight")
                                                                  else 0].tolist()))
              for name, m in masks.items()}
    # the residual add ties conv_b's filters to the stem's: both BNs and all consumers follow
    for name in ("conv_b.weight", "bn_b.weight", "bn_b.bias", "stem.weight", "bn0.weight", "bn0.bias",
                 "conv_a.weight", "head.weight"):
        assert pruned.get(name) == [2, 5], (name, pruned.get(name))
    assert "fc.weight" not in masks


def test_coupled_points_differ_from_independent_and_are_labelled():
    torch.manual_seed(0)
    model = ResidualNet().eval()
    loader = loader_of([(torch.randn(24, 3, 8, 8), torch.randint(0, 3, (24,)))])
    kw = dict(levels="0.5", params=["conv_b.weight"], group="filter", device="cpu")
    ind = analyze(model, loader, **kw).points[0]
    cpl = analyze(model, loader, coupled=True, **kw).points[0]
    assert (ind.mode, cpl.mode) == ("independent", "coupled")
    assert cpl.params_left < ind.params_left and cpl.macs < ind.macs
    assert cpl.loss != ind.loss


def test_subset_is_seeded_and_flagged(trained_digits, digits_loader):
    a = analyze(trained_digits, digits_loader, levels="0.5", params=["fc.weight"], samples=100, device="cpu")
    b = analyze(trained_digits, digits_loader, levels="0.5", params=["fc.weight"], samples=100, device="cpu")
    p = a.points[0]
    assert p.subset and p.samples == 100 and p.top1 == b.points[0].top1
    assert p.top1_low <= p.top1 <= p.top1_high


def test_early_stop_records_unmeasured_points(trained_digits, digits_loader):
    for engine in ("fast", "plain"):
        points = analyze(trained_digits, digits_loader, levels="0.2,0.5,0.9", params=["conv2.weight"],
                         early_stop_top1=101.0, engine=engine, device="cpu").points
        assert [p.measured for p in points] == [True, False, False]
        assert all(p.top1 is None and p.loss is None for p in points[1:])


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 3)

    def forward(self, x):
        return self.a(x) if x.sum() > 0 else -self.a(x)


def test_untraceable_model_falls_back_to_plain_with_a_reason():
    loader = loader_of([(torch.rand(16, 4), torch.randint(0, 3, (16,)))])
    result = analyze(Branchy(), loader, levels="0,0.5", device="cpu")
    assert result.engine == "plain" and "fx" in result.engine_note
    assert len(result.points) == 2


def test_coupled_requires_structured_group(trained_digits, digits_loader):
    with pytest.raises(ValueError, match="structured"):
        analyze(trained_digits, digits_loader, levels="0.5", coupled=True, device="cpu")
