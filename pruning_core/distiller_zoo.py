"""Distiller's model zoo, module for module: the CIFAR-10 ResNets, pre-activation ResNets, Plain20 and VGGs, the
MNIST Simplenet, ImageNet MobileNet v1, AlexNet-BN and pre-activation ResNets, and the word language model
(``RNNModel``).

Distiller's schedules and sensitivity CSVs name parameters (``layer1.0.conv1.weight``, ``features.5.weight``,
``model.3.0.weight``, ``rnn.weight_ih_l1``), so each network here keeps the exact module tree and parameter
names and shapes of Distiller's definition (``distiller/models/cifar10/*.py``, ``mnist/simplenet_mnist.py``,
``imagenet/mobilenet.py``, ``imagenet/alexnet_batchnorm.py``, ``imagenet/preresnet_imagenet.py``,
``examples/word_language_model/model.py``). What is left out holds no weights: the ResNets' layer-removal gates
(every gate is open in Distiller's builds) and its ``EltwiseAdd`` module (a plain out-of-place add, so hooks and
thinning see unmodified tensors).

The catalogue (``names.py``) lists each name with its input shape and class count; :data:`BUILDERS` is how
``models.create_model`` builds them: ``build(num_classes, input_shape)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BUILDERS", "PREACT_IMAGENET", "VGG_CFG", "AlexNetBN", "BasicBlock", "MobileNet", "PlainBlock",
           "PlainCifar", "PreactBasicBlock", "PreactImagenetBlock", "PreactResNet", "PreactResNetCifar",
           "RESNET_CIFAR_DEPTHS", "RNNModel", "ResNetCifar", "Simplenet", "VGGCifar"]


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _he_init(model: nn.Module) -> None:
    """Distiller's CIFAR ResNet initialisation: conv weights N(0, 2/(k*k*out)), BatchNorm scale 1 and shift 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.data.normal_(0, math.sqrt(2.0 / n))
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.data.fill_(1)
            m.bias.data.zero_()


# -- resnet_cifar.py -----------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    """Distiller's resnet_cifar BasicBlock: conv1-bn1-relu1, conv2-bn2, + residual (``downsample``), relu2."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
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
    """Distiller's ResNetCifar (He et al. 2016, CIFAR variant): a 16-channel stem, 3 stages of 16/32/64 channels
    (a 1x1 conv + BN ``downsample`` where a stage halves the size), 8x8 average pooling, one ``fc``."""

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
        _he_init(self)

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


#: blocks per stage of each CIFAR ResNet depth (depth = 6n + 2), Distiller's and He et al.'s.
RESNET_CIFAR_DEPTHS: dict[int, int] = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18, 1202: 200}


# -- preresnet_cifar.py --------------------------------------------------------------------------------

class PreactBasicBlock(nn.Module):
    """Distiller's PreactBasicBlock: pre_bn-pre_relu, conv1-bn-relu, conv2, + residual.

    The residual of a downsampling block is ``downsample`` applied to the pre-activation when
    ``preact_downsample`` (the ``_conv_ds`` networks' 1x1 conv), else to the block's raw input (the default
    networks' average pool + zero channel padding)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 preact_downsample: bool = True) -> None:
        super().__init__()
        self.pre_bn = nn.BatchNorm2d(inplanes)
        self.pre_relu = nn.ReLU(inplace=False)
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=False)
        self.conv2 = _conv3x3(planes, planes)
        self.downsample = downsample
        self.stride = stride
        self.preact_downsample = preact_downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        preact = self.pre_relu(self.pre_bn(x))
        out = self.conv2(self.relu(self.bn(self.conv1(preact))))
        if self.downsample is None:
            residual = x
        else:
            residual = self.downsample(preact if self.preact_downsample else x)
        return out + residual


class PreactResNetCifar(nn.Module):
    """Distiller's PreactResNetCifar (He et al. 2016, "Identity Mappings"): ``conv1``, 3 stages of pre-activation
    blocks, ``final_bn``-``final_relu``, 8x8 average pooling, ``fc``. ``conv_downsample`` gives the ``_conv_ds``
    networks (a 1x1 conv shortcut) instead of the weightless average-pool + channel-padding shortcut."""

    def __init__(self, layers: tuple[int, int, int], num_classes: int = 10, conv_downsample: bool = False) -> None:
        super().__init__()
        self.inplanes = 16
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=3, stride=1, padding=1, bias=False)
        self.layer1 = self._make_layer(16, layers[0], conv_downsample=conv_downsample)
        self.layer2 = self._make_layer(32, layers[1], stride=2, conv_downsample=conv_downsample)
        self.layer3 = self._make_layer(64, layers[2], stride=2, conv_downsample=conv_downsample)
        self.final_bn = nn.BatchNorm2d(64 * PreactBasicBlock.expansion)
        self.final_relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(8, stride=1)
        self.fc = nn.Linear(64 * PreactBasicBlock.expansion, num_classes)
        _he_init(self)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1, conv_downsample: bool = False) -> nn.Sequential:
        downsample: nn.Module | None = None
        outplanes = planes * PreactBasicBlock.expansion
        if stride != 1 or self.inplanes != outplanes:
            if conv_downsample:
                downsample = nn.Conv2d(self.inplanes, outplanes, kernel_size=1, stride=stride, bias=False)
            else:  # strided average pooling, and zero channels padded on both sides (dim 1 of N, C, H, W)
                pad = int(self.inplanes / 2)
                downsample = nn.Sequential(nn.AvgPool2d(2), nn.ConstantPad3d((0, 0, 0, 0, pad, pad), 0))
        layers = [PreactBasicBlock(self.inplanes, planes, stride, downsample, conv_downsample)]
        self.inplanes = outplanes
        layers += [PreactBasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = self.avgpool(self.final_relu(self.final_bn(x)))
        return self.fc(x.view(x.size(0), -1))


# -- imagenet/preresnet_imagenet.py --------------------------------------------------------------------

class PreactImagenetBlock(nn.Module):
    """Distiller's ImageNet PreactBasicBlock (``expansion`` 1) or PreactBottleneck (4): ``pre_bn``-``pre_relu``
    (absent where ``preactivate`` is off: the first block, pre-activated by the stem), then conv-``bn1_2``-relu,
    (conv-``bn2_3``-relu,) conv, + the residual (``downsample`` of the pre-activation)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 preactivate: bool = True, bottleneck: bool = False) -> None:
        super().__init__()
        self.expansion = 4 if bottleneck else 1
        self.pre_bn = nn.BatchNorm2d(inplanes) if preactivate else None
        self.pre_relu = nn.ReLU(inplace=False) if preactivate else None
        if bottleneck:
            self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
            self.bn1_2 = nn.BatchNorm2d(planes)
            self.relu1_2 = nn.ReLU(inplace=False)
            self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
            self.bn2_3 = nn.BatchNorm2d(planes)
            self.relu2_3 = nn.ReLU(inplace=False)
            self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        else:
            self.conv1 = _conv3x3(inplanes, planes, stride)
            self.bn1_2 = nn.BatchNorm2d(planes)
            self.relu1_2 = nn.ReLU(inplace=False)
            self.conv2 = _conv3x3(planes, planes)
        self.downsample = downsample
        self.stride = stride
        self.preactivate = preactivate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        preact = self.pre_relu(self.pre_bn(x)) if self.pre_bn is not None and self.pre_relu is not None else x
        out = self.conv2(self.relu1_2(self.bn1_2(self.conv1(preact))))
        if self.expansion == 4:
            out = self.conv3(self.relu2_3(self.bn2_3(out)))
        residual = x if self.downsample is None else self.downsample(preact)
        return out + residual


class PreactResNet(nn.Module):
    """Distiller's ImageNet PreactResNet (3x224x224): conv1-bn1-relu1-maxpool stem, 4 stages of
    :class:`PreactImagenetBlock` (a 1x1 conv ``downsample.0`` shortcut where needed), ``final_bn``-``final_relu``,
    7x7 average pooling, ``fc``."""

    def __init__(self, layers: tuple[int, int, int, int], bottleneck: bool = False, num_classes: int = 1000) -> None:
        super().__init__()
        expansion = 4 if bottleneck else 1
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0], 1, bottleneck)
        self.layer2 = self._make_layer(128, layers[1], 2, bottleneck)
        self.layer3 = self._make_layer(256, layers[2], 2, bottleneck)
        self.layer4 = self._make_layer(512, layers[3], 2, bottleneck)
        self.final_bn = nn.BatchNorm2d(512 * expansion)
        self.final_relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(7, stride=1)
        self.fc = nn.Linear(512 * expansion, num_classes)
        _he_init(self)

    def _make_layer(self, planes: int, blocks: int, stride: int, bottleneck: bool) -> nn.Sequential:
        out_planes = planes * (4 if bottleneck else 1)
        downsample = None
        if stride != 1 or self.inplanes != out_planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, out_planes, kernel_size=1, stride=stride, bias=False))
        # the first block of the first stage is not pre-activated: the stem's bn1-relu1 (+ maxpool) did that
        layers = [PreactImagenetBlock(self.inplanes, planes, stride, downsample, stride != 1, bottleneck)]
        self.inplanes = out_planes
        layers += [PreactImagenetBlock(self.inplanes, planes, bottleneck=bottleneck) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu1(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.avgpool(self.final_relu(self.final_bn(x)))
        return self.fc(x.view(x.size(0), -1))


#: Distiller's ImageNet pre-activation ResNets: depth -> (blocks per stage, bottleneck blocks).
PREACT_IMAGENET: dict[int, tuple[tuple[int, int, int, int], bool]] = {
    18: ((2, 2, 2, 2), False), 34: ((3, 4, 6, 3), False), 50: ((3, 4, 6, 3), True), 101: ((3, 4, 23, 3), True),
    152: ((3, 8, 36, 3), True),
}


# -- plain_cifar.py ------------------------------------------------------------------------------------

class PlainBlock(nn.Module):
    """Distiller's plain_cifar BasicBlock: two conv(-bn)-relu pairs and no shortcut (``bn1``/``bn2`` are None
    without batch norm, as in Distiller's ``plain20_cifar_nobn``)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, batch_norm: bool = True) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes) if batch_norm else None
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes) if batch_norm else None
        self.relu2 = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.relu1(self.bn1(out) if self.bn1 is not None else out)
        out = self.conv2(out)
        return self.relu2(self.bn2(out) if self.bn2 is not None else out)


class PlainCifar(nn.Module):
    """Distiller's PlainCifar: ResNetCifar's layout without shortcuts (so no ``downsample`` modules)."""

    def __init__(self, blocks: tuple[int, int, int], num_classes: int = 10, batch_norm: bool = True) -> None:
        super().__init__()
        self.inplanes = 16
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes) if batch_norm else None
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(16, blocks[0], 1, batch_norm)
        self.layer2 = self._make_layer(32, blocks[1], 2, batch_norm)
        self.layer3 = self._make_layer(64, blocks[2], 2, batch_norm)
        self.avgpool = nn.AvgPool2d(8, stride=1)
        self.fc = nn.Linear(64 * PlainBlock.expansion, num_classes)

    def _make_layer(self, planes: int, num_blocks: int, stride: int, batch_norm: bool) -> nn.Sequential:
        blocks = [PlainBlock(self.inplanes, planes, stride, batch_norm=batch_norm)]
        self.inplanes = planes * PlainBlock.expansion
        blocks += [PlainBlock(self.inplanes, planes, 1, batch_norm=batch_norm) for _ in range(num_blocks - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.relu(self.bn1(x) if self.bn1 is not None else x)
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.avgpool(x)
        return self.fc(x.view(x.size(0), -1))


# -- vgg_cifar.py --------------------------------------------------------------------------------------

#: VGG configurations (channels, ``"M"`` a 2x2 max-pool): A = VGG-11, B = 13, D = 16, E = 19.
VGG_CFG: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGGCifar(nn.Module):
    """Distiller's VGGCifar: ``features`` (conv-ReLU per cfg entry, conv-BN-ReLU with ``batch_norm``; convs with
    bias) and one Linear ``classifier`` (512 -> classes). Without batch norm VGG-16's convs are ``features.0, 2,
    5, 7, 10, ...``; with it ``features.0, 3, 7, 10, 14, ...``."""

    def __init__(self, cfg: list[int | str] = VGG_CFG["D"], num_classes: int = 10, batch_norm: bool = False) -> None:
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
        for m in self.modules():  # torchvision's VGG initialisation
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


# -- mnist/simplenet_mnist.py --------------------------------------------------------------------------

class Simplenet(nn.Module):
    """Distiller's simplenet_mnist (PyTorch's MNIST example): two 5x5 convs, two linear layers; it returns
    log-probabilities (cross-entropy on them equals cross-entropy on the logits)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5, 1)
        self.conv2 = nn.Conv2d(20, 50, 5, 1)
        self.fc1 = nn.Linear(4 * 4 * 50, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2, 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2, 2)
        x = F.relu(self.fc1(x.view(-1, 4 * 4 * 50)))
        return F.log_softmax(self.fc2(x), dim=1)


# -- imagenet/mobilenet.py -----------------------------------------------------------------------------

class MobileNet(nn.Module):
    """Distiller's MobileNet v1 (Howard et al. 2017) for 3x224x224: ``model`` is a Sequential of a conv-BN-ReLU
    stem (``model.0.{0,1,2}``), 13 depthwise-separable blocks (``model.N.{0..5}``: depthwise conv-BN-ReLU,
    pointwise conv-BN-ReLU) and a 7x7 average pool; then ``fc``. ``channel_multiplier`` gives mobilenet_025/050/075."""

    def __init__(self, channel_multiplier: float = 1.0, min_channels: int = 8, num_classes: int = 1000) -> None:
        super().__init__()
        if channel_multiplier <= 0:
            raise ValueError("channel_multiplier must be > 0")

        def conv_bn_relu(n_ifm: int, n_ofm: int, kernel_size: int, stride: int = 1, padding: int = 0,
                         groups: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(n_ifm, n_ofm, kernel_size, stride=stride, padding=padding, groups=groups, bias=False),
                    nn.BatchNorm2d(n_ofm), nn.ReLU(inplace=True)]

        def depthwise_conv(n_ifm: int, n_ofm: int, stride: int) -> nn.Sequential:
            return nn.Sequential(*conv_bn_relu(n_ifm, n_ifm, 3, stride=stride, padding=1, groups=n_ifm),
                                 *conv_bn_relu(n_ifm, n_ofm, 1, stride=1))

        self.channels = [max(math.floor(n * channel_multiplier), min_channels) for n in (32, 64, 128, 256, 512, 1024)]
        c = self.channels
        # (in, out, stride) of the 13 depthwise-separable blocks
        blocks = [(c[0], c[1], 1), (c[1], c[2], 2), (c[2], c[2], 1), (c[2], c[3], 2), (c[3], c[3], 1),
                  (c[3], c[4], 2), *[(c[4], c[4], 1)] * 5, (c[4], c[5], 2), (c[5], c[5], 1)]
        self.model = nn.Sequential(nn.Sequential(*conv_bn_relu(3, c[0], 3, stride=2, padding=1)),
                                   *(depthwise_conv(i, o, s) for i, o, s in blocks),
                                   nn.AvgPool2d(7))
        self.fc = nn.Linear(c[5], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.model(x)
        return self.fc(x.view(-1, x.size(1)))


# -- imagenet/alexnet_batchnorm.py ---------------------------------------------------------------------

class AlexNetBN(nn.Module):
    """Distiller's alexnet_bn (TensorPack's DoReFa AlexNet): grouped convs, BatchNorm after every conv but the
    first and after the two hidden linear layers (``eps=1e-4, momentum=0.9``), for 3x224x224."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()

        def bn2d(n: int) -> nn.BatchNorm2d:
            return nn.BatchNorm2d(n, eps=1e-4, momentum=0.9)

        self.features = nn.Sequential(
            nn.Conv2d(3, 96, kernel_size=12, stride=4),                           # 0: 224 -> 54
            nn.ReLU(inplace=True),
            nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=2, bias=False),   # 2
            bn2d(256),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),                # 54 -> 27
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 384, kernel_size=3, padding=1, bias=False),            # 6
            bn2d(384),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),                     # 27 -> 14
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=2, bias=False),  # 10
            bn2d(384),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=2, bias=False),  # 13
            bn2d(256),
            nn.MaxPool2d(kernel_size=3, stride=2),                                # 14 -> 6
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Sequential(
            nn.Linear(256 * 6 * 6, 4096, bias=False),
            nn.BatchNorm1d(4096, eps=1e-4, momentum=0.9),
            nn.ReLU(inplace=True),
            nn.Linear(4096, 4096, bias=False),
            nn.BatchNorm1d(4096, eps=1e-4, momentum=0.9),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )
        for m in self.modules():  # Distiller's initialisation: N(0, 2 / fan_in)
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1] if isinstance(m, nn.Conv2d) \
                    else m.in_features
                m.weight.data.normal_(0, math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.data.fill_(0)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                m.weight.data.fill_(1)
                m.bias.data.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(x.view(x.size(0), 256 * 6 * 6))


# -- examples/word_language_model/model.py -------------------------------------------------------------

class RNNModel(nn.Module):
    """Distiller's word language model (PyTorch's example RNNModel): ``encoder`` embedding, ``rnn`` (an LSTM,
    GRU or plain RNN of ``nlayers``, sequence-first as in Distiller), dropout ``drop``, ``decoder`` linear.
    ``tie_weights`` shares the decoder's weight with the encoder's (Press & Wolf 2016), so the model has one
    ``encoder.weight`` and no ``decoder.weight`` parameter, as in Distiller's ``--tied`` runs.

    ``forward(tokens)`` takes prunescope's batch-first token ids [B, T] and returns logits [B, T, ntoken] (what
    the ``language-model`` task scores; torch.fx traces it, the rnn a leaf); :meth:`step` is Distiller's
    ``forward(input, hidden)``, which also returns the new hidden state."""

    def __init__(self, rnn_type: str = "LSTM", ntoken: int = 10000, ninp: int = 200, nhid: int = 200,
                 nlayers: int = 2, dropout: float = 0.2, tie_weights: bool = True) -> None:
        super().__init__()
        self.ntoken, self.ninp, self.nhid, self.nlayers = ntoken, ninp, nhid, nlayers
        self.rnn_type, self.tie_weights = rnn_type, tie_weights
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        if rnn_type in ("LSTM", "GRU"):
            self.rnn: nn.RNNBase = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout)
        elif rnn_type in ("RNN_TANH", "RNN_RELU"):
            self.rnn = nn.RNN(ninp, nhid, nlayers, nonlinearity=rnn_type[4:].lower(), dropout=dropout)
        else:
            raise ValueError(f"rnn_type {rnn_type!r}: choose LSTM, GRU, RNN_TANH or RNN_RELU")
        self.decoder = nn.Linear(nhid, ntoken)
        if tie_weights:
            if nhid != ninp:
                raise ValueError(f"tied weights need nhid == ninp (the embedding size), got {nhid} and {ninp}")
            self.decoder.weight = self.encoder.weight
        initrange = 0.1
        self.encoder.weight.data.uniform_(-initrange, initrange)
        self.decoder.bias.data.zero_()
        self.decoder.weight.data.uniform_(-initrange, initrange)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        output, _ = self.rnn(self.drop(self.encoder(tokens.t())))  # [T, B, nhid]: the rnn is sequence-first
        return self.decoder(self.drop(output)).transpose(0, 1)

    def step(self, tokens: torch.Tensor, hidden: Any) -> tuple[torch.Tensor, Any]:
        """Distiller's ``forward(input, hidden)`` on batch-first tokens: (logits [B, T, ntoken], new hidden)."""
        output, hidden = self.rnn(self.drop(self.encoder(tokens.t())), hidden)
        return self.decoder(self.drop(output)).transpose(0, 1), hidden

    def init_hidden(self, bsz: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Zero hidden state for a batch of ``bsz`` (a pair for an LSTM), as Distiller's training loop starts."""
        weight = next(self.parameters())
        zeros = weight.new_zeros(self.nlayers, bsz, self.nhid)
        return (zeros, weight.new_zeros(self.nlayers, bsz, self.nhid)) if self.rnn_type == "LSTM" else zeros


# -- how each catalogue name is built ------------------------------------------------------------------

Builder = Callable[[int, tuple[int, ...]], nn.Module]


def _resnets() -> dict[str, Builder]:
    out: dict[str, Builder] = {}
    for depth, n in RESNET_CIFAR_DEPTHS.items():
        out[f"resnet{depth}_cifar"] = lambda c, s, n=n: ResNetCifar((n, n, n), c)
        if depth != 1202:  # Distiller's preresnet_cifar exports 20, 32, 44, 56 and 110
            out[f"preact_resnet{depth}_cifar"] = lambda c, s, n=n: PreactResNetCifar((n, n, n), c)
            out[f"preact_resnet{depth}_cifar_conv_ds"] = lambda c, s, n=n: PreactResNetCifar((n, n, n), c, True)
    return out


def _vggs() -> dict[str, Builder]:
    out: dict[str, Builder] = {}
    for depth, cfg in (("11", "A"), ("13", "B"), ("16", "D"), ("19", "E")):
        out[f"vgg{depth}_cifar"] = lambda c, s, cfg=cfg: VGGCifar(VGG_CFG[cfg], c, batch_norm=False)
        out[f"vgg{depth}_bn_cifar"] = lambda c, s, cfg=cfg: VGGCifar(VGG_CFG[cfg], c, batch_norm=True)
    return out


#: Distiller's names -> ``build(num_classes, input_shape)``. ``models.py`` builds each catalogue entry with the
#: builder of its canonical name or of one of its Distiller aliases (``resnet20-cifar`` is ``resnet20_cifar``).
BUILDERS: dict[str, Builder] = {
    **_resnets(),
    "plain20_cifar": lambda c, s: PlainCifar((3, 3, 3), c),
    "plain20_cifar_nobn": lambda c, s: PlainCifar((3, 3, 3), c, batch_norm=False),
    **_vggs(),
    "simplenet_mnist": lambda c, s: Simplenet(c),
    "mobilenet": lambda c, s: MobileNet(num_classes=c),
    "mobilenet_025": lambda c, s: MobileNet(0.25, num_classes=c),
    "mobilenet_050": lambda c, s: MobileNet(0.5, num_classes=c),
    "mobilenet_075": lambda c, s: MobileNet(0.75, num_classes=c),
    "alexnet_bn": lambda c, s: AlexNetBN(c),
    **{f"preact_resnet{d}": lambda c, s, d=d: PreactResNet(*PREACT_IMAGENET[d], num_classes=c)
       for d in PREACT_IMAGENET},
    # ``c`` is the vocabulary (a ``text`` dataset's size); the sequence length is free
    "word_lang_model": lambda c, s: RNNModel("LSTM", c),
}
