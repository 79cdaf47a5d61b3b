"""The experiments page in chromium: every experiment as a card, one opened shows its jobs grouped by kind,
each group compared on the spec fields that differ between its jobs and on the key numbers, and its
sensitivity jobs sent to the compare page."""

from __future__ import annotations

import uuid

from dash_helpers import goto, insert_sensitivity_job

from api.store import repo
from api.store.models import Job


def test_jobs_grouped_and_compared(page, store, server) -> None:
    name = f"exp-{uuid.uuid4().hex[:6]}"
    exp = server.post("/api/v1/experiments", {"name": name, "tags": ["resnet", "cifar"], "description": "ablation"})
    sweeps = [insert_sensitivity_job(store, 3, 4, seed=s) for s in (1, 2)]
    with store() as s:
        for job_id, group in zip(sweeps, ("element", "filter"), strict=True):
            job = s.get(Job, job_id)
            job.experiment_id, job.spec = exp["id"], {**job.spec, "group": group}
        pruned = []
        for lr, final in ((0.01, 95.5), (0.05, 93.25)):
            job = repo.create_job(s, kind="prune", experiment_id=exp["id"],
                                  spec={"model": "digits-cnn", "dataset": "digits", "lr": lr, "schedule": "x"})
            s.flush()
            repo.merge_result(s, job.id, {"baseline": {"top1": 97.0}, "final": {"top1": final}, "sparsity": 0.5})
            pruned.append(job.id)
        s.commit()
    goto(page, "#/experiments")
    card = page.locator(f"#experiments-grid [data-experiment='{exp['id']}']")
    assert name in card.inner_text() and "4 jobs" in card.inner_text()
    assert card.locator(".tag").all_inner_texts() == ["resnet", "cifar"]
    card.click()
    page.wait_for_function("h => document.body.dataset.hash === h && document.body.dataset.ready === '1'",
                           arg=f"#/experiments/{exp['id']}")
    groups = page.eval_on_selector_all("#experiment-detail [data-kind-group]", "gs => gs.map(g => g.dataset.kindGroup)")
    assert groups == ["sensitivity", "prune"]
    sens = page.locator("[data-kind-group=sensitivity]")
    heads = sens.locator("thead th").all_inner_texts()
    assert "GROUP" in [x.upper() for x in heads]  # the field that tells the two sweeps apart is a column
    assert "LEVELS" not in [x.upper() for x in heads]  # the same in both: not a column
    prune = page.locator("[data-kind-group=prune]")
    prune_heads = [x.upper() for x in prune.locator("thead th").all_inner_texts()]
    assert "LR" in prune_heads and "SCHEDULE" not in prune_heads
    finals = {int(r.get_attribute("data-job")): r.locator("td.num").all_inner_texts()
              for r in prune.locator("tbody tr").all()}
    assert finals[pruned[0]] == ["97.00 %", "95.50 %", "50.0 %"] and finals[pruned[1]][1] == "93.25 %"
    assert "best" in (prune.locator(f"tr[data-job='{pruned[0]}']").get_attribute("class") or "")
    page.click("#experiment-detail a[href^='#/new']")  # a new job lands in this experiment
    page.wait_for_function("h => document.body.dataset.hash === h && document.body.dataset.ready === '1'",
                           arg=f"#/new?experiment={exp['id']}")
    assert page.input_value("#f-experiment_id") == str(exp["id"])
    page.go_back()
    page.wait_for_function("h => document.body.dataset.hash === h && document.body.dataset.ready === '1'",
                           arg=f"#/experiments/{exp['id']}")
    sens = page.locator("[data-kind-group=sensitivity]")
    for job_id in sweeps:
        sens.locator(f"tr[data-job='{job_id}'] input[type=checkbox]").check()
    sens.locator("[data-action=compare]").click()
    page.wait_for_function("location.hash.startsWith('#/compare')")
    assert f"jobs={min(sweeps)},{max(sweeps)}" in page.url


def test_unknown_experiment_and_create(page) -> None:
    goto(page, "#/experiments/987654")
    assert "Experiment 987654 does not exist" in page.inner_text("#view")
    name = f"made-{uuid.uuid4().hex[:6]}"
    page.fill("#experiment-new [name=name]", name)
    page.fill("#experiment-new [name=tags]", "a, b")
    page.click("#experiment-new button[type=submit]")
    page.wait_for_function("document.body.dataset.hash.startsWith('#/experiments/')"
                           " && document.body.dataset.ready === '1' && document.querySelector('#experiment-detail')")
    assert f"{name}: 0 jobs" in page.inner_text("#experiment-detail")
    page.fill("#experiment-new [name=name]", name)  # the same name again: the API's 409 beside the field
    page.click("#experiment-new button[type=submit]")
    page.wait_for_function("document.querySelector('#experiment-new').textContent.includes('already exists')")
