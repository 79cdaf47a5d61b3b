"""Shared, cheap fixtures: a digits-cnn trained once per session (a few seconds on a CPU)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def trained_digits_state() -> dict:
    """state_dict of digits-cnn trained 3 epochs on digits (about 95 % test top1); copy before use."""
    import torch

    from pruning_core.datasets import load_dataset, make_loader
    from pruning_core.models import create_model
    from pruning_core.training import train

    torch.set_num_threads(1)
    model = create_model("digits-cnn")
    loader = make_loader(load_dataset("digits", "train"), batch_size=64, shuffle=True, seed=0)
    train(model, loader, epochs=3, lr=0.05, seed=0, device="cpu", progress=False)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture()
def trained_digits(trained_digits_state):
    """A fresh digits-cnn with the session's trained weights (tests may modify it freely)."""
    from pruning_core.models import create_model

    model = create_model("digits-cnn")
    model.load_state_dict(trained_digits_state)
    return model.eval()
