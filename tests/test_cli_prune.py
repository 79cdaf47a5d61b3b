"""``prunescope prune`` and ``prunescope plan`` end to end on the digits data (small and fast)."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.cli import main
from pruning_core.checkpoint import load_checkpoint, save_checkpoint
from pruning_core.models import create_model
from pruning_core.schedule import load_schedule
from pruning_core.sensitivity import SensitivityPoint
from pruning_core.sensitivity_io import write_csv

SCHEDULE = """\
version: 1
pruners:
  agp:
    class: AutomatedGradualPruner
    initial_sparsity: 0.1
    final_sparsity: 0.6
    weights: [conv2.weight, conv3.weight]
  filters:
    class: L1RankedStructureParameterPruner
    group_type: Filters
    desired_sparsity: 0.5
    weights: [conv1.weight]
policies:
  - pruner: {instance_name: filters}
    epochs: [0]
  - pruner: {instance_name: agp}
    starting_epoch: 0
    ending_epoch: 3
    frequency: 1
"""


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "ck.pt"
    save_checkpoint(path, create_model("digits-cnn"), arch="digits-cnn")
    return path


def _prune_args(tmp_path: Path, checkpoint: Path, schedule: Path, *extra: str) -> list[str]:
    return ["prune", "--model", "digits-cnn", "--checkpoint", str(checkpoint), "--dataset", "digits",
            "--schedule", str(schedule), "--out", str(tmp_path / "p.pt"), "--device", "cpu", *extra]


@pytest.mark.slow
def test_prune_writes_checkpoint_with_masks_schedule_metrics_and_thins(tmp_path: Path, checkpoint: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    schedule = tmp_path / "s.yaml"
    schedule.write_text(SCHEDULE)
    assert main(_prune_args(tmp_path, checkpoint, schedule, "--epochs", "3", "--thin")) == 0
    out = capsys.readouterr().out
    assert "sparsity" in out and "Total" in out and "MACs" in out and "latency" in out
    ck = load_checkpoint(tmp_path / "p.pt")
    assert {"conv1.weight", "conv2.weight", "conv3.weight", "bn1.weight", "bn1.bias"} <= set(ck.masks)
    assert load_schedule(schedule).to_dict()["pruners"] == __import__("yaml").safe_load(
        ck.metadata["schedule"])["pruners"]
    epochs = ck.metadata["prune"]["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    assert epochs[-1]["sparsity"] > 0.5
    thin = ck.metadata["prune"]["thinning"]
    assert thin["removed"] == {"conv1": 16} and thin["max_abs_diff"] < 1e-4
    assert (tmp_path / "p.thin.pt").exists()


def test_prune_dry_run_and_bad_schedule(tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    schedule = tmp_path / "s.yaml"
    schedule.write_text(SCHEDULE)
    assert main(_prune_args(tmp_path, checkpoint, schedule, "--epochs", "4", "--dry-run")) == 0
    out = capsys.readouterr().out
    assert "epoch   0: filters, agp -> 0.1000" in out and "epoch   2: agp -> 0.6000" in out
    schedule.write_text(SCHEDULE.replace("conv3.weight", "conv9.weight"))
    assert main(_prune_args(tmp_path, checkpoint, schedule, "--epochs", "4", "--dry-run")) == 2
    err = capsys.readouterr().err
    assert "line 7: pruners.agp.weights[1]: no parameter named 'conv9.weight'" in err


def _two_layer_csv(tmp_path: Path) -> Path:
    """conv2 small and fragile, conv3 large and robust (top1 drops in points per level)."""
    points = [SensitivityPoint(parameter=p, sparsity=s, top1=98.0 - d, top5=100.0, loss=0.1, samples=450, nnz=0)
              for p, rows in {"conv2.weight": [(0.0, 0), (0.5, 0.2), (0.8, 0.9), (0.9, 3.0)],
                              "conv3.weight": [(0.0, 0), (0.5, 0.0), (0.8, 0.4), (0.9, 0.8)]}.items()
              for s, d in rows]
    csv = tmp_path / "sense.csv"
    write_csv(points, csv)
    return csv


def test_plan_writes_a_schedule_prune_accepts(tmp_path: Path, checkpoint: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    csv = _two_layer_csv(tmp_path)
    out = tmp_path / "plan.yaml"
    assert main(["plan", "--sensitivity", str(csv), "--max-drop", "1.0", "-o", str(out), "--epochs", "6",
                 "--model", "digits-cnn"]) == 0
    schedule = load_schedule(out)
    levels = {w: p.args["final_sparsity"] for p in schedule.pruners.values() for w in p.args["weights"]}
    assert levels == {"conv2.weight": 0.8, "conv3.weight": 0.9}
    assert "expected overall weight sparsity" in capsys.readouterr().out
    assert main(_prune_args(tmp_path, checkpoint, out, "--epochs", "6", "--dry-run")) == 0
    assert main(["plan", "--sensitivity", str(csv), "--target-sparsity", "0.5", "-o", str(out)]) == 2


def test_plan_objective_budget_beats_the_rule_at_the_same_damage(tmp_path: Path, checkpoint: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    """conv2 is small and fragile, conv3 large and robust: under a 1-point budget the optimiser spends it on
    conv3 (0.9: 0.8 points) and leaves conv2 at 0.5 (0.2), where one equal tolerance cannot."""
    csv = _two_layer_csv(tmp_path)
    out = tmp_path / "plan.yaml"
    assert main(["plan", "--sensitivity", str(csv), "--objective", "sparsity", "--budget", "1.0", "-o", str(out),
                 "--epochs", "6", "--model", "digits-cnn"]) == 0
    schedule = load_schedule(out)
    levels = {w: p.args["final_sparsity"] for p in schedule.pruners.values() for w in p.args["weights"]}
    assert levels == {"conv2.weight": 0.5, "conv3.weight": 0.9}
    printed = capsys.readouterr().out
    assert "optimal" in printed and "uniform" in printed and "equal-tolerance" in printed
    assert main(_prune_args(tmp_path, checkpoint, out, "--epochs", "6", "--dry-run")) == 0
    assert main(["plan", "--sensitivity", str(csv), "--objective", "sparsity", "-o", str(out)]) == 2
    assert "exactly one of budget and target" in capsys.readouterr().err


DISTILLER = Path(__file__).resolve().parents[1] / ".." / "shared" / "distiller-schedules"


@pytest.mark.skipif(not DISTILLER.is_dir(), reason=f"Distiller's schedules are not at {DISTILLER}")
def test_dry_run_of_a_distiller_schedule_shows_renames_sparsity_lr_and_thinning(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint = tmp_path / "r56.pt"
    save_checkpoint(checkpoint, create_model("resnet56-cifar"), arch="resnet56-cifar")
    args = ["prune", "--model", "resnet56_cifar", "--checkpoint", str(checkpoint), "--dataset", "synthetic",
            "--dataset-opt", "n=8", "--schedule", str(DISTILLER / "resnet56_cifar_filter_rank.yaml"),
            "--out", str(tmp_path / "p.pt"), "--epochs", "0", "--dry-run", "--lr", "0.1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "module.layer1.0.conv1.weight -> layer1.0.conv1.weight" in out
    assert "filter_pruner_60 (L1RankedStructureParameterPruner) 0.6000: layer1.0.conv1.weight" in out
    assert "thinning (net_thinner)" in out and "stands in for 'cifar10'" in out
    assert "epoch  11: -  (lr 0.095)" in out and "epoch   1:" not in out  # ExponentialLR steps from epoch 10


def test_lenet_300_100_on_digits_to_90_percent_within_one_point(tmp_path, capsys) -> None:
    """Han et al.'s LeNet-300-100 result, on the built-in digits: >= 90% of the weights gone
    (>= 10x fewer nonzeros) for at most 1 point of top1, by AGP with fine-tuning."""
    from api.cli import main
    from pruning_core.checkpoint import load_checkpoint, load_model
    from pruning_core.datasets import load_dataset, make_loader
    from pruning_core.metrics import model_sparsity
    from pruning_core.training import evaluate

    dense, pruned = tmp_path / "lenet.pt", tmp_path / "lenet_pruned.pt"
    common = ["--model", "lenet-300-100", "--dataset", "digits", "--batch-size", "64"]
    assert main(["train", *common, "--epochs", "30", "--lr", "0.05", "--out", str(dense)]) == 0
    schedule = Path(__file__).parent / "data" / "lenet_digits_agp.yaml"
    assert main(["prune", *common, "--checkpoint", str(dense), "--schedule", str(schedule), "--epochs", "30",
                 "--lr", "0.02", "--out", str(pruned)]) == 0
    capsys.readouterr()

    loader = make_loader(load_dataset("digits", "test"))
    before = evaluate(load_model(dense, "lenet-300-100"), loader, device="cpu")
    model = load_model(pruned, "lenet-300-100")
    after = evaluate(model, loader, device="cpu")
    assert load_checkpoint(pruned).input_shape == (1, 8, 8)
    assert model_sparsity(model) >= 0.90
    assert after.top1 >= before.top1 - 1.0


def test_dry_run_needs_only_model_and_schedule(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Random weights without --checkpoint, the schedule's own epochs, no dataset and no output file; the
    threshold pruner's level is computed on those weights (the CLI passes them to the torch-free walker)."""
    schedule = tmp_path / "s.yaml"
    schedule.write_text("""\
version: 1
pruners:
  agp: {class: AutomatedGradualPruner, initial_sparsity: 0.1, final_sparsity: 0.6, weights: ['layer1.*.conv1.weight']}
  sens: {class: SensitivityPruner, sensitivities: {layer2.0.conv1.weight: 0.5}}
lr_schedulers:
  lr: {class: CosineAnnealingLR, T_max: 4}
policies:
  - {pruner: {instance_name: agp}, starting_epoch: 0, ending_epoch: 3}
  - {pruner: {instance_name: sens}, epochs: [1]}
  - {lr_scheduler: {instance_name: lr}, starting_epoch: 0, ending_epoch: 4}
""")
    assert main(["prune", "--dry-run", "--model", "resnet20-cifar", "--schedule", str(schedule)]) == 0
    out = capsys.readouterr().out
    assert "epoch   2: agp -> 0.6000  (lr 0.005)" in out and "epoch   3: -  (lr 0.00146447)" in out
    sens = next(line for line in out.splitlines() if "sens (SensitivityPruner)" in line)
    assert 0.2 < float(sens.split(")")[1].split(":")[0]) < 0.6  # |w| <= 0.5 std of random normal-ish weights
    assert main(["prune", "--model", "resnet20-cifar", "--schedule", str(schedule)]) == 2
    assert "prune needs --checkpoint, --dataset, --epochs, --out to train" in capsys.readouterr().err
