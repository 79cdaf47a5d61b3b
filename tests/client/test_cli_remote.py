"""``prunescope submit / status / results`` against a live server: the CLI's side of the service."""

from __future__ import annotations

import json

import pytest

from api.cli import main
from api.client import Client

pytestmark = pytest.mark.slow


def test_submit_status_results_round_trip(server_url: str, client: Client, capsys) -> None:
    code = main(["submit", "sensitivity", "--server", server_url, "--model", "digits-cnn", "--dataset", "synthetic",
                 "--dataset-opt", "n=64", "--levels", "0,0.5", "--params", "fc.weight"])
    assert code == 0
    submitted = json.loads(capsys.readouterr().out)
    job = client.wait(submitted["id"])
    assert job.status == "succeeded"

    assert main(["status", str(job.id), "--server", server_url]) == 0
    assert f"job {job.id} (sensitivity): succeeded  2/2" in capsys.readouterr().out

    assert main(["results", str(job.id), "--server", server_url]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[0] == "parameter,sparsity,top1,top5,loss"
    assert [r.split(",")[:2] for r in rows[1:]] == [["fc.weight", "0.0"], ["fc.weight", "0.5"]]


def test_remote_errors_carry_the_servers_message(server_url: str, capsys) -> None:
    code = main(["submit", "sensitivity", "--server", server_url, "--model", "no-such-net", "--dataset", "digits"])
    assert code == 2
    err = capsys.readouterr().err
    assert "no-such-net" in err and "prunescope submit: error:" in err
    assert main(["status", "999999", "--server", server_url]) == 2
    assert "999999" in capsys.readouterr().err
