"""Operators' datasets (issue 14): ``prunescope.datasets`` entry points, found as a pip-installed package's are.

The plugin is a real package written by the test (``myplug`` and its ``.dist-info/entry_points.txt``) put on
``sys.path``, so discovery goes through importlib.metadata.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from pruning_core import names
from pruning_core.datasets import list_datasets, load_dataset, make_loader
from pruning_core.models import create_model
from pruning_core.sensitivity import analyze
from tests.plugins import plugin_on_path

PLUGIN = '''
import torch
from torch.utils.data import TensorDataset


def blobs(split, n="12", seed="0"):
    """Two Gaussian blobs of 1x8x8 images; options arrive as strings from the command line."""
    g = torch.Generator().manual_seed(int(seed) + (0 if split == "train" else 1))
    labels = torch.arange(int(n)) % 3
    images = torch.randn(int(n), 1, 8, 8, generator=g) + labels.view(-1, 1, 1, 1).float()
    return TensorDataset(images, labels)


blobs.input_shape = (1, 8, 8)
blobs.num_classes = 3


def plain(split):
    return TensorDataset(torch.zeros(4, 5), torch.zeros(4, dtype=torch.long))


def tokens(split):
    data = torch.arange(40).view(4, 10) % 7
    ds = TensorDataset(data[:, :-1], data[:, 1:])
    ds.task, ds.num_classes = "language-model", 7
    return ds


def broken(split):
    return 42
'''

ENTRY_POINTS = """
[prunescope.datasets]
blobs = myplug:blobs
plain-data = myplug:plain
tokens = myplug:tokens
broken = myplug:broken
synthetic = myplug:plain
bad/name = myplug:plain
"""


@pytest.fixture
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    with plugin_on_path(monkeypatch, tmp_path, PLUGIN, ENTRY_POINTS) as root:
        yield root


def test_plugin_datasets_are_listed_and_loaded_with_what_they_declare(plugin_path: Path) -> None:
    assert names.plugin_datasets() == ["blobs", "broken", "plain-data", "tokens"]  # synthetic and bad/name skipped
    assert list_datasets() == [*names.DATASET_NAMES, "blobs", "broken", "plain-data", "tokens"]
    bundle = load_dataset("blobs", "test", n="9")
    assert (bundle.name, len(bundle), bundle.input_shape, bundle.num_classes, bundle.task) == (
        "blobs", 9, (1, 8, 8), 3, "classification")
    assert not torch.equal(bundle.dataset[0][0], load_dataset("blobs", "train", n="9").dataset[0][0])
    # a built-in name keeps its meaning
    synthetic = load_dataset("synthetic", "test", n=3, shape="2x4x4")
    assert (synthetic.name, synthetic.input_shape, len(synthetic)) == ("synthetic", (2, 4, 4), 3)


def test_undeclared_facts_are_inferred_or_left_to_the_model(plugin_path: Path) -> None:
    bundle = load_dataset("plain-data")
    assert (bundle.input_shape, bundle.num_classes, bundle.task) == ((5,), None, "classification")
    lm = load_dataset("tokens")
    assert (lm.task, lm.num_classes, lm.input_shape) == ("language-model", 7, (9,))


def test_broken_plugin_fails_naming_the_entry(plugin_path: Path) -> None:
    with pytest.raises(TypeError, match=r"'broken'.*returned int, not a Dataset"):
        load_dataset("broken")
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*blobs"):
        load_dataset("nope")


def test_a_sensitivity_analysis_runs_on_a_plugin_dataset(plugin_path: Path) -> None:
    bundle = load_dataset("blobs", "test")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 8 * 8, bundle.num_classes))
    result = analyze(model, make_loader(bundle, batch_size=6), levels="0,0.5", device="cpu")
    assert result.engine == "fast" and len(result.points) == 4 and all(p.samples == 12 for p in result.points)
    lm = load_dataset("tokens")
    lstm = create_model("lstm-lm", num_classes=lm.num_classes, input_shape=lm.input_shape)
    run = analyze(lstm, make_loader(lm, batch_size=2), task=lm.task, levels="0.5", device="cpu")
    assert run.points[0].metrics["perplexity"] > 1
