"""``prunescope sense`` end to end on a quickly trained digits-cnn checkpoint."""

from __future__ import annotations

import json

from api.cli import main


def test_sense_writes_table_and_files(tmp_path, capsys, trained_digits):
    from pruning_core.checkpoint import save_checkpoint

    ck = tmp_path / "ck.pt"
    save_checkpoint(ck, trained_digits, arch="digits-cnn")
    out = {k: tmp_path / f"s.{k}" for k in ("csv", "json", "html")}
    rc = main(["sense", "--model", "digits-cnn", "--checkpoint", str(ck), "--dataset", "digits",
               "--group", "filter", "--levels", "0:0.95:0.45", "--device", "cpu",
               "--csv", str(out["csv"]), "--json", str(out["json"]), "--html", str(out["html"])])
    text = capsys.readouterr().out
    assert rc == 0
    assert "conv2.weight" in text and "skipped fc.weight" in text and "0.90" in text
    assert all(str(p) in text for p in out.values())
    rows = out["csv"].read_text().splitlines()
    assert rows[0] == "parameter,sparsity,top1,top5,loss" and len(rows) == 1 + 3 * 3
    data = json.loads(out["json"].read_text())
    assert data["skipped"][0]["parameter"] == "fc.weight"
    assert data["points"][0]["top1"] > 80  # the unpruned, trained model
    assert data["points"][0]["latency_ms"] is None
    from pruning_core.report import offline_problems

    assert offline_problems(out["html"].read_text()) == []


def test_sense_latency_table_and_json(tmp_path, capsys):
    out = tmp_path / "s.json"
    rc = main(["sense", "--model", "resnet20-cifar", "--dataset", "synthetic", "--dataset-opt", "n=16",
               "--group", "filter", "--coupled", "--latency", "--levels", "0,0.75",
               "--params", "layer1.0.conv2.weight", "--device", "cpu", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "latency_ms" in text and "macs" in text
    points = json.loads(out.read_text())["points"]
    assert all(p["latency_ms"] > 0 for p in points)


def test_sense_help_explains_options(capsys):
    try:
        main(["sense", "--help"])
    except SystemExit:
        pass
    text = capsys.readouterr().out
    for option in ("--levels", "--coupled", "--engine", "--samples", "--early-stop", "--amp", "--html", "--latency"):
        assert option in text
