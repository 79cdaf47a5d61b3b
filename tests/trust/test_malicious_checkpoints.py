"""Malicious and broken checkpoints, refused at upload (API, static scan, no torch) and at load
(pruning_core.checkpoint, before torch.load). Payloads that would run code touch a marker file:
it must never appear."""

from __future__ import annotations

import functools
import io
import os
import pickle
import re
import subprocess
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from pruning_core.checkpoint import CheckpointError, ScanLimits, load_checkpoint, load_model
from pruning_core.models import create_model

LIMIT_MB = 16  # declared-size limit used by both sides in these tests (small, so bombs stay cheap)
LIMITS = ScanLimits(max_total_bytes=LIMIT_MB * 2**20, max_tensor_bytes=LIMIT_MB * 2**20)


class Call:
    """Unpickling calls ``fn(*args)``: the classic "checkpoint runs code" payload."""

    def __init__(self, fn: Callable, *args: object) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return self.fn, self.args


def touch(path: str) -> None:
    """A callable from a module no checkpoint should name (this test module)."""
    Path(path).touch()


def _torch_save(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _with_payload(payload: object) -> bytes:
    return _torch_save({"state_dict": {"w": torch.zeros(2)}, "extra": payload})


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members.items():
            z.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return buf.getvalue()


@functools.cache
def _good() -> bytes:
    return _torch_save({"w": torch.ones(4)})


def _good_members() -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(_good())) as z:
        return {n: z.read(n) for n in z.namelist()}


def _raw(ops: bytes) -> bytes:
    """A hand-written protocol-2 pickle as a torch archive's data.pkl."""
    return _zip({"archive/data.pkl": b"\x80\x02" + ops + b"."})


def _getattr_chain(marker: Path) -> bytes:
    # getattr(__import__('os'), 'system')('touch <marker>')
    cmd = f"touch {marker}".encode()
    return _raw(b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(X\x02\x00\x00\x00ostRX\x06\x00\x00\x00systemtR(X"
                + len(cmd).to_bytes(4, "little") + cmd + b"tR")


def _dotted_name(marker: Path) -> bytes:
    # torch._utils._import_dotted_name('os.system')('touch <marker>')
    cmd = f"touch {marker}".encode()
    return _raw(b"ctorch._utils\n_import_dotted_name\n(X\t\x00\x00\x00os.systemtR(X"
                + len(cmd).to_bytes(4, "little") + cmd + b"tR")


def _storage_pickle(numel: int) -> bytes:
    """A tensor whose storage declares ``numel`` floats (what torch would allocate)."""
    sentinel = object()

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            return ("storage", torch.FloatStorage, "0", "cpu", numel) if obj is sentinel else None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump({"w": Call(torch._utils._rebuild_tensor_v2, sentinel, 0, (numel,), (1,), False,
                                             OrderedDict())})
    return _zip({"archive/data.pkl": buf.getvalue(), "archive/data/0": b"\0" * 16})


@functools.cache
def _bomb() -> bytes:
    return _zip({"archive/data.pkl": pickle.dumps({}, protocol=2), "archive/data/0": b"\0" * (LIMIT_MB + 8) * 2**20},
                zipfile.ZIP_DEFLATED)


def _ratio_bomb() -> bytes:
    return _zip({"archive/data.pkl": pickle.dumps({}, protocol=2), "archive/data/0": b"\0" * 8 * 2**20},
                zipfile.ZIP_DEFLATED)


def _torchscript() -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), buf)
    return buf.getvalue()


# name -> (builder(marker) -> bytes, pattern at upload, pattern at load)
CASES: dict[str, tuple[Callable[[Path], bytes], str, str]] = {
    "os.system": (lambda m: _with_payload(Call(os.system, f"touch {m}")), r"contains code.*(posix|os)\.system", ""),
    "subprocess": (lambda m: _with_payload(Call(subprocess.Popen, ["touch", str(m)])),
                   r"(subprocess|commands)\.Popen", ""),  # protocol 2 writes Python 2's module name
    "eval": (lambda m: _with_payload(Call(eval, f"open({str(m)!r}, 'w')")), r"builtin\w*\.eval", ""),
    "exec": (lambda m: _with_payload(Call(exec, f"open({str(m)!r}, 'w')")), r"builtin\w*\.exec", ""),
    "getattr-chain": (_getattr_chain, r"builtin\w*\.getattr", ""),
    "torch-utils-dotted-name": (_dotted_name, r"torch\._utils\._import_dotted_name", ""),
    "torch-load-from-bytes": (lambda m: _with_payload(Call(torch.storage._load_from_bytes,
                                                           pickle.dumps(Call(os.system, f"touch {m}")))),
                              r"torch\.storage\._load_from_bytes", ""),
    "unexpected-module": (lambda m: _with_payload(Call(touch, str(m))), r"test_malicious_checkpoints\.touch", ""),
    "protocol-4-stack-global": (lambda m: _zip({"archive/data.pkl": pickle.dumps(Call(os.system, f"touch {m}"),
                                                                                 protocol=4)}),
                                r"(posix|os)\.system", ""),
    "zip-bomb-declared-size": (lambda m: _bomb(), r"declares .* uncompressed bytes, over the", ""),
    "zip-bomb-ratio": (lambda m: _ratio_bomb(), r"zip bomb", ""),
    "huge-tensor": (lambda m: _storage_pickle(2**40), r"over the .*tensor limit", ""),
    "tensor-larger-than-its-record": (lambda m: _storage_pickle(1000), r"truncated or tampered", ""),
    "truncated": (lambda m: _good()[: len(_good()) // 2], r"truncated or damaged", ""),
    "not-a-zip": (lambda m: b"just some text, not a checkpoint", r"not a PyTorch zip checkpoint",
                  r"not a PyTorch checkpoint"),
    "legacy-pickle-with-code": (lambda m: pickle.dumps(Call(os.system, f"touch {m}")), r"raw pickle",
                                r"contains code"),
    "nested-archive": (lambda m: _zip({**_good_members(), "archive/inner.pt": _good()}), r"nested archive", ""),
    "two-roots": (lambda m: _zip({**_good_members(), "other/data.pkl": pickle.dumps({}, protocol=2)}),
                  r"top-level entries", ""),
    "path-traversal": (lambda m: _zip({"../../evil/data.pkl": pickle.dumps({}, protocol=2)}), r"path traversal", ""),
    "absolute-name": (lambda m: _zip({"/tmp/evil/data.pkl": pickle.dumps({}, protocol=2)}), r"absolute path", ""),
    "zip-in-front-polyglot": (lambda m: _good() + _zip({"archive/data.pkl": pickle.dumps(Call(os.system, f"touch {m}"),
                                                                                         protocol=2)}),
                              r"in front of its zip|contains code", ""),
    "torchscript": (lambda m: _torchscript(), r"TorchScript", ""),
}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, bytes, str, str, Path]:
    builder, at_upload, at_load = CASES[request.param]
    marker = tmp_path / "pwned"
    return request.param, builder(marker), at_upload, at_load or at_upload, marker


def test_refused_at_upload(client: TestClient, case: tuple[str, bytes, str, str, Path]) -> None:
    name, data, pattern, _, marker = case
    client.app.state.settings.max_checkpoint_mb = LIMIT_MB
    client.app.state.settings.max_tensor_mb = LIMIT_MB
    r = client.post("/api/v1/models", data={"name": "m", "architecture": "digits-cnn"},
                    files={"checkpoint": ("m.pt", data)})
    assert r.status_code == 422, r.text
    assert client.get("/api/v1/models").json() == []
    detail = r.json()["detail"]
    assert detail.startswith("checkpoint: ")
    assert re.search(pattern, detail), f"{name}: {detail}"
    artifacts = client.app.state.settings.artifacts_dir
    assert not artifacts.exists() or not any(artifacts.iterdir())
    assert not marker.exists()


def test_refused_at_load(tmp_path: Path, case: tuple[str, bytes, str, str, Path]) -> None:
    name, data, _, pattern, marker = case
    path = tmp_path / f"{name}.pt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=pattern) as err:
        load_checkpoint(path, LIMITS)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_good_checkpoint_passes_both(client: TestClient, tmp_path: Path) -> None:
    path = tmp_path / "good.pt"
    path.write_bytes(_good())
    assert load_checkpoint(path, LIMITS).state_dict["w"].sum() == 4
    r = client.post("/api/v1/models", data={"name": "g", "architecture": "digits-cnn"},
                    files={"checkpoint": ("good.pt", _good())})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(("change", "words"), [
    (lambda s: s.pop(next(iter(s))), "missing"),
    (lambda s: s.update(extra=torch.zeros(1)), "unexpected extra"),
    (lambda s: s.update({k: torch.zeros(3, 3) for k in list(s)[:1]}), "wrong shape"),
])
def test_wrong_architecture_refused_at_load(tmp_path: Path, change: Callable, words: str) -> None:
    state = create_model("digits-cnn").state_dict()
    change(state)
    path = tmp_path / "wrong.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=f"do not fit 'digits-cnn'.*{words}"):
        load_model(path, "digits-cnn")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(path, "lenet5")
