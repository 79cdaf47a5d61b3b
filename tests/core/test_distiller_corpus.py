"""Distiller's whole published corpus (issue 17): every schedule of ``corpus/MANIFEST.tsv`` dry-run on its
architecture, as ``prunescope prune --dry-run`` does it (``resolve_names`` + ``preview.preview``).

The schedules are read from ``../shared/distiller-schedules/corpus`` (never copied). Models are built on the
meta device: a dry run needs parameter names and shapes only, and a meta ResNet-1202 or MobileNet costs no
weights. At least 59 of the 65 pass; each one that does not gives a one-line reason that starts with
"out of scope:".
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from torch import nn

from pruning_core.declarations import PRUNER_CLASSES
from pruning_core.models import create_model
from pruning_core.names import unsupported_reason
from pruning_core.preview import preview
from pruning_core.schedule import ScheduleError, load_schedule, model_parameter_names, resolve_names

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "distiller-schedules" / "corpus"
pytestmark = pytest.mark.skipif(not (CORPUS / "MANIFEST.tsv").is_file(), reason=f"no corpus at {CORPUS}")
AT_LEAST = 59


def _manifest() -> list[tuple[str, str]]:
    if not (CORPUS / "MANIFEST.tsv").is_file():
        return []
    rows = [line.split("\t") for line in (CORPUS / "MANIFEST.tsv").read_text().splitlines()[1:] if line.strip()]
    return [(file.strip(), arch.strip()) for file, arch in rows]


@functools.cache
def _meta_model(arch: str) -> nn.Module:
    with torch.device("meta"):
        return create_model(arch)


def _check_walk(file: str, arch: str) -> None:
    """The dry run of one schedule: names resolve against the architecture, and the walk reaches each
    pruner's level (AGP: its final sparsity at its last epoch, then kept; fixed: its level)."""
    schedule = load_schedule(CORPUS / file)
    model = _meta_model(arch)
    names, prunable = model_parameter_names(model)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    resolved, targets = resolve_names(schedule, names, prunable)
    walk = preview(schedule, shapes, prunable=prunable)
    assert len(walk) == schedule.last_epoch() + 1
    for policy in resolved.policies:
        epochs = policy.active_epochs()
        if policy.kind == "pruner":
            spec = resolved.pruners[policy.instance_name]
            decl = PRUNER_CLASSES[spec.cls]
            want = spec.args["final_sparsity"] if decl.agp else decl.target(spec.args, "", 0, (0, 0, 1))
            for param in targets[policy.instance_name]:
                if want is not None and decl.level is not None:
                    want = decl.target(spec.args, param, 0, (0, 0, 1))
                got = walk[epochs[-1]]["sparsity"][param]
                assert got == (pytest.approx(want) if want is not None else None), (policy.instance_name, param)
            assert all(policy.instance_name in walk[e]["pruners"] for e in epochs)
        elif policy.kind == "regularizer":
            assert all(policy.instance_name in walk[e]["regularizers"] for e in epochs)
        elif policy.kind == "extension":
            assert all(policy.instance_name in walk[e]["thinning"] for e in epochs)


@functools.cache
def outcome(file: str, arch: str) -> str | None:
    """None when the dry run passes, else the one-line reason it does not."""
    reason = unsupported_reason(arch)
    if reason is not None:
        return f"out of scope: {arch}: {reason}"
    try:
        _check_walk(file, arch)
    except ScheduleError as exc:
        return f"schedule error: {exc}"
    except (ValueError, AssertionError) as exc:
        return f"failed: {type(exc).__name__}: {exc}".splitlines()[0]
    return None


@pytest.mark.parametrize("file, arch", _manifest(), ids=[f for f, _ in _manifest()])
def test_schedule_dry_runs_on_its_architecture(file: str, arch: str) -> None:
    reason = outcome(file, arch)
    if reason is not None and reason.startswith("out of scope:"):
        pytest.skip(reason)
    assert reason is None, reason


def test_at_least_59_of_65_pass_and_every_other_says_why() -> None:
    rows = _manifest()
    assert len(rows) == 65
    failed = {file: outcome(file, arch) for file, arch in rows if outcome(file, arch) is not None}
    print(f"\n{len(rows) - len(failed)} of {len(rows)} Distiller schedules dry-run on their architecture")
    for file, reason in failed.items():
        print(f"  {file}: {reason}")
    assert len(rows) - len(failed) >= AT_LEAST, failed
    assert all(reason is not None and reason.startswith("out of scope:") and "\n" not in reason
               for reason in failed.values()), failed
