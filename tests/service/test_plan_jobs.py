"""Issue 15 through the service: POST /plans with an objective (the optimiser beside the baselines, predicted,
in the API process), plan jobs (measured as a whole, corrected to a budget) and a prune job launched from one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from api.client import Client, PrunescopeError

pytestmark = pytest.mark.slow  # trains digits-cnn and sweeps it once for the module (~15 s)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, int]]:
    with Client.local(tmp_path_factory.mktemp("plans"), progress=False) as client:
        trained = client.train("digits-cnn", "digits", epochs=3, register_as="digits-planned")
        assert trained.status == "succeeded", trained.error
        sense = client.sense("digits-planned", "digits", levels="0:0.95:0.1", shards=1)
        assert sense.status == "succeeded", sense.error
        yield client, sense.id


def test_the_optimised_plan_needs_no_more_predicted_damage_than_any_baseline(sweep: tuple[Client, int]) -> None:
    client, job = sweep
    answer = client.compare_plans(job, objective="sparsity", target=0.8)
    plan = answer["plan"]
    assert plan["method"] == "optimal" and plan["overall_sparsity"] >= 0.8 - 1e-9
    assert set(answer["baselines"]) == {"uniform", "equal-tolerance"}
    for name, baseline in answer["baselines"].items():
        assert "error" in baseline or baseline["overall_sparsity"] >= 0.8 - 1e-9, name
        if "error" not in baseline:
            assert plan["predicted_drop"] <= baseline["predicted_drop"] + 1e-9, (name, plan, baseline)
    assert "SparsityLevelParameterPruner" in answer["yaml"] or "AutomatedGradualPruner" in answer["yaml"]
    assert client.plan(job, objective="sparsity", target=0.8) == answer["yaml"]


def test_a_goal_is_one_goal(sweep: tuple[Client, int]) -> None:
    client, job = sweep
    for bad in ({"objective": "sparsity"}, {"objective": "sparsity", "budget": 1, "target": 0.5},
                {"objective": "sparsity", "budget": 1, "max_drop": 1}, {"budget": 1}):
        with pytest.raises(PrunescopeError) as err:
            client._json("POST", "/plans", json={"sensitivity_job": job, **bad})
        assert err.value.status == 422, bad
    with pytest.raises(PrunescopeError) as err:  # a plan job's spec is checked the same way, before it is made
        client.measure_plan(job, budget=1.0, target=0.5, wait=False)
    assert err.value.status == 422 and "exactly one of budget and target" in str(err.value)


def test_a_corrected_plan_job_meets_its_budget_and_measures_the_baselines(sweep: tuple[Client, int]) -> None:
    client, job = sweep
    measured = client.measure_plan(job, objective="sparsity", budget=1.0, correct=True, rounds=4)
    assert measured.status == "succeeded", measured.error
    plan = measured.result["plan"]
    assert plan["predicted_drop"] <= 1.0 + 1e-9 and plan["measured_drop"] is not None
    assert plan["met"] is True and plan["measured_drop"] <= 1.0 + 1e-9
    assert 1 <= len(plan["rounds"]) <= 4 and plan["rounds"][-1]["measured_drop"] == plan["measured_drop"]
    assert measured.result["lineage"] == {"sensitivity_job": job}
    for name in ("uniform", "equal-tolerance"):
        assert measured.result["baselines"][name]["measured_drop"] is not None, name


def test_a_target_plan_job_measures_global_magnitude_and_launches_its_schedule(sweep: tuple[Client, int]) -> None:
    client, job = sweep
    measured = client.measure_plan(job, objective="sparsity", target=0.8, one_shot=True, epochs=1)
    assert measured.status == "succeeded", measured.error
    baselines = measured.result["baselines"]
    assert set(baselines) == {"uniform", "equal-tolerance", "global-magnitude"}
    assert baselines["global-magnitude"]["measured"]["sparsity"] > 0
    assert measured.result["plan"]["measured"]["sparsity"] > 0
    pruned = client.launch_plan(job, plan_job=measured.id, wait=True)
    assert pruned.status == "succeeded", pruned.error
    assert pruned.spec["schedule"] == measured.result["yaml"] and pruned.spec["epochs"] == 1
    assert pruned.result["lineage"]["plan_job"] == measured.id


def test_a_searched_plan_job_keeps_its_target_and_measures_no_worse_than_the_knapsack(
        sweep: tuple[Client, int]) -> None:
    client, job = sweep
    plain = client.measure_plan(job, objective="sparsity", target=0.8, baselines=False)
    searched = client.measure_plan(job, objective="sparsity", target=0.8, search=True, evaluations=12,
                                   baselines=False)
    assert plain.status == searched.status == "succeeded", (plain.error, searched.error)
    start, found = plain.result["plan"], searched.result["plan"]
    assert found["overall_sparsity"] >= 0.8 - 1e-9 and found["measured_drop"] <= start["measured_drop"] + 1e-9
    assert found["rounds"][0]["levels"] == start["levels"] and found["rounds"][-1]["levels"] == found["levels"]
    assert searched.result["yaml"] and searched.spec["search"] is True
    with pytest.raises(PrunescopeError) as err:  # the search keeps a target; a budget has none
        client.measure_plan(job, objective="sparsity", budget=1.0, search=True, wait=False)
    assert err.value.status == 422 and "search" in str(err.value)


def test_a_plan_job_needs_a_finished_sweep(sweep: tuple[Client, int], tmp_path: Path) -> None:
    client, job = sweep
    with pytest.raises(PrunescopeError) as err:
        client.submit("plan", {"model": "digits-cnn", "dataset": "digits", "sensitivity_job": 424242,
                               "objective": "sparsity", "target": 0.5})
    assert err.value.status == 422 and "sensitivity_job" in str(err.value)
