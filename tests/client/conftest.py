"""A live embedded server for the client tests: ``prunescope serve --no-demo`` on a free port, with its own
data dir, started once per session and torn down after; plus one small trained model registered on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from api.client import Client, Job
from tests.live import running_server

# One thread per torch process: the machine's cores are shared, and the same thread count in the server
# and in local mode keeps float reductions (and so the points) bit-identical.
SERVER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a live embedded server (SQLite and executor in the server process)."""
    with running_server(tmp_path_factory.mktemp("server-data"), **SERVER_ENV) as server:
        yield server.url


@pytest.fixture(scope="session")
def client(server_url: str) -> Iterator[Client]:
    with Client(server_url, token="", progress=False) as c:
        yield c


@pytest.fixture(scope="session")
def trained(client: Client) -> Job:
    """digits-cnn trained 2 quick epochs on the server and registered as ``digits-test``."""
    return client.train("digits-cnn", "digits", epochs=2, batch_size=64, lr=0.05, register_as="digits-test")
