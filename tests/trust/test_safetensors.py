"""Issue 14: safetensors uploads, checked torch-free at upload and again at load, and hostile model files.

A safetensors file cannot carry code, but its loader trusts the header: every declared size, offset and
dtype is checked before anything is allocated. A ``.pt2`` (torch.export) zip carrying pickled code is
refused by the program scan (tests/core/test_exported.py has the other hostile programs, and
tests/service/test_bring_your_own.py the upload of a plain one). Each hostile file is a 422 within 1 s (via
``send_hostile``), leaving no uploaded copy, no artifact and no model row; a payload that would run code
touches a marker file, which must never appear.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import struct
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import save, save_file
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.checkpoint_scan import limits_for
from api.shared.settings import Settings
from api.store import make_engine, make_session_factory, repo
from api.store.models import Artifact, ModelEntry
from pruning_core.checkpoint import CheckpointError, load_checkpoint, load_model
from pruning_core.checkpoint_scan import FORMAT_SAFETENSORS, FORMAT_ZIP, detect_format, scan_checkpoint
from pruning_core.models import create_model
from pruning_core.safetensors_scan import MAX_HEADER_BYTES, scan_safetensors
from tests.live import Server, running_server
from tests.trust.hostile import send_hostile

#: The limits the live server scans with (its settings' defaults), so messages can be matched exactly.
LIMITS = limits_for(Settings())
MARKER_NAME = "pwned"


def st_file(header: dict | bytes, data: bytes = b"", *, length: int | None = None) -> bytes:
    """A safetensors file written by hand: ``length`` (default: the header's own) then header then data."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def f32(shape: list, begin: int, end: int) -> dict:
    return {"dtype": "F32", "shape": shape, "data_offsets": [begin, end]}


class Call:
    """Unpickling calls ``fn(*args)``: the classic "checkpoint runs code" payload."""

    def __init__(self, fn: Callable, *args: object) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return self.fn, self.args


def exported_program() -> bytes:
    """What ``torch.export.save`` writes for a small network: a zip of a graph, weights and sample inputs."""
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(10))
    net(torch.zeros(1, 1, 8, 8))
    buf = io.BytesIO()
    torch.export.save(torch.export.export(net, (torch.zeros(1, 1, 8, 8),)), buf)
    return buf.getvalue()


def pt2_with_code(marker: Path) -> bytes:
    """An exported program whose pickled members (its sample inputs, and an added data.pkl) would run
    ``touch marker`` if anything unpickled them."""
    payload = io.BytesIO()
    torch.save({"x": Call(os.system, f"touch {marker}")}, payload)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(exported_program())) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = payload.getvalue() if info.filename.endswith("sample_inputs/model.pt") else src.read(info)
            dst.writestr(info.filename, data)
        dst.writestr("archive/data.pkl", pickle.dumps(Call(os.system, f"touch {marker}"), protocol=2))
    return out.getvalue()


def depth_bomb() -> bytes:
    depth = 200_000
    return st_file(b'{"w": ' + b"[" * depth + b"]" * depth + b"}")


def many_tensors() -> bytes:
    """A well-formed file of 28,000 empty tensors: a header of ~1.8 MB, near the 2 MiB header limit."""
    header = {f"t{i}": f32([0], 0, 0) for i in range(28_000)}
    return st_file(header)


# name -> (builder(marker) -> bytes, words the refusal names)
HOSTILE: dict[str, tuple[Callable[[Path], bytes], tuple[str, ...]]] = {
    "header-length-past-file": (lambda m: st_file(b'{"w": {}}', length=4096), ("header length 4,096", "past the end")),
    "header-over-limit": (lambda m: st_file(b'{"w": {}}', length=2**40),
                          ("header length", f"{MAX_HEADER_BYTES:,}-byte header limit")),
    "header-not-json": (lambda m: st_file(b'{"w": not json'), ("header is not JSON",)),
    "huge-shape": (lambda m: st_file({"w": f32([2**20, 2**20, 2**20], 0, 4)}, b"\0" * 4),
                   ("tensor 'w'", "[1048576, 1048576, 1048576]", f"{LIMITS.max_tensor_bytes:,}-byte tensor limit")),
    "overlapping-offsets": (lambda m: st_file({"a": f32([4], 0, 16), "b": f32([4], 8, 24)}, b"\0" * 24),
                            ("tensor 'b'", "[8, 24]", "overlaps")),
    "unknown-dtype": (lambda m: st_file({"w": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}, b"\0" * 16),
                      ("tensor 'w'", "unknown dtype 'F128'")),
    "offsets-past-end": (lambda m: st_file({"w": f32([4], 0, 16)}, b"\0" * 8),
                         ("data offset 16", "past the end of the file", "8 data bytes")),
    "metadata-not-strings": (lambda m: st_file({"__metadata__": {"arch": 5}, "w": f32([1], 0, 4)}, b"\0" * 4),
                             ("__metadata__", "'arch' is not a string")),
    "nan-dimension": (lambda m: st_file(b'{"w": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 4]}}', b"\0" * 4),
                      ("NaN", "not a number JSON allows")),
    "negative-dimension": (lambda m: st_file({"w": f32([-1, 4], 0, 16)}, b"\0" * 16),
                           ("tensor 'w'", "[-1, 4]", "non-negative integers")),
    "json-depth-bomb": (lambda m: depth_bomb(), ("nests too deeply",)),
    "trailing-garbage": (lambda m: st_file({"w": f32([1], 0, 4)}, b"\0" * 4 + b"PK\x03\x04" + b"x" * 100),
                         ("trailing data", "108 data bytes")),
    "duplicate-name": (lambda m: st_file(b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
                                         b'"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', b"\0" * 4),
                       ("names 'w' twice",)),
    # the upload's program scan names the pickle it refuses; a checkpoint load refuses any program
    "pt2-with-code": (pt2_with_code, ("program",)),
}


def upload(client: httpx.Client, name: str, data: bytes, architecture: str = "digits-cnn",
           filename: str | None = None) -> httpx.Response:
    return client.post("/api/v1/models", data={"name": name, "architecture": architecture},
                       files={"checkpoint": (filename or f"{name}.safetensors", data)})


# -- torch-free scan and loading, in process -------------------------------------------------------------

def test_format_is_told_by_content_not_name(tmp_path: Path) -> None:
    state = create_model("digits-cnn").state_dict()
    st, zipped = tmp_path / "weights.pt", tmp_path / "weights.safetensors"  # deliberately misleading names
    save_file(state, st)
    torch.save(state, zipped)
    assert detect_format(st) == FORMAT_SAFETENSORS and detect_format(zipped) == FORMAT_ZIP
    assert detect_format(io.BytesIO(b"just text")) is None
    expected = {k: tuple(v.shape) for k, v in state.items()}
    assert scan_checkpoint(st).shapes == expected == scan_checkpoint(zipped).shapes


def test_scan_reads_shapes_and_metadata_and_drops_a_dataparallel_prefix() -> None:
    state = {f"module.{k}": v for k, v in create_model("lenet5").state_dict().items()}
    scanned = scan_safetensors(io.BytesIO(save(state, metadata={"arch": "lenet5", "note": "x"})))
    assert scanned.metadata == {"arch": "lenet5", "note": "x"}
    assert scanned.shapes == {k[len("module."):]: tuple(v.shape) for k, v in state.items()}


def test_zero_sized_and_every_dtype_pass(tmp_path: Path) -> None:
    state = {"empty": torch.zeros(0, 3), "h": torch.ones(2, dtype=torch.float16), "b": torch.ones(3, dtype=torch.bool),
             "i": torch.arange(5), "bf": torch.ones(1, dtype=torch.bfloat16)}
    path = tmp_path / "mixed.safetensors"
    save_file(state, path)
    assert scan_safetensors(path).shapes == {k: tuple(v.shape) for k, v in state.items()}
    loaded = load_checkpoint(path)
    assert loaded.arch is None and all(torch.equal(loaded.state_dict[k], v) for k, v in state.items())


def test_load_model_from_safetensors_equals_the_original(tmp_path: Path) -> None:
    model = create_model("digits-cnn", seed=3)
    path = tmp_path / "d.safetensors"
    save_file(model.state_dict(), path, metadata={"arch": "digits-cnn"})
    assert load_checkpoint(path).arch == "digits-cnn"
    loaded = load_model(path, None)  # the architecture comes from the file's metadata
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="checkpoint is for architecture 'digits-cnn', not 'lenet5'"):
        load_model(path, "lenet5")
    bare = tmp_path / "bare.safetensors"
    save_file(create_model("lenet5").state_dict(), bare)
    with pytest.raises(CheckpointError, match=r"do not fit 'digits-cnn'.*missing"):
        load_model(bare, "digits-cnn")


@pytest.mark.timing  # promises an answer within a time bound: run alone (make test's second phase)
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_file_refused_at_load(tmp_path: Path, case: str) -> None:
    build, words = HOSTILE[case]
    marker = tmp_path / MARKER_NAME
    path = tmp_path / f"{case}.bin"
    path.write_bytes(build(marker))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, LIMITS)
    for word in words:
        assert word in str(err.value), (word, str(err.value))
    assert str(path) in str(err.value)
    assert not marker.exists()


# -- a live embedded server ------------------------------------------------------------------------------

@contextlib.contextmanager
def _store(server: Server) -> Iterator[sessionmaker[Session]]:
    """A session factory on the live server's SQLite store."""
    engine = make_engine(f"sqlite:///{server.data_dir / 'prunescope.db'}")
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def _wait_for_facts(server: Server, arch: str = "digits-cnn", timeout_s: float = 120) -> None:
    """The embedded executor publishes architecture facts from a child process after start."""
    deadline = time.monotonic() + timeout_s
    with _store(server) as factory:
        while True:
            with factory() as s:
                if repo.architecture_facts(s, arch) is not None:
                    return
            assert time.monotonic() < deadline, f"no facts for {arch} after {timeout_s} s"
            time.sleep(0.3)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("safetensors")) as srv:
        _wait_for_facts(srv)
        yield srv


def _nothing_stored(server: Server, name: str) -> None:
    with _store(server) as factory, factory() as s:
        assert s.scalar(select(ModelEntry).where(ModelEntry.name == name)) is None
        stored = {a.name for a in s.scalars(select(Artifact))}
        assert not any(n.startswith(name) for n in stored), stored
    assert not list((server.data_dir / "uploads").iterdir())  # the scanned copy is gone


@pytest.mark.timing  # promises an answer within a time bound: run alone (make test's second phase)
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_upload_refused_fast(server: Server, tmp_path: Path, case: str) -> None:
    build, words = HOSTILE[case]
    marker = tmp_path / MARKER_NAME
    data = build(marker)
    out = send_hostile(server.url, lambda c: upload(c, case, data))
    out.assert_refused(422, names=("checkpoint:", *words))
    _nothing_stored(server, case)
    assert not marker.exists()


@pytest.mark.timing  # promises an answer within a time bound: run alone (make test's second phase)
def test_header_at_the_limit_is_parsed_fast(server: Server) -> None:
    """28,000 empty tensors (a header near the 2 MiB bound): parsed within the 1 s promise, then refused
    as not digits-cnn's parameters."""
    data = many_tensors()
    assert MAX_HEADER_BYTES * 0.5 < len(data) < MAX_HEADER_BYTES
    out = send_hostile(server.url, lambda c: upload(c, "many", data))
    out.assert_refused(422, names=("checkpoint:", "not a checkpoint of architecture 'digits-cnn'", "missing 11",
                                   "conv1.weight"))
    _nothing_stored(server, "many")


@pytest.mark.timing  # promises an answer within a time bound: run alone (make test's second phase)
def test_another_architectures_safetensors_is_refused_naming_parameters(server: Server) -> None:
    lenet = create_model("lenet5").state_dict()
    digits = [n for n, _ in create_model("digits-cnn").named_parameters()]
    missing = [n for n in digits if n not in lenet]
    out = send_hostile(server.url, lambda c: upload(c, "wrong-arch", save(lenet)))
    out.assert_refused(422, names=("checkpoint:", "'digits-cnn'", f"missing {len(missing)} parameters", missing[0],
                                   "unexpected parameters: conv1.bias", "other shapes: conv1.weight"))
    _nothing_stored(server, "wrong-arch")
    own = save(create_model("digits-cnn").state_dict(), metadata={"arch": "lenet5"})
    out = send_hostile(server.url, lambda c: upload(c, "wrong-meta", own))
    out.assert_refused(422, names=("checkpoint:", "metadata names architecture 'lenet5'", "'digits-cnn'"))
    _nothing_stored(server, "wrong-meta")


@pytest.mark.slow
def test_safetensors_round_trip_gives_the_librarys_points(server: Server, trained_digits: torch.nn.Module) -> None:
    """A trained digits-cnn saved with safetensors, uploaded (as ``weights.bin``: the format is told by
    content), stored as safetensors, and analysed by the service: its points equal analyze() on it."""
    from pruning_core.datasets import load_dataset, make_loader
    from pruning_core.sensitivity import analyze

    data = save(trained_digits.state_dict())
    with httpx.Client(base_url=server.url, timeout=60) as client:
        r = upload(client, "d-st", data, filename="weights.bin")
        assert r.status_code == 201, r.text
        artifact = client.get(f"/api/v1/artifacts/{r.json()['artifact_id']}").json()
        assert artifact["name"] == "weights.safetensors"
        stored = client.get(f"/api/v1/artifacts/{artifact['id']}/download").content
    assert stored == data  # kept as uploaded, in its format
    levels, params = [0.0, 0.5, 0.9], ["conv1.weight", "conv3.weight", "fc.weight"]
    job = server.post("/api/v1/jobs", {"kind": "sensitivity", "spec": {
        "model": "d-st", "dataset": "digits", "levels": levels, "params": params}})
    assert server.wait_job(job["id"])["status"] == "succeeded"
    served = {(p["parameter"], p["sparsity"]): (p["top1"], p["top5"], p["loss"])
              for p in server.get(f"/api/v1/jobs/{job['id']}/points")}
    result = analyze(trained_digits, make_loader(load_dataset("digits", "test"), batch_size=256), levels=levels,
                     params=params, device="cpu")
    library = {(p.parameter, p.sparsity): (p.top1, p.top5, p.loss) for p in result.points}
    assert served.keys() == library.keys() and len(library) == 9
    for key, (top1, top5, loss) in library.items():
        assert served[key][:2] == (top1, top5), key
        assert served[key][2] == pytest.approx(loss, rel=1e-5), key
    assert library[("conv1.weight", 0.0)][0] > 80  # a trained model, not a random one
