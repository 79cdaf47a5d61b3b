"""The library's files of a language model's points (issue 14): the JSON keeps ``metrics`` whole, Distiller's
CSV keeps its five columns with empty top1/top5 cells and reads back measured, and the HTML report's menu is
the points' metrics, opening on the first rather than an empty top1 plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

from pruning_core.points import SensitivityPoint
from pruning_core.report import build_figure
from pruning_core.sensitivity_io import points_from_json, read_csv, to_json, write_csv

PARAMS = ("embed.weight", "head.weight")


def lm_points() -> list[SensitivityPoint]:
    return [SensitivityPoint(parameter=p, sparsity=s, top1=None, top5=None, loss=2.0 + (i + 1) * s, samples=64,
                             nnz=100 - int(100 * s), metrics={"perplexity": math.exp(2.0 + (i + 1) * s), "mae": s})
            for i, p in enumerate(PARAMS) for s in (0.0, 0.5)]


def test_json_csv_and_report_of_points_without_top1(tmp_path: Path) -> None:
    sent = lm_points()
    exported = json.loads(json.dumps(to_json(sent)))
    assert exported["points"][0]["metrics"] == sent[0].metrics and points_from_json(exported) == sent

    back = read_csv(write_csv(sent, tmp_path / "lm.csv"))
    assert (tmp_path / "lm.csv").read_text().splitlines()[:2] == ["parameter,sparsity,top1,top5,loss",
                                                                  "embed.weight,0.0,,,2.0"]
    assert [(p.top1, p.top5, p.loss, p.measured) for p in back] == [(None, None, p.loss, True) for p in sent]

    figure = build_figure(sent)
    assert [b.label for b in figure.layout.updatemenus[0].buttons] == ["loss", "perplexity", "mae"]
    shown = {t.name: list(t.y) for t in figure.data if t.visible}
    assert shown == {p: [q.loss for q in sent if q.parameter == p] for p in PARAMS}
    assert figure.layout.yaxis.title.text == "loss"
