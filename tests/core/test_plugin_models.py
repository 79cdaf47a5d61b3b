"""Architectures from code the operator installs (issue 14): ``prunescope.models`` entry points and timm.

The plugin is a real package written by the test (``myplug/__init__.py`` and ``myplug-0.1.dist-info`` with
``METADATA`` and ``entry_points.txt``) put on ``sys.path``, so discovery goes through importlib.metadata as it
does for a pip-installed package. timm is a dev extra; its models are built with random weights only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from pruning_core import names
from pruning_core.models import (
    PLUGIN_DEFAULT_CLASSES,
    PLUGIN_DEFAULT_INPUT_SHAPE,
    canonical_name,
    create_model,
    list_models,
    model_info,
    plugin_architectures,
    timm_models,
)
from tests.plugins import TINY_NET, plugin_on_path

PLUGIN = TINY_NET + '''

def plain(num_classes: int = 1000) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 224 * 224, num_classes))


def bad_shape(num_classes: int = 3) -> nn.Module:
    return TinyNet(num_classes)


bad_shape.input_shape = "8x8"


def not_a_module(num_classes: int = 3):
    return "a string"
'''

ENTRY_POINTS = """
[prunescope.models]
tiny-plug = myplug:build
plain-plug = myplug:plain
bad-shape = myplug:bad_shape
not-module = myplug:not_a_module
resnet18 = myplug:build
bad/name = myplug:build
"""


@pytest.fixture
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    with plugin_on_path(monkeypatch, tmp_path, PLUGIN, ENTRY_POINTS) as root:
        yield root


def test_plugin_architecture_builds_with_its_declared_shape_and_classes(plugin_path: Path) -> None:
    assert "tiny-plug" in names.plugin_models()
    assert canonical_name("tiny-plug") == "tiny-plug"
    info = model_info("tiny-plug")
    assert (info.input_shape, info.num_classes, info.source) == ((1, 8, 8), 3, "plugin")
    model = create_model("tiny-plug")
    assert type(model).__name__ == "TinyNet" and model.input_shape == (1, 8, 8)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
    # num_classes reaches the factory as a keyword; the same seed gives the same weights
    assert create_model("tiny-plug", num_classes=7)(torch.zeros(1, 1, 8, 8)).shape == (1, 7)
    assert torch.equal(create_model("tiny-plug", seed=3).conv.weight, create_model("tiny-plug", seed=3).conv.weight)
    assert not torch.equal(create_model("tiny-plug", seed=3).conv.weight, create_model("tiny-plug", seed=4).conv.weight)
    # the catalogue (built-ins only) is unchanged by a plugin
    assert "tiny-plug" not in list_models() and names.architecture("tiny-plug") is None


def test_factory_without_attributes_gets_the_defaults(plugin_path: Path) -> None:
    info = model_info("plain-plug")
    assert (info.input_shape, info.num_classes) == (PLUGIN_DEFAULT_INPUT_SHAPE, PLUGIN_DEFAULT_CLASSES) == \
        ((3, 224, 224), 1000)


def test_entries_that_would_shadow_a_builtin_or_are_badly_named_are_skipped(plugin_path: Path) -> None:
    found = names.plugin_models()
    assert "resnet18" not in found and "bad/name" not in found
    assert type(create_model("resnet18")).__module__.startswith("torchvision")


def test_broken_plugins_fail_naming_the_entry_and_what_to_fix(plugin_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'bad-shape'.*input_shape must be"):
        model_info("bad-shape")
    with pytest.raises(TypeError, match=r"'not-module'.*returned str, not an nn.Module"):
        create_model("not-module")
    # what a worker publishes leaves the broken one out and keeps the others
    published = {i.name: i for i in plugin_architectures()}
    assert "bad-shape" not in published
    assert published["tiny-plug"].as_json() == {"name": "tiny-plug", "source": "plugin", "input_shape": [1, 8, 8],
                                               "num_classes": 3}


def test_unknown_names_say_what_is_known() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'no-such-net'.*timm/<name>"):
        canonical_name("no-such-net")
    with pytest.raises(ValueError, match=r"unknown model 'timm/no_such_net'"):
        model_info("timm/no_such_net")


def test_timm_models_by_prefix_with_random_weights() -> None:
    pytest.importorskip("timm")
    listed = timm_models()
    assert "timm/resnet18" in listed and "timm/vit_tiny_patch16_224" in listed and len(listed) > 500
    info = model_info("timm/resnet18")
    assert (info.input_shape, info.num_classes, info.source) == ((3, 224, 224), 1000, "timm")
    resnet = create_model("timm/resnet18", num_classes=10, input_shape=(3, 32, 32)).eval()
    assert resnet(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    # a ViT fixes its patch grid when built: built for the input asked for
    vit = create_model("timm/vit_tiny_patch16_224", num_classes=5, input_shape=(3, 32, 32))
    assert vit(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    assert torch.equal(create_model("timm/resnet18", seed=1).fc.weight, create_model("timm/resnet18", seed=1).fc.weight)
