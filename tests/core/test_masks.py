"""MaskSet keeps pruned weights exactly zero through training, with no copy of the weights."""

import copy
import io

import pytest
import torch
from torch import nn

from pruning_core.masks import MaskSet


def tiny_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def half_masks(model: nn.Module) -> MaskSet:
    """Mask ~half of each weight at random (fixed seed) and the second layer's bias entirely."""
    masks = MaskSet(model)
    gen = torch.Generator().manual_seed(1)
    for name in ("0.weight", "2.weight"):
        shape = model.get_parameter(name).shape
        masks.set(name, torch.rand(shape, generator=gen) > 0.5)
    masks.set("2.bias", torch.zeros(4, dtype=torch.bool))
    return masks


def batches(steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(2)
    return [(torch.randn(32, 8, generator=gen), torch.randint(0, 4, (32,), generator=gen)) for _ in range(steps)]


def train(model: nn.Module, opt: torch.optim.Optimizer, masks: MaskSet | None, steps: int = 5) -> None:
    """A few steps; after each backward, masked gradients must already be zero."""
    for x, y in batches(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        if masks is not None:
            for name in masks.names():
                grad = model.get_parameter(name).grad
                assert torch.all(grad[~masks.get(name)] == 0), name
        opt.step()


def assert_zero_set(model: nn.Module, masks: MaskSet) -> None:
    for name in masks.names():
        param = model.get_parameter(name)
        assert torch.equal(param != 0, masks.get(name)), name  # zero exactly where pruned


def test_set_zeroes_in_place_and_keeps_the_parameter_object() -> None:
    model = tiny_model()
    weight = model[0].weight
    masks = MaskSet(model)
    mask = torch.ones_like(weight, dtype=torch.bool)
    mask[0] = False
    with torch.no_grad():
        masks.set("0.weight", mask)
    assert model[0].weight is weight
    assert torch.all(weight[0] == 0) and torch.all(weight[1:] != 0)
    assert weight.requires_grad and weight.grad_fn is None
    assert "0.weight" in masks and len(masks) == 1 and masks.names() == ["0.weight"]
    assert not any("orig" in n for n, _ in model.named_parameters())  # no second copy


def test_apply_rezeroes_after_manual_edit() -> None:
    model = tiny_model()
    masks = half_masks(model)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    masks.apply()
    assert_zero_set(model, masks)


def test_set_rejects_bad_masks() -> None:
    masks = MaskSet(tiny_model())
    with pytest.raises(TypeError, match="bool"):
        masks.set("0.weight", torch.ones(16, 8))
    with pytest.raises(ValueError, match="shape"):
        masks.set("0.weight", torch.ones(8, 16, dtype=torch.bool))
    with pytest.raises(KeyError, match="nope"):
        masks.set("nope", torch.ones(1, dtype=torch.bool))


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-4),
        lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-4),
    ],
    ids=["sgd-momentum-wd", "adam"],
)
def test_training_keeps_pruned_weights_zero(make_opt) -> None:
    model = tiny_model()
    opt = make_opt(model.parameters())
    # Build up momentum / Adam moments on every weight first, then prune mid-training: the
    # optimizer state now wants to move pruned weights, and the step post-hook must stop it.
    train(model, opt, None, steps=3)
    masks = half_masks(model)
    masks.attach(opt)
    before = {n: model.get_parameter(n).detach().clone() for n in ("0.bias",)}
    train(model, opt, masks, steps=5)
    assert_zero_set(model, masks)
    assert not torch.equal(model[0].bias, before["0.bias"])  # unmasked parameters still train
    kept = masks.get("0.weight")
    assert torch.all(model[0].weight[kept] != 0)


def test_detach_removes_the_hooks() -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    masks = half_masks(model)
    masks.attach(opt)
    masks.detach()
    x, y = batches(1)[0]
    nn.functional.cross_entropy(model(x), y).backward()
    assert torch.any(model[0].weight.grad[~masks.get("0.weight")] != 0)
    opt.step()
    assert torch.any(model[0].weight[~masks.get("0.weight")] != 0)  # pruned weights grow back


def test_mask_set_after_attach_is_hooked_too() -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    masks = MaskSet(model)
    masks.attach(opt)
    masks.set("0.weight", torch.rand(16, 8, generator=torch.Generator().manual_seed(3)) > 0.5)
    train(model, opt, masks, steps=3)
    assert_zero_set(model, masks)


def test_state_dict_round_trip() -> None:
    model = tiny_model()
    masks = half_masks(model)
    state = masks.state_dict()
    assert set(state) == {"0.weight", "2.weight", "2.bias"}
    assert all(m.dtype == torch.bool for m in state.values())

    fresh = copy.deepcopy(tiny_model())  # same init, no zeros yet
    loaded = MaskSet(fresh)
    loaded.set("0.bias", torch.zeros(16, dtype=torch.bool))  # replaced by the load
    loaded.load_state_dict(state)
    assert loaded.names() == masks.names()
    for name in masks.names():
        assert torch.equal(loaded.get(name), masks.get(name))
    assert_zero_set(fresh, loaded)
    assert "0.bias" not in loaded

    # Through torch.save/torch.load(weights_only=True), as checkpoints do.
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    again = torch.load(buf, weights_only=True)
    assert all(torch.equal(again[n], state[n]) for n in state)


def test_load_state_dict_checks_everything_first() -> None:
    model = tiny_model()
    masks = half_masks(model)
    before = masks.state_dict()
    bad = {"0.weight": torch.zeros(16, 8, dtype=torch.bool), "2.weight": torch.ones(3, dtype=torch.bool)}
    with pytest.raises(ValueError, match="2.weight"):
        masks.load_state_dict(bad)
    assert all(torch.equal(masks.get(n), before[n]) for n in before)


def test_remove_forgets_a_mask() -> None:
    model = tiny_model()
    masks = half_masks(model)
    masks.remove("2.bias")
    assert "2.bias" not in masks and len(masks) == 2
