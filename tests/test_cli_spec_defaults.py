"""No job-spec default is written twice: the CLI and the client take theirs from api.schemas.

The spec models are the one place defaults live. Every CLI option that is a spec field either has the
spec's default (a ``SpecDefault``, resolved when the command runs) or no default at all where the spec's
is None; a spec built from the CLI's parsed defaults, or from what the client sends for a call with no
options, equals the spec the API builds from nothing but the required fields.
"""

from __future__ import annotations

import argparse
import inspect
import json
import typing
from typing import Any

import httpx
import pytest

from api.cli import build_parser
from api.client import Client
from api.commands.common import SpecChoices, SpecDefault, resolve_spec_defaults
from api.schemas import (
    SPECS,
    PlanLaunch,
    PlanMeasure,
    PlanRequest,
    PruneSpec,
    SensitivitySpec,
    TrainSpec,
    field_default,
)

REQUIRED = {"model": "digits-cnn", "dataset": "digits"}
SCHEDULE = "version: 1\npruners: {}\npolicies: []\n"
# command -> (its spec model, the arguments it cannot run without)
COMMANDS: dict[str, tuple[type, list[str]]] = {
    "train": (TrainSpec, ["--model", "digits-cnn", "--dataset", "digits", "--out", "ck.pt"]),
    "sense": (SensitivitySpec, ["--model", "digits-cnn", "--dataset", "digits"]),
    "prune": (PruneSpec, ["--model", "digits-cnn", "--dataset", "digits", "--schedule", "s.yaml"]),
    "plan": (PlanRequest, ["--sensitivity", "s.csv", "-o", "s.yaml"]),
}
# CLI options that deliberately have no spec default: why
NO_SPEC_DEFAULT = {
    ("train", "lr"): "the optimizer decides it (TrainSpec.default_lr), checked below",
    ("prune", "epochs"): "required to train; --dry-run walks the schedule's own epochs",
}


def _subparser(command: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


@pytest.mark.parametrize("command", COMMANDS)
def test_cli_options_take_the_specs_defaults_and_choices(command: str) -> None:
    model, _ = COMMANDS[command]
    checked = 0
    for action in _subparser(command)._actions:
        if action.dest not in model.model_fields or model.model_fields[action.dest].is_required():
            continue
        checked += 1
        annotation = model.model_fields[action.dest].annotation  # Literal[...], or Literal[...] | None
        literal = next((a for a in (annotation, *typing.get_args(annotation))
                        if typing.get_origin(a) is typing.Literal), None)
        choices = typing.get_args(literal) if literal is not None else ()
        if action.choices is not None:
            assert isinstance(action.choices, SpecChoices) and tuple(action.choices) == choices, action.dest
        if (command, action.dest) in NO_SPEC_DEFAULT:
            assert action.default is None, action.dest
            continue
        if action.default is None:  # absent: the spec's default must be "none" too
            assert field_default(model, action.dest) is None, action.dest
        else:
            assert isinstance(action.default, SpecDefault), f"--{action.dest} writes its own default"
    assert checked >= 3


@pytest.mark.parametrize("command", COMMANDS)
def test_a_spec_from_the_cli_defaults_is_the_spec_of_nothing_given(command: str) -> None:
    model, argv = COMMANDS[command]
    args = resolve_spec_defaults(build_parser().parse_args([command, *argv]))
    given = {k: v for k, v in vars(args).items() if k in model.model_fields and v is not None}
    base = {**REQUIRED, "schedule": SCHEDULE} if model is PruneSpec else dict(REQUIRED)
    if model is PlanRequest:
        base = {"sensitivity_job": 1, "max_drop": 1.0}
    assert model.model_validate({**given, **base}) == model.model_validate(base)
    if command == "sense":
        assert args.levels == SensitivitySpec.model_fields["levels"].default == "0:0.95:0.05"


def test_train_lr_follows_the_spec_per_optimizer() -> None:
    from api.commands.train import _lr_default

    assert _lr_default() == "0.1 for sgd, 0.001 for adam, 0.001 for adamw"
    for optimizer in SpecChoices("TrainSpec", "optimizer"):
        spec = TrainSpec(**REQUIRED, optimizer=optimizer)
        assert spec.lr == TrainSpec.default_lr(optimizer)
    assert TrainSpec(**REQUIRED, optimizer="adam", lr=0.3).lr == 0.3


def test_help_shows_the_specs_defaults(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sense", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default 0:0.95:0.05)" in text and "element, filter, channel (default element)" in text


def _capture() -> tuple[Client, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(201, json={"id": 1, "kind": "train", "status": "queued", "spec": {}})

    return Client("http://server", transport=httpx.MockTransport(handler), progress=False), sent


def test_the_client_sends_no_default_of_its_own() -> None:
    client, sent = _capture()
    client.train("digits-cnn", "digits", wait=False)
    client.sense("digits-cnn", "digits", wait=False)
    client.prune("digits-cnn", "digits", SCHEDULE, wait=False)
    for body, kind in zip(sent, ("train", "sensitivity", "prune"), strict=True):
        assert body["kind"] == kind
        assert set(body["spec"]) <= {"model", "dataset", "schedule"}, body["spec"]
        assert SPECS[kind].model_validate(body["spec"]) == SPECS[kind].model_validate(
            {**REQUIRED, **({"schedule": SCHEDULE} if kind == "prune" else {})})
    client.launch_plan(3, max_drop=1.0, wait=False)
    assert sent[-1] == {"sensitivity_job": 3, "max_drop": 1.0}
    client.measure_plan(3, target=0.5, wait=False)
    assert sent[-1] == {"sensitivity_job": 3, "target": 0.5}


@pytest.mark.parametrize(("method", "model"), [("train", TrainSpec), ("sense", SensitivitySpec),
                                               ("prune", PruneSpec), ("plan", PlanRequest),
                                               ("launch_plan", PlanLaunch), ("measure_plan", PlanMeasure),
                                               ("compare_plans", PlanRequest)])
def test_client_method_options_default_to_the_spec(method: str, model: type) -> None:
    """Every option that is a spec field defaults to None (the spec's default), never to a value."""
    parameters = inspect.signature(getattr(Client, method)).parameters
    options = [p for name, p in parameters.items() if name in model.model_fields and p.default is not p.empty]
    assert options
    for p in options:
        assert p.default is None, f"Client.{method}({p.name}={p.default!r}) writes the spec's default again"
