"""Prefix reuse for sensitivity analysis: run once what pruning a layer cannot change.

Pruning a layer changes nothing computed before its first use, so the model is traced with
``torch.fx`` and cut there: the *prefix* (unchanged weights) runs once per batch, the *suffix* runs
once per sparsity level. On branching graphs (residual adds, concats) every value computed before
the cut and used after it is *live*: the prefix returns all of them and the suffix takes all of them.
The suffix is made of the same modules as the model, so the weights a caller edits in place are the
weights it runs with, and its arithmetic is the model's own (identical results, not approximate).

An fx GraphModule (a loaded ``torch.export`` program) is used as it is, not traced again. Its graph fetches
every parameter with ``get_attr`` at its top, so a cut goes before the first node that *consumes* a parameter,
and ``get_attr`` nodes never cross a cut as cached values: each segment fetches the attributes it reads, so a
weight swapped in (``param.data = ...``) is what the suffix computes with.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.utils import _pytree as pytree

# Ops that only re-view a tensor: an in-place op on their result writes into the live input.
_VIEW_OPS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "transpose", "permute", "expand",
             "narrow", "contiguous", "t", "view_as", "reshape_as", "__getitem__", "getitem", "chunk",
             "split", "unbind"}
_INPLACE_FUNCS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ipow,
                  operator.iand, operator.ior, operator.setitem}


class UntraceableModel(RuntimeError):
    """The model cannot be traced by torch.fx; the message says why (the plain path still works)."""


@dataclass
class Segment:
    """The nodes between two cuts as a module: takes the values live at its start, returns those
    live at its stop (or the model's output). ``clone`` lists inputs its in-place ops would overwrite."""

    module: fx.GraphModule
    inputs: list[str]  # names of the values it takes (the values crossing its start cut)
    clone: list[int]

    def __call__(self, live: Sequence[torch.Tensor]) -> torch.Tensor | tuple:
        """Run on ``live`` without modifying it (mutated inputs are cloned first), so a cache can be reused."""
        args = list(live)
        for i in self.clone:
            args[i] = args[i].clone()
        return self.module(*args)


@dataclass
class Split:
    """A model cut before the first use of some parameters: ``suffix(*prefix(x)) == model(x)``."""

    prefix: fx.GraphModule
    suffix: fx.GraphModule
    live: list[str]  # names of the values crossing the cut
    clone: list[int]  # positions of live values an in-place suffix op would overwrite

    def run_suffix(self, live: Sequence[torch.Tensor]) -> torch.Tensor:
        """Run the suffix on cached live values without letting it modify them."""
        return Segment(self.suffix, self.live, self.clone)(live)


class GraphSplitter:
    """Traces a model once and cuts it before any set of its parameters.

    Cuts are node indices; ``segment(a, b)`` runs the graph from cut ``a`` to cut ``b``, so values
    live at one cut can be advanced to a later cut without recomputing the model from its input.
    """

    def __init__(self, model: nn.Module) -> None:
        try:
            self.graph_module = model if isinstance(model, fx.GraphModule) else fx.symbolic_trace(model)
        except Exception as exc:  # fx raises many types (TraceError, TypeError, NotImplementedError)
            raise UntraceableModel(f"torch.fx cannot trace {type(model).__name__}: "
                                   f"{type(exc).__name__}: {exc}") from exc
        self.nodes = list(self.graph_module.graph.nodes)
        self._index = {node: i for i, node in enumerate(self.nodes)}
        self._segments: dict[tuple[int, int | None], Segment] = {}

    def first_use(self, param_name: str) -> int | None:
        """Index of the first node that reads the parameter: a leaf module holding it, or the first consumer
        of a ``get_attr`` that fetches it (not the fetch itself: an exported graph fetches all at its top)."""
        uses = []
        for i, node in enumerate(self.nodes):
            if node.op in ("call_module", "get_attr") and isinstance(node.target, str):
                if param_name == node.target or param_name.startswith(node.target + "."):
                    uses.append(i if node.op == "call_module" else min(
                        (self._index[u] for u in node.users), default=None))
        uses = [i for i in uses if i is not None]
        return min(uses) if uses else None

    def cut(self, param_names: Iterable[str]) -> int:
        """The cut just before the earliest use of any of ``param_names``; KeyError if one is never used."""
        uses = []
        for name in param_names:
            index = self.first_use(name)
            if index is None:
                raise KeyError(f"{name} is not used by the traced graph")
            uses.append(index)
        return min(uses)

    def live(self, cut: int) -> list[fx.Node]:
        """Values computed before ``cut`` and used at or after it (fetched attributes are fetched again)."""
        return [n for n in self.nodes[:cut] if n.op != "get_attr" and any(self._index[u] >= cut for u in n.users)]

    def segment(self, start: int, stop: int | None = None) -> Segment:
        """The graph from cut ``start`` to cut ``stop`` (``None``: to the model's output); built once."""
        if (start, stop) not in self._segments:
            self._segments[start, stop] = self._build(start, stop)
        return self._segments[start, stop]

    def _build(self, start: int, stop: int | None) -> Segment:
        inputs = self.live(start)
        graph = fx.Graph()
        env = {n: graph.placeholder(f"live_{i}_{n.name}") for i, n in enumerate(inputs)}

        def value(n: fx.Node) -> fx.Node:
            if n not in env and n.op == "get_attr":  # fetched where it is used, never carried across a cut
                env[n] = graph.node_copy(n)
            return env[n]

        body = self.nodes[start:len(self.nodes) if stop is None else stop]
        out_spec = getattr(getattr(self.graph_module.graph._codegen, "pytree_info", None), "out_spec", None)
        for node in body:
            if node.op == "output":
                result = fx.node.map_arg(node.args[0], value)
                if out_spec is not None:  # an exported graph returns a flat tuple its codegen restructures
                    result = pytree.tree_unflatten(list(result), out_spec)
                graph.output(result)
            elif node.op != "get_attr":
                env[node] = graph.node_copy(node, value)
        if stop is not None:
            graph.output(tuple(env[n] for n in self.live(stop)))
        root = self.graph_module
        clone = sorted({inputs.index(n) for n in _mutated_live_inputs(body, set(inputs), root)})
        return Segment(fx.GraphModule(root, graph), [n.name for n in inputs], clone)

    def split(self, param_names: Iterable[str]) -> Split:
        """Cut before the earliest use of any of ``param_names``; KeyError if one is never used."""
        cut = self.cut(param_names)
        prefix, suffix = self.segment(0, cut), self.segment(cut)
        return Split(prefix.module, suffix.module, suffix.inputs, suffix.clone)


def _schema_alias(node: fx.Node, writes: bool) -> bool:
    """For an ATen op: whether it writes its first argument in place (``writes``) or returns a view of it."""
    schema = getattr(node.target, "_schema", None) if node.op == "call_function" else None
    if schema is None:
        return False
    alias = (schema.arguments[0] if writes else schema.returns[0]).alias_info \
        if (schema.arguments if writes else schema.returns) else None
    return alias is not None and bool(alias.is_write) == writes


def _is_inplace(node: fx.Node, root: nn.Module) -> bool:
    if _schema_alias(node, writes=True):
        return True
    if node.op == "call_module":
        return bool(getattr(root.get_submodule(node.target), "inplace", False))
    if node.op == "call_function":
        return node.target in _INPLACE_FUNCS or bool(node.kwargs.get("inplace", False))
    if node.op == "call_method":
        name = str(node.target)
        return (name.endswith("_") and not name.endswith("__")) or bool(node.kwargs.get("inplace", False))
    return False


def _mutated_live_inputs(nodes: Sequence[fx.Node], live: set[fx.Node], root: nn.Module) -> set[fx.Node]:
    """Live values that an in-place op of the suffix would write to (directly or through a view)."""
    hit = set()
    for node in nodes:
        if not _is_inplace(node, root) or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        src = node.args[0]
        while src not in live and src.op in ("call_method", "call_function") and src.args \
                and isinstance(src.args[0], fx.Node) \
                and (getattr(src.target, "__name__", str(src.target)) in _VIEW_OPS
                     or _schema_alias(src, writes=False)):
            src = src.args[0]
        if src in live:
            hit.add(src)
    return hit
