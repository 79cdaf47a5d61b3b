"""The jobs list over REST on both stores: paging without overlap, sort by a column or a spec
field, search by id, model, name, tag or experiment, labels set with PATCH, and each item's key numbers
(a sensitivity job's baseline from its sparsity-0 points, a prune job's from its result)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.shared.settings import Settings
from api.store import repo
from api.store.models import Experiment
from tests.apps import make_app

N_JOBS = 40  # the browser test pages past 200; here pages of 7 and 9 cross the same boundaries
MODELS = ("lenet5", "digits-cnn", "resnet20-cifar")


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    """The app on each store (SQLite, PostgreSQL) with ``N_JOBS`` jobs written straight into it."""
    with TestClient(make_app(settings)) as c:
        with c.app.state.session_factory() as s:
            exp = Experiment(name="Sweep-Alpha", description="", tags=[])
            s.add(exp)
            s.flush()
            for i in range(N_JOBS):
                job = repo.create_job(s, kind="sensitivity" if i % 2 else "prune",
                                      spec={"model": MODELS[i % 3], "dataset": "digits"},
                                      experiment_id=exp.id if i % 10 == 0 else None)
                if i == 7:  # a sensitivity job with a measured baseline (two parameters at sparsity 0)
                    for name, top1 in (("a.weight", 91.5), ("b.weight", 91.5)):
                        repo.upsert_point(s, job.id, {"parameter": name, "sparsity": 0.0, "top1": top1}, shard=0,
                                          worker="t")
                    repo.upsert_point(s, job.id, {"parameter": "a.weight", "sparsity": 0.5, "top1": 40.0},
                                      shard=0, worker="t")
                if i == 8:
                    repo.merge_result(s, job.id, {"baseline": {"top1": 97.0}, "final": {"top1": 96.25},
                                                  "sparsity": 0.62})
            s.commit()
        yield c


def page(c: TestClient, **params: object) -> dict:
    r = c.get("/api/v1/jobs", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_pages_sort_and_numbers(api: TestClient) -> None:
    seen: list[int] = []
    for offset in range(0, N_JOBS, 7):
        body = page(api, limit=7, offset=offset)
        assert body["total"] == N_JOBS
        seen += [j["id"] for j in body["items"]]
    assert len(seen) == N_JOBS == len(set(seen))
    assert seen == sorted(seen, reverse=True)  # newest first is still the default
    sorted_by_model: list[tuple[str, int]] = []
    for offset in range(0, N_JOBS, 9):
        items = page(api, sort="model", limit=9, offset=offset)["items"]
        sorted_by_model += [(j["spec"]["model"], -j["id"]) for j in items]
    assert len({i for _, i in sorted_by_model}) == N_JOBS
    assert sorted_by_model == sorted(sorted_by_model)  # model ascending, ties newest first
    # a column both ways; an unknown sort is a 422 naming those there are
    up = [j["id"] for j in page(api, sort="id", limit=5)["items"]]
    down = [j["id"] for j in page(api, sort="-id", limit=5)["items"]]
    assert up == sorted(up) and down == sorted(down, reverse=True) and up[0] < down[0]
    kinds = [j["kind"] for j in page(api, sort="-kind", limit=N_JOBS)["items"]]
    assert kinds == sorted(kinds, reverse=True)
    r = api.get("/api/v1/jobs", params={"sort": "colour"})
    assert r.status_code == 422 and "sort" in r.text and "model" in r.text
    # each item's key numbers
    items = {j["id"]: j for j in page(api, sort="id", limit=10)["items"]}
    ordered = sorted(items)
    sens, pruned, plain = items[ordered[7]], items[ordered[8]], items[ordered[1]]
    assert sens["kind"] == "sensitivity" and sens["numbers"]["baseline_top1"] == 91.5
    assert pruned["numbers"] == {"baseline_top1": 97.0, "final_top1": 96.25, "final_sparsity": 0.62}
    assert plain["numbers"] == {"baseline_top1": None, "final_top1": None, "final_sparsity": None}


def test_search_and_labels(api: TestClient) -> None:
    lenet = page(api, q="LENET", limit=1000)
    assert lenet["total"] == len([i for i in range(N_JOBS) if MODELS[i % 3] == "lenet5"])
    assert {j["spec"]["model"] for j in lenet["items"]} == {"lenet5"}
    both = page(api, q="lenet", kind="sensitivity", limit=1000)
    assert {(j["kind"], j["spec"]["model"]) for j in both["items"]} == {("sensitivity", "lenet5")}
    assert both["total"] == len([i for i in range(N_JOBS) if i % 6 == 3])
    by_experiment = page(api, q="sweep-alpha", limit=1000)
    assert by_experiment["total"] == N_JOBS // 10
    some = page(api, limit=1)["items"][0]["id"]
    assert some in [j["id"] for j in page(api, q=f"#{some}")["items"]]
    assert page(api, q="100%_")["total"] == 0  # LIKE wildcards are searched for literally
    # names and tags: set, searched, sorted, kept when the other is changed, removed with null
    first, second = [j["id"] for j in page(api, limit=2)["items"]]
    r = api.patch(f"/api/v1/jobs/{first}", json={"name": "zeta baseline", "tags": ["resnet", "night-run"]})
    assert r.status_code == 200, r.text
    assert (r.json()["result"]["name"], r.json()["result"]["tags"]) == ("zeta baseline", ["resnet", "night-run"])
    assert api.patch(f"/api/v1/jobs/{second}", json={"name": "alpha"}).status_code == 200
    assert [j["id"] for j in page(api, q="night-run")["items"]] == [first]
    named = [j["id"] for j in page(api, sort="name", limit=3)["items"]]
    assert named[:2] == [second, first]  # named jobs first (a-z), unnamed ones after
    assert api.patch(f"/api/v1/jobs/{first}", json={"tags": ["kept"]}).json()["result"]["name"] == "zeta baseline"
    assert "name" not in api.patch(f"/api/v1/jobs/{first}", json={"name": None}).json()["result"]
    assert api.patch(f"/api/v1/jobs/{first}", json={"colour": "red"}).status_code == 422
    assert api.patch("/api/v1/jobs/999999", json={"name": "x"}).status_code == 404


def test_a_launched_plan_records_its_sweep_and_plan(client: TestClient) -> None:
    """Lineage: the prune job a plan launches names the sensitivity job and the plan request it came from."""
    with client.app.state.session_factory() as s:
        sweep = repo.create_job(s, kind="sensitivity", spec={
            "model": "digits-cnn", "dataset": "digits", "dataset_options": {}, "batch_size": 64, "device": "cpu",
            "group": "element", "levels": [0.0, 0.5]})
        sweep.status = "succeeded"
        for name in ("conv1.weight", "fc.weight"):
            for level, top1 in ((0.0, 95.0), (0.5, 94.5)):
                repo.upsert_point(s, sweep.id, {"parameter": name, "sparsity": level, "top1": top1}, shard=0,
                                  worker="t")
        s.commit()
        sweep_id = sweep.id
    r = client.post("/api/v1/plans/launch", json={"sensitivity_job": sweep_id, "max_drop": 1.0, "epochs": 4})
    assert r.status_code == 201, r.text
    lineage = r.json()["result"]["lineage"]
    assert lineage["sensitivity_job"] == sweep_id
    assert (lineage["plan"]["max_drop"], lineage["plan"]["metric"], lineage["plan"]["epochs"]) == (1.0, "top1", 4)
    listed = page(client, kind="prune")["items"][0]
    assert listed["result"]["lineage"] == lineage and "conv1.weight" in listed["spec"]["schedule"]
