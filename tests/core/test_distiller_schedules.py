"""Distiller's published schedules run as they are (issue 10): validation, dry run, 2 real epochs.

The files are read from ``../shared/distiller-schedules`` (never copied). Each runs two epochs of
:func:`run_prune` on synthetic data shaped for its architecture; the two epochs are the schedule's
first ones, except where nothing would happen there: ``start_epoch`` then jumps into the schedule
(earlier epochs are replayed without training) so the run crosses a pruning/thinning event.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pruning_core.agp import agp_sparsity
from pruning_core.metrics import sparsity
from pruning_core.models import create_model, model_info
from pruning_core.prune_job import run_prune
from pruning_core.schedule import ScheduleError, load_schedule, parse_schedule, resolve_weights
from pruning_core.scheduler import CompressionScheduler, preview_schedule
from pruning_core.thinning import mask_dependents

DISTILLER = Path(__file__).resolve().parents[2] / ".." / "shared" / "distiller-schedules"
pytestmark = pytest.mark.skipif(not DISTILLER.is_dir(), reason=f"Distiller's schedules are not at {DISTILLER}")

ARCH = {  # file -> architecture (Distiller's name; torchvision names as they are)
    "resnet20_filters.schedule_agp.yaml": "resnet20_cifar",
    "resnet56_cifar_filter_rank.yaml": "resnet56_cifar",
    "ssl_filter-removal_training.yaml": "resnet20_cifar",
    "resnet20_slimming.yaml": "resnet20_cifar",
    "resnet18.schedule_agp.yaml": "resnet18",
    "resnet50.schedule_agp.yaml": "resnet50",
    "alexnet.schedule_sensitivity.yaml": "alexnet",
}
IMAGENET = {"resnet18", "resnet50", "alexnet"}


@functools.lru_cache(maxsize=2)
def _fresh(arch: str) -> nn.Module:
    return create_model(arch)


def _model(arch: str) -> nn.Module:
    return copy.deepcopy(_fresh(arch))


def _loaders(arch: str) -> tuple[DataLoader, DataLoader]:
    info = model_info(arch)
    n, batch = (4, 2) if arch in IMAGENET else (16, 8)  # ImageNet-size models are slow on 2 CPU cores
    # their adaptive pooling takes any size: 64x64 images cost a twelfth of 224x224 (schedules name weights only)
    shape = (3, 64, 64) if arch in IMAGENET else info.input_shape
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(n, *shape, generator=g), torch.randint(0, info.num_classes, (n,), generator=g))
    return DataLoader(data, batch_size=batch, shuffle=True, generator=g), DataLoader(data, batch_size=batch)


def _final_level(spec: object) -> float | None:
    args = spec.args  # type: ignore[attr-defined]
    return args.get("final_sparsity", args.get("desired_sparsity"))


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if ARCH[n] == "alexnet" else n
                                  for n in sorted(ARCH)])  # building AlexNet alone takes ~6 s on 2 cores
def test_validates_and_dry_run_reaches_final_sparsity(name: str) -> None:
    schedule = load_schedule(DISTILLER / name)
    model = _model(ARCH[name])
    resolved = resolve_weights(schedule, model)  # every name resolves against the architecture
    preview = preview_schedule(schedule, model, lr=0.1)
    assert len(preview) == schedule.last_epoch() + 1
    for policy in schedule.policies:
        if policy.kind != "pruner":
            continue
        last = policy.active_epochs()[-1]
        final = _final_level(schedule.pruners[policy.instance_name])
        for param in resolved[policy.instance_name]:
            got = preview[last]["sparsity"][param]
            if final is not None:
                assert got == pytest.approx(final), (policy.instance_name, param)
            else:  # SensitivityPruner: what s * std prunes of these weights
                assert 0.0 < got < 1.0
            assert preview[-1]["sparsity"][param] == got  # and stays there
    for policy in schedule.policies:
        if policy.kind == "extension":
            assert all(policy.instance_name in preview[e]["thinning"] for e in policy.active_epochs())
        if policy.kind == "regularizer":
            assert all(policy.instance_name in preview[e]["regularizers"] for e in policy.active_epochs())


def test_data_parallel_prefixes_are_resolved_and_reported() -> None:
    text = (DISTILLER / "alexnet.schedule_sensitivity.yaml").read_text()
    schedule = parse_schedule(text.replace("'features.module.0.weight'", "'module.features.module.0.weight'"))
    model = nn.Module()  # AlexNet's names without its 61M weights
    model.features = nn.Sequential(*[nn.Conv2d(1, 1, 1) for _ in range(11)])
    model.classifier = nn.Sequential(*[nn.Linear(1, 1) for _ in range(7)])
    cs = CompressionScheduler(model, schedule)
    renames = dict(cs.schedule.renames)
    assert renames["module.features.module.0.weight"] == "features.0.weight"
    assert renames["features.module.3.weight"] == "features.3.weight"
    assert "classifier.1.weight" not in renames  # already the model's name
    resnet = load_schedule(DISTILLER / "resnet56_cifar_filter_rank.yaml")
    cs = CompressionScheduler(_model("resnet56_cifar"), resnet)
    assert ("module.layer1.0.conv1.weight", "layer1.0.conv1.weight") in cs.schedule.renames


def test_unknown_parameter_lists_the_closest_names() -> None:
    text = (DISTILLER / "resnet56_cifar_filter_rank.yaml").read_text().replace(
        "module.layer3.1.conv1.weight", "module.layer3.1.conv3.weight")
    with pytest.raises(ScheduleError) as err:
        resolve_weights(parse_schedule(text, source="r56.yaml"), _model("resnet56_cifar"))
    message = str(err.value)
    assert err.value.key == "pruners.filter_pruner_10.weights[0]" and err.value.line is not None
    assert "no parameter named 'module.layer3.1.conv3.weight'" in message
    assert "closest: layer3.1.conv1.weight" in message or "closest: layer3.1.conv2.weight" in message


def test_extension_arch_and_dataset_are_checked() -> None:
    schedule = load_schedule(DISTILLER / "resnet56_cifar_filter_rank.yaml")
    train, test = _loaders("resnet20_cifar")
    with pytest.raises(ScheduleError, match=r"extensions\.net_thinner\.arch: .*resnet56_cifar"):
        run_prune(_model("resnet20_cifar"), train, test, schedule, 0, arch="resnet20-cifar", dataset="synthetic",
                  progress=False)
    with pytest.raises(ScheduleError, match=r"extensions\.net_thinner\.dataset: .*'cifar10'.*'mnist'"):
        run_prune(_model("resnet56_cifar"), train, test, schedule, 0, arch="resnet56-cifar", dataset="mnist",
                  progress=False)


@pytest.mark.slow
def test_resnet56_filter_rank_two_epochs_thins_at_epoch_0() -> None:
    model = _model("resnet56_cifar")
    train, test = _loaders("resnet56_cifar")
    schedule = load_schedule(DISTILLER / "resnet56_cifar_filter_rank.yaml")
    result = run_prune(model, train, test, schedule, 2, lr=0.01, arch="resnet56-cifar", dataset="synthetic",
                       progress=False)
    assert [e.epoch for e in result.epochs] == [0, 1]
    removed = result.schedule_thinning[0].removed
    # int(level * 16 / 32 / 64) filters per conv1: 0.6 -> 9 of 16, 0.5 -> 16 of 32, 0.3 -> 19, 0.1 -> 6 of 64
    assert removed["layer1.0.conv1"] == 9 and removed["layer2.1.conv1"] == 16
    assert removed["layer3.2.conv1"] == 19 and removed["layer3.1.conv1"] == 6
    assert "layer2.0.conv1" not in removed and "layer2.5.conv1" not in removed  # not in the schedule
    assert model.layer1[0].conv1.weight.shape[0] == 7
    assert result.schedule_thinning[0].max_abs_diff < 1e-4
    assert result.epochs[1].top1 is not None and result.thinning_history()


def test_thinned_resnet56_matches_the_masked_model() -> None:
    """The FilterRemover of resnet56_cifar_filter_rank.yaml computes what the masked model computes."""
    schedule = load_schedule(DISTILLER / "resnet56_cifar_filter_rank.yaml")
    masked_only = copy.deepcopy(schedule)
    masked_only.policies = [p for p in schedule.policies if p.kind != "extension"]
    example = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    masked, thinned = _model("resnet56_cifar"), _model("resnet56_cifar")
    for model, sched in ((masked, masked_only), (thinned, schedule)):
        cs = CompressionScheduler(model, sched, after_prune=lambda m, model=model: mask_dependents(model, m, example),
                                  example_inputs=example)
        cs.on_epoch_begin(0)
    assert sum(p.numel() for p in thinned.parameters()) < 0.9 * sum(p.numel() for p in masked.parameters())
    masked.eval()
    thinned.eval()
    with torch.no_grad():
        x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
        assert torch.allclose(masked(x), thinned(x), rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_resnet20_filters_jumps_to_epoch_29_to_cross_thinning() -> None:
    """start_epoch 29: epochs 0..28 replay the filter AGP (final 0.5 at 28); epoch 30 thins, then the
    element and fc-column (Distiller's "Rows") AGP pruners start at their initial sparsity."""
    model = _model("resnet20_cifar")
    train, test = _loaders("resnet20_cifar")
    schedule = load_schedule(DISTILLER / "resnet20_filters.schedule_agp.yaml")
    result = run_prune(model, train, test, schedule, 2, lr=0.1, start_epoch=29, arch="resnet20_cifar",
                       dataset="synthetic", progress=False)
    assert [e.epoch for e in result.epochs] == [29, 30]
    assert result.epochs[1].thinned and result.epochs[0].thinned is None
    removed = result.schedule_thinning[30].removed
    for block in range(3):  # conv1 filters pruned at 0.5 of 32 are removed with their BatchNorm
        assert removed[f"layer2.{block}.conv1"] == 16
    for name in ("layer3.1.conv1.weight", "layer3.2.conv2.weight"):
        assert sparsity(model.get_parameter(name)) == pytest.approx(0.05, abs=1e-3)
    fc = model.fc.weight
    assert int((fc == 0).all(dim=0).sum()) == int(0.05 * fc.shape[1])  # whole input columns
    assert result.epochs[0].lr == pytest.approx(0.1)  # StepLR(50) from epoch 0: no decay yet


@pytest.mark.slow
def test_ssl_group_lasso_runs_with_keep_mask_and_thinning_at_179() -> None:
    model = _model("resnet20_cifar")
    train, test = _loaders("resnet20_cifar")
    schedule = load_schedule(DISTILLER / "ssl_filter-removal_training.yaml")
    result = run_prune(model, train, test, schedule, 2, lr=0.1, start_epoch=178, arch="resnet20_cifar",
                       dataset="synthetic", progress=False)
    assert [e.epoch for e in result.epochs] == [178, 179]
    assert all(e.regularization_loss is not None and e.regularization_loss > 0 for e in result.epochs)
    assert 179 in result.schedule_thinning  # FilterRemover ran (on a random init nothing is small enough yet)
    assert "layer1.0.conv1.weight" in result.masks  # keep_mask kept the regularization masks at epoch 179
    # StepLR(45) from epoch 45: replayed steps 45..177 decay 0.1 * 0.1**2 (steps at 90 and 135)
    assert result.epochs[0].lr == pytest.approx(0.1 * 0.1 ** 2, rel=1e-6)


@pytest.mark.slow
def test_slimming_l1_on_batchnorm_two_epochs() -> None:
    model = _model("resnet20_cifar")
    before = model.layer1[0].bn2.weight.detach().abs().sum()
    train, test = _loaders("resnet20_cifar")
    schedule = load_schedule(DISTILLER / "resnet20_slimming.yaml")
    result = run_prune(model, train, test, schedule, 2, lr=0.1, weight_decay=0.0, progress=False)
    assert result.renames and all(old.startswith("module.") for old, _ in result.renames)
    # no regularizer policy in the file: Distiller never activates it, and neither do we
    assert all(e.regularization_loss is None for e in result.epochs)
    assert before > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18.schedule_agp.yaml", "resnet50.schedule_agp.yaml",
                                  "alexnet.schedule_sensitivity.yaml"])
def test_imagenet_schedules_two_epochs(name: str) -> None:
    arch = ARCH[name]
    model = _model(arch)
    train, test = _loaders(arch)
    schedule = load_schedule(DISTILLER / name)
    result = run_prune(model, train, test, schedule, 2, lr=0.001, progress=False)
    assert [e.epoch for e in result.epochs] == [0, 1]
    resolved = resolve_weights(schedule, model)
    for policy in schedule.policies:
        if policy.kind != "pruner":
            continue
        spec = schedule.pruners[policy.instance_name]
        done = [e for e in policy.active_epochs() if e < 2]
        for param in resolved[policy.instance_name]:
            got = sparsity(model.get_parameter(param))
            if not done:
                assert got == 0.0
            elif "final_sparsity" in spec.args:
                want = agp_sparsity(spec.args["initial_sparsity"], spec.args["final_sparsity"], done[-1],
                                    *policy.span())
                assert got == pytest.approx(want, abs=1e-3), param
            else:
                assert got > 0.0


# ---------------------------------------------------------------- the sibling pruners these files use


def test_leader_ranking_decides_for_every_weight() -> None:
    from pruning_core.masks import MaskSet
    from pruning_core.pruners import L1RankedStructureParameterPruner

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 8, 3), nn.Conv2d(2, 8, 3))
    pruner = L1RankedStructureParameterPruner("Filters", 0.5, ["0.weight", "1.weight"], group_dependency="Leader")
    masks = MaskSet(model)
    pruner.prune(model, masks)
    leader = masks.get("0.weight").flatten(1).all(dim=1)
    assert int((~leader).sum()) == 4 and torch.equal(masks.get("1.weight").flatten(1).all(dim=1), leader)


def test_blocks_rows_random_level_and_splicing() -> None:
    from pruning_core.masks import MaskSet
    from pruning_core.pruners import (
        RandomLevelStructureParameterPruner,
        SplicingPruner,
        ranked_structure_mask,
    )

    torch.manual_seed(0)
    w = torch.randn(4, 8, 3, 3)
    mask = ranked_structure_mask(w, 0.5, "Blocks", [1, 4, 1, 1])  # 4 consecutive channels at one position
    blocks = mask.view(4 * 8 // 4, 4, 9)
    assert (blocks.all(dim=1) | (~blocks).all(dim=1)).all() and float((~mask).float().mean()) == 0.5
    fc = torch.randn(10, 64)
    cols = ranked_structure_mask(fc, 0.25, "Rows")  # Distiller's ranked Rows: input columns of a linear weight
    assert int((~cols).all(dim=0).sum()) == 16
    model = nn.Sequential(nn.Conv2d(3, 10, 3))
    rl = RandomLevelStructureParameterPruner("Filters", [0.2, 0.6], ["0.weight"], seed=1)
    rl.prune(model, MaskSet(model))
    assert 0.2 <= rl.levels["0.weight"] <= 0.6
    model = nn.Sequential(nn.Linear(100, 1))
    masks = MaskSet(model)
    sp = SplicingPruner({"0.weight": 0.0}, low_thresh_mult=0.9, hi_thresh_mult=1.1)
    sp.prune(model, masks)
    pruned = ~masks.get("0.weight")
    assert pruned.any()
    with torch.no_grad():  # a pruned connection whose weight grew large is spliced back
        model[0].weight.masked_fill_(pruned, 1.0)
    masks.remove("0.weight")
    masks.set("0.weight", ~pruned)
    with torch.no_grad():
        model[0].weight.masked_fill_(pruned, 1.0)
    sp.prune(model, masks)
    assert masks.get("0.weight")[pruned].all()
