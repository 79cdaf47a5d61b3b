"""The jobs table in chromium: paging past 200 jobs through the server (no overlap, the range shown),
sort by a header, search (debounced, in the URL), names and tags set from the table, the key numbers
(a sweep's baseline top1, a prune job's final top1 and sparsity) and a prune job's lineage and schedule."""

from __future__ import annotations

import uuid

from dash_helpers import goto, insert_sensitivity_job

from api.store import repo
from api.store.models import utcnow

SCHEDULE = "version: 1\npruners:\n  p:\n    class: AutomatedGradualPruner\n"


def insert_jobs(store, n: int, dataset: str) -> list[int]:
    """``n`` queued jobs whose dataset name is ``dataset`` (a token no other test's jobs carry)."""
    with store() as s:
        ids = [repo.create_job(s, kind="train", spec={"model": "lenet5", "dataset": dataset}).id for _ in range(n)]
        s.commit()
    return ids


def row_ids(page) -> list[int]:
    return [int(v) for v in page.eval_on_selector_all("#jobs-body tr[data-job]", "rs => rs.map(r => r.dataset.job)")]


def wait_rows(page, n: int) -> None:
    page.wait_for_function("n => document.querySelectorAll('#jobs-body tr[data-job]').length === n", arg=n)


def test_pages_past_200_sort_and_search(page, store) -> None:
    token = f"paged{uuid.uuid4().hex[:6]}"
    ids = insert_jobs(store, 230, token)
    goto(page, f"#/jobs?q={token}&limit=200")
    wait_rows(page, 200)
    assert page.inner_text("#jobs-count") == "230 jobs"
    assert page.inner_text("#jobs-range") == "1–200 of 230"
    first = row_ids(page)
    assert first == sorted(ids, reverse=True)[:200]  # newest first
    assert page.locator("#jobs-prev").is_disabled()
    page.click("#jobs-next")
    wait_rows(page, 30)
    second = row_ids(page)
    assert sorted(first + second) == sorted(ids)
    assert "offset=200" in page.url and page.inner_text("#jobs-range") == "201–230 of 230"
    assert page.locator("#jobs-next").is_disabled()
    # a header sorts (server side, from the first page): ascending ids, then descending again
    page.click("#jobs-table th[data-sort=id]")
    page.wait_for_function("ids => document.querySelector('#jobs-body tr[data-job]').dataset.job === String(ids)",
                           arg=min(ids))
    assert row_ids(page) == sorted(ids)[:200]
    assert page.get_attribute("#jobs-table th[data-sort=id]", "aria-sort") == "ascending"
    assert "sort=id" in page.url and "offset" not in page.url
    # the URL brings the same view back
    page.reload()
    page.wait_for_function("document.body.dataset.ready === '1'")
    wait_rows(page, 200)
    assert row_ids(page) == sorted(ids)[:200]
    # search by id narrows to that job
    page.fill("#jobs-search", f"#{ids[5]}")
    wait_rows(page, 1)
    assert row_ids(page) == [ids[5]]


def test_name_and_tags_from_the_table(page, store) -> None:
    token = f"label{uuid.uuid4().hex[:6]}"
    job = insert_jobs(store, 1, token)[0]
    answers = iter(["resnet sweep A", f"nightly, {token}-tag"])
    page.on("dialog", lambda d: d.accept(next(answers)))
    goto(page, f"#/jobs?q={token}")
    wait_rows(page, 1)
    page.click(f"#jobs-body tr[data-job='{job}'] [data-action=label]")
    page.wait_for_function("id => (document.querySelector(`tr[data-job='${id}'] .job-name`) || {}).textContent"
                           " === 'resnet sweep A'", arg=job)
    tags = page.locator(f"#jobs-body tr[data-job='{job}'] .tag").all_inner_texts()
    assert tags == ["nightly", f"{token}-tag"]
    # a tag is a search: another job with only the same dataset drops out
    other = insert_jobs(store, 1, token)[0]
    goto(page, f"#/jobs?q={token}")
    wait_rows(page, 2)
    page.click(f"#jobs-body tr[data-job='{job}'] .tag >> text={token}-tag")
    wait_rows(page, 1)
    assert row_ids(page) == [job] and other not in row_ids(page)
    assert page.input_value("#jobs-search") == f"{token}-tag"


def test_key_numbers_and_lineage(page, store, server) -> None:
    sweep = insert_sensitivity_job(store, 3, 4)
    points = server.get(f"/api/v1/jobs/{sweep}/points")
    baseline = max(p["top1"] for p in points if p["sparsity"] == 0)
    token = f"lineage{uuid.uuid4().hex[:6]}"
    with store() as s:
        pruned = repo.create_job(s, kind="prune", spec={"model": "digits-cnn", "dataset": token, "schedule": SCHEDULE})
        pruned.status, pruned.started_at, pruned.finished_at = "succeeded", utcnow(), utcnow()
        s.flush()
        repo.merge_result(s, pruned.id, {"baseline": {"top1": 97.5}, "final": {"top1": 96.125}, "sparsity": 0.625,
                                         "lineage": {"sensitivity_job": sweep,
                                                     "plan": {"max_drop": 1.5, "metric": "top1"}}})
        s.commit()
        pruned_id = pruned.id
    goto(page, f"#/jobs?q=%23{sweep}")
    wait_rows(page, 1)
    assert page.inner_text(f"tr[data-job='{sweep}'] td.baseline") == f"{baseline:.2f} %"
    goto(page, f"#/jobs?q={token}")
    wait_rows(page, 1)
    row = f"tr[data-job='{pruned_id}']"
    assert page.inner_text(f"{row} td.baseline") == "97.50 %"
    assert page.inner_text(f"{row} td.final") == "top1 96.13 % · sparsity 62.5 %"
    assert page.get_attribute(f"{row} a.lineage-sweep", "href") == f"#/jobs/{sweep}"
    assert page.get_attribute(f"{row} a.lineage-plan", "href") == f"#/plan/{sweep}"
    assert "top1 ≤ 1.5" in page.inner_text(f"{row} a.lineage-plan")
    page.click(f"{row} details.schedule summary")
    assert page.inner_text(f"{row} details.schedule pre").strip() == SCHEDULE.strip()
