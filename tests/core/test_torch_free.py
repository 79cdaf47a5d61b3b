"""What the API computes in-process needs no torch (issue 19): validate, preview on stored shapes, plan.

A child Python process makes ``torch`` unimportable (a meta-path finder that refuses it), imports the
modules the API uses and does the work on parameter shapes that this process, which has torch, wrote
to a JSON file; its results must equal the torch-side results computed here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pruning_core.metrics import prunable_parameters
from pruning_core.models import create_model
from pruning_core.plan import choose_levels, plan_for_target, plan_schedule
from pruning_core.schedule import dump_schedule, parse_schedule, resolve_schedule
from pruning_core.scheduler import preview_schedule

ROOT = Path(__file__).resolve().parents[2]

RESNET20 = """\
version: 1
pruners:
  agp: {class: AutomatedGradualPruner, initial_sparsity: 0.05, final_sparsity: 0.6, weights: ['layer1.*.weight']}
  filters: {class: L1RankedStructureParameterPruner_AGP, initial_sparsity: 0.1, final_sparsity: 0.4,
            group_type: Filters, weights: [module.layer2.0.conv1.weight, layer2.1.conv1.weight]}
  fc: {class: SparsityLevelParameterPruner, levels: {fc.weight: 0.5}}
  nm: {class: NMStructuredPruner, n: 2, m: 4, weights: [layer3.0.conv2.weight]}
  sens: {class: SensitivityPruner, sensitivities: {layer3.1.conv1.weight: 0.5}}
lr_schedulers:
  warm: {class: LinearLR, total_iters: 2}
  cos: {class: CosineAnnealingLR, T_max: 6, eta_min: 0.001}
  plateau: {class: ReduceLROnPlateau, patience: 2}
policies:
  - {pruner: {instance_name: agp}, starting_epoch: 0, ending_epoch: 5, frequency: 2}
  - {pruner: {instance_name: filters}, starting_epoch: 1, ending_epoch: 4}
  - {pruner: {instance_name: fc}, epochs: [2]}
  - {pruner: {instance_name: nm}, epochs: [3]}
  - {pruner: {instance_name: sens}, epochs: [4]}
  - {lr_scheduler: {instance_name: warm}, starting_epoch: 0, ending_epoch: 2}
  - {lr_scheduler: {instance_name: cos}, starting_epoch: 0, ending_epoch: 8}
  - {lr_scheduler: {instance_name: plateau}, epochs: [7]}
"""
DIGITS = """\
version: 1
pruners:
  p: {class: AutomatedGradualPruner, initial_sparsity: 0.1, final_sparsity: 0.8, weights: ['*']}
  r: {class: RandomLevelStructureParameterPruner, group_type: Filters, sparsity_range: [0.1, 0.2],
      weights: [conv1.weight]}
lr_schedulers:
  lr: {class: MultiStepMultiGammaLR, milestones: [1, 3], gammas: [0.5, 0.1]}
policies:
  - {pruner: {instance_name: p}, starting_epoch: 0, ending_epoch: 4}
  - {pruner: {instance_name: r}, epochs: [1]}
  - {lr_scheduler: {instance_name: lr}, starting_epoch: 0, ending_epoch: 5}
"""
CASES = [("resnet20-cifar", RESNET20), ("digits-cnn", DIGITS), ("lenet5", DIGITS.replace("'*'", "conv2.weight, 'fc*'"))]
THRESHOLD = {"layer3.1.conv1.weight"}  # SensitivityPruner's: the weights decide, so None without them

CHILD = textwrap.dedent("""\
    import importlib.abc, json, sys

    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"torch is not importable here ({name})")
            return None

    sys.meta_path.insert(0, NoTorch())
    from types import SimpleNamespace

    from pruning_core.declarations import PRUNER_CLASSES
    from pruning_core.lr_table import LR_SCHEDULERS
    from pruning_core.plan import choose_levels, plan_for_target, plan_schedule, sizes_from_shapes
    from pruning_core.preview import preview
    from pruning_core.schedule import ScheduleError, dump_schedule, parse_schedule, resolve_names

    data = json.load(open(sys.argv[1]))
    out = []
    for case in data["cases"]:
        shapes = {n: tuple(s) for n, s in case["shapes"].items()}
        schedule = parse_schedule(case["yaml"], source="s.yaml")
        resolved, _ = resolve_names(schedule, list(shapes), case["prunable"])
        points = [SimpleNamespace(**p) for p in case["points"]]
        sizes = sizes_from_shapes(shapes, case["prunable"])
        plans = {}
        for key, plan in (("drop", choose_levels(points, 1.0, "top1", sizes)),
                          ("target", plan_for_target(points, 0.02, sizes, "top1"))):
            plans[key] = {"levels": plan.levels, "tolerance": plan.tolerance, "overall": plan.overall_sparsity,
                          "yaml": dump_schedule(plan_schedule(plan, epochs=6)),
                          "one_shot": dump_schedule(plan_schedule(plan, epochs=6, one_shot=True))}
        try:
            parse_schedule(case["yaml"].replace("class: AutomatedGradualPruner", "class: AutoGradualPruner"))
            error = None
        except ScheduleError as exc:
            error = [exc.key, exc.line]
        out.append({"schedule": schedule.to_dict(), "renames": [list(r) for r in resolved.renames],
                    "epochs": preview(schedule, shapes, lr=0.05, prunable=case["prunable"]), "sizes": sizes,
                    "plans": plans, "error": error})
    json.dump({"results": out, "torch_loaded": "torch" in sys.modules, "classes": len(PRUNER_CLASSES),
               "lr_classes": len(LR_SCHEDULERS)}, open(sys.argv[2], "w"))
""")


def _points(names: list[str]) -> list[dict[str, Any]]:
    drops = [(0.0, 0.0), (0.3, 0.2), (0.6, 0.9), (0.9, 4.0)]
    return [{"parameter": n, "sparsity": s, "top1": 90.0 - d * (1 + i % 3), "top5": 99.0, "loss": 0.3 + d,
             "group": "element"} for i, n in enumerate(names) for s, d in drops]


def _plans(points: list[dict[str, Any]], sizes: dict[str, int]) -> dict[str, Any]:
    ns = [SimpleNamespace(**p) for p in points]
    out = {}
    for key, plan in (("drop", choose_levels(ns, 1.0, "top1", sizes)), ("target", plan_for_target(ns, 0.02, sizes))):
        out[key] = {"levels": plan.levels, "tolerance": plan.tolerance, "overall": plan.overall_sparsity,
                    "yaml": dump_schedule(plan_schedule(plan, epochs=6)),
                    "one_shot": dump_schedule(plan_schedule(plan, epochs=6, one_shot=True))}
    return out


def test_validate_preview_and_plan_run_without_torch_and_equal_the_torch_results(tmp_path: Path) -> None:
    cases, expected = [], []
    for arch, text in CASES:
        model = create_model(arch)
        prunable = [n for n, _ in prunable_parameters(model)]
        points = _points(prunable[:4])
        cases.append({"yaml": text, "shapes": {n: list(p.shape) for n, p in model.named_parameters()},
                      "prunable": prunable, "points": points})
        schedule = parse_schedule(text, source="s.yaml")
        sizes = {n: p.numel() for n, p in prunable_parameters(model)}  # what plan --model weighs with
        expected.append({"schedule": schedule.to_dict(), "sizes": sizes, "plans": _plans(points, sizes),
                         "renames": [list(r) for r in resolve_schedule(schedule, model).renames],
                         "epochs": preview_schedule(schedule, model, lr=0.05)})
    inputs, results = tmp_path / "in.json", tmp_path / "out.json"
    inputs.write_text(json.dumps({"cases": cases}))
    run = subprocess.run([sys.executable, "-c", CHILD, str(inputs), str(results)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    got = json.loads(results.read_text())
    assert got["torch_loaded"] is False and got["classes"] == 17 and got["lr_classes"] == 12  # 17: issue 17's 7 new
    for (arch, _), want, have in zip(CASES, expected, got["results"], strict=True):
        want = json.loads(json.dumps(want))  # the same JSON round trip the child's results took
        assert have["schedule"] == want["schedule"] and have["renames"] == want["renames"], arch
        assert have["sizes"] == want["sizes"] and have["plans"] == want["plans"], arch
        assert have["error"][0] in ("pruners.p.class", "pruners.agp.class") and have["error"][1] in (3, 4)
        assert len(have["epochs"]) == len(want["epochs"]) > 3
        for mine, theirs in zip(have["epochs"], want["epochs"], strict=True):
            blind = {w for w in mine["sparsity"] if w in THRESHOLD}
            assert {k: v for k, v in mine.items() if k not in ("sparsity", "notes")} == \
                {k: v for k, v in theirs.items() if k not in ("sparsity", "notes")}, (arch, mine["epoch"])
            assert {w: v for w, v in mine["sparsity"].items() if w not in blind} == \
                {w: v for w, v in theirs["sparsity"].items() if w not in blind}
            assert all(mine["sparsity"][w] is None and theirs["sparsity"][w] > 0 for w in blind)
            assert [n for n in mine["notes"] if "magnitudes" not in n] == theirs["notes"]
            assert bool(blind & set(mine["params"].get("sens", []))) == any("magnitudes" in n for n in mine["notes"])
        if arch == "resnet20-cifar":
            assert have["renames"] == [["module.layer2.0.conv1.weight", "layer2.0.conv1.weight"]]
            assert any(mine["sparsity"].get("layer3.1.conv1.weight", 0) is None for mine in have["epochs"])
            assert len({e["lr"] for e in have["epochs"]}) > 4  # the lr moves (LinearLR then cosine)
