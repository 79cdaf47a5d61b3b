"""Prefix reuse for sensitivity analysis: run once what pruning a layer cannot change.

Pruning a layer changes nothing computed before its first use, so the model is traced with
``torch.fx`` and cut there: the *prefix* (unchanged weights) runs once per batch, the *suffix* runs
once per sparsity level. On branching graphs (residual adds, concats) every value computed before
the cut and used after it is *live*: the prefix returns all of them and the suffix takes all of them.
The suffix is made of the same modules as the model, so the weights a caller edits in place are the
weights it runs with, and its arithmetic is the model's own (identical results, not approximate).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn

# Ops that only re-view a tensor: an in-place op on their result writes into the live input.
_VIEW_OPS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "transpose", "permute", "expand",
             "narrow", "contiguous", "t", "view_as", "reshape_as", "__getitem__", "getitem", "chunk",
             "split", "unbind"}
_INPLACE_FUNCS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ipow,
                  operator.iand, operator.ior, operator.setitem}


class UntraceableModel(RuntimeError):
    """The model cannot be traced by torch.fx; the message says why (the plain path still works)."""


@dataclass
class Split:
    """A model cut before the first use of some parameters: ``suffix(*prefix(x)) == model(x)``."""

    prefix: fx.GraphModule
    suffix: fx.GraphModule
    live: list[str]  # names of the values crossing the cut
    clone: list[int]  # positions of live values an in-place suffix op would overwrite

    def run_suffix(self, live: Sequence[torch.Tensor]) -> torch.Tensor:
        """Run the suffix on cached live values without letting it modify them."""
        args = list(live)
        for i in self.clone:
            args[i] = args[i].clone()
        return self.suffix(*args)


class GraphSplitter:
    """Traces a model once and cuts it before any set of its parameters."""

    def __init__(self, model: nn.Module) -> None:
        try:
            self.graph_module = fx.symbolic_trace(model)
        except Exception as exc:  # fx raises many types (TraceError, TypeError, NotImplementedError)
            raise UntraceableModel(f"torch.fx cannot trace {type(model).__name__}: "
                                   f"{type(exc).__name__}: {exc}") from exc
        self.nodes = list(self.graph_module.graph.nodes)
        self._index = {node: i for i, node in enumerate(self.nodes)}

    def first_use(self, param_name: str) -> int | None:
        """Index of the first node that reads the parameter (directly or inside a leaf module)."""
        for i, node in enumerate(self.nodes):
            if node.op in ("call_module", "get_attr") and isinstance(node.target, str):
                if param_name == node.target or param_name.startswith(node.target + "."):
                    return i
        return None

    def split(self, param_names: Iterable[str]) -> Split:
        """Cut before the earliest use of any of ``param_names``; KeyError if one is never used."""
        uses = {}
        for name in param_names:
            index = self.first_use(name)
            if index is None:
                raise KeyError(f"{name} is not used by the traced graph")
            uses[name] = index
        cut = min(uses.values())
        before, after = self.nodes[:cut], self.nodes[cut:]
        live_nodes = [n for n in before if any(self._index[u] >= cut for u in n.users)]
        prefix_graph = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        for node in before:
            env[node] = prefix_graph.node_copy(node, lambda n: env[n])
        prefix_graph.output(tuple(env[n] for n in live_nodes))
        suffix_graph = fx.Graph()
        env = {n: suffix_graph.placeholder(f"live_{i}_{n.name}") for i, n in enumerate(live_nodes)}
        for node in after:
            if node.op == "output":
                suffix_graph.output(fx.node.map_arg(node.args[0], lambda n: env[n]))
            else:
                env[node] = suffix_graph.node_copy(node, lambda n: env[n])
        root = self.graph_module
        clone = sorted({live_nodes.index(n) for n in _mutated_live_inputs(after, set(live_nodes), root)})
        return Split(fx.GraphModule(root, prefix_graph), fx.GraphModule(root, suffix_graph),
                     [n.name for n in live_nodes], clone)


def _is_inplace(node: fx.Node, root: nn.Module) -> bool:
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
                and getattr(src.target, "__name__", str(src.target)) in _VIEW_OPS:
            src = src.args[0]
        if src in live:
            hit.add(src)
    return hit
