"""Sensitivity exports: Wilson intervals, Distiller CSV, JSON and the offline HTML report."""

from __future__ import annotations

import json

import pytest

from pruning_core.report import build_figure, offline_problems
from pruning_core.sensitivity import SensitivityPoint
from pruning_core.sensitivity_io import points_from_json, read_csv, to_json, write_csv, write_html
from pruning_core.stats import wilson_interval


def test_wilson_matches_hand_computation():
    # 8 of 10 at 95 %: centre (0.8 + 1.9208/10) / 1.38415 = 0.71672, half 0.22659 (by hand)
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(49.016, abs=1e-2) and high == pytest.approx(94.332, abs=1e-2)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 100.0


def sample_points():
    pts = []
    for name, drop in (("conv1.weight", 1.0), ("fc.weight", 3.0)):
        for i, s in enumerate((0.0, 0.5, 0.9)):
            top1 = 95.0 - drop * i * 10
            low, high = wilson_interval(round(top1 * 4.5), 450)
            pts.append(SensitivityPoint(parameter=name, sparsity=s, top1=top1, top5=99.5, loss=0.1 + i / 3,
                                        samples=450, nnz=100, top1_low=low, top1_high=high,
                                        top5_low=98.0, top5_high=99.9, latency_ms=2.5 - i))
    pts.append(SensitivityPoint(parameter="fc.weight", sparsity=0.95, top1=None, top5=None, loss=None,
                                samples=0, nnz=5, measured=False))
    return pts


def test_csv_round_trip(tmp_path):
    points = sample_points()
    path = write_csv(points, tmp_path / "s.csv")
    assert path.read_text().splitlines()[0] == "parameter,sparsity,top1,top5,loss"
    back = read_csv(path)
    assert [(p.parameter, p.sparsity, p.top1, p.top5, p.loss, p.measured) for p in back] == \
           [(p.parameter, p.sparsity, p.top1, p.top5, p.loss, p.measured) for p in points]


def test_measured_points_survive_csv_export_and_import(tmp_path, trained_digits):
    """Points of a real analysis (floats with every digit) come back from Distiller's CSV exactly."""
    from pruning_core.datasets import load_dataset, make_loader
    from pruning_core.sensitivity import analyze

    loader = make_loader(load_dataset("digits", "test"), batch_size=128)
    points = analyze(trained_digits, loader, levels="0,0.3,0.7", params=["conv1.weight", "fc.weight"],
                     device="cpu").points
    back = read_csv(write_csv(points, tmp_path / "s.csv"))
    key = ("parameter", "sparsity", "top1", "top5", "loss")
    assert [[getattr(p, k) for k in key] for p in back] == [[getattr(p, k) for k in key] for p in points]


def test_reads_a_file_written_by_distiller(tmp_path):
    # distiller.sensitivities_to_csv: csv.writer, header then [param, sparsity, top1, top5, loss]
    (tmp_path / "d.csv").write_text("parameter,sparsity,top1,top5,loss\r\n"
                                    "module.conv1.weight,0.0,91.26,99.64,0.3534\r\n"
                                    "module.conv1.weight,0.05,91.24,99.63,0.35370775818824766\r\n")
    points = read_csv(tmp_path / "d.csv")
    assert [(p.parameter, p.sparsity, p.top1, p.top5, p.loss) for p in points] == [
        ("module.conv1.weight", 0.0, 91.26, 99.64, 0.3534),
        ("module.conv1.weight", 0.05, 91.24, 99.63, 0.35370775818824766)]


def test_read_csv_rejects_other_files(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="missing column"):
        read_csv(tmp_path / "x.csv")


def test_json_keeps_every_field():
    points = sample_points()
    assert points_from_json(json.loads(json.dumps(to_json(points)))) == points


def test_html_has_one_curve_per_parameter_and_no_cdn(tmp_path):
    points = sample_points()
    lines = [t for t in build_figure(points).data if t.meta == "top1"]
    assert sorted(t.name for t in lines) == ["conv1.weight", "fc.weight"]
    html = write_html(points, tmp_path / "r.html").read_text()
    assert offline_problems(html) == [] and len(html) > 1_000_000  # plotly.js inline, no CDN
    assert offline_problems(html.replace("<script", '<script src="https://cdn.plot.ly/x.js"', 1))
    assert "conv1.weight" in html and "updatemenus" in html
