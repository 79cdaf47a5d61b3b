"""Local mode (``Client.local``): the same service in this process gives the same answers as the server."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from api.client import Client, Job, PrunescopeError

pytestmark = pytest.mark.slow


def test_local_sweep_equals_the_served_sweep(client: Client, trained: Job, tmp_path: Path) -> None:
    import torch

    torch.set_num_threads(1)  # as the test server (conftest.SERVER_ENV): same reductions, same bits
    (checkpoint,) = [a for a in client.artifacts(trained) if a.kind == "checkpoint"]
    weights = client.download(checkpoint)
    sweep = {"levels": "0,0.3,0.7", "params": ["conv2.weight", "fc.weight"], "group": "filter"}
    served = client.sense("digits-test", "digits", **sweep)
    with Client.local(tmp_path / "local-data", progress=False) as local:
        assert local.health()["broker"]["kind"] == "embedded"
        assert local.upload_model("digits-test", weights, "digits-cnn").checkpoint_sha256 == checkpoint.sha256
        here = local.sense("digits-test", "digits", **sweep)
        assert here.status == "succeeded"
        pd.testing.assert_frame_equal(local.points(here), client.points(served), check_exact=True)
        assert local.points_csv(here) == client.points_csv(served)
        with pytest.raises(PrunescopeError, match="unknown model 'no-such-net'") as info:
            local.sense("no-such-net", "digits", wait=False)
        assert info.value.status == 422
    assert (tmp_path / "local-data" / "prunescope.db").is_file()
