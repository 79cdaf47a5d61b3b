"""Models by name: forward passes on each declared input shape and Distiller's exact parameter names."""

from __future__ import annotations

import pytest
import torch

from pruning_core.models import canonical_name, create_model, list_models, model_info

BUILTIN = ["digits-cnn", "lenet-300-100", "lenet5", "resnet20-cifar", "resnet56-cifar", "vgg16-cifar"]


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_forward_on_declared_shape(name: str) -> None:
    info = model_info(name)
    model = create_model(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *info.input_shape))
    assert out.shape == (2, info.num_classes)


def test_torchvision_model_by_its_own_name() -> None:
    info = model_info("resnet18")
    assert (info.input_shape, info.num_classes) == ((3, 224, 224), 1000)
    model = create_model("resnet18", num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    assert "mobilenet_v2" in list_models()
    assert model_info("inception_v3").input_shape == (3, 299, 299)
    assert model_info("efficientnet_b3").input_shape == (3, 300, 300)  # its weights' crop, not 224


def test_aliases_and_unknown_name() -> None:
    assert canonical_name("resnet20_cifar") == "resnet20-cifar"
    assert canonical_name("resnet56_cifar") == "resnet56-cifar"
    assert canonical_name("vgg16_cifar") == "vgg16_cifar"  # Distiller's, without BatchNorm: its own architecture
    assert canonical_name("vgg16_bn_cifar") == "vgg16-cifar"
    assert canonical_name("resnet18") == "resnet18"
    with pytest.raises(ValueError, match="known models: digits-cnn"):
        create_model("resnet21-cifar")


def test_same_seed_same_initial_weights_without_touching_global_rng() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    a, b = create_model("lenet5", seed=3), create_model("lenet5", seed=3)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), before)
    for (ka, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(va, vb), ka
    assert not torch.equal(create_model("lenet5", seed=4).conv1.weight, a.conv1.weight)


def test_resnet20_cifar_has_distillers_names() -> None:
    names = [n for n, _ in create_model("resnet20-cifar").named_parameters()]
    assert names[:3] == ["conv1.weight", "bn1.weight", "bn1.bias"]
    block = [n for n in names if n.startswith("layer1.0.")]
    assert block == [
        "layer1.0.conv1.weight",
        "layer1.0.bn1.weight",
        "layer1.0.bn1.bias",
        "layer1.0.conv2.weight",
        "layer1.0.bn2.weight",
        "layer1.0.bn2.bias",
    ]
    downsample = [n for n in names if "downsample" in n]
    assert downsample == [
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.weight",
        "layer2.0.downsample.1.bias",
        "layer3.0.downsample.0.weight",
        "layer3.0.downsample.1.weight",
        "layer3.0.downsample.1.bias",
    ]
    assert names[-2:] == ["fc.weight", "fc.bias"]
    assert not any(n.startswith("layer") and "conv" in n and n.endswith("bias") for n in names)
    model = create_model("resnet20-cifar")
    ds = model.layer2[0].downsample[0]
    assert (ds.kernel_size, ds.stride, ds.bias) == ((1, 1), (2, 2), None)
    assert [model.layer1[0].conv1.out_channels, model.layer2[0].conv1.out_channels,
            model.layer3[0].conv1.out_channels] == [16, 32, 64]
    modules = dict(model.named_modules())
    assert {"relu", "layer1.0.relu1", "layer1.0.relu2"} <= set(modules)


def test_resnet56_cifar_has_nine_blocks_per_stage() -> None:
    model = create_model("resnet56-cifar")
    assert [len(model.layer1), len(model.layer2), len(model.layer3)] == [9, 9, 9]
    convs = [n for n, p in model.named_parameters() if p.dim() == 4 and "downsample" not in n]
    assert len(convs) == 55  # 1 stem + 54 block convs, +fc = 56 layers


def test_vgg16_bn_cifar_has_distillers_names() -> None:
    model = create_model("vgg16_bn_cifar")
    names = [n for n, _ in model.named_parameters()]
    assert names[:6] == ["features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias",
                         "features.3.weight", "features.3.bias"]
    convs = [n for n, p in model.named_parameters() if p.dim() == 4]
    assert len(convs) == 13 and convs[-1] == "features.40.weight"
    assert names[-2:] == ["classifier.weight", "classifier.bias"]
    assert tuple(model.classifier.weight.shape) == (10, 512)
