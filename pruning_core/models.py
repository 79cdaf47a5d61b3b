"""Models by name: small built-in networks, Distiller's CIFAR networks, and torchvision classifiers.

The CIFAR ResNets and VGG keep Distiller's module and parameter names exactly (``layer1.0.conv1``,
``layer2.0.downsample.0``, ``features.0``, ``classifier``) so that Distiller sensitivity CSVs and
schedules, which name parameters, apply to our models unchanged.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from pruning_core.names import ARCHITECTURES, MODEL_ALIASES, MODEL_NAMES, TORCHVISION_MODEL_NAMES, canonical_model_name

__all__ = [
    "ModelInfo",
    "canonical_name",
    "create_model",
    "list_models",
    "model_info",
    "BasicBlock",
    "ResNetCifar",
    "VGGCifar",
    "DigitsCNN",
    "LeNet300100",
    "LeNet5",
]


@dataclass(frozen=True)
class ModelInfo:
    """What a model expects: one input sample's shape (C, H, W) and its number of classes."""

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int


class DigitsCNN(nn.Module):
    """A small CNN for scikit-learn's 8x8 digits: three conv-BN-ReLU stages and one linear layer.

    BatchNorm lets it train to >= 97% test top1 in 15 epochs of plain SGD (lr 0.1, batch 256), and
    named modules (``conv1`` ... ``fc``) give readable sensitivity rows.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(64)
        self.relu3 = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.pool(self.relu2(self.bn2(self.conv2(x))))
        x = self.relu3(self.bn3(self.conv3(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class LeNet300100(nn.Module):
    """LeNet-300-100 (LeCun et al. 1998), the MLP of Han et al.'s pruning experiments on MNIST."""

    def __init__(self, num_classes: int = 10, in_features: int = 28 * 28) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, 300)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(300, 100)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.fc1(torch.flatten(x, 1)))
        return self.fc3(self.relu2(self.fc2(x)))


class LeNet5(nn.Module):
    """LeNet-5 for 1x28x28 inputs (conv 6@5x5, pool, conv 16@5x5, pool, 120, 84, classes)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, kernel_size=5)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(16 * 4 * 4, 120)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        self.relu4 = nn.ReLU()
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.relu3(self.fc1(torch.flatten(x, 1)))
        return self.fc3(self.relu4(self.fc2(x)))


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Distiller's resnet_cifar BasicBlock (without its layer-removal gates, which hold no weights).

    The residual add is out-of-place so forward hooks and thinning see unmodified tensors.
    """

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=False)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu2(out + residual)


class ResNetCifar(nn.Module):
    """Distiller's ResNetCifar (He et al. 2016, CIFAR variant): 16/32/64 channels, 3 stages."""

    def __init__(self, layers: tuple[int, int, int], num_classes: int = 10) -> None:
        super().__init__()
        self.inplanes = 16
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(16, layers[0])
        self.layer2 = self._make_layer(32, layers[1], stride=2)
        self.layer3 = self._make_layer(64, layers[2], stride=2)
        self.avgpool = nn.AvgPool2d(8, stride=1)
        self.fc = nn.Linear(64 * BasicBlock.expansion, num_classes)
        for m in self.modules():  # Distiller's initialisation
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * BasicBlock.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * BasicBlock.expansion),
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * BasicBlock.expansion
        layers += [BasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.avgpool(x)
        return self.fc(x.view(x.size(0), -1))


# torchvision's / Distiller's VGG configuration "D" (VGG-16): channels, "M" = 2x2 max-pool.
_VGG16_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGGCifar(nn.Module):
    """Distiller's VGGCifar: ``features`` (conv-BN-ReLU per cfg entry) and one Linear ``classifier``."""

    def __init__(self, cfg: list[int | str] = _VGG16_CFG, num_classes: int = 10, batch_norm: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            assert isinstance(v, int)
            layers.append(nn.Conv2d(in_channels, v, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            in_channels = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512, num_classes)
        for m in self.modules():  # Distiller's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(x.view(x.size(0), -1))


# How to build prunescope's own architectures: ``build(num_classes, input_shape)``; most ignore the
# shape. Their names, shapes, class counts and aliases are in the catalogue (``names.py``).
#: Serialises seeded builds (see create_model).
_SEEDED_BUILD = threading.Lock()

_BUILDERS: dict[str, Callable[[int, tuple[int, ...]], nn.Module]] = {
    "digits-cnn": lambda n, s: DigitsCNN(n),
    # An MLP takes any image size: its first layer follows the input shape (digits: 64 inputs).
    "lenet-300-100": lambda n, s: LeNet300100(n, math.prod(s)),
    "lenet5": lambda n, s: LeNet5(n),
    "resnet20-cifar": lambda n, s: ResNetCifar((3, 3, 3), n),
    "resnet56-cifar": lambda n, s: ResNetCifar((9, 9, 9), n),
    "vgg16-cifar": lambda n, s: VGGCifar(_VGG16_CFG, n, batch_norm=True),
}
assert set(_BUILDERS) == set(MODEL_NAMES), "every prunescope architecture in the catalogue needs a builder"


def list_models() -> list[str]:
    """Every accepted name: built-ins first, then Distiller aliases, then torchvision's classifiers."""
    return [*MODEL_NAMES, *MODEL_ALIASES, *TORCHVISION_MODEL_NAMES]


def canonical_name(name: str) -> str:
    """The name a model is stored under (Distiller aliases resolved); ValueError if unknown."""
    canonical = canonical_model_name(name)
    if canonical is None:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return canonical


def model_info(name: str) -> ModelInfo:
    """Input shape and class count of a model by name, without building it."""
    entry = ARCHITECTURES[canonical_name(name)]
    return ModelInfo(entry.name, entry.input_shape, entry.num_classes)


def _build_torchvision(name: str, num_classes: int) -> nn.Module:
    import torchvision.models as tvm

    kwargs: dict[str, object] = {"weights": None, "num_classes": num_classes}
    if name in ("googlenet", "inception_v3"):
        # Auxiliary heads make training return tuples and add weights nobody prunes.
        kwargs.update(aux_logits=False, init_weights=True)
    return tvm.get_model(name, **kwargs)


def create_model(
    name: str,
    num_classes: int | None = None,
    seed: int | None = 0,
    input_shape: tuple[int, ...] | None = None,
) -> nn.Module:
    """Build a model by name with random initial weights (never downloads anything).

    ``seed`` makes the initial weights reproducible (the same name and seed give the same weights)
    without touching the global RNG; ``None`` draws from the global RNG instead. ``input_shape``
    (C, H, W) sizes models whose layers depend on it (lenet-300-100 on 8x8 digits); the model
    keeps it as ``model.input_shape`` so checkpoints can rebuild it.
    """
    info = model_info(name)
    classes = info.num_classes if num_classes is None else int(num_classes)
    shape = tuple(int(d) for d in input_shape) if input_shape is not None else info.input_shape
    builder = _BUILDERS.get(info.name)

    def build() -> nn.Module:
        model = builder(classes, shape) if builder is not None else _build_torchvision(info.name, classes)
        model.input_shape = shape
        return model

    if seed is None:
        return build()
    # The generator is process-wide: two threads building seeded models at once (a worker's runner and
    # its facts publisher) would interleave their draws, and neither model would be the seed's.
    with _SEEDED_BUILD, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()
