"""Language models on text (issue 14): the ``text`` and ``synthetic-tokens`` datasets, the two catalogue LMs, and a
sensitivity sweep that reports perplexity per point on both engines."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pruning_core.dataset_options import DATASETS, check_dataset_options
from pruning_core.datasets import Vocabulary, dataset_task, load_dataset, make_loader, options_for_model
from pruning_core.limits import LimitError
from pruning_core.models import create_model, model_info
from pruning_core.points import metric_value
from pruning_core.sensitivity import analyze

torch.set_num_threads(1)

TEXT = """the cat sat on the mat
the dog sat on the log
a cat and a dog met on the mat
the bird sat on the dog
"""


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT * 6 + "zebras graze\n" + TEXT)  # "zebras graze" falls in the last 20%: the test split
    return path


def test_text_file_is_tokenised_by_words_and_cut_into_shifted_sequences(corpus: Path) -> None:
    train = load_dataset("text", "train", root=str(corpus), seq_len="8", test_fraction="0.2")
    test = load_dataset("text", "test", root=str(corpus), seq_len=8, test_fraction=0.2)
    assert (train.task, train.input_shape, train.name) == ("language-model", (8,), "text")
    words = Vocabulary.split(corpus.read_text())
    cut = round(len(words) * 0.8)
    # the vocabulary is the train split's words (and <unk>, <eos>), the class count its size
    assert train.classes[:2] == ["<unk>", "<eos>"] and set(train.classes[2:]) == set(words[:cut]) - {"<eos>"}
    assert train.num_classes == test.num_classes == len(train.classes) and "zebras" not in train.classes
    assert train.classes[2] == "the"  # the most frequent word first
    assert len(train) == (cut - 1) // 8 and len(test) == (len(words) - cut - 1) // 8
    x, y = train.dataset[1]
    assert x.dtype == torch.long and x.shape == y.shape == (8,)
    assert [train.classes[i] for i in x] == words[8:16] and [train.classes[i] for i in y] == words[9:17]
    unk = torch.cat([test.dataset[i][0] for i in range(len(test))])
    assert (unk == 0).sum() >= 1  # the held-out words the vocabulary lacks are <unk>


def test_text_root_holds_train_and_test_files(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text(TEXT * 3)
    (tmp_path / "test.txt").write_text("the cat sat on the log\nthe unicorn sat\n")
    train = load_dataset("text", "train", root=str(tmp_path), seq_len=4)
    test = load_dataset("text", "test", root=str(tmp_path), seq_len=4)
    assert train.classes == test.classes and "unicorn" not in test.classes
    assert len(test) == (10 - 1) // 4


def test_text_options_are_checked(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs root=FILE or root=DIR"):
        load_dataset("text")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_dataset("text", root=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="train.txt"):
        load_dataset("text", root=str(tmp_path))
    with pytest.raises(ValueError, match="too few for one sequence of seq_len=4000"):
        load_dataset("text", root=str(corpus), seq_len=4000)
    with pytest.raises(LimitError, match="seq_len"):
        check_dataset_options("text", {"seq_len": 0})
    assert DATASETS["text"].task == dataset_task("text") == "language-model" and dataset_task("digits") == \
        "classification"


def test_synthetic_tokens_are_seeded_and_sized_by_the_model() -> None:
    a = load_dataset("synthetic-tokens", "test", vocab=11, seq_len=6, n=5, seed=2)
    b = load_dataset("synthetic-tokens", "test", vocab="11", seq_len="6", n="5", seed="2")
    assert (len(a), a.num_classes, a.input_shape, a.task) == (5, 11, (6,), "language-model")
    assert all(torch.equal(a.dataset[i][0], b.dataset[i][0]) for i in range(5))
    x, y = a.dataset[0]
    assert torch.equal(x[1:], y[:-1]) and int(torch.cat([x, y]).max()) < 11
    assert not torch.equal(load_dataset("synthetic-tokens", "train", vocab=11, seq_len=6, n=5, seed=2).dataset[0][0], x)
    assert options_for_model("synthetic-tokens", "transformer-lm", {}) == {"seq_len": 32, "vocab": 256}
    with pytest.raises(LimitError, match="vocab"):
        check_dataset_options("synthetic-tokens", {"vocab": 1})


def test_language_models_are_in_the_catalogue_and_take_token_ids() -> None:
    for name in ("lstm-lm", "transformer-lm"):
        info = model_info(name)
        assert (info.task, info.input_shape, info.num_classes) == ("language-model", (32,), 256)
        model = create_model(name, num_classes=13, input_shape=(10,)).eval()
        assert model(torch.zeros(2, 10, dtype=torch.long)).shape == (2, 10, 13)


def both(model: torch.nn.Module, loader, **kw):
    plain = analyze(model, loader, engine="plain", device="cpu", task="language-model", cpu_chunk=2, **kw)
    fast = analyze(model, loader, engine="fast", device="cpu", task="language-model", cpu_chunk=2, **kw)
    assert (plain.engine, fast.engine) == ("plain", "fast"), fast.engine_note
    assert [p.to_dict() for p in plain.points] == [p.to_dict() for p in fast.points]
    return fast


def test_lstm_lm_sweep_on_a_text_file_reports_perplexity_per_point(corpus: Path) -> None:
    bundle = load_dataset("text", "test", root=str(corpus), seq_len=6, test_fraction=0.3)
    loader = make_loader(bundle, batch_size=4)
    model = create_model("lstm-lm", num_classes=bundle.num_classes, input_shape=bundle.input_shape)
    result = both(model, loader, levels="0,0.6,0.95", params=["lstm.weight_ih_l0", "decoder.weight"])
    assert len(result.points) == 6
    for p in result.points:
        assert (p.top1, p.top5, p.top1_low) == (None, None, None) and p.samples == len(bundle)
        assert metric_value(p, "perplexity") == pytest.approx(math.exp(p.loss), rel=1e-12)
    # level 0 is the unpruned model: its perplexity, computed directly over every token, is the baseline's
    x = torch.stack([bundle.dataset[i][0] for i in range(len(bundle))])
    y = torch.stack([bundle.dataset[i][1] for i in range(len(bundle))])
    with torch.no_grad():
        direct = math.exp(F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item())
    assert result.points[0].metrics["perplexity"] == pytest.approx(direct, rel=1e-5)
    assert result.baseline["metrics"]["perplexity"] == pytest.approx(direct, rel=1e-5)
    assert len({p.loss for p in result.points}) >= 4  # pruning moves the perplexity


def test_transformer_lm_sweep_on_synthetic_tokens_runs_on_the_fast_engine() -> None:
    bundle = load_dataset("synthetic-tokens", "test", vocab=20, seq_len=8, n=6)
    model = create_model("transformer-lm", num_classes=20, input_shape=bundle.input_shape)
    result = both(model, make_loader(bundle, batch_size=3), levels="0.5,0.9",
                  params=["blocks.0.linear1.weight", "blocks.1.self_attn.out_proj.weight", "head.weight"])
    assert len(result.points) == 6 and all(p.metrics["perplexity"] > 1 for p in result.points)
