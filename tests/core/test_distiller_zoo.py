"""Distiller's model zoo (issue 17): every network has Distiller's parameter names and shapes exactly.

The expected tables are written here from Distiller's definitions (``distiller/models/cifar10/resnet_cifar.py``,
``preresnet_cifar.py``, ``plain_cifar.py``, ``vgg_cifar.py``, ``mnist/simplenet_mnist.py``,
``imagenet/mobilenet.py``, ``imagenet/alexnet_batchnorm.py``, ``imagenet/preresnet_imagenet.py``,
``examples/word_language_model/model.py``): the regular families from their structure rules, the rest literally,
plus literal spot checks. The models are built on the meta device (names and shapes only), so even resnet1202_cifar
and the ImageNet networks are cheap.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from pruning_core import training
from pruning_core.datasets import load_dataset, make_loader
from pruning_core.models import create_model, list_models, model_info
from pruning_core.names import ARCHITECTURES, UNSUPPORTED_ARCHITECTURES, canonical_model_name, unsupported_reason
from pruning_core.schedule import ScheduleError, parse_schedule, resolve_weights
from pruning_core.sensitivity import analyze
from pruning_core.tasks import Evaluation

torch.set_num_threads(1)  # 2 shared cores: one thread each is faster than contending

Table = list[tuple[str, tuple[int, ...]]]


def _bn(prefix: str, n: int) -> Table:
    return [(f"{prefix}.weight", (n,)), (f"{prefix}.bias", (n,))]


def _stages(n: int, block: Callable[[str, int, int, bool], Table]) -> Table:
    """Distiller's three CIFAR stages of ``n`` blocks (16, 32, 64 channels; the first block of stages 2 and 3
    halves the size): ``block(prefix, inplanes, planes, first)`` gives one block's parameters."""
    out: Table = []
    inplanes = 16
    for stage, planes in enumerate((16, 32, 64), start=1):
        for b in range(n):
            out += block(f"layer{stage}.{b}", inplanes if b == 0 else planes, planes, b == 0 and inplanes != planes)
        inplanes = planes
    return out


def resnet_cifar(n: int) -> Table:
    def block(p: str, cin: int, planes: int, down: bool) -> Table:
        out = [(f"{p}.conv1.weight", (planes, cin, 3, 3)), *_bn(f"{p}.bn1", planes),
               (f"{p}.conv2.weight", (planes, planes, 3, 3)), *_bn(f"{p}.bn2", planes)]
        return out + ([(f"{p}.downsample.0.weight", (planes, cin, 1, 1)), *_bn(f"{p}.downsample.1", planes)]
                      if down else [])
    return [("conv1.weight", (16, 3, 3, 3)), *_bn("bn1", 16), *_stages(n, block),
            ("fc.weight", (10, 64)), ("fc.bias", (10,))]


def preact_resnet_cifar(n: int, conv_ds: bool) -> Table:
    def block(p: str, cin: int, planes: int, down: bool) -> Table:
        out = [*_bn(f"{p}.pre_bn", cin), (f"{p}.conv1.weight", (planes, cin, 3, 3)), *_bn(f"{p}.bn", planes),
               (f"{p}.conv2.weight", (planes, planes, 3, 3))]
        return out + ([(f"{p}.downsample.weight", (planes, cin, 1, 1))] if down and conv_ds else [])
    return [("conv1.weight", (16, 3, 3, 3)), *_stages(n, block), *_bn("final_bn", 64),
            ("fc.weight", (10, 64)), ("fc.bias", (10,))]


def plain_cifar(batch_norm: bool) -> Table:
    def block(p: str, cin: int, planes: int, down: bool) -> Table:
        return [(f"{p}.conv1.weight", (planes, cin, 3, 3)), *(_bn(f"{p}.bn1", planes) if batch_norm else []),
                (f"{p}.conv2.weight", (planes, planes, 3, 3)), *(_bn(f"{p}.bn2", planes) if batch_norm else [])]
    return [("conv1.weight", (16, 3, 3, 3)), *(_bn("bn1", 16) if batch_norm else []), *_stages(3, block),
            ("fc.weight", (10, 64)), ("fc.bias", (10,))]


VGG = {  # Distiller's vgg_cifar cfg: A, B, D, E
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def vgg_cifar(depth: int, batch_norm: bool) -> Table:
    out: Table = []
    index, cin = 0, 3
    for v in VGG[depth]:
        if v == "M":
            index += 1
            continue
        out += [(f"features.{index}.weight", (v, cin, 3, 3)), (f"features.{index}.bias", (v,))]
        out += _bn(f"features.{index + 1}", v) if batch_norm else []
        index, cin = index + (3 if batch_norm else 2), v
    return out + [("classifier.weight", (10, 512)), ("classifier.bias", (10,))]


def mobilenet(multiplier: float) -> Table:
    c = [max(math.floor(n * multiplier), 8) for n in (32, 64, 128, 256, 512, 1024)]
    blocks = [(0, 1), (1, 2), (2, 2), (2, 3), (3, 3), (3, 4), *[(4, 4)] * 5, (4, 5), (5, 5)]  # channel indices
    out: Table = [("model.0.0.weight", (c[0], 3, 3, 3)), *_bn("model.0.1", c[0])]
    for i, (a, b) in enumerate(blocks, start=1):
        out += [(f"model.{i}.0.weight", (c[a], 1, 3, 3)), *_bn(f"model.{i}.1", c[a]),
                (f"model.{i}.3.weight", (c[b], c[a], 1, 1)), *_bn(f"model.{i}.4", c[b])]
    return out + [("fc.weight", (1000, c[5])), ("fc.bias", (1000,))]


def preact_resnet_imagenet(layers: tuple[int, int, int, int], bottleneck: bool) -> Table:
    """preresnet_imagenet.py: the first block of stage 1 is not pre-activated (the stem is), every other is."""
    exp = 4 if bottleneck else 1
    out: Table = [("conv1.weight", (64, 3, 7, 7)), *_bn("bn1", 64)]
    inplanes = 64
    for stage, planes in enumerate((64, 128, 256, 512), start=1):
        for b in range(layers[stage - 1]):
            p, cin = f"layer{stage}.{b}", inplanes if b == 0 else planes * exp
            out += [] if (stage, b) == (1, 0) else _bn(f"{p}.pre_bn", cin)
            if bottleneck:
                out += [(f"{p}.conv1.weight", (planes, cin, 1, 1)), *_bn(f"{p}.bn1_2", planes),
                        (f"{p}.conv2.weight", (planes, planes, 3, 3)), *_bn(f"{p}.bn2_3", planes),
                        (f"{p}.conv3.weight", (planes * 4, planes, 1, 1))]
            else:
                out += [(f"{p}.conv1.weight", (planes, cin, 3, 3)), *_bn(f"{p}.bn1_2", planes),
                        (f"{p}.conv2.weight", (planes, planes, 3, 3))]
            if b == 0 and (stage > 1 or cin != planes * exp):
                out.append((f"{p}.downsample.0.weight", (planes * exp, cin, 1, 1)))
        inplanes = planes * exp
    return out + [*_bn("final_bn", 512 * exp), ("fc.weight", (1000, 512 * exp)), ("fc.bias", (1000,))]


SIMPLENET: Table = [("conv1.weight", (20, 1, 5, 5)), ("conv1.bias", (20,)), ("conv2.weight", (50, 20, 5, 5)),
                    ("conv2.bias", (50,)), ("fc1.weight", (500, 800)), ("fc1.bias", (500,)),
                    ("fc2.weight", (10, 500)), ("fc2.bias", (10,))]
ALEXNET_BN: Table = [("features.0.weight", (96, 3, 12, 12)), ("features.0.bias", (96,)),
                     ("features.2.weight", (256, 48, 5, 5)), *_bn("features.3", 256),
                     ("features.6.weight", (384, 256, 3, 3)), *_bn("features.7", 384),
                     ("features.10.weight", (384, 192, 3, 3)), *_bn("features.11", 384),
                     ("features.13.weight", (256, 192, 3, 3)), *_bn("features.14", 256),
                     ("classifier.0.weight", (4096, 9216)), *_bn("classifier.1", 4096),
                     ("classifier.3.weight", (4096, 4096)), *_bn("classifier.4", 4096),
                     ("classifier.6.weight", (1000, 4096)), ("classifier.6.bias", (1000,))]


def word_lang_model(vocab: int, size: int = 200) -> Table:
    """Two LSTM layers of ``size`` (PyTorch's example defaults) with tied weights (the published schedules'
    ``--tied``): the decoder's weight is the encoder's, so it is not a parameter of its own."""
    lstm = [(f"rnn.{kind}_{gate}_l{layer}", (4 * size, size) if kind == "weight" else (4 * size,))
            for layer in (0, 1) for kind in ("weight", "bias") for gate in ("ih", "hh")]
    return [("encoder.weight", (vocab, size)), *lstm, ("decoder.bias", (vocab,))]


EXPECTED: dict[str, Table] = {
    **{f"resnet{d}_cifar": resnet_cifar(n) for d, n in ((20, 3), (32, 5), (44, 7), (56, 9), (110, 18), (1202, 200))},
    **{f"preact_resnet{d}_cifar{'_conv_ds' if ds else ''}": preact_resnet_cifar(n, ds)
       for d, n in ((20, 3), (32, 5), (44, 7), (56, 9), (110, 18)) for ds in (False, True)},
    "plain20_cifar": plain_cifar(True),
    "plain20_cifar_nobn": plain_cifar(False),
    **{f"vgg{d}_cifar": vgg_cifar(d, False) for d in VGG},
    **{f"vgg{d}_bn_cifar": vgg_cifar(d, True) for d in VGG},
    "simplenet_mnist": SIMPLENET,
    **{f"mobilenet{s}": mobilenet(m) for s, m in (("", 1.0), ("_025", 0.25), ("_050", 0.5), ("_075", 0.75))},
    "alexnet_bn": ALEXNET_BN,
    **{f"preact_resnet{d}": preact_resnet_imagenet(layers, d >= 50)
       for d, layers in ((18, (2, 2, 2, 2)), (34, (3, 4, 6, 3)), (50, (3, 4, 6, 3)), (101, (3, 4, 23, 3)),
                         (152, (3, 8, 36, 3)))},
    "word_lang_model": word_lang_model(256),
}


def _table(name: str) -> Table:
    with torch.device("meta"):
        model = create_model(name, seed=None)
    return [(n, tuple(p.shape)) for n, p in model.named_parameters()]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "resnet1202_cifar" else n
                                  for n in sorted(EXPECTED)])  # 1202 layers: ~3-6 s of module construction
def test_parameter_names_and_shapes_are_distillers(name: str) -> None:
    assert name in list_models()
    assert _table(name) == EXPECTED[name]


def test_spot_checks_written_from_distillers_files() -> None:
    shapes = {name: dict(EXPECTED[name]) for name in EXPECTED}
    got = {name: dict(_table(name)) for name in ("resnet56_cifar", "preact_resnet20_cifar_conv_ds", "vgg16_cifar",
                                                 "mobilenet", "resnet110_cifar", "preact_resnet18", "preact_resnet50")}
    assert got["resnet56_cifar"]["layer3.0.downsample.0.weight"] == (64, 32, 1, 1)
    assert got["resnet56_cifar"]["layer3.8.conv2.weight"] == (64, 64, 3, 3)
    assert got["resnet110_cifar"]["layer2.17.bn2.bias"] == (32,)
    assert "layer2.18.conv1.weight" not in got["resnet110_cifar"]
    assert got["preact_resnet20_cifar_conv_ds"]["layer2.0.downsample.weight"] == (32, 16, 1, 1)
    assert "layer2.0.downsample.weight" not in shapes["preact_resnet20_cifar"]  # avg-pool + zero-pad shortcut
    assert got["vgg16_cifar"]["features.28.weight"] == (512, 512, 3, 3)
    assert "features.29.weight" not in got["vgg16_cifar"]
    assert got["mobilenet"]["model.13.3.weight"] == (1024, 1024, 1, 1)
    assert got["mobilenet"]["model.1.0.weight"] == (32, 1, 3, 3)  # depthwise
    assert sum(math.prod(s) for s in got["mobilenet"].values()) == 4_231_976  # MobileNet v1's published count
    assert sum(math.prod(s) for _, s in EXPECTED["resnet1202_cifar"]) > 19_000_000  # "19.4M" (He et al.)
    assert "layer1.0.pre_bn.weight" not in got["preact_resnet18"] and got["preact_resnet18"]["layer1.1.pre_bn.weight"] \
        == (64,)
    assert got["preact_resnet18"]["layer2.0.downsample.0.weight"] == (128, 64, 1, 1)
    assert got["preact_resnet50"]["layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
    assert got["preact_resnet50"]["layer4.2.conv3.weight"] == (2048, 512, 1, 1)


def test_the_whole_zoo_is_in_the_catalogue_by_distillers_names() -> None:
    """Every Distiller name resolves: to its own entry, or to the prunescope entry of the same layout."""
    for name in EXPECTED:
        canonical = canonical_model_name(name)
        assert canonical is not None, name
        if canonical != name:  # an alias: prunescope's network is Distiller's, module for module
            assert _table(canonical) == EXPECTED[name]
    assert (canonical_model_name("resnet20_cifar"), canonical_model_name("vgg16_bn_cifar")) == ("resnet20-cifar",
                                                                                               "vgg16-cifar")
    assert canonical_model_name("vgg16_cifar") == "vgg16_cifar"  # not the BatchNorm layout
    assert model_info("simplenet_mnist").input_shape == (1, 28, 28)
    assert (model_info("mobilenet").input_shape, model_info("alexnet_bn").num_classes) == ((3, 224, 224), 1000)
    assert ARCHITECTURES["word_lang_model"].task == "language-model"


def test_real_forward_of_the_weightless_shortcut_and_simplenet() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert create_model("preact_resnet20_cifar").eval()(x).shape == (2, 10)
        out = create_model("simplenet_mnist").eval()(torch.randn(3, 1, 28, 28))
    assert torch.allclose(out.exp().sum(dim=1), torch.ones(3))  # Distiller's Simplenet returns log-probabilities


VGG16_SCHEDULE = """\
version: 1
pruners:
  channels:
    class: AutomatedGradualPruner
    initial_sparsity: 0.05
    final_sparsity: 0.5
    weights: [{weights}]
policies:
  - pruner:
      instance_name: channels
    starting_epoch: 0
    ending_epoch: 3
    frequency: 1
"""
# the convs of Distiller's vgg16_cifar as its schedules name them (DataParallel wraps ``features``)
VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def test_vgg16_cifar_schedule_resolves_to_distillers_layers() -> None:
    """A schedule written for Distiller's vgg16_cifar prunes its 13 convs; the BatchNorm layout refuses it
    instead of silently pruning other layers (features.7 is a conv in both, but not the same one)."""
    text = VGG16_SCHEDULE.format(weights=", ".join(f"features.module.{i}.weight" for i in VGG16_CONVS))
    model = create_model("vgg16_cifar")
    resolved = resolve_weights(parse_schedule(text), model)["channels"]
    assert resolved == [f"features.{i}.weight" for i in VGG16_CONVS]
    modules = dict(model.named_modules())
    assert all(isinstance(modules[f"features.{i}"], nn.Conv2d) for i in VGG16_CONVS)
    shapes = dict(EXPECTED["vgg16_cifar"])
    assert [tuple(modules[f"features.{i}"].weight.shape) for i in VGG16_CONVS] == [
        shapes[f"features.{i}.weight"] for i in VGG16_CONVS]
    assert tuple(modules["features.7"].weight.shape) == (128, 128, 3, 3)
    bn_layout = create_model("vgg16_bn_cifar")
    assert tuple(dict(bn_layout.named_modules())["features.7"].weight.shape) == (128, 64, 3, 3)
    with pytest.raises(ScheduleError, match="features.module.2.weight"):
        resolve_weights(parse_schedule(text), bn_layout)


@pytest.mark.parametrize("name", sorted(UNSUPPORTED_ARCHITECTURES))
def test_out_of_scope_architectures_are_refused_saying_why(name: str) -> None:
    reason = unsupported_reason(name)
    assert reason and canonical_model_name(name) is None and name not in list_models()
    with pytest.raises(ValueError, match=f"model '{name}' is not supported: .*{reason.split()[0]}"):
        create_model(name)
    assert "out of scope" in UNSUPPORTED_ARCHITECTURES["maskrcnn_resnet50_fpn"]
    assert "out of scope" in UNSUPPORTED_ARCHITECTURES["resnext101_32x4d"]


TEXT = "the cat sat on the mat . the dog sat on the log . a cat and a dog met on the mat .\n"


def _perplexity(model: nn.Module, loader: torch.utils.data.DataLoader) -> float:
    model.eval()
    evaluation = Evaluation("language-model")
    with torch.no_grad():
        for batch in loader:
            evaluation.add(model(batch[0]), batch)
    return evaluation.result().metrics["perplexity"]


def test_word_lang_model_trains_on_a_text_file_and_reports_perplexity(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT * 12)
    train = load_dataset("text", "train", root=str(path), seq_len=8, test_fraction=0.2)
    test = load_dataset("text", "test", root=str(path), seq_len=8, test_fraction=0.2)
    model = create_model("word_lang_model", num_classes=train.num_classes, input_shape=train.input_shape)
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in word_lang_model(train.num_classes)]
    assert model.decoder.weight is model.encoder.weight
    test_loader = make_loader(test, batch_size=4)
    before = _perplexity(model, test_loader)
    assert before == pytest.approx(train.num_classes, rel=0.2)  # near-uniform at Distiller's initialisation
    # prunescope's own training loop (a train or prune job's), per token for a language model
    history = training.train(model, make_loader(train, batch_size=4, shuffle=True), epochs=1, optimizer="adam",
                             lr=3e-3, eval_loader=test_loader, device="cpu", progress=False)
    after = _perplexity(model, test_loader)
    assert math.isfinite(after) and 1 < after < before
    assert math.exp(history[-1].loss) == pytest.approx(after, rel=1e-4)  # the epoch's loss is the token loss
    x = next(iter(test_loader))[0]
    # Distiller's own call: the hidden state carried between batches
    logits, hidden = model.step(x, model.init_hidden(x.shape[0]))
    assert logits.shape == (*x.shape, train.num_classes) and hidden[0].shape == (2, x.shape[0], 200)
    # and a sensitivity sweep of an LSTM weight a Distiller schedule names, on the fast engine
    result = analyze(model, test_loader, engine="fast", device="cpu", task="language-model", levels="0,0.9",
                     params=["rnn.weight_hh_l1"])
    assert result.engine == "fast", result.engine_note
    assert result.points[0].metrics["perplexity"] == pytest.approx(after, rel=1e-5)
