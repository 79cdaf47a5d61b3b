"""The wheel is the product: built from the repository, installed with its base dependencies only into a
fresh virtual environment (no torch there), it serves the API, the dashboard and the offline docs from a
folder outside the repository, enqueues a job on Redis, and a `prunescope worker` from the full
environment (with torch) runs it. Without torch the API still validates schedules and plans, and once
the worker has published its architectures' shapes, previews and plans for a target sparsity too.

The API process and the worker share a data dir (its SQLite store and artifacts) and a private Celery
queue, so nothing else on the Redis server takes the job.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.live import free_port
from tests.services import REDIS_HOST, REDIS_PORT, require_redis

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_INPUTS = ("pyproject.toml", "README.md", "api", "worker", "pruning_core", "frontend")  # as the Dockerfile
TORCH_ONLY = ("torch", "torchvision", "torch-pruning", "scikit-learn")


@dataclass
class BaseEnv:
    """A virtual environment holding the wheel and its base dependencies, and a folder outside the repo."""

    python: Path
    prunescope: Path
    outside: Path

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.prunescope), *args], cwd=self.outside, env=env or clean_env(),
                              capture_output=True, text=True, timeout=timeout)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without anything that would point a process back at the repository or its venv."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PRUNESCOPE_") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, **extra}


def _pip(python: Path, *args: str, timeout: float = 600) -> str:
    proc = subprocess.run([str(python), "-m", "pip", *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"pip {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def base_env(tmp_path_factory: pytest.TempPathFactory) -> BaseEnv:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a copy, so the build writes nothing into the working tree
    src.mkdir()
    for name in PACKAGE_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(ROOT / name, src / name)
    # this environment's setuptools builds it (no isolated build environment to install first)
    _pip(Path(sys.executable), "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(tmp / "dist"), str(src))
    wheels = list((tmp / "dist").glob("prunescope-*.whl"))
    assert len(wheels) == 1, wheels
    venv = tmp / "venv"
    # no system site-packages, and no pip of its own: this environment's pip installs into it (--python)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    _pip(Path(sys.executable), "--python", str(python), "install", "--no-compile", "--disable-pip-version-check",
         str(wheels[0]))
    outside = tmp / "elsewhere"
    outside.mkdir()
    return BaseEnv(python, venv / "bin" / "prunescope", outside)


def test_base_install_has_no_torch(base_env: BaseEnv) -> None:
    probe = subprocess.run([str(base_env.python), "-c", "import torch"], cwd=base_env.outside, env=clean_env(),
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr, probe.stderr
    rows = json.loads(_pip(Path(sys.executable), "--python", str(base_env.python), "list", "--format=json"))
    installed = {row["name"].lower().replace("_", "-") for row in rows}
    assert not installed & set(TORCH_ONLY), sorted(installed & set(TORCH_ONLY))
    assert {"prunescope", "fastapi-offline", "plotly"} <= installed


def test_cli_without_torch(base_env: BaseEnv) -> None:
    """--help and the remote commands work; serve without a broker says what is missing and how to get it."""
    for args in (("--help",), ("submit", "--help"), ("status", "--help"), ("results", "--help")):
        proc = base_env.run(*args)
        assert proc.returncode == 0, (args, proc.stderr)
        assert "usage: prunescope" in proc.stdout
    data = base_env.outside / "embedded-data"
    proc = base_env.run("serve", "--no-demo", "--port", str(free_port()),
                        env=clean_env(PRUNESCOPE_DATA_DIR=str(data)), timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    message = proc.stderr
    for needle in ("no executor", "torch is not installed", "prunescope[torch]", "--broker", "prunescope worker"):
        assert needle in message, (needle, message)


def _wait(check: Callable[[], object], timeout: float, what: str, logs: list[Path]) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.3)
    shown = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs if p.exists())
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{shown}")


@pytest.fixture
def distributed(base_env: BaseEnv, tmp_path: Path) -> Iterator[tuple[str, dict[str, str], list[Path]]]:
    """`prunescope serve --broker` from the base env, outside the repo; yields (url, env, log paths)."""
    require_redis()
    broker = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
    env = clean_env(PRUNESCOPE_DATA_DIR=str(tmp_path / "data"), PRUNESCOPE_QUEUE=f"wheel-{uuid.uuid4().hex[:10]}",
                    PRUNESCOPE_BROKER_URL=broker, PRUNESCOPE_SENSITIVITY_SHARDS="1")
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(base_env.prunescope), "serve", "--port", str(port), "--no-demo",
                                 "--broker", broker], cwd=base_env.outside, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait(up, 60, "the API from the wheel to answer /healthz", [log])
        yield url, env, [log]
    finally:
        proc.kill()
        proc.wait(10)


PREVIEW_SCHEDULE = """version: 1
pruners:
  agp:
    class: AutomatedGradualPruner
    initial_sparsity: 0.05
    final_sparsity: 0.5
    weights: ["layer1.*.conv1.weight"]
policies:
  - pruner: {instance_name: agp}
    starting_epoch: 0
    ending_epoch: 4
    frequency: 1
"""


def _planning_before_any_worker(http: httpx.Client) -> None:
    """Torch-free answers need nothing; a preview needs shapes no worker has published yet: a 409 saying how."""
    valid = http.post("/api/v1/schedules/validate", json={"yaml": PREVIEW_SCHEDULE})
    assert valid.status_code == 200 and valid.json()["valid"] is True, valid.text
    early = http.post("/api/v1/schedules/preview", json={"yaml": PREVIEW_SCHEDULE, "model": "resnet20-cifar"})
    assert early.status_code == 409, early.text
    for needle in ("no worker has published the shapes of resnet20-cifar", "start `prunescope worker`",
                   "register a model"):
        assert needle in early.json()["detail"], early.text


def _planning_after_the_worker_published(http: httpx.Client, job_id: int, logs: list[Path]) -> None:
    """The full-env worker publishes its architectures at start: the torch-free API previews and plans."""
    def previewed() -> httpx.Response | None:
        r = http.post("/api/v1/schedules/preview", json={"yaml": PREVIEW_SCHEDULE, "model": "resnet20-cifar"})
        return r if r.status_code == 200 else None

    preview = _wait(previewed, 120, "the worker to publish resnet20-cifar's shapes", logs)
    assert preview.json()["epochs"][-1]["sparsity"]["layer1.2.conv1.weight"] == pytest.approx(0.5)
    tolerance = http.post("/api/v1/plans", json={"sensitivity_job": job_id, "max_drop": 100})
    assert tolerance.status_code == 200 and tolerance.json()["levels"], tolerance.text
    target = http.post("/api/v1/plans", json={"sensitivity_job": job_id, "target_sparsity": 0.2})
    assert target.status_code == 200, target.text
    assert target.json()["overall_sparsity"] >= 0.2 and "AutomatedGradualPruner" in target.json()["yaml"]


def _local_refs(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)


def test_wheel_serves_dashboard_docs_and_runs_a_job_on_a_full_worker(distributed, base_env: BaseEnv,
                                                                      tmp_path: Path) -> None:
    url, env, logs = distributed
    with httpx.Client(base_url=url, timeout=30) as http:
        index = http.get("/")
        assert index.status_code == 200 and 'src="app.js"' in index.text, index.text[:500]
        assert http.get("/app.js").status_code == 200
        plotly = http.get("/static/plotly.min.js", headers={"Accept-Encoding": "gzip"})
        assert plotly.status_code == 200 and plotly.headers["content-encoding"] == "gzip"
        assert "plotly" in plotly.text[:2000].lower() and "max-age" in plotly.headers["cache-control"]

        for page in ("/docs", "/redoc"):
            html = http.get(page)
            assert html.status_code == 200, (page, html.text)
            refs = _local_refs(html.text)
            scripts = [r for r in refs if r.endswith(".js")]
            assert scripts, (page, refs)
            assert all(r.startswith("/") and not r.startswith("//") for r in refs), (page, refs)  # no CDN
            for ref in refs:
                assert http.get(ref).status_code == 200, (page, ref)
        assert http.get("/api/v1/openapi.json").json()["info"]["title"] == "prunescope"

        arch = http.get("/api/v1/architectures").json()
        assert "digits-cnn" in arch["prunescope"] and "resnet18" in arch["torchvision"], arch

    # the job goes through the CLI's remote command, from the torch-free environment
    submitted = base_env.run("submit", "sensitivity", "--model", "digits-cnn", "--dataset", "digits",
                             "--levels", "0,0.5", "--samples", "100", "--server", url, env=env)
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["id"]
    assert httpx.get(f"{url}/api/v1/jobs/{job_id}", timeout=10).json()["status"] == "queued"
    with httpx.Client(base_url=url, timeout=30) as http:
        _planning_before_any_worker(http)

    worker_log = tmp_path / "worker.log"
    logs.append(worker_log)
    full_env = {**env, "PYTHONPATH": str(ROOT)}
    with open(worker_log, "w") as out:
        worker = subprocess.Popen([sys.executable, "-m", "api.cli", "worker", "--concurrency", "1"], cwd=ROOT,
                                  env=full_env, stdout=out, stderr=subprocess.STDOUT)
    try:
        def finished() -> dict | None:
            job = httpx.get(f"{url}/api/v1/jobs/{job_id}", timeout=10).json()
            return job if job["status"] in ("succeeded", "failed", "cancelled") else None

        job = _wait(finished, 300, f"job {job_id} to be run by the worker", logs)
        assert job["status"] == "succeeded", job
        points = httpx.get(f"{url}/api/v1/jobs/{job_id}/points", timeout=10).json()
        assert points and {p["sparsity"] for p in points} == {0.0, 0.5}
        status = base_env.run("status", str(job_id), "--server", url, env=env)
        assert status.returncode == 0 and "succeeded" in status.stdout, status.stdout + status.stderr
        with httpx.Client(base_url=url, timeout=30) as http:
            _planning_after_the_worker_published(http, job_id, logs)
    finally:
        worker.kill()
        worker.wait(10)
