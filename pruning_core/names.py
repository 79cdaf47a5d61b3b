"""The catalogue: every architecture and dataset prunescope knows by name, torch-free.

This is the one place names are declared. ``models.py`` builds what it lists, ``datasets.py`` loads
what it lists, and the API validates specs and answers ``GET /api/v1/architectures`` from it without
importing torch (so a slim API image knows every model a worker can build). Each architecture says
what one input sample looks like and how many classes it predicts, so ``synthetic`` data, previews
and plans can size themselves without building the model. Dataset names come from their option
declarations (``dataset_options.DATASETS``), which say what each dataset takes.

``tests/core/test_catalogue.py`` keeps the torchvision part equal to
``torchvision.models.list_models(module=torchvision.models)`` and each input side equal to the crop
size of torchvision's weights.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal

from pruning_core.dataset_options import DATASETS, TASKS

log = logging.getLogger(__name__)

Source = Literal["prunescope", "torchvision"]

#: torchvision's ImageNet classifiers predict this many classes.
IMAGENET_CLASSES = 1000
#: torchvision's usual eval crop (the side of a 3xSxS sample).
IMAGENET_SIDE = 224
#: The built-in language models' default context (tokens per sequence) and vocabulary size.
LM_SEQ_LEN = 32
LM_VOCAB = 256


@dataclass(frozen=True)
class Architecture:
    """One buildable architecture: its canonical name, where it comes from, one sample's shape and its
    class count; ``aliases`` are other spellings (Distiller's) that mean it. ``task`` is one of
    ``dataset_options.TASKS``: a ``classification`` model takes float samples of ``input_shape`` (C, H, W);
    a ``language-model`` takes ``input_shape == (seq_len,)`` token ids (int64) and predicts
    ``num_classes`` (its vocabulary) logits per token."""

    name: str
    source: Source
    input_shape: tuple[int, ...]
    num_classes: int
    aliases: tuple[str, ...] = ()
    task: str = "classification"

    def __post_init__(self) -> None:
        assert self.task in TASKS, f"{self.name}: task {self.task!r} is not one of {TASKS}"

    @property
    def takes_tokens(self) -> bool:
        """Its input is token ids (int64), not float values."""
        return self.task == "language-model"

    def as_json(self) -> dict[str, Any]:
        """The REST form (``GET /api/v1/architectures``): lists, not tuples."""
        return {"name": self.name, "source": self.source, "input_shape": list(self.input_shape),
                "num_classes": self.num_classes, "aliases": list(self.aliases), "task": self.task}


# prunescope's own networks; the aliases are Distiller's names for the same architecture, module for module
# (``distiller_zoo.py`` builds both). Distiller's plain ``vgg16_cifar`` has no BatchNorm and is its own entry
# below; ``vgg16-cifar`` has it, which is Distiller's ``vgg16_bn_cifar``.
_PRUNESCOPE: tuple[Architecture, ...] = (
    Architecture("digits-cnn", "prunescope", (1, 8, 8), 10, ("digits_cnn",)),
    Architecture("lenet-300-100", "prunescope", (1, 28, 28), 10, ("lenet_300_100",)),
    Architecture("lenet5", "prunescope", (1, 28, 28), 10),
    Architecture("resnet20-cifar", "prunescope", (3, 32, 32), 10, ("resnet20_cifar",)),
    Architecture("resnet56-cifar", "prunescope", (3, 32, 32), 10, ("resnet56_cifar",)),
    Architecture("vgg16-cifar", "prunescope", (3, 32, 32), 10, ("vgg16_bn_cifar",)),
    # Tiny language models: sequences of 32 token ids over a 256-word vocabulary by default (a ``text``
    # dataset says its own vocabulary size, which the model is then built for).
    Architecture("lstm-lm", "prunescope", (LM_SEQ_LEN,), LM_VOCAB, task="language-model"),
    Architecture("transformer-lm", "prunescope", (LM_SEQ_LEN,), LM_VOCAB, task="language-model"),
)

_CIFAR10 = (3, 32, 32)
_IMAGENET = (3, IMAGENET_SIDE, IMAGENET_SIDE)

# The rest of Distiller's zoo (``pruning_core/distiller_zoo.py``), named as Distiller names it: its CIFAR-10
# networks (3x32x32, 10 classes), MNIST Simplenet, ImageNet MobileNet v1, AlexNet-BN and pre-activation
# ResNets, and its word language model (the ``language-model`` task; the vocabulary is the text dataset's).
_DISTILLER: tuple[Architecture, ...] = (
    *(Architecture(f"resnet{d}_cifar", "prunescope", _CIFAR10, 10) for d in (32, 44, 110, 1202)),
    *(Architecture(f"preact_resnet{d}_cifar{ds}", "prunescope", _CIFAR10, 10)
      for d in (20, 32, 44, 56, 110) for ds in ("", "_conv_ds")),
    Architecture("plain20_cifar", "prunescope", _CIFAR10, 10),
    Architecture("plain20_cifar_nobn", "prunescope", _CIFAR10, 10),
    *(Architecture(f"vgg{d}_cifar", "prunescope", _CIFAR10, 10) for d in (11, 13, 16, 19)),
    *(Architecture(f"vgg{d}_bn_cifar", "prunescope", _CIFAR10, 10) for d in (11, 13, 19)),
    Architecture("simplenet_mnist", "prunescope", (1, 28, 28), 10),
    *(Architecture(f"mobilenet{m}", "prunescope", _IMAGENET, IMAGENET_CLASSES) for m in ("", "_025", "_050", "_075")),
    Architecture("alexnet_bn", "prunescope", _IMAGENET, IMAGENET_CLASSES),
    *(Architecture(f"preact_resnet{d}", "prunescope", _IMAGENET, IMAGENET_CLASSES) for d in (18, 34, 50, 101, 152)),
    Architecture("word_lang_model", "prunescope", (LM_SEQ_LEN,), LM_VOCAB, task="language-model"),
)

#: Architectures Distiller's published schedules are written for that prunescope does not build, and why: a
#: schedule or spec naming one is refused with this reason rather than as an unknown name.
UNSUPPORTED_ARCHITECTURES: dict[str, str] = {
    "maskrcnn_resnet50_fpn": "object detection (torchvision's Mask R-CNN) is out of scope: prunescope's tasks are "
                             "classification and language modelling",
    "resnext101_32x4d": "Cadene's pretrainedmodels ResNeXt-101 32x4d layout is out of scope (torchvision's "
                        "resnext101_32x8d and resnext101_64x4d are built, with torchvision's parameter names)",
}

# torchvision's classification models (``list_models(module=torchvision.models)``), by their own
# names. Each takes 3xSxS with S the crop size of its default weights (``weights.transforms()``),
# except vit_h_14: built without weights it has ``image_size=224`` (its SWAG_LINEAR weights' crop)
# and refuses any other size, while its default (SWAG_E2E) weights need 518.
_TORCHVISION_SIDE: dict[str, int] = {
    "alexnet": 224,
    "convnext_base": 224, "convnext_large": 224, "convnext_small": 224, "convnext_tiny": 224,
    "densenet121": 224, "densenet161": 224, "densenet169": 224, "densenet201": 224,
    "efficientnet_b0": 224, "efficientnet_b1": 240, "efficientnet_b2": 288, "efficientnet_b3": 300,
    "efficientnet_b4": 380, "efficientnet_b5": 456, "efficientnet_b6": 528, "efficientnet_b7": 600,
    "efficientnet_v2_l": 480, "efficientnet_v2_m": 480, "efficientnet_v2_s": 384,
    "googlenet": 224,
    "inception_v3": 299,
    "maxvit_t": 224,
    "mnasnet0_5": 224, "mnasnet0_75": 224, "mnasnet1_0": 224, "mnasnet1_3": 224,
    "mobilenet_v2": 224, "mobilenet_v3_large": 224, "mobilenet_v3_small": 224,
    "regnet_x_16gf": 224, "regnet_x_1_6gf": 224, "regnet_x_32gf": 224, "regnet_x_3_2gf": 224,
    "regnet_x_400mf": 224, "regnet_x_800mf": 224, "regnet_x_8gf": 224,
    "regnet_y_128gf": 384, "regnet_y_16gf": 224, "regnet_y_1_6gf": 224, "regnet_y_32gf": 224,
    "regnet_y_3_2gf": 224, "regnet_y_400mf": 224, "regnet_y_800mf": 224, "regnet_y_8gf": 224,
    "resnet101": 224, "resnet152": 224, "resnet18": 224, "resnet34": 224, "resnet50": 224,
    "resnext101_32x8d": 224, "resnext101_64x4d": 224, "resnext50_32x4d": 224,
    "shufflenet_v2_x0_5": 224, "shufflenet_v2_x1_0": 224, "shufflenet_v2_x1_5": 224, "shufflenet_v2_x2_0": 224,
    "squeezenet1_0": 224, "squeezenet1_1": 224,
    "swin_b": 224, "swin_s": 224, "swin_t": 224, "swin_v2_b": 256, "swin_v2_s": 256, "swin_v2_t": 256,
    "vgg11": 224, "vgg11_bn": 224, "vgg13": 224, "vgg13_bn": 224,
    "vgg16": 224, "vgg16_bn": 224, "vgg19": 224, "vgg19_bn": 224,
    "vit_b_16": 224, "vit_b_32": 224, "vit_h_14": 224, "vit_l_16": 224, "vit_l_32": 224,
    "wide_resnet101_2": 224, "wide_resnet50_2": 224,
}

#: every architecture by canonical name: prunescope's own first, then Distiller's zoo, then torchvision's in name
#: order.
ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        *_PRUNESCOPE,
        *_DISTILLER,
        *(Architecture(name, "torchvision", (3, side, side), IMAGENET_CLASSES)
          for name, side in sorted(_TORCHVISION_SIDE.items())),
    )
}

#: the architectures prunescope builds itself (its own and Distiller's zoo; Distiller aliases map onto these).
MODEL_NAMES: tuple[str, ...] = tuple(a.name for a in ARCHITECTURES.values() if a.source == "prunescope")
#: torchvision classification models accepted as they are named there.
TORCHVISION_MODEL_NAMES: tuple[str, ...] = tuple(a.name for a in ARCHITECTURES.values() if a.source == "torchvision")
#: other spellings (Distiller's) -> canonical name.
MODEL_ALIASES: dict[str, str] = {alias: a.name for a in ARCHITECTURES.values() for alias in a.aliases}

#: The entry-point group operators' packages declare architectures in (``my-net = "mypkg.nets:build"``);
#: :mod:`pruning_core.models` builds them. Not listed here: the API learns them from what workers publish.
PLUGIN_GROUP = "prunescope.models"
#: The entry-point group operators' packages declare datasets in (``my-data = "mypkg.data:build"``): each names
#: ``factory(split, **options) -> torch Dataset``; :mod:`pruning_core.datasets` loads them.
DATASET_PLUGIN_GROUP = "prunescope.datasets"
#: The architecture of a model registered as a torch.export program (``.pt2``): its graph travels with its
#: weights, so it needs no code and no name from the catalogue (it is also the upload scan's format name).
EXPORTED_ARCHITECTURE = "torch-export"
#: timm's models (when timm is installed where jobs run) are named ``timm/<timm's own name>``.
TIMM_PREFIX = "timm/"
_PLAIN_NAME = r"[A-Za-z0-9][A-Za-z0-9_.\-]*"
#: What an operator's plugin architecture (a ``prunescope.models`` entry point) may be called.
PLUGIN_NAME_PATTERN = rf"^{_PLAIN_NAME}$"
#: What a spec's ``model`` may be: a plain name (built in, plugin, registered model) or ``timm/<name>``.
MODEL_NAME_PATTERN = rf"^(?:{TIMM_PREFIX})?{_PLAIN_NAME}$"

DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)
#: datasets that read files and therefore need a ``root`` option.
DATASETS_WITH_ROOT: tuple[str, ...] = tuple(name for name, d in DATASETS.items() if d.needs_root)


def canonical_model_name(name: str) -> str | None:
    """The canonical spelling of a known model name, or None if it is unknown."""
    if name in ARCHITECTURES:
        return name
    return MODEL_ALIASES.get(name)


def unsupported_reason(name: str) -> str | None:
    """Why a known architecture name (Distiller's) is not built, or None for any other name."""
    return UNSUPPORTED_ARCHITECTURES.get(name)


def architecture(name: str) -> Architecture | None:
    """The catalogue entry for a name or alias, or None if it is unknown."""
    canonical = canonical_model_name(name)
    return None if canonical is None else ARCHITECTURES[canonical]


def catalogue() -> dict[str, Any]:
    """The whole catalogue as ``GET /api/v1/architectures`` returns it.

    ``prunescope``, ``torchvision``, ``aliases`` and ``datasets`` are the name lists the dashboard's
    forms read; ``architectures`` adds each one's source, input shape, class count and aliases.
    """
    return {
        "prunescope": list(MODEL_NAMES),
        "torchvision": list(TORCHVISION_MODEL_NAMES),
        "aliases": dict(MODEL_ALIASES),
        "datasets": list(DATASET_NAMES),
        "architectures": [a.as_json() for a in ARCHITECTURES.values()],
    }


# -- operators' architectures: discovered here (metadata only, torch-free), built by models.py ----------

def _entry_points(group: str, builtin: Any, kind: str) -> dict[str, EntryPoint]:
    """The usable entries of ``group`` by name, read from installed metadata (nothing imported).

    Read afresh on each call, so a package installed while a worker runs is seen at its next refresh.
    An entry that is not a plain name, or that ``builtin(name)`` says is a built-in name, is skipped with a
    warning: a plugin never changes what a built-in name means. The first of duplicates wins."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        if not re.fullmatch(PLUGIN_NAME_PATTERN, ep.name) or len(ep.name) > 100:
            log.warning("skipping %s entry %r: a name is 1-100 letters, digits, '_', '.', '-'", group, ep.name)
        elif builtin(ep.name):
            log.warning("skipping %s entry %r (%s): a built-in %s has that name", group, ep.name, ep.value, kind)
        elif ep.name in found:
            log.warning("skipping %s entry %r (%s): %s declares it already", group, ep.name, ep.value,
                        found[ep.name].value)
        else:
            found[ep.name] = ep
    return found


def plugin_entry_points() -> dict[str, EntryPoint]:
    """The usable ``prunescope.models`` entries by name (see :func:`_entry_points`)."""
    return _entry_points(PLUGIN_GROUP, lambda name: canonical_model_name(name) is not None, "architecture")


def dataset_entry_points() -> dict[str, EntryPoint]:
    """The usable ``prunescope.datasets`` entries by name (see :func:`_entry_points`)."""
    return _entry_points(DATASET_PLUGIN_GROUP, lambda name: name in DATASETS, "dataset")


def plugin_datasets() -> list[str]:
    """The names of the installed plugin datasets, sorted."""
    return sorted(dataset_entry_points())


def plugin_models() -> list[str]:
    """The names of the installed plugin architectures, sorted."""
    return sorted(plugin_entry_points())
