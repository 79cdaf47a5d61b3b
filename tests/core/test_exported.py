"""Models without code (issue 14): a torch.export program analysed like its original module, and hostile
``.pt2`` files refused by the static scan without running anything from them."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pruning_core.checkpoint_scan import CheckpointError, ScanLimits, UnsafeCheckpointError, is_program, scan_program
from pruning_core.exported import export_model, fixed_mode_ops, is_program_module, load_program, trainable
from pruning_core.fastpath import GraphSplitter
from pruning_core.sensitivity import analyze
from tests.networks import Net, calibrated_net


@pytest.fixture(scope="module")
def net() -> Net:
    return calibrated_net()


@pytest.fixture(scope="module")
def program(net: Net) -> bytes:
    buf = io.BytesIO()
    export_model(net, torch.randn(2, 3, 8, 8), buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def loader() -> DataLoader:
    gen = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(24, 3, 8, 8, generator=gen), torch.randint(0, 10, (24,), generator=gen))
    return DataLoader(data, batch_size=16)  # 16, 8: the program's batch size is dynamic


def test_loaded_program_keeps_names_layers_and_results(net: Net, program: bytes, tmp_path: Path) -> None:
    path = tmp_path / "net.pt2"
    path.write_bytes(program)
    assert is_program(path)
    module = load_program(path)
    assert is_program_module(module) and not module.training
    assert [n for n, _ in module.named_parameters()] == [n for n, _ in net.named_parameters()]
    kinds = {n: type(m) for n, m in module.named_modules()}
    assert (kinds["stem"], kinds["bn"], kinds["norm"], kinds["head"]) == (nn.Conv2d, nn.BatchNorm2d, nn.LayerNorm,
                                                                           nn.Linear)
    assert kinds["dw"] is nn.Conv2d and module.dw.groups == 8
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(module(x), net(x))
    # BatchNorm follows train()/eval() as in the original; autograd runs through the graph
    assert fixed_mode_ops(module) == {} and trainable(module) is None
    module.train()
    out = module(x)
    out.sum().backward()
    assert module.stem.weight.grad is not None and module.mix.grad is not None
    assert not torch.equal(module.bn.running_mean, net.bn.running_mean)  # batch statistics were taken


@pytest.mark.parametrize("group", ["element", "filter"])
def test_analysis_of_the_program_equals_the_original(net: Net, program: bytes, loader: DataLoader,
                                                     group: str) -> None:
    params = ["stem.weight", "dw.weight", "pw.weight", "head.weight"] + (["mix"] if group == "element" else [])
    kw = dict(levels="0,0.5,0.8", params=params, group=group, device="cpu", cpu_chunk=8)
    want = analyze(net, loader, engine="plain", **kw)
    got = analyze(load_program(io.BytesIO(program)), loader, engine="fast", **kw)
    assert got.engine == "fast" and got.engine_note is None
    assert [s.parameter for s in got.skipped] == [s.parameter for s in want.skipped]
    if group == "filter":  # the depthwise conv is measured; the head is the output layer, skipped as in the original
        assert [s.parameter for s in want.skipped] == ["head.weight"]
    assert len(got.points) == len(want.points) > 0
    for a, b in zip(got.points, want.points, strict=True):
        assert (a.parameter, a.sparsity, a.top1, a.top5, a.samples, a.nnz) == (b.parameter, b.sparsity, b.top1,
                                                                              b.top5, b.samples, b.nnz)
        assert a.loss == b.loss  # exactly: the same ATen ops on the same weights
        assert (a.macs, a.params_left) == (b.macs, b.params_left)
    assert any(p.top1 != got.points[0].top1 or p.loss != got.points[0].loss for p in got.points)


def test_fast_engine_reuses_prefixes_on_the_exported_graph(program: bytes) -> None:
    module = load_program(io.BytesIO(program))
    splitter = GraphSplitter(module)
    cuts = [splitter.cut([name]) for name in ("stem.weight", "dw.weight", "pw.weight", "mix", "head.weight")]
    first = next(i for i, n in enumerate(splitter.nodes) if n.op not in ("placeholder", "get_attr"))
    assert cuts[0] == first and cuts == sorted(cuts) and len(set(cuts)) == len(cuts)  # later layers cut later
    # the bare parameter is fetched by get_attr at the top: the cut is at its consumer, not at the fetch
    fetch = next(i for i, n in enumerate(splitter.nodes) if n.op == "get_attr" and n.target == "mix")
    assert fetch == 0 and splitter.nodes[cuts[3]] in splitter.nodes[fetch].users
    # get_attr values never cross a cut: the suffix fetches the weight, so a swapped-in weight is what it uses
    assert all(n.op != "get_attr" for n in splitter.live(cuts[3]))
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        live = splitter.segment(0, cuts[3])([x])
        suffix = splitter.segment(cuts[3])
        before = suffix(live)
        assert torch.equal(before, module(x))
        saved = module.mix.data
        module.mix.data = torch.zeros_like(saved)
        try:
            after = suffix(live)
            assert torch.equal(after, module(x)) and not torch.equal(after, before)
        finally:
            module.mix.data = saved


def test_modes_the_graph_fixes_are_reported_and_refused() -> None:
    """A functional batch_norm on buffers of the root keeps its export-time mode: train() refuses, and
    trainable() says why (fine-tuning would not be the original's); a Dropout layer follows train()."""

    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.drop = nn.Conv2d(3, 4, 3), nn.Dropout(0.5)
            self.register_buffer("mean", torch.zeros(4))
            self.register_buffer("var", torch.ones(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.drop(F.batch_norm(self.conv(x), self.mean, self.var, training=False))

    buf = io.BytesIO()
    export_model(Functional(), torch.randn(2, 3, 6, 6), buf)
    module = load_program(io.BytesIO(buf.getvalue()))
    assert isinstance(module.get_submodule("_dropout_0"), nn.Dropout)
    assert fixed_mode_ops(module) == {"batch_norm (batch_norm)": False}
    reason = trainable(module)
    assert reason is not None and "batch_norm" in reason and "sensitivity analysis works" in reason
    with pytest.raises(NotImplementedError, match="fixes batch_norm .* in eval mode"):
        module.train()
    module.eval()  # the mode it fixes: allowed


def test_inplace_aten_ops_do_not_overwrite_cached_values() -> None:
    """``aten.relu_`` in the suffix writes into a value live at the cut: the segment clones it first."""

    class InPlace(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.a(x)
            z = self.b(y)
            y.relu_()
            return z + y

    buf = io.BytesIO()
    export_model(InPlace().eval(), torch.randn(2, 3, 6, 6), buf)
    module = load_program(io.BytesIO(buf.getvalue()))
    splitter = GraphSplitter(module)
    cut = splitter.cut(["b.weight"])
    suffix = splitter.segment(cut)
    assert suffix.inputs == ["a"] and suffix.clone == [0]
    x = torch.randn(3, 3, 6, 6)
    with torch.no_grad():
        live = splitter.segment(0, cut)([x])
        kept = live[0].clone()
        assert torch.equal(suffix(live), module(x)) and torch.equal(suffix(live), module(x))
        assert torch.equal(live[0], kept)


def legacy(program_model: nn.Module, example: torch.Tensor, state_dict: bytes | None = None) -> bytes:
    """The flat zip torch < 2.7 wrote (and later versions still load): JSON beside torch.save archives."""
    from torch._export.serde.schema import SCHEMA_VERSION
    from torch._export.serde.serialize import serialize

    art = serialize(torch.export.export(program_model, (example,)))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("serialized_exported_program.json", art.exported_program)
        z.writestr("serialized_state_dict.pt", state_dict if state_dict is not None else art.state_dict)
        z.writestr("serialized_constants.pt", art.constants)
        z.writestr("serialized_example_inputs.pt", art.example_inputs)
        z.writestr("version", ".".join(map(str, SCHEMA_VERSION)))
    return buf.getvalue()


def test_legacy_layout_loads_and_its_pickles_are_scanned(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10)).eval()
    x = torch.zeros(2, 1, 8, 8)
    data = legacy(model, x)
    assert is_program(io.BytesIO(data)) and scan_program(io.BytesIO(data)).layout == "legacy"
    module = load_program(io.BytesIO(data))
    with torch.no_grad():
        assert torch.equal(module(x), model(x))
    marker = tmp_path / "pwned"
    hostile = legacy(model, x, state_dict=torch_save_payload(marker))
    with pytest.raises(UnsafeCheckpointError, match="serialized_state_dict.pt would run code"):
        load_program(io.BytesIO(hostile))
    assert not marker.exists()


# -- hostile files: refused by the static scan, the payload never runs ------------------------------------------

class Call:
    """Unpickling calls ``fn(*args)``: the classic "file runs code" payload."""

    def __init__(self, fn: Callable, *args: object) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return self.fn, self.args


def rewrite(program: bytes, edit: Callable[[str, bytes], bytes | None], extra: dict[str, bytes] | None = None,
            compression: int = zipfile.ZIP_STORED) -> bytes:
    """The program with each member passed through ``edit`` (None drops it), plus ``extra`` members."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(program)) as src, zipfile.ZipFile(out, "w", compression) as dst:
        for info in src.infolist():
            data = edit(info.filename, src.read(info))
            if data is not None:
                dst.writestr(info.filename, data)
        for name, data in (extra or {}).items():
            dst.writestr(name, data)
    return out.getvalue()


def edit_json(program: bytes, change: Callable[[dict], None]) -> bytes:
    def edit(name: str, data: bytes) -> bytes:
        if not name.endswith("models/model.json"):
            return data
        doc = json.loads(data)
        change(doc)
        return json.dumps(doc).encode()
    return rewrite(program, edit)


def first_node(doc: dict) -> dict:
    return doc["graph_module"]["graph"]["nodes"][0]


def torch_save_payload(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save({"x": Call(os.system, f"touch {marker}")}, buf)
    return buf.getvalue()


#: The scan's limits for the hostile cases: the defaults, but 64 members (the programs here have 13).
LIMITS = ScanLimits(max_members=64)
HOSTILE: dict[str, tuple[Callable[[bytes, Path], bytes], tuple[str, ...], type]] = {
    "pickle-in-sample-inputs": (
        lambda p, m: rewrite(p, lambda n, d: torch_save_payload(m) if n.endswith("sample_inputs/model.pt") else d),
        ("sample inputs would run code", "posix.system"), UnsafeCheckpointError),
    "added-pickle-member": (
        lambda p, m: rewrite(p, lambda n, d: d, {"net/data.pkl": pickle.dumps(Call(os.system, f"touch {m}"))}),
        ("'data.pkl'", "does not write"), CheckpointError),
    "pickled-weight": (
        lambda p, m: rewrite(p, lambda n, d: d.replace(b'"use_pickle": false', b'"use_pickle": true', 1)
                             if n.endswith("model_weights_config.json") else d),
        ("pickled tensor", "weights_only=False"), UnsafeCheckpointError),
    "custom-op-namespace": (
        lambda p, m: edit_json(p, lambda d: first_node(d).update(target="torch.ops.evil_ns.payload.default")),
        ("'evil_ns' namespace", "not a plain ATen op"), UnsafeCheckpointError),
    "python-callable-target": (
        lambda p, m: edit_json(p, lambda d: first_node(d).update(target="torch.serialization.os.system")),
        ("'torch.serialization.os.system'", "not a plain ATen operator"), UnsafeCheckpointError),
    "guards-code": (
        lambda p, m: edit_json(p, lambda d: d.update(guards_code=[f"__import__('os').system('touch {m}')"])),
        ("guards code",), UnsafeCheckpointError),
    "shape-expression-eval": (
        lambda p, m: edit_json(p, lambda d: d["graph_module"]["graph"].update(sym_int_values={"s0": {
            "as_expr": {"expr_str": f"__import__('os').system('touch {m}')", "hint": None}}})),
        ("shape expression", "sympy"), UnsafeCheckpointError),
    "aotinductor-library": (
        lambda p, m: rewrite(p, lambda n, d: d, {"net/data/aotinductor/model/model.so": b"\x7fELF"}),
        ("AOTInductor",), UnsafeCheckpointError),
    "zip-bomb-member": (
        lambda p, m: rewrite(p, lambda n, d: d, {"net/extra/bomb": b"\0" * (8 << 20)}, zipfile.ZIP_DEFLATED),
        ("ratio limit", "zip bomb"), CheckpointError),
    "path-traversal": (
        lambda p, m: rewrite(p, lambda n, d: d, {"net/../../etc/cron.d/x": b"x"}),
        ("path traversal",), CheckpointError),
    "too-many-members": (
        lambda p, m: rewrite(p, lambda n, d: d, {f"net/data/weights/weight_{900 + i}": b"" for i in range(64)}),
        ("members (limit 64)",), CheckpointError),
    "not-a-zip": (lambda p, m: pickle.dumps(Call(os.system, f"touch {m}")), ("a raw pickle", "nothing was read or run"),
                  CheckpointError),
}


@pytest.fixture(scope="module")
def plain_program() -> bytes:
    """A small program for the hostile cases (most of them rewrite it)."""
    buf = io.BytesIO()
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10)).eval()
    export_model(model, torch.zeros(2, 1, 8, 8), buf)
    data = buf.getvalue()  # members are under the archive's own root: rename it "net" for the cases above
    root = zipfile.ZipFile(io.BytesIO(data)).namelist()[0].split("/")[0]
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr("net" + info.filename[len(root):], src.read(info))
    return out.getvalue()


def test_the_untouched_program_passes(plain_program: bytes) -> None:
    scan = scan_program(io.BytesIO(plain_program))
    assert scan.layout == "pt2" and scan.shapes["0.weight"] == (4, 1, 3, 3)
    assert "torch.ops.aten.conv2d.default" in scan.ops
    load_program(io.BytesIO(plain_program))


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_programs_are_refused_without_running_code(case: str, plain_program: bytes, tmp_path: Path) -> None:
    build, words, kind = HOSTILE[case]
    marker = tmp_path / "pwned"
    path = tmp_path / f"{case}.pt2"
    path.write_bytes(build(plain_program, marker))
    with pytest.raises(kind) as refused:
        scan_program(path, LIMITS)
    with pytest.raises(kind) as refused_at_load:
        load_program(path, LIMITS)
    for message in (str(refused.value), str(refused_at_load.value)):
        for word in words:
            assert word in message, message
    assert not marker.exists()
