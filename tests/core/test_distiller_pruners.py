"""Issue 17's pruner and regularizer classes and pruning-policy arguments, each on its corpus schedule's
architecture for two real epochs (synthetic data shaped for it, a few samples), plus hand computations:
APoZ / mean activation ranking, group variance, the Baidu RNN threshold, and network surgery splicing a
pruned weight back once its magnitude grows.

The schedules are read from ``../shared/distiller-schedules/corpus`` (never copied).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pruning_core.activation_stats import ActivationStatistics
from pruning_core.masks import ForwardMasks, MaskSet
from pruning_core.metrics import model_sparsity, sparsity
from pruning_core.models import create_model, model_info
from pruning_core.prune_job import run_prune
from pruning_core.pruners import (
    ActivationAPoZRankedFilterPruner,
    ActivationMeanRankedFilterPruner,
    BaiduRNNPruner,
)
from pruning_core.regularizers import GroupVarianceRegularizer
from pruning_core.schedule import load_schedule, parse_schedule
from pruning_core.scheduler import CompressionScheduler

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "distiller-schedules" / "corpus"
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"no corpus at {CORPUS}")


def _schedule(name: str):  # noqa: ANN202 - a Schedule
    return load_schedule(CORPUS / name)


def _loaders(arch: str, n: int = 8, batch: int = 4) -> tuple[DataLoader, DataLoader]:
    info = model_info(arch)
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(n, *info.input_shape, generator=g),
                         torch.randint(0, info.num_classes, (n,), generator=g))
    return DataLoader(data, batch_size=batch, shuffle=True, generator=g), DataLoader(data, batch_size=batch)


def _dead_filters(t: torch.Tensor) -> int:
    return int((t.detach().reshape(t.shape[0], -1) == 0).all(dim=1).sum())


# ---------------------------------------------------------------- activation ranking, by hand


class _Tiny(nn.Module):
    """conv1 (1 -> 4 filters, 1x1, weights 1, -1, 0, 2, biases 0, 0, 0, -3) and its ReLU, named as Distiller's."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 1)
        self.relu1 = nn.ReLU()
        with torch.no_grad():
            self.conv1.weight.copy_(torch.tensor([1.0, -1.0, 0.0, 2.0]).view(4, 1, 1, 1))
            self.conv1.bias.copy_(torch.tensor([0.0, 0.0, 0.0, -3.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu1(self.conv1(x))


A = torch.tensor([[1.0, 2.0], [-1.0, 3.0]]).view(1, 1, 2, 2)
B = torch.tensor([[-1.0, -2.0], [4.0, -3.0]]).view(1, 1, 2, 2)
# relu(w x + b) of A and B, zeros of 4 positions:  filter 0: [1 2 0 3] 1/4, [0 0 4 0] 3/4  -> APoZ 50,   mean 1.25
#                                                  filter 1: [0 0 1 0] 3/4, [1 2 0 3] 1/4  -> APoZ 50,   mean 0.875
#                                                  filter 2: all zero                      -> APoZ 100,  mean 0
#                                                  filter 3: [0 1 0 3] 2/4, [0 0 5 0] 3/4  -> APoZ 62.5, mean 1.125
HAND_APOZ = [50.0, 50.0, 100.0, 62.5]
HAND_MEAN = [1.25, 0.875, 0.0, 1.125]


def test_apoz_and_mean_statistics_equal_the_hand_computation_and_rank_filters() -> None:
    model = _Tiny().train()
    stats = ActivationStatistics(model, ["conv1.weight"])
    assert stats.sources == {"conv1.weight": "relu1"}  # Distiller's rule: .conv -> .relu
    model(A)
    model(B)  # two training batches
    model.eval()
    model(A)  # not a training batch: not counted
    assert stats.samples("conv1.weight") == 2
    assert stats.scores("conv1.weight", "apoz").tolist() == pytest.approx(HAND_APOZ)
    assert stats.scores("conv1.weight", "mean").tolist() == pytest.approx(HAND_MEAN)

    def kept(pruner: object, level_model: nn.Module) -> list[int]:
        masks = MaskSet(level_model)
        pruner.statistics = lambda name, p=pruner: stats.scores(name, p.statistic)  # type: ignore[attr-defined]
        pruner.prune(level_model, masks)  # type: ignore[attr-defined]
        return [i for i in range(4) if bool(masks.get("conv1.weight")[i].all())]

    # APoZ prunes the most often zero: 2 of 4 -> filters 2 (100) and 3 (62.5); 3 of 4 -> also filter 0 (tie with
    # filter 1 at 50: the lower index goes first)
    assert kept(ActivationAPoZRankedFilterPruner("Filters", 0.5, ["conv1.weight"]), _Tiny()) == [0, 1]
    assert kept(ActivationAPoZRankedFilterPruner("Filters", 0.75, ["conv1.weight"]), _Tiny()) == [1]
    # the mean criterion prunes the weakest outputs: filters 2 (0) and 1 (0.875)
    assert kept(ActivationMeanRankedFilterPruner("Filters", 0.5, ["conv1.weight"]), _Tiny()) == [0, 3]
    with pytest.raises(ValueError, match="Filters or 3D"):
        ActivationAPoZRankedFilterPruner("Channels", 0.5, ["conv1.weight"])
    stats.remove()


def test_activation_pruner_agp_in_the_scheduler_uses_the_training_batches() -> None:
    schedule = parse_schedule("""
version: 1
pruners:
  trim: {class: ActivationMeanRankedFilterPruner_AGP, initial_sparsity: 0.25, final_sparsity: 0.5,
         group_type: Filters, weights: [conv1.weight]}
policies:
  - {pruner: {instance_name: trim}, starting_epoch: 1, ending_epoch: 3}
""")
    model = _Tiny()
    cs = CompressionScheduler(model, schedule)
    model.train()
    cs.on_epoch_begin(0)
    model(A)
    model(B)  # epoch 0's training batches
    cs.on_epoch_begin(1)  # 0.25 of 4 filters: the lowest mean, filter 2
    assert [bool(cs.masks.get("conv1.weight")[i].all()) for i in range(4)] == [True, True, False, True]


# ---------------------------------------------------------------- network trimming: 2 epochs on resnet56_cifar


@needs_corpus
@pytest.mark.slow
def test_apoz_schedule_two_epochs_on_resnet56_prunes_whole_filters() -> None:
    schedule = _schedule("examples__network_trimming__resnet56_cifar_activation_apoz.yaml")
    model = create_model("resnet56_cifar")
    train, test = _loaders("resnet56_cifar", n=8, batch=4)
    result = run_prune(model, train, test, schedule, 2, lr=0.01, progress=False)
    assert [e.epoch for e in result.epochs] == [0, 1]
    assert result.epochs[0].pruned == {}  # the policies start at epoch 1, ranking epoch 0's batches
    # epoch 1 is each policy's first: its initial sparsity, int(0.1 * filters) whole filters
    for name, want in (("layer1.0.conv1.weight", 1), ("layer2.1.conv1.weight", 3), ("layer3.2.conv1.weight", 6),
                       ("layer3.1.conv1.weight", 0)):
        weight = model.get_parameter(name)
        assert _dead_filters(weight) == want, name
        assert sparsity(weight) == pytest.approx(want / weight.shape[0])


# ---------------------------------------------------------------- DropFilter: forward-only, per-minibatch masks


@needs_corpus
@pytest.mark.slow  # three 2-epoch runs (each ~5 s on a quiet 2-core machine)
@pytest.mark.parametrize("name, arch, start", [
    ("examples__drop_filter__plain20_cifar_dropfilter_training.yaml", "plain20_cifar", 15),  # Bernoulli AGP
    ("examples__drop_filter__plain20_cifar_dropfilter_training_regularization.yaml", "plain20_cifar", 15),
    ("examples__drop_filter__resnet20_cifar_randomlevel_training.yaml", "resnet20_cifar", 0),
])
def test_dropfilter_schedules_drop_filters_on_the_forward_pass_only(name: str, arch: str, start: int) -> None:
    schedule = _schedule(name)
    double = schedule.policies[1].args.get("use_double_copies", False)
    model = create_model(arch)
    conv = model.get_submodule("layer1.0.conv1")
    seen: list[int] = []  # dead filters of layer1.0.conv1 as each training forward saw them
    conv.register_forward_pre_hook(lambda m, i: seen.append(_dead_filters(m.weight)) if m.training else None)
    train, test = _loaders(arch, n=12, batch=4)  # 3 minibatches an epoch
    result = run_prune(model, train, test, schedule, 2, lr=0.01, start_epoch=start, progress=False)
    assert [e.epoch for e in result.epochs] == [start, start + 1]
    assert len(seen) == 6 and seen[0] + seen[3] > 0  # whole filters dropped at each epoch's first minibatch
    assert len(result.masks) == 0  # and discarded after its step: DropFilter leaves no permanent mask
    if double:  # the forward saw them dropped, the dense copies were restored: they learn on
        assert seen[1:3] == [0, 0] and seen[4:] == [0, 0]
        assert _dead_filters(conv.weight) == 0 and model_sparsity(model) == 0.0
    else:  # zeroed in place (as Distiller without double copies); mask_gradients held them for that step
        assert seen[1] == seen[0]


def test_bernoulli_scale_compensates_the_dropped_filters_with_double_copies() -> None:
    model = nn.Sequential(nn.Conv2d(1, 8, 1, bias=False))
    dense = model[0].weight.detach().clone()
    forward = ForwardMasks(model)
    forward.options["0.weight"] = (True, False)
    keep = torch.tensor([True, False, True, True, False, True, True, True]).view(8, 1, 1, 1).expand(8, 1, 1, 1)
    forward.set("0.weight", keep.contiguous())
    forward.set_scale("0.weight", 8 / 6)
    assert torch.equal(model[0].weight.detach(), dense * keep * (8 / 6))
    forward.restore()
    assert torch.equal(model[0].weight.detach(), dense)


# ---------------------------------------------------------------- dynamic network surgery


def _surgery_schedule(end: int, keep: bool) -> str:
    return f"""
version: 1
pruners:
  splice: {{class: SplicingPruner, low_thresh_mult: 0.9, hi_thresh_mult: 1.1, sensitivities: {{0.weight: 0.0}}}}
policies:
  - pruner:
      instance_name: splice
      args: {{keep_mask: {str(keep).lower()}, mini_batch_pruning_frequency: 1, mask_on_forward_only: true}}
    starting_epoch: 0
    ending_epoch: {end}
"""


def test_network_surgery_splices_a_pruned_weight_back_when_it_grows() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(50, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    cs = CompressionScheduler(model, parse_schedule(_surgery_schedule(5, keep=False)), optimizer=optimizer)
    cs.on_epoch_begin(0)
    weight = model[0].weight
    pruned = ~cs.forward_masks.get("0.weight")
    assert pruned.any() and len(cs.masks) == 0  # a forward-only mask, not a permanent one
    x, y = torch.randn(8, 50), torch.randint(0, 2, (8,))
    model.train()
    nn.functional.cross_entropy(model(x), y).backward()
    assert (weight.grad[pruned] != 0).any()  # pruned weights keep receiving gradients
    optimizer.step()
    assert (weight.detach()[pruned] != 0).any()  # ... and the step moves them (nothing re-zeros them)
    i = int(pruned.flatten().nonzero()[0])
    with torch.no_grad():  # this pruned weight's magnitude grows past hi_thresh_mult * threshold
        weight.view(-1)[i] = 10.0
    model(x)  # the next minibatch: the pruner runs again (mini_batch_pruning_frequency 1) and splices it back
    assert bool(cs.forward_masks.get("0.weight").view(-1)[i])
    assert float(weight.detach().view(-1)[i]) == 10.0  # and the forward pass uses it


@needs_corpus
@pytest.mark.slow  # two 2-epoch runs of resnet20
def test_network_surgery_schedule_two_epochs_on_resnet20_and_keep_mask() -> None:
    schedule = _schedule("examples__network_surgery__resnet20.network_surgery.yaml")
    train, test = _loaders("resnet20_cifar")
    model = create_model("resnet20_cifar")
    result = run_prune(model, train, test, schedule, 2, lr=0.01, progress=False)
    assert len(result.masks) == 0  # the policy runs to epoch 100: its masks are still forward-only
    assert result.epochs[0].pruned and all(0 < s < 1 for s in result.epochs[0].pruned.values())
    kept = copy.deepcopy(schedule)
    kept.policies[0].ending_epoch = 2  # the policy's last epoch is the run's: keep_mask makes its masks permanent
    model = create_model("resnet20_cifar")
    result = run_prune(model, train, test, kept, 2, lr=0.01, progress=False)
    assert sorted(result.masks.names()) == sorted(result.epochs[1].pruned)
    assert len(result.masks) == 20
    for name in result.masks.names():
        weight, mask = model.get_parameter(name), result.masks.get(name)
        assert not mask.all() and bool((weight.detach()[~mask] == 0).all())


# ---------------------------------------------------------------- fold_batchnorm


@needs_corpus
@pytest.mark.slow  # a 2-epoch run of resnet20 with thinning's dependency tracing
def test_fold_batchnorm_ranks_filters_on_folded_weights() -> None:
    schedule = _schedule("examples__agp-pruning__resnet20_filters.bn_fold.schedule_agp.yaml")
    model = create_model("resnet20_cifar")
    conv, bn = model.layer2[0].conv1, model.layer2[0].bn1
    with torch.no_grad():  # BatchNorm scales that reorder the filters' L1 norms
        bn.weight.copy_(torch.linspace(0.05, 3.0, 32)[torch.randperm(32, generator=torch.Generator().manual_seed(3))])
    raw = conv.weight.detach().abs().flatten(1).sum(1)
    folded = (conv.weight.detach() * (bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)).view(-1, 1, 1, 1))
    folded_l1 = folded.abs().flatten(1).sum(1)
    want = set(torch.argsort(folded_l1)[:3].tolist())  # epoch 0: initial_sparsity 0.1 -> int(3.2) = 3 of 32
    assert want != set(torch.argsort(raw)[:3].tolist())  # (the fold changes the choice)
    train, test = _loaders("resnet20_cifar")
    result = run_prune(model, train, test, schedule, 2, lr=0.01, progress=False)
    assert result.epochs[0].pruned["layer2.0.conv1.weight"] == pytest.approx(3 / 32)
    dead = (conv.weight.detach().flatten(1) == 0).all(dim=1)
    assert set(dead.nonzero().flatten().tolist()) == want


# ---------------------------------------------------------------- group variance


def test_group_variance_penalty_equals_the_hand_computation() -> None:
    w = torch.tensor([[1.0, 2.0, 0.0], [0.0, 2.0, 3.0]]).view(2, 3, 1, 1)  # 2 filters x 3 input channels
    norms = [math.sqrt(1 + 0 + 1e-8), math.sqrt(4 + 4 + 1e-8), math.sqrt(0 + 9 + 1e-8)]  # per input channel
    mean = sum(norms) / 3
    var = sum((v - mean) ** 2 for v in norms) / 2  # unbiased, as torch.var
    reg = GroupVarianceRegularizer({"w": [0.5, "Channels"]})
    assert float(reg.penalty(w, [0.5, "Channels"])) == pytest.approx(0.5 / var)
    with pytest.raises(ValueError, match="Channels only"):
        GroupVarianceRegularizer({"w": [0.5, "Filters"]})


@needs_corpus
@pytest.mark.slow
def test_gss_schedule_two_epochs_keeps_masks_and_removes_channels_at_179() -> None:
    schedule = _schedule("examples__gss__gss_channels-removal_training.yaml")
    model = create_model("resnet20_cifar")
    train, test = _loaders("resnet20_cifar")
    result = run_prune(model, train, test, schedule, 2, lr=0.1, start_epoch=178, arch="resnet20_cifar",
                       dataset="synthetic", progress=False)
    assert [e.epoch for e in result.epochs] == [178, 179]
    assert all(e.regularization_loss is not None and e.regularization_loss > 0 for e in result.epochs)
    assert "layer1.0.conv2.weight" in result.masks  # keep_mask kept the Group Lasso's masks at 179
    assert 179 in result.schedule_thinning  # the ChannelRemover ran


# ---------------------------------------------------------------- Baidu RNN pruning on word_lang_model


def test_baidu_threshold_is_distillers_formula() -> None:
    pruner = BaiduRNNPruner(0.17, 3, 2, ["w"])
    # policy 4..21 every 3: ramp epoch 7; start slope 2 * 0.17 * 3 / (2 * 3 + 3 * 14) = 1.02 / 48
    start = 1.02 / 48
    assert pruner.set_epoch(4, 4, 21, 3) == pytest.approx(start * 1 / 3)
    assert pruner.set_epoch(7, 4, 21, 3) == pytest.approx((start * 4 + 2 * start * 1) / 3)
    assert pruner.set_epoch(19, 4, 21, 3) == pytest.approx((start * 4 + 2 * start * 13) / 3)


@needs_corpus
def test_baidu_rnn_schedule_two_epochs_on_word_lang_model() -> None:
    schedule = _schedule("examples__baidu-rnn-pruning__word_lang_model.schedule_baidu_rnn.yaml")
    model = create_model("word_lang_model")
    vocab, steps = model.ntoken, model_info("word_lang_model").input_shape[0]
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab, (4, steps + 1), generator=g)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    masks = MaskSet(model)
    cs = CompressionScheduler(model, schedule, masks, optimizer=optimizer)
    masks.attach(optimizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    start = 2 * 0.17 * 3 / (2 * 3 + 3 * (21 - 7))  # ih_l0: q 0.17, ramp offset 3, policy 4..21 every 3
    for epoch in (4, 5):  # two real epochs from the first pruning epoch
        pruned = cs.on_epoch_begin(epoch)
        if epoch == 4:
            assert set(pruned) == {"rnn.weight_ih_l0", "rnn.weight_hh_l0"}
            eps = start * 1 / 3
            assert torch.equal(masks.get("rnn.weight_ih_l0"), before["rnn.weight_ih_l0"].abs() > eps)
            assert pruned["rnn.weight_ih_l0"] == pytest.approx(float((before["rnn.weight_ih_l0"].abs() <= eps)
                                                                     .float().mean()))
        else:
            assert set(pruned) == {"rnn.weight_ih_l1", "rnn.weight_hh_l1"}
        model.train()
        for i in range(0, 4, 2):
            optimizer.zero_grad()
            logits = model(tokens[i:i + 2, :-1])
            loss = nn.functional.cross_entropy(logits.reshape(-1, vocab), tokens[i:i + 2, 1:].reshape(-1))
            cs.before_backward_pass(loss).backward()
            optimizer.step()
        cs.on_epoch_end(epoch)
    for name in ("rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.weight_ih_l1", "rnn.weight_hh_l1"):
        weight, mask = model.get_parameter(name).detach(), masks.get(name)
        assert not mask.all() and bool((weight[~mask] == 0).all()) and bool((weight[mask] != before[name][mask]).any())
    assert "encoder.weight" not in masks  # its policy starts at epoch 6


@needs_corpus
def test_dry_run_of_the_baidu_schedule_grows_the_threshold_each_pruning_epoch() -> None:
    from pruning_core.scheduler import preview_schedule

    schedule = _schedule("examples__baidu-rnn-pruning__word_lang_model.schedule_baidu_rnn.yaml")
    walk = preview_schedule(schedule, create_model("word_lang_model"))
    levels = [walk[e]["sparsity"]["rnn.weight_ih_l0"] for e in (4, 5, 7, 10)]  # its policy: 4..21 every 3
    # on untrained weights (|w| < 0.071) the threshold passes them all by epoch 10: Distiller's q suits trained ones
    assert 0 < levels[0] == levels[1] < levels[2] < levels[3] == 1.0
    assert walk[3]["sparsity"] == {} and walk[6]["sparsity"]["encoder.weight"] > 0


def test_mini_batch_pruning_frequency_follows_distillers_global_minibatch_id() -> None:
    schedule = parse_schedule("""
version: 1
pruners:
  drop: {class: BernoulliFilterPruner, desired_sparsity: 0.5, group_type: Filters, weights: [0.weight]}
policies:
  - pruner: {instance_name: drop, args: {mini_batch_pruning_frequency: 2}}
    starting_epoch: 0
    ending_epoch: 3
""")
    model = nn.Sequential(nn.Conv2d(1, 16, 1), nn.Flatten(), nn.Linear(16 * 4, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    masks = MaskSet(model)
    cs = CompressionScheduler(model, schedule, masks, optimizer=optimizer)
    masks.attach(optimizer)
    calls: list[tuple[int, int]] = []  # (epoch, global minibatch id) of each prune
    pruner, prune = cs.pruners["drop"], cs.pruners["drop"].prune
    pruner.prune = lambda *a, **k: calls.append((cs.epoch, cs.minibatch)) or prune(*a, **k)  # type: ignore[method-assign]
    x, y = torch.randn(2, 1, 2, 2), torch.tensor([0, 1])
    model.train()
    for epoch in (0, 1):
        cs.on_epoch_begin(epoch)
        for _ in range(3):  # minibatch ids 0..2 of the epoch, 0..5 of the run
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        cs.on_epoch_end(epoch)
    # each epoch's start, then the minibatches whose global id is a multiple of 2, but never an epoch's first
    assert calls == [(0, 0), (0, 2), (1, 3), (1, 4)]
    assert "0.weight" in masks and _dead_filters(model[0].weight) > 0  # a permanent (not forward-only) mask
