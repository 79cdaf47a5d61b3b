"""Checkpoints: round trip of weights, masks and metadata; files that carry code are refused unrun."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from pruning_core.checkpoint import (
    CheckpointError,
    UnsafeCheckpointError,
    load_checkpoint,
    load_model,
    load_model_and_masks,
    save_checkpoint,
)
from pruning_core.models import create_model


class _CreatesFile:
    """Unpickling this calls open(path, 'w'): the file appearing would prove code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


class _RunsShell:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("payload", [_CreatesFile, _RunsShell])
def test_checkpoint_that_runs_code_is_refused_and_never_runs(tmp_path: Path, payload: type) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": payload(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match="contains code") as err:
        load_checkpoint(path)
    assert "not a plain weights checkpoint" in str(err.value)
    with pytest.raises(UnsafeCheckpointError):
        load_model(path, "digits-cnn")
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_plain_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    with path.open("wb") as f:
        pickle.dump(_CreatesFile(marker), f)  # protocol 5: not even a torch file
    with pytest.raises(UnsafeCheckpointError, match="contains code"):
        load_checkpoint(path)
    assert not marker.exists()


def test_truncated_and_foreign_files_are_clear_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    save_checkpoint(good, create_model("lenet5"), arch="lenet5")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    for bad in (truncated, text):
        with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
            load_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_round_trip_state_masks_metadata(tmp_path: Path) -> None:
    from pruning_core.masks import MaskSet

    model = create_model("digits-cnn", seed=2)
    masks = MaskSet(model)
    keep = torch.rand(model.conv2.weight.shape, generator=torch.Generator().manual_seed(0)) > 0.3
    masks.set("conv2.weight", keep)
    meta = {"dataset": "digits", "metrics": {"top1": 98.5, "top5": 100.0}, "levels": [0.1, 0.2], "note": None}
    path = tmp_path / "ck.pt"
    save_checkpoint(path, model, arch="digits-cnn", masks=masks, metadata=meta)
    ck = load_checkpoint(path)
    assert ck.arch == "digits-cnn" and ck.metadata == meta and ck.num_classes == 10
    assert set(ck.masks) == {"conv2.weight"} and torch.equal(ck.masks["conv2.weight"], keep)
    assert ck.masks["conv2.weight"].dtype == torch.bool
    restored, restored_masks, _ = load_model_and_masks(path, "digits_cnn")
    for (name, a), b in zip(model.state_dict().items(), restored.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert restored_masks is not None and torch.equal(restored_masks.get("conv2.weight"), keep)
    assert bool((restored.conv2.weight[~keep] == 0).all())
    with pytest.raises(ValueError, match="architecture 'digits-cnn', not 'lenet5'"):
        load_model(path, "lenet5")


def test_bare_state_dict_and_non_default_classes(tmp_path: Path) -> None:
    model = create_model("lenet-300-100", num_classes=3, seed=1)
    bare = tmp_path / "bare.pt"
    torch.save(model.state_dict(), bare)
    ck = load_checkpoint(bare)
    assert ck.arch is None and ck.masks == {} and set(ck.state_dict) == set(model.state_dict())
    loaded = load_model(bare, "lenet-300-100", num_classes=3)
    assert torch.equal(loaded.fc3.weight, model.fc3.weight)
    full = tmp_path / "full.pt"
    save_checkpoint(full, model, arch="lenet-300-100")
    assert load_model(full, None).fc3.out_features == 3  # head width recorded in the checkpoint
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(bare, "lenet-300-100")  # 10-class head vs 3-class weights
    with pytest.raises(TypeError, match="metadata.bad"):
        save_checkpoint(full, model, arch="lenet-300-100", metadata={"bad": object()})


def test_fresh_model_without_path() -> None:
    model = load_model(None, "resnet20_cifar")
    assert "layer1.0.conv1.weight" in dict(model.named_parameters())
