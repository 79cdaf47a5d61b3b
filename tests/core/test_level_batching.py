"""Level batching (several levels in one vmapped forward of the suffix): the same points as the plain engine
and the per-level fast engine, on CPU with the code path CUDA runs; the fallbacks say why and change nothing."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from pruning_core.datasets import load_dataset, make_loader
from pruning_core.fastpath import GraphSplitter
from pruning_core.level_batching import LevelBatcher, peak_bytes
from pruning_core.models import create_model
from pruning_core.pruners import level_mask
from pruning_core.sensitivity import SensitivityAnalysis, analyze
from tests.networks import calibrated_net

torch.set_num_threads(1)

LEVELS = "0,0.4,0.7,0.9"


def loader(shape: tuple[int, ...], n: int = 16):
    return make_loader(load_dataset("synthetic", "test", n=n, shape=shape, classes=10), batch_size=12)


def assert_same(a, b):
    assert [(p.parameter, p.sparsity) for p in a] == [(p.parameter, p.sparsity) for p in b]
    for p, q in zip(a, b, strict=True):
        assert (p.top1, p.top5, p.samples, p.nnz, p.measured) == (q.top1, q.top5, q.samples, q.nnz, q.measured)
        assert p.loss == pytest.approx(q.loss, rel=1e-5)


def three(model, data, **kw):
    """The plain engine, the fast one level by level, the fast one level-batched (in 8-sample chunks, fewer
    than a batch: the chunks are batched and joined too)."""
    plain = analyze(model, data, engine="plain", device="cpu", **kw)
    loop = analyze(model, data, device="cpu", cpu_chunk=8, level_batch=False, **kw)
    batched = analyze(model, data, device="cpu", cpu_chunk=8, level_batch=True, **kw)
    assert (loop.engine, batched.engine) == ("fast", "fast")
    assert (loop.info["level_batch"], batched.info["level_batch"]) == (False, True)
    assert_same(plain.points, batched.points)
    assert_same(loop.points, batched.points)
    return batched


@pytest.mark.parametrize("group,coupled", [("element", False), ("filter", False), ("channel", True)])
def test_batched_levels_equal_both_engines_on_a_residual_net(group, coupled):
    params = ["layer2.0.downsample.0.weight", "layer3.2.conv2.weight", "fc.weight"]
    batched = three(create_model("resnet20-cifar"), loader((3, 32, 32)), levels=LEVELS, params=params,
                    group=group, coupled=coupled)
    assert len({p.loss for p in batched.points}) > 2  # the levels really differ


@pytest.mark.parametrize("group", ["element", "filter", "channel"])
def test_batched_levels_equal_both_engines_on_a_batchnorm_net(group):
    """BatchNorm, a depthwise conv, a concat skip, LayerNorm and a bare parameter read by get_attr."""
    three(calibrated_net(), loader((3, 8, 8)), levels=LEVELS, group=group)


class InPlaceMix(nn.Module):
    """``y`` is computed after the pruned ``b`` from unpruned weights, then written in place with ``b``'s output:
    vmap cannot write a value per level into a single tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.b = nn.Conv2d(3, 6, 3, padding=1)
        self.a = nn.Conv2d(3, 6, 3, padding=1)
        self.head = nn.Linear(6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.b(x)
        y = self.a(x)
        y.add_(z)
        return self.head(y.mean((2, 3)))


def test_a_suffix_vmap_cannot_run_falls_back_with_its_reason(caplog):
    torch.manual_seed(0)
    model, data = InPlaceMix().eval(), loader((3, 8, 8))
    with caplog.at_level(logging.WARNING, logger="pruning_core.level_batching"):
        batched = analyze(model, data, device="cpu", levels=LEVELS, params=["b.weight"], level_batch=True)
    assert batched.engine == "fast" and batched.info["level_batch"] is False
    assert any("level batching off" in r.message and "vmap cannot run the suffix" in r.message
               for r in caplog.records)
    assert_same(analyze(model, data, engine="plain", device="cpu", levels=LEVELS, params=["b.weight"]).points,
                batched.points)


class LiveInPlace(nn.Module):
    """``y`` is computed before the pruned ``b`` and written in place with its output: a live input the
    suffix mutates, which batches once it goes in as one copy per level."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, padding=1)
        self.b = nn.Conv2d(3, 6, 3, padding=1)
        self.head = nn.Linear(6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        y.add_(self.b(x))
        return self.head(y.mean((2, 3)))


@pytest.mark.parametrize("net,param", [(LiveInPlace, "b.weight"), (create_model, "layer3.0.conv1.weight")])
def test_batcher_groups_and_copies_equal_the_level_loop(net, param):
    """Four levels in groups of two (the budget fits two), and live inputs written in place copied per level."""
    torch.manual_seed(0)
    model = (net("resnet20-cifar") if net is create_model else net()).eval()
    splitter, named = GraphSplitter(model), dict(model.named_parameters())
    cut = splitter.cut([param])
    suffix = splitter.segment(cut)
    assert bool(suffix.clone) == (net is LiveInPlace)
    weight = named[param].detach()
    weights = {lv: {param: torch.where(level_mask(weight, lv), weight, 0.0)} for lv in (0.2, 0.4, 0.6, 0.8)}
    with torch.inference_mode():
        live = splitter.segment(0, cut)((torch.randn(6, 3, 32, 32),))
        loop = {}
        for lv, w in weights.items():
            named[param].data = w[param]
            loop[lv] = suffix(live)
        named[param].data = weight
        copies = sum(live[i].nelement() * live[i].element_size() for i in suffix.clone)
        per_level = 2 * peak_bytes(suffix, live) + weight.nelement() * weight.element_size() + copies
        batcher = LevelBatcher(torch.device("cpu"), 2 * per_level + 1)
        batched = batcher.outputs(suffix, [live], weights)
    assert batched is not None and batcher.ran and batcher._states[id(suffix)].group == 2
    for lv in weights:
        torch.testing.assert_close(batched[lv][0], loop[lv], rtol=1e-5, atol=1e-6)
    assert torch.equal(named[param], weight)


def test_levels_that_do_not_fit_the_budget_run_one_by_one(caplog):
    model = calibrated_net()
    with caplog.at_level(logging.WARNING, logger="pruning_core.level_batching"):
        tight = analyze(model, loader((3, 8, 8)), device="cpu", levels=LEVELS, params=["pw.weight"],
                        level_batch=True, memory_budget_mb=0.001)
    assert tight.info["level_batch"] is False
    assert any("do not fit the memory budget" in r.message for r in caplog.records)
    assert_same(analyze(model, loader((3, 8, 8)), engine="plain", device="cpu", levels=LEVELS,
                        params=["pw.weight"]).points, tight.points)


def test_autocast_loops_over_levels_and_says_so(caplog):
    model, data = calibrated_net(), loader((3, 8, 8))
    with caplog.at_level(logging.WARNING, logger="pruning_core.level_batching"):
        amp = analyze(model, data, device="cpu", levels=LEVELS, amp=True, level_batch=True)
    assert amp.info["level_batch"] is False and all(p.approximate for p in amp.points)
    assert any("under autocast" in r.message for r in caplog.records)
    assert_same(analyze(model, data, device="cpu", levels=LEVELS, amp=True, level_batch=False).points, amp.points)


def test_level_batching_is_off_on_cpu_unless_asked():
    data = loader((3, 8, 8), n=12)
    assert SensitivityAnalysis(calibrated_net(), data, levels=LEVELS, device="cpu").level_batch is False
    assert SensitivityAnalysis(calibrated_net(), data, levels=LEVELS, device="cpu", level_batch=True).level_batch
