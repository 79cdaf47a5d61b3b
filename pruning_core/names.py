"""Known model and dataset names, torch-free so the API can validate specs without importing torch.

``models.py`` and ``datasets.py`` import these lists; keep them the single place names are declared.
"""

from __future__ import annotations

#: prunescope's own architectures (Distiller aliases map onto these).
MODEL_NAMES: tuple[str, ...] = (
    "digits-cnn",
    "lenet-300-100",
    "lenet5",
    "resnet20-cifar",
    "resnet56-cifar",
    "vgg16-cifar",
)

#: Distiller spellings accepted as aliases.
MODEL_ALIASES: dict[str, str] = {
    "resnet20_cifar": "resnet20-cifar",
    "resnet56_cifar": "resnet56-cifar",
    "vgg16_cifar": "vgg16-cifar",
    "lenet_300_100": "lenet-300-100",
    "digits_cnn": "digits-cnn",
}

#: torchvision classification models accepted as they are named there.
TORCHVISION_MODEL_NAMES: tuple[str, ...] = (
    "alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "googlenet", "inception_v3",
    "mnasnet1_0", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "regnet_y_400mf",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
    "shufflenet_v2_x1_0", "squeezenet1_0", "squeezenet1_1", "vgg11", "vgg11_bn", "vgg16", "vgg16_bn",
    "vgg19", "vgg19_bn", "wide_resnet50_2",
)

DATASET_NAMES: tuple[str, ...] = ("digits", "synthetic", "cifar10", "mnist", "imagefolder")

#: datasets that read files and therefore need a ``root`` option.
DATASETS_WITH_ROOT: tuple[str, ...] = ("cifar10", "mnist", "imagefolder")


def canonical_model_name(name: str) -> str | None:
    """The canonical spelling of a known model name, or None if it is unknown."""
    if name in MODEL_NAMES or name in TORCHVISION_MODEL_NAMES:
        return name
    return MODEL_ALIASES.get(name)
