"""The foundation's end-to-end promise: prune digits-cnn to 80%, fine-tune, the zeros stay put."""

from __future__ import annotations

import torch

from pruning_core.datasets import load_dataset, make_loader
from pruning_core.masks import MaskSet
from pruning_core.metrics import model_sparsity, prunable_parameters
from pruning_core.pruners import SparsityLevelParameterPruner
from pruning_core.training import evaluate, train


def test_prune_80_percent_then_finetune_keeps_zeros_and_recovers(trained_digits) -> None:
    model = trained_digits
    test_loader = make_loader(load_dataset("digits", "test"), batch_size=256)
    train_loader = make_loader(load_dataset("digits", "train"), batch_size=64, shuffle=True, seed=1)
    dense = evaluate(model, test_loader, device="cpu")

    masks = MaskSet(model)
    names = [name for name, _ in prunable_parameters(model)]
    SparsityLevelParameterPruner(dict.fromkeys(names, 0.8)).prune(model, masks)
    zeros_before = {n: (p == 0).clone() for n, p in model.named_parameters() if n in names}
    assert abs(model_sparsity(model) - 0.8) < 0.01
    pruned = evaluate(model, test_loader, device="cpu")

    train(model, train_loader, epochs=3, optimizer="sgd", lr=0.02, momentum=0.9, weight_decay=1e-4,
          masks=masks, seed=0, device="cpu", progress=False)
    tuned = evaluate(model, test_loader, device="cpu")
    print(f"dense {dense.top1:.2f}%  pruned 80% {pruned.top1:.2f}%  fine-tuned 3 epochs {tuned.top1:.2f}%")

    for name, zeros in zeros_before.items():
        param = dict(model.named_parameters())[name]
        assert torch.equal(param == 0, zeros), f"{name}: the set of zeros changed during fine-tuning"
    assert tuned.top1 > pruned.top1
    assert tuned.top1 >= dense.top1 - 1.0
