"""Models by name: small built-in networks, Distiller's model zoo, torchvision classifiers, and what the
operator installs: ``prunescope.models`` entry points (plugins) and, when timm is installed, ``timm/<name>``.

Distiller's networks (:mod:`pruning_core.distiller_zoo`, which ``resnet20-cifar``, ``resnet56-cifar`` and
``vgg16-cifar`` are too) keep Distiller's module and parameter names exactly (``layer1.0.conv1``,
``layer2.0.downsample.0``, ``features.0``, ``classifier``) so that Distiller sensitivity CSVs and
schedules, which name parameters, apply to our models unchanged.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from typing import Any

import torch
from torch import nn

from pruning_core.dataset_options import TASKS
from pruning_core.distiller_zoo import BUILDERS as DISTILLER_BUILDERS
from pruning_core.distiller_zoo import BasicBlock, ResNetCifar, VGGCifar
from pruning_core.limits import MAX_SHAPE_DIMS
from pruning_core.names import (
    ARCHITECTURES,
    IMAGENET_CLASSES,
    IMAGENET_SIDE,
    MODEL_ALIASES,
    MODEL_NAMES,
    PLUGIN_GROUP,
    TIMM_PREFIX,
    TORCHVISION_MODEL_NAMES,
    UNSUPPORTED_ARCHITECTURES,
    canonical_model_name,
    plugin_entry_points,
    plugin_models,
)

log = logging.getLogger(__name__)

__all__ = [
    "ModelInfo",
    "canonical_name",
    "create_model",
    "list_models",
    "model_info",
    "PLUGIN_GROUP",
    "plugin_models",
    "plugin_architectures",
    "timm_models",
    "BasicBlock",
    "ResNetCifar",
    "VGGCifar",
    "DigitsCNN",
    "LeNet300100",
    "LeNet5",
    "LSTMLanguageModel",
    "TransformerLanguageModel",
    "example_input",
]


@dataclass(frozen=True)
class ModelInfo:
    """What a model expects: one input sample's shape (C, H, W) and its number of classes; ``source`` says
    who builds it (``prunescope``, ``torchvision``, ``plugin`` or ``timm``). A ``language-model`` (``task``)
    takes ``(seq_len,)`` token ids and predicts ``num_classes`` (its vocabulary) logits per token."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    source: str = "prunescope"
    task: str = "classification"

    def as_json(self) -> dict[str, Any]:
        """The form workers publish to the store (lists, not tuples)."""
        return {"name": self.name, "source": self.source, "input_shape": list(self.input_shape),
                "num_classes": self.num_classes}


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


class LSTMLanguageModel(nn.Module):
    """A tiny word-level LSTM language model: token ids [B, T] -> next-token logits [B, T, vocab].

    torch.fx traces it (the LSTM is one leaf module), so sensitivity runs on the fast engine; the
    prunable weights by default are the decoder's (name ``lstm.weight_ih_l0`` etc. to prune the LSTM's).
    """

    def __init__(self, vocab: int = 256, embed: int = 32, hidden: int = 64, layers: int = 1) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=layers, batch_first=True)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(tokens))
        return self.decoder(out)


class TransformerLanguageModel(nn.Module):
    """A tiny causal transformer language model: token ids [B, T] (T <= ``context``) -> logits [B, T, vocab].

    Learned positions and a causal mask kept as a buffer are sliced to T, so torch.fx traces it (each
    ``nn.TransformerEncoderLayer`` is one leaf module) and sensitivity runs on the fast engine.
    """

    def __init__(self, vocab: int = 256, context: int = 32, width: int = 32, heads: int = 2, layers: int = 2,
                 ff: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(torch.zeros(context, width))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(width, heads, ff, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)
        mask = torch.triu(torch.full((context, context), float("-inf")), diagonal=1)
        self.register_buffer("causal_mask", mask, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        x = self.embed(tokens) + self.pos[:t]
        mask = torch.narrow(torch.narrow(self.causal_mask, 0, 0, t), 1, 0, t)  # (fx traces narrow, not a slice)
        for block in self.blocks:
            x = block(x, src_mask=mask)
        return self.head(self.norm(x))


# How to build prunescope's own architectures: ``build(num_classes, input_shape)``; most ignore the
# shape. Their names, shapes, class counts and aliases are in the catalogue (``names.py``).
#: Serialises seeded builds (see create_model).
_SEEDED_BUILD = threading.Lock()

_BUILDERS: dict[str, Callable[[int, tuple[int, ...]], nn.Module]] = {
    "digits-cnn": lambda n, s: DigitsCNN(n),
    # An MLP takes any image size: its first layer follows the input shape (digits: 64 inputs).
    "lenet-300-100": lambda n, s: LeNet300100(n, math.prod(s)),
    "lenet5": lambda n, s: LeNet5(n),
    # language models: ``n`` is the vocabulary, ``s == (seq_len,)`` sizes the transformer's context
    "lstm-lm": lambda n, s: LSTMLanguageModel(n),
    "transformer-lm": lambda n, s: TransformerLanguageModel(n, context=s[0]),
    # Distiller's zoo, by the canonical name of the entry its name (or alias) is: resnet20_cifar is resnet20-cifar
    **{canonical: build for name, build in DISTILLER_BUILDERS.items()
       if (canonical := canonical_model_name(name)) is not None},
}
assert set(_BUILDERS) == set(MODEL_NAMES), "every prunescope architecture in the catalogue needs a builder"


def list_models() -> list[str]:
    """Every built-in name (the catalogue): prunescope's own, then Distiller aliases, then torchvision's
    classifiers. What installed packages add is in :func:`plugin_models` and :func:`timm_models`."""
    return [*MODEL_NAMES, *MODEL_ALIASES, *TORCHVISION_MODEL_NAMES]


# -- architectures from code the operator installs -----------------------------------------------

# A ``PLUGIN_GROUP`` entry names a factory: it takes ``num_classes`` as a keyword and may carry
# ``input_shape`` and ``num_classes`` attributes (the defaults below otherwise), and ``task``
# (``language-model`` for a model of token ids; ``classification`` otherwise).
#: What a plugin factory is taken to expect when it carries no ``input_shape`` / ``num_classes``.
PLUGIN_DEFAULT_INPUT_SHAPE: tuple[int, int, int] = (3, IMAGENET_SIDE, IMAGENET_SIDE)
PLUGIN_DEFAULT_CLASSES = IMAGENET_CLASSES


def _plugin_factory(ep: EntryPoint) -> Callable[..., nn.Module]:
    factory = ep.load()
    if not callable(factory):
        raise TypeError(f"{PLUGIN_GROUP} entry {ep.name!r} ({ep.value}) is not callable: "
                        "point it at a function or class that returns an nn.Module")
    return factory


def _plugin_info(ep: EntryPoint, factory: Any) -> ModelInfo:
    """A factory's declared ``input_shape`` and ``num_classes`` (or the defaults), checked."""
    shape = getattr(factory, "input_shape", PLUGIN_DEFAULT_INPUT_SHAPE)
    classes = getattr(factory, "num_classes", PLUGIN_DEFAULT_CLASSES)
    where = f"{PLUGIN_GROUP} entry {ep.name!r} ({ep.value})"
    if (not isinstance(shape, Sequence) or not 1 <= len(shape) <= MAX_SHAPE_DIMS
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)):
        raise ValueError(f"{where}: input_shape must be 1 to {MAX_SHAPE_DIMS} positive ints such as (3, 224, 224), "
                         f"not {shape!r}")
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
        raise ValueError(f"{where}: num_classes must be a positive int such as 1000, not {classes!r}")
    task = getattr(factory, "task", "classification")
    if task not in TASKS:
        raise ValueError(f"{where}: task must be one of {', '.join(TASKS)}, not {task!r}")
    return ModelInfo(ep.name, tuple(shape), classes, "plugin", task)


def plugin_architectures() -> list[ModelInfo]:
    """Every installed plugin architecture with its shape and class count (imports each plugin's module).
    A plugin that fails to import or declares bad attributes is left out with a warning, so one broken
    package does not hide the others."""
    out = []
    for name, ep in sorted(plugin_entry_points().items()):
        try:
            out.append(_plugin_info(ep, _plugin_factory(ep)))
        except Exception:  # noqa: BLE001 - an operator's code may raise anything on import
            log.warning("skipping %s entry %r (%s): it cannot be loaded", PLUGIN_GROUP, name, ep.value, exc_info=True)
    return out


def timm_installed() -> bool:
    """Whether timm can be imported here (checked without importing it)."""
    return importlib.util.find_spec("timm") is not None


def timm_models() -> list[str]:
    """Every timm architecture as ``timm/<name>`` (empty without timm)."""
    if not timm_installed():
        return []
    import timm

    return [TIMM_PREFIX + name for name in timm.list_models()]


def _timm_base(name: str) -> str | None:
    """timm's own name for ``timm/<name>`` if timm is installed and knows it, else None."""
    if not name.startswith(TIMM_PREFIX) or not timm_installed():
        return None
    import timm

    base = name[len(TIMM_PREFIX):]
    return base if timm.is_model(base) else None


def _timm_info(name: str, base: str) -> ModelInfo:
    """Input size and class count from timm's default configuration (a head-less model: ImageNet's 1000)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(base)
    shape = tuple(int(d) for d in cfg.input_size) if cfg is not None and cfg.input_size else PLUGIN_DEFAULT_INPUT_SHAPE
    classes = int(cfg.num_classes) if cfg is not None and cfg.num_classes else IMAGENET_CLASSES
    return ModelInfo(name, shape, classes, "timm")


def _build_timm(base: str, num_classes: int, shape: tuple[int, ...], default: tuple[int, ...]) -> nn.Module:
    """A timm model with random weights: ``pretrained=False``, so nothing is ever downloaded."""
    import timm

    kwargs: dict[str, Any] = {"pretrained": False, "num_classes": num_classes}
    if shape[0] != default[0]:
        kwargs["in_chans"] = shape[0]
    if len(shape) == 3 and tuple(shape[1:]) != tuple(default[1:]):
        try:  # transformers fix their patch grid at build time; convolutional models take any size as they are
            return timm.create_model(base, img_size=tuple(shape[1:]), **kwargs)
        except TypeError:
            pass
    return timm.create_model(base, **kwargs)


def canonical_name(name: str) -> str:
    """The name a model is stored under (Distiller aliases resolved); ValueError if unknown, or saying why for a
    Distiller architecture prunescope does not build (``names.UNSUPPORTED_ARCHITECTURES``)."""
    canonical = canonical_model_name(name)
    if canonical is not None:
        return canonical
    if name in UNSUPPORTED_ARCHITECTURES:
        raise ValueError(f"model {name!r} is not supported: {UNSUPPORTED_ARCHITECTURES[name]}")
    if name in plugin_entry_points() or _timm_base(name) is not None:
        return name
    plugins = plugin_models()
    extra = f"; plugins ({PLUGIN_GROUP}): {', '.join(plugins)}" if plugins else ""
    timm = (f"; and {TIMM_PREFIX}<name> for timm's models" if timm_installed()
            else f"; {TIMM_PREFIX}<name> needs timm installed (pip install 'prunescope[timm]')")
    raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}{extra}{timm}")


def model_info(name: str) -> ModelInfo:
    """Input shape and class count of a model by name, without building it (a plugin's module is imported)."""
    canonical = canonical_name(name)
    entry = ARCHITECTURES.get(canonical)
    if entry is not None:
        return ModelInfo(entry.name, entry.input_shape, entry.num_classes, entry.source, entry.task)
    ep = plugin_entry_points().get(canonical)
    if ep is not None:
        return _plugin_info(ep, _plugin_factory(ep))
    return _timm_info(canonical, canonical[len(TIMM_PREFIX):])


def _build_torchvision(name: str, num_classes: int) -> nn.Module:
    import torchvision.models as tvm

    kwargs: dict[str, object] = {"weights": None, "num_classes": num_classes}
    if name in ("googlenet", "inception_v3"):
        # Auxiliary heads make training return tuples and add weights nobody prunes.
        kwargs.update(aux_logits=False, init_weights=True)
    return tvm.get_model(name, **kwargs)


def _builder(info: ModelInfo) -> Callable[[int, tuple[int, ...]], nn.Module]:
    """How to build ``info``'s architecture: ``build(num_classes, input_shape)``."""
    if info.name in _BUILDERS:
        return _BUILDERS[info.name]
    if info.source == "torchvision":
        return lambda n, s: _build_torchvision(info.name, n)
    if info.source == "plugin":
        factory = _plugin_factory(plugin_entry_points()[info.name])
        return lambda n, s: factory(num_classes=n)
    base = info.name[len(TIMM_PREFIX):]
    return lambda n, s: _build_timm(base, n, s, info.input_shape)


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
    keeps it as ``model.input_shape`` so checkpoints can rebuild it. Plugin factories are called with
    ``num_classes=``; timm models are built with ``pretrained=False`` (and ``img_size`` / ``in_chans`` for
    another input shape).
    """
    info = model_info(name)
    classes = info.num_classes if num_classes is None else int(num_classes)
    shape = tuple(int(d) for d in input_shape) if input_shape is not None else info.input_shape
    builder = _builder(info)

    def build() -> nn.Module:
        model = builder(classes, shape)
        if not isinstance(model, nn.Module):
            raise TypeError(f"model {info.name!r} ({info.source}): its factory returned {type(model).__name__}, "
                            "not an nn.Module")
        model.input_shape = shape
        return model

    if seed is None:
        return build()
    # The generator is process-wide: two threads building seeded models at once (a worker's runner and
    # its facts publisher) would interleave their draws, and neither model would be the seed's.
    with _SEEDED_BUILD, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def example_input(info: ModelInfo, batch: int = 2, device: torch.device | str = "cpu") -> torch.Tensor:
    """A fixed example batch of what ``info``'s model takes: token ids (int64, all 0) for a language
    model, else ``thinning.example_input``'s seeded floats of ``input_shape``."""
    if info.task == "language-model":
        return torch.zeros((batch, *info.input_shape), dtype=torch.long, device=device)
    from pruning_core.thinning import example_input as float_example

    return float_example(info.input_shape, batch, device)
