"""Models without code: ``torch.export`` programs (``.pt2``), loaded without running code from the file.

A ``.pt2`` carries the graph with the weights, so no architecture name is needed. ``torch.export.load`` alone
would run code from a hostile file (pickles loaded with ``weights_only=False``, ``guards_code`` exec'd, shape
expressions ``eval``'d by sympy, targets resolved as any attribute of ``torch``): :func:`load_program` first
runs the torch-free static scan :func:`pruning_core.checkpoint_scan.scan_program` (the one the API runs at
upload), loads the sample inputs with ``weights_only=True`` (so torch's ``weights_only=False`` fallback cannot
run), loads without generated guard code, and checks the loaded graph calls ATen operators only.

``program.module()`` is an fx GraphModule whose layers are bare containers read by ``get_attr`` and whose
``train()``/``eval()`` raise. The layers a pruning analysis needs by type are recovered: each ATen
conv/linear/batch-norm/layer-norm/dropout node whose weights belong to one container becomes a call of a real
``nn.Conv2d``/``nn.Linear``/... holding the *same* Parameter objects (its forward calls the same ATen op with
the same arguments, so results are bit-identical), and BatchNorm and dropout then follow ``train()``/``eval()``
as in the original module. Parameter names are the original module's (``stem.weight``).
"""

from __future__ import annotations

import inspect
import io
import logging
import operator
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import fx, nn

from pruning_core.checkpoint_scan import (
    CheckpointError,
    ProgramScan,
    ScanLimits,
    UnsafeCheckpointError,
    scan_program,
)

__all__ = ["ProgramScan", "export_model", "fixed_mode_ops", "is_program_module", "load_program", "trainable"]

_SCAN_ATTR = "_prunescope_program"
_PY_OPS = {getattr(operator, name) for name in ("getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "neg",
                                                "pow", "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "not_")}
aten = torch.ops.aten


def export_model(model: nn.Module, example: torch.Tensor, path: str | os.PathLike[str] | BinaryIO, *,
                 dynamic_batch: bool = True) -> torch.export.ExportedProgram:
    """Export ``model`` (in eval mode) on ``example`` and save it as a ``.pt2``; the batch size is left
    dynamic (``dynamic_batch``) so that any batch size runs on the loaded program."""
    was_training = model.training
    model.eval()
    try:
        shapes = None
        if dynamic_batch:
            shapes = ({0: torch.export.Dim("batch", min=1, max=1 << 16)},)
        program = torch.export.export(model, (example,), dynamic_shapes=shapes)
    finally:
        model.train(was_training)
    torch.export.save(program, path)
    return program


def _nested_pickles(fh: BinaryIO) -> dict[str, bytes]:
    """The torch.save archives inside a program: torch loads each with weights_only=True, then retries with
    weights_only=False if that fails (``deserialize_torch_artifact``)."""
    with zipfile.ZipFile(fh) as archive:
        return {n: archive.read(n) for n in archive.namelist()
                if n.endswith("/data/sample_inputs/model.pt") or (n.startswith("serialized_") and n.endswith(".pt"))}


def load_program(source: str | os.PathLike[str] | BinaryIO, limits: ScanLimits = ScanLimits(), *,
                 scanned: ProgramScan | None = None) -> fx.GraphModule:
    """The exported module of a ``.pt2`` (``program.module()`` with its layers recovered, in eval mode),
    after the static scan; CheckpointError (UnsafeCheckpointError for code) if refused. Nothing from the
    file is run: see the module docstring. ``scanned``: this very file's :func:`scan_program` result, when
    the caller scanned it already (torch-free, before importing this module), so it is not scanned twice."""
    fh = Path(source).open("rb") if isinstance(source, (str, os.PathLike)) else source
    try:
        scan = scanned if scanned is not None else scan_program(fh, limits)
        for name, data in _nested_pickles(fh).items():
            if not data:
                continue
            try:  # the very bytes torch loads first with weights_only=True: so its fallback never runs
                torch.load(io.BytesIO(data), weights_only=True)
            except Exception as exc:  # noqa: BLE001 - UnpicklingError and friends
                raise UnsafeCheckpointError(f"refused: the program's {name} does not load with weights_only=True "
                                            f"({str(exc)[:200]}); none of it was run") from None
        fh.seek(0)
        program = _torch_load(fh)
    finally:
        if fh is not source:
            fh.close()
    _check_loaded_graph(program.graph)
    module = program.module(check_guards=False) if "check_guards" in inspect.signature(program.module).parameters \
        else program.module()
    for name in ("train", "eval"):  # torch's instance overrides that raise; ours checks the graph instead
        module.__dict__.pop(name, None)
    _recover_layers(module)
    setattr(module, _SCAN_ATTR, scan)
    module.train = _train.__get__(module)  # type: ignore[method-assign]
    module.eval()
    return module


def _torch_load(fh: BinaryIO) -> torch.export.ExportedProgram:
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.ERROR)  # torch logs a warning (with the traceback) before its legacy-format retry
    try:
        return torch.export.load(fh)
    except Exception as exc:  # noqa: BLE001 - deserialization raises many types
        raise CheckpointError(f"the torch.export program does not load in torch {torch.__version__} "
                              f"({type(exc).__name__}: {str(exc)[:300]})") from None
    finally:
        logger.setLevel(level)


def _check_loaded_graph(graph: fx.Graph) -> None:
    """After loading: every call is an ATen operator or a Python operator on sizes (the scan's rule, again)."""
    for node in graph.nodes:
        if node.op == "call_function":
            target = node.target
            ok = target in _PY_OPS or (isinstance(target, torch._ops.OpOverload)
                                       and target._schema.name.split("::")[0] == "aten")
            if not ok:
                raise UnsafeCheckpointError(f"refused: the loaded program calls {target!r}, not a plain ATen "
                                            "operator; it was not run")
        elif node.op not in ("placeholder", "output", "get_attr"):
            raise UnsafeCheckpointError(f"refused: the loaded program has a {node.op} node ({node.name}); it was "
                                        "not run")


# -- layers recovered from ATen calls -------------------------------------------------------------------------

def _normalized(node: fx.Node) -> dict[str, Any] | None:
    from torch.fx.operator_schemas import normalize_function

    found = normalize_function(node.target, node.args, node.kwargs, normalize_to_only_use_kwargs=True)
    return None if found is None else dict(found.kwargs)


def _owner(gm: fx.GraphModule, nodes: dict[str, fx.Node | None], use: fx.Node, counts: dict[str, int],
           idle: tuple[str, ...] = ()) -> str | None:
    """The container path holding exactly the given attributes, each fetched once and read by ``use`` only,
    plus the ``idle`` ones it may hold (buffers the graph never reads: BatchNorm's num_batches_tracked)."""
    read = {a: n for a, n in nodes.items() if n is not None}
    paths = set()
    for attr, arg in read.items():
        if not (isinstance(arg, fx.Node) and arg.op == "get_attr" and set(arg.users) == {use}
                and counts.get(str(arg.target)) == 1):
            return None
        path, _, leaf = str(arg.target).rpartition(".")
        if leaf != attr:
            return None
        paths.add(path)
    if len(paths) != 1 or "" in paths:
        return None
    path = paths.pop()
    container = gm.get_submodule(path)
    own = {n for n, _ in container.named_parameters(recurse=False)}
    own |= {n for n, _ in container.named_buffers(recurse=False)}
    if type(container) is not nn.Module or list(container.children()) or not set(read) <= own \
            or own - set(read) - set(idle):
        return None
    return path


def _conv(kw: dict[str, Any], cls: type[nn.modules.conv._ConvNd], dims: int) -> Callable[[dict], nn.Module]:
    def spread(value: Any) -> Any:
        return value if isinstance(value, str) else tuple(value) if isinstance(value, (list, tuple)) \
            else (value,) * dims

    groups = kw.get("groups", 1)
    return lambda p: cls(p["weight"].shape[1] * groups, p["weight"].shape[0], tuple(p["weight"].shape[2:]),
                         stride=spread(kw.get("stride", 1)), padding=spread(kw.get("padding", 0)),
                         dilation=spread(kw.get("dilation", 1)), groups=groups, bias="bias" in p, device="meta")


def _batch_norm(kw: dict[str, Any], ndim: int) -> Callable[[dict], nn.Module] | None:
    cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}.get(ndim)
    if cls is None or kw.get("running_mean") is None:
        return None
    return lambda p: cls(p["running_mean"].shape[0], eps=kw["eps"], momentum=kw["momentum"],
                         affine=kw.get("weight") is not None, device="meta")


def _layer(node: fx.Node) -> tuple[Callable[[dict], nn.Module], dict[str, fx.Node | None]] | None:
    """How to rebuild the layer an ATen call computes, and the get_attr nodes of its parameters and buffers."""
    target = node.target
    convs = {aten.conv1d: nn.Conv1d, aten.conv2d: nn.Conv2d, aten.conv3d: nn.Conv3d}
    packet = getattr(target, "overloadpacket", None)
    if packet not in (*convs, aten.convolution, aten.linear, aten.batch_norm, aten.layer_norm):
        return None
    kw = _normalized(node)
    if kw is None:
        return None
    if packet == aten.convolution:  # what torch < 2.5 exported (decomposed) for a conv layer
        val = getattr(kw["weight"], "meta", {}).get("val")
        if kw.get("transposed") or val is None or not 3 <= val.dim() <= 5:
            return None
        dims = val.dim() - 2
        return (_conv(kw, (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1], dims),
                {"weight": kw["weight"], "bias": kw.get("bias")})
    if packet in convs:
        dims = {aten.conv1d: 1, aten.conv2d: 2, aten.conv3d: 3}[packet]
        return _conv(kw, convs[packet], dims), {"weight": kw["weight"], "bias": kw.get("bias")}
    if packet == aten.linear:
        return (lambda p: nn.Linear(p["weight"].shape[1], p["weight"].shape[0], bias="bias" in p, device="meta"),
                {"weight": kw["weight"], "bias": kw.get("bias")})
    if packet == aten.layer_norm:
        shape = tuple(kw["normalized_shape"])
        return (lambda p: nn.LayerNorm(shape, eps=kw["eps"], elementwise_affine="weight" in p, bias="bias" in p,
                                       device="meta"), {"weight": kw.get("weight"), "bias": kw.get("bias")})
    val = kw["input"].meta.get("val") if isinstance(kw["input"], fx.Node) else None
    build = _batch_norm(kw, val.dim()) if val is not None else None
    if build is None:
        return None
    return build, {"weight": kw.get("weight"), "bias": kw.get("bias"), "running_mean": kw["running_mean"],
                   "running_var": kw["running_var"]}


def _recover_layers(gm: fx.GraphModule) -> None:
    """Replace ATen layer calls by calls of real layers sharing the Parameter objects (see the module doc)."""
    graph = gm.graph
    counts: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "get_attr":
            counts[str(node.target)] = counts.get(str(node.target), 0) + 1
    dropouts = 0
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if getattr(node.target, "overloadpacket", None) == aten.dropout and (kw := _normalized(node)):
            name = f"_dropout_{dropouts}"
            dropouts += 1
            gm.add_module(name, nn.Dropout(kw["p"]))
            _replace(graph, node, name, kw["input"])
            continue
        found = _layer(node)
        path = None if found is None else _owner(gm, found[1], node, counts, idle=("num_batches_tracked",))
        if path is None:
            continue
        container = gm.get_submodule(path)
        values = dict(container.named_parameters(recurse=False)) | dict(container.named_buffers(recurse=False))
        layer = found[0](values)
        for attr, value in values.items():
            if isinstance(value, nn.Parameter):
                setattr(layer, attr, value)
            else:
                layer.register_buffer(attr, value)
        if any(t.is_meta for t in [*layer.parameters(), *layer.buffers()]):
            continue  # the container lacks something the layer holds: leave the ATen call as it is
        parent, _, leaf = path.rpartition(".")
        setattr(gm.get_submodule(parent), leaf, layer)
        _replace(graph, node, path, _normalized(node)["input"])
        for arg in [*found[1].values(), *(n for n in graph.nodes if n.op == "get_attr"
                                          and n.target == f"{path}.num_batches_tracked")]:
            if arg is not None and not arg.users:
                graph.erase_node(arg)
    graph.lint()
    gm.recompile()


def _replace(graph: fx.Graph, node: fx.Node, path: str, inp: Any) -> None:
    with graph.inserting_before(node):
        call = graph.call_module(path, (inp,))
    call.meta = dict(node.meta)
    node.replace_all_uses_with(call)
    graph.erase_node(node)


# -- train / eval ---------------------------------------------------------------------------------------------

#: ATen ops whose result depends on training mode, and where their mode is in the arguments (None: the op
#: itself fixes it: the value is the mode it means).
_MODE_OPS: dict[str, tuple[str | None, bool]] = {
    "batch_norm": ("training", False), "dropout": ("train", False), "feature_dropout": ("train", False),
    "alpha_dropout": ("train", False), "feature_alpha_dropout": ("train", False), "rrelu": ("training", False),
    "instance_norm": ("use_input_stats", False), "native_dropout": ("train", True),
    "native_batch_norm": ("training", False), "_native_batch_norm_legit_no_training": (None, False),
    "_native_batch_norm_legit": ("training", False), "_native_batch_norm_legit_functional": ("training", False),
    "_batch_norm_with_update": (None, True), "_batch_norm_no_update": (None, False),
    "cudnn_batch_norm": ("training", False), "miopen_batch_norm": ("training", False),
}


_MODE_ADVICE = ("a functional or shared batch-norm/dropout call, or a program decomposed to core ATen "
                "(run_decompositions), keeps the mode it was exported in: export with torch.export.export alone, "
                "from a model whose BatchNorm and Dropout are layers of their own")


def fixed_mode_ops(module: nn.Module) -> dict[str, bool]:
    """Nodes of an exported graph whose train/eval behaviour is fixed in the graph, with the mode they fix
    (True: training): ``train()`` cannot change them (BatchNorm and dropout layers that were recovered do)."""
    graph = getattr(module, "graph", None)
    fixed: dict[str, bool] = {}
    for node in graph.nodes if isinstance(graph, fx.Graph) else ():
        packet = getattr(node.target, "overloadpacket", None) if node.op == "call_function" else None
        spec = _MODE_OPS.get(getattr(packet, "__name__", ""))
        if spec is None:
            continue
        arg, default = spec
        kw = _normalized(node) or {}
        if "norm" in packet.__name__ and kw.get("running_mean") is None:
            continue  # without running statistics a norm uses the batch's in both modes
        fixed[f"{node.name} ({packet.__name__})"] = bool(kw.get(arg, default)) if arg else default
    return fixed


def _train(self: fx.GraphModule, mode: bool = True) -> fx.GraphModule:
    """``nn.Module.train``, refused where the graph fixes an op in the other mode (it could not follow)."""
    clash = [name for name, fixed in fixed_mode_ops(self).items() if fixed != mode]
    if clash:
        raise NotImplementedError(
            f"the exported graph fixes {', '.join(clash[:4])} in {'eval' if mode else 'training'} mode, so "
            f"{'train()' if mode else 'eval()'} cannot switch it; {_MODE_ADVICE}")
    return nn.Module.train(self, mode)


def is_program_module(module: nn.Module) -> bool:
    """Whether ``module`` came from :func:`load_program`."""
    return isinstance(getattr(module, _SCAN_ATTR, None), ProgramScan)


def trainable(module: nn.Module) -> str | None:
    """None if pruning with fine-tuning can work on ``module``, else why not (sensitivity analysis works on
    any loaded program). A program's fine-tuning needs ``train()`` to reach every mode-dependent op and its
    parameters to require grad; autograd then works through the ATen graph."""
    if not is_program_module(module):
        return None
    clash = [name for name, fixed in fixed_mode_ops(module).items() if not fixed]
    if clash:
        return (f"the exported graph fixes {', '.join(clash[:4])} in eval mode (train() cannot switch it), so "
                f"fine-tuning would not train as the original model does; sensitivity analysis works on it. "
                f"{_MODE_ADVICE[0].upper()}{_MODE_ADVICE[1:]}, or fine-tune the original model")
    frozen = [n for n, p in module.named_parameters() if not p.requires_grad]
    if frozen:
        return (f"parameters {', '.join(frozen[:4])} do not require grad in the exported program, so they "
                "cannot be fine-tuned; sensitivity analysis works on it")
    return None
