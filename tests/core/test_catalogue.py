"""The catalogue (``pruning_core.names``) against torchvision and the library that builds its entries.

Every architecture is built by ``create_model`` with its parameters and buffers on the meta device
(shapes only, no memory, no init cost: the whole catalogue in seconds) and run forward on its declared input
shape (token ids for the language models), so a wrong shape or class count fails here. The
torchvision part must equal what the installed torchvision lists, and each input side must be the
crop of its weights.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from pruning_core.datasets import list_datasets
from pruning_core.models import create_model, list_models, model_info
from pruning_core.names import (
    ARCHITECTURES,
    DATASET_NAMES,
    MODEL_ALIASES,
    TORCHVISION_MODEL_NAMES,
    architecture,
    canonical_model_name,
    catalogue,
)


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules built inside keep every parameter and buffer on the meta device.

    ``torch.device("meta")`` as a default device is not enough: RegNet computes its block widths with
    tensors and reads them back with ``.tolist()``, which a meta tensor cannot do.
    """
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def parameter(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        meta = None if param is None else nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(self, name, meta)

    def buffer(self: nn.Module, name: str, tensor: torch.Tensor | None, persistent: bool = True) -> None:
        register_buffer(self, name, None if tensor is None else tensor.to("meta"), persistent)

    nn.Module.register_parameter, nn.Module.register_buffer = parameter, buffer  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter, nn.Module.register_buffer = register_parameter, register_buffer  # type: ignore[method-assign]


def meta_forward(name: str, side: int | None = None) -> torch.Size:
    """Build ``name`` on meta and return its output shape for a batch of 2 at its declared input shape
    (or 3 x side x side)."""
    with parameters_on_meta():
        model = create_model(name).eval()
    assert all(t.is_meta for t in (*model.parameters(), *model.buffers())), f"{name}: a tensor escaped meta"
    shape = model_info(name).input_shape if side is None else (3, side, side)
    dtype = torch.long if ARCHITECTURES[name].takes_tokens else torch.float32
    with torch.no_grad():
        return model(torch.zeros(2, *shape, dtype=dtype, device="meta")).shape


def _default_crop(name: str) -> int:
    return tvm.get_model_weights(name).DEFAULT.transforms().crop_size[0]


def test_torchvision_part_equals_torchvision_list_models() -> None:
    assert sorted(TORCHVISION_MODEL_NAMES) == sorted(tvm.list_models(module=tvm))
    assert len(TORCHVISION_MODEL_NAMES) == 80  # the count; a torchvision that adds one fails above


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "resnet1202_cifar" else n
                                  for n in sorted(ARCHITECTURES)])  # 1202 layers: seconds of module construction
def test_library_builds_every_entry_for_its_declared_shape(name: str) -> None:
    entry = ARCHITECTURES[name]
    per_token = entry.input_shape if entry.task == "language-model" else ()  # logits [B, T, vocab]
    assert meta_forward(name) == (2, *per_token, entry.num_classes)
    assert name in list_models()


@pytest.mark.parametrize("name", TORCHVISION_MODEL_NAMES)
def test_torchvision_shape_and_classes_are_its_weights(name: str) -> None:
    """The side is the default weights' crop unless the model built without weights refuses that crop;
    then it is the crop of another of its weights (vit_h_14: 224 of SWAG_LINEAR, not 518)."""
    weights = tvm.get_model_weights(name)
    entry = ARCHITECTURES[name]
    assert entry.num_classes == len(weights.DEFAULT.meta["categories"])
    channels, height, width = entry.input_shape
    assert channels == 3 and height == width
    crops = {w.transforms().crop_size[0] for w in weights}
    assert height in crops
    if height != _default_crop(name):
        with pytest.raises(AssertionError, match="Expected 224"):
            meta_forward(name, _default_crop(name))


def test_shapes_that_differ_from_224_are_recorded() -> None:
    sides = {name: ARCHITECTURES[name].input_shape[1] for name in TORCHVISION_MODEL_NAMES}
    assert (sides["inception_v3"], sides["efficientnet_b7"], sides["swin_v2_t"], sides["vit_h_14"]) == (299, 600, 256,
                                                                                                        224)
    assert sum(side != 224 for side in sides.values()) == 15


def test_aliases_resolve_and_never_shadow_a_canonical_name() -> None:
    assert not set(MODEL_ALIASES) & set(ARCHITECTURES)
    # Distiller's BatchNorm VGG-16 is prunescope's vgg16-cifar; its plain vgg16_cifar (no BatchNorm) is its own entry
    assert MODEL_ALIASES["vgg16_bn_cifar"] == "vgg16-cifar" and "vgg16_cifar" in ARCHITECTURES
    for alias, canonical in MODEL_ALIASES.items():
        assert canonical_model_name(alias) == canonical == model_info(alias).name
        assert architecture(alias) is ARCHITECTURES[canonical]
    assert canonical_model_name("resnet21-cifar") is None and architecture("resnet21-cifar") is None


def test_library_lists_exactly_the_catalogue() -> None:
    assert sorted(list_models()) == sorted([*ARCHITECTURES, *MODEL_ALIASES])
    assert list_datasets() == list(DATASET_NAMES)
    for name in list_models():
        info, entry = model_info(name), architecture(name)
        assert entry is not None and (info.name, info.input_shape, info.num_classes) == (
            entry.name, entry.input_shape, entry.num_classes)


def test_catalogue_json_keeps_the_dashboards_fields() -> None:
    data = catalogue()
    assert data["prunescope"][:8] == ["digits-cnn", "lenet-300-100", "lenet5", "resnet20-cifar", "resnet56-cifar",
                                      "vgg16-cifar", "lstm-lm", "transformer-lm"]
    # then Distiller's zoo by Distiller's names (tests/core/test_distiller_zoo.py checks each one's layout)
    assert {"resnet1202_cifar", "preact_resnet110_cifar", "plain20_cifar", "vgg16_cifar", "mobilenet",
            "simplenet_mnist", "alexnet_bn", "word_lang_model"} <= set(data["prunescope"][8:])
    assert data["torchvision"] == sorted(tvm.list_models(module=tvm))
    assert data["aliases"]["resnet20_cifar"] == "resnet20-cifar"
    assert data["datasets"] == ["digits", "synthetic", "cifar10", "mnist", "imagefolder", "text", "synthetic-tokens"]
    by_name = {a["name"]: a for a in data["architectures"]}
    assert list(by_name) == [*data["prunescope"], *data["torchvision"]]
    assert by_name["digits-cnn"] == {"name": "digits-cnn", "source": "prunescope", "input_shape": [1, 8, 8],
                                     "num_classes": 10, "aliases": ["digits_cnn"], "task": "classification"}
    assert (by_name["lstm-lm"]["input_shape"], by_name["lstm-lm"]["task"]) == ([32], "language-model")
    assert by_name["inception_v3"]["input_shape"] == [3, 299, 299]


def test_catalogue_imports_without_torch() -> None:
    """The API validates names with it, and the API process has no torch."""
    code = ("import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
            "from pruning_core.names import catalogue, canonical_model_name, unsupported_reason\n"
            "assert 'out of scope' in unsupported_reason('maskrcnn_resnet50_fpn')\n"
            f"assert len(catalogue()['architectures']) == {len(ARCHITECTURES)}\n"
            "assert canonical_model_name('vit_h_14') == 'vit_h_14'\n"
            "assert 'pruning_core.models' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
