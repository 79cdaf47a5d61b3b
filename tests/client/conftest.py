"""A live embedded server for the client tests: ``prunescope serve --no-demo`` on a free port, with its own
data dir, started once per session and torn down after; plus one small trained model registered on it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.client import Client, Job

ROOT = Path(__file__).resolve().parents[2]
# One thread per torch process: the machine's cores are shared, and the same thread count in the server
# and in local mode keeps float reductions (and so the points) bit-identical.
SERVER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"prunescope serve exited with {proc.returncode}:\n{log.read_text()}", pytrace=False)
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"prunescope serve did not answer /healthz within {timeout_s:g} s:\n{log.read_text()}", pytrace=False)


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a live embedded server (SQLite and executor in the server process)."""
    data_dir = tmp_path_factory.mktemp("server-data")
    log = data_dir / "serve.log"
    port = _free_port()
    env = {**os.environ, **SERVER_ENV, "PRUNESCOPE_DATA_DIR": str(data_dir)}
    for key in ("PRUNESCOPE_URL", "PRUNESCOPE_TOKEN", "PRUNESCOPE_BROKER_URL", "PRUNESCOPE_DATABASE_URL"):
        env.pop(key, None)
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--no-demo"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def client(server_url: str) -> Iterator[Client]:
    with Client(server_url, token="", progress=False) as c:
        yield c


@pytest.fixture(scope="session")
def trained(client: Client) -> Job:
    """digits-cnn trained 2 quick epochs on the server and registered as ``digits-test``."""
    return client.train("digits-cnn", "digits", epochs=2, batch_size=64, lr=0.05, register_as="digits-test")
