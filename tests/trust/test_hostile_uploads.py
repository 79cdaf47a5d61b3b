"""Issue 13, finding 6: uploads are scanned off the request path, cheaply, and only state_dicts register.

The finding: a 4.4 MB archive of 4,000 x 1 MiB zero members (3.9 GiB declared) or a 60 MiB opcode-only
``data.pkl`` froze every request for 10-20 s and registered as a valid model (one held a bare int).
Now every member's declared size and ratio is checked before anything is read, the pickle's length and
opcode count are bounded, its top object must be what the loader accepts, and the scan runs in the
bounded helper pool: each refusal is a 422 within 1 s naming the limit, with /healthz answering.
"""

from __future__ import annotations

import functools
import io
import pickle
import struct
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

from pruning_core.checkpoint_scan import ScanLimits
from pruning_core.models import create_model
from tests.live import Server, running_server
from tests.trust.hostile import FAST_S, HealthProbe, send_hostile
from tests.trust.watch import GIB, ServerWatch

pytestmark = pytest.mark.timing  # promises an answer within a time bound: run alone (make test's second phase)

MiB = 2**20
LIMITS = ScanLimits()


def _zip(members: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip written by hand from ``(name, stored bytes, method, crc, uncompressed size)``, so a bomb's
    compressed member is built once and repeated (zipfile would deflate 4 GB of zeros to write it)."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, data, method, crc, size in members:
        raw = name.encode()
        offset = out.tell()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data), size, len(raw), 0))
        out.write(raw + data)
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(data), size,
                                  len(raw), 0, 0, 0, 0, 0, offset) + raw)
    start = out.tell()
    out.write(central.getvalue())
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central.getvalue()), start, 0))
    return out.getvalue()


def _stored(name: str, data: bytes) -> tuple[str, bytes, int, int, int]:
    return name, data, 0, zlib.crc32(data), len(data)


@functools.cache
def member_bomb() -> bytes:
    """The finding's archive: a valid data.pkl and 4,000 members of 1 MiB of zeros each, deflated."""
    zeros = bytes(MiB)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    packed = packer.compress(zeros) + packer.flush()
    members = [_stored("archive/data.pkl", pickle.dumps({"w": 0}, protocol=2))]
    members += [(f"archive/data/{i}", packed, 8, zlib.crc32(zeros), MiB) for i in range(4000)]
    return _zip(members)


def opcode_pickle(size: int) -> bytes:
    """An opcode-only ``data.pkl`` of ``size`` bytes (push None, pop it, ...) whose top object is a bare int."""
    return b"\x80\x02" + b"N0" * ((size - 5) // 2) + b"K\x01."


@functools.cache
def opcode_archive(size: int) -> bytes:
    return _zip([_stored("archive/data.pkl", opcode_pickle(size))])


def bare_int() -> bytes:
    return _zip([_stored("archive/data.pkl", pickle.dumps(7, protocol=2))])


def good_checkpoint() -> bytes:
    buf = io.BytesIO()
    torch.save(create_model("digits-cnn").state_dict(), buf)
    return buf.getvalue()


def upload(client: httpx.Client, name: str, data: bytes) -> httpx.Response:
    return client.post("/api/v1/models", data={"name": name, "architecture": "digits-cnn"},
                       files={"checkpoint": (f"{name}.pt", data)})


# name -> (archive, words the refusal must say)
HOSTILE: dict[str, tuple[Callable[[], bytes], tuple[str, ...]]] = {
    "4000-zero-members": (member_bomb, ("checkpoint:", "zip bomb", f"{LIMITS.max_ratio:g}x ratio limit")),
    "60-MiB-opcode-pickle": (lambda: opcode_archive(60 * MiB),
                             ("checkpoint:", "data.pkl declares", f"limit {LIMITS.max_pickle_bytes:,}")),
    "opcode-pickle-within-size": (lambda: opcode_archive(LIMITS.max_pickle_bytes - 1024),
                                  ("checkpoint:", f"more than {LIMITS.max_pickle_ops:,} pickle opcodes", "limit")),
    "bare-int": (bare_int, ("checkpoint:", "holds a value of type int, not a state_dict")),
}


def test_the_bomb_is_what_the_finding_describes() -> None:
    data = member_bomb()
    assert 3 * MiB < len(data) < 6 * MiB  # 4.4 MB in the finding
    assert len(opcode_archive(60 * MiB)) > 60 * MiB


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("uploads")) as srv:
        yield srv


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_upload_is_refused_fast(server: Server, case: str) -> None:
    build, words = HOSTILE[case]
    data = build()
    out = send_hostile(server.url, lambda c: upload(c, case, data))
    out.assert_refused(422, names=words)
    assert case not in {m["name"] for m in server.get("/api/v1/models")}  # nothing registered
    assert not list((server.data_dir / "uploads").iterdir())  # the scanned copy is gone


def test_a_real_state_dict_still_registers(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        r = upload(client, "good", good_checkpoint())
    assert r.status_code == 201, r.text
    assert "good" in {m["name"] for m in server.get("/api/v1/models")}


@pytest.mark.slow
def test_10_concurrent_hostile_uploads_stay_bounded(server: Server) -> None:
    cases = sorted(HOSTILE)
    payloads = [(f"c{i}-{cases[i % len(cases)]}", HOSTILE[cases[i % len(cases)]]) for i in range(10)]
    bodies = [(name, build()) for name, (build, _) in payloads]
    watch = ServerWatch(server.process.pid)
    with watch, HealthProbe(server.url) as probe, httpx.Client(base_url=server.url, timeout=120) as client:
        with ThreadPoolExecutor(len(bodies)) as ex:
            answers = list(ex.map(lambda b: upload(client, *b), bodies))
    print(f"{watch.report('10 concurrent hostile uploads')}; /healthz worst {max(probe.seconds):.3f} s")
    for (name, (_, words)), r in zip(payloads, answers, strict=True):
        assert r.status_code == 422, (name, r.status_code, r.text[:300])
        for word in words:
            assert word in r.text, (name, word, r.text[:300])
    assert not {m["name"] for m in server.get("/api/v1/models")} & {name for name, _ in bodies}
    assert watch.peak - watch.idle < GIB, watch.report("memory")
    assert watch.max_helpers <= 1, watch.report("helpers")
    assert not probe.failures, probe.failures[:3]
    assert max(probe.seconds) < FAST_S, f"/healthz took {max(probe.seconds):.2f} s"
