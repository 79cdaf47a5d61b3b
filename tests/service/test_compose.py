"""docker-compose.yml must parse and describe the distributed topology; the Dockerfile must build the two
images it names from one wheel: the API without torch, the worker with it on a CUDA base."""

from __future__ import annotations

import json
import os
import re
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


def dockerfile_stages() -> dict[str, dict[str, str]]:
    """``FROM base AS name`` stages of the Dockerfile: name -> {"base": image, "body": its instructions}."""
    stages: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        match = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)\s*$", line.strip(), flags=re.IGNORECASE)
        if match:
            current = stages.setdefault(match.group(2), {"base": match.group(1), "body": ""})
        elif current is not None:
            current["body"] += line + "\n"
    return stages


def test_compose_builds_the_api_and_worker_targets_of_the_dockerfile() -> None:
    import yaml

    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    stages = dockerfile_stages()
    assert services["api"]["build"]["target"] == "api"
    assert services["worker"]["build"]["target"] == "worker"
    assert {"build", "api", "worker"} <= set(stages), sorted(stages)
    assert "pip wheel" in stages["build"]["body"]
    for name in ("api", "worker"):  # both install the wheel the build stage made, nothing from the source tree
        body = stages[name]["body"]
        assert "COPY --from=build /wheels" in body and "prunescope-*.whl" in body, name
        assert not re.search(r"^COPY (?!--from)", body, flags=re.MULTILINE), f"{name} copies sources: {body}"
    assert "[torch]" not in stages["api"]["body"] and "python" in stages["api"]["base"]
    assert not any(word in stages["api"]["base"] for word in ("cuda", "pytorch")), stages["api"]["base"]
    assert "[torch]" in stages["worker"]["body"] and "cuda" in stages["worker"]["base"]
    assert services["worker"]["command"][:2] == ["prunescope", "worker"]
    assert services["api"]["command"][:2] == ["prunescope", "serve"] and "--broker" in services["api"]["command"]
