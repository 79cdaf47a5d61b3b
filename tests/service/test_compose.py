"""docker-compose.yml must parse and describe the distributed topology."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_compose_config() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client on PATH: cannot run `docker compose config`")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"the docker client has no compose plugin: {(probe.stderr or probe.stdout).strip()[:200]}")
    proc = subprocess.run([docker, "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--format", "json"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PRUNESCOPE_TOKEN": "t"})
    assert proc.returncode == 0, proc.stderr
    services = json.loads(proc.stdout)["services"]
    assert set(services) == {"api", "worker", "redis", "postgres"}
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]


def test_compose_file_parses_without_docker() -> None:
    """Runs everywhere: the file is YAML with the four services and the worker's GPU reservation."""
    import yaml

    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert set(services) == {"api", "worker", "redis", "postgres"}
    assert services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
