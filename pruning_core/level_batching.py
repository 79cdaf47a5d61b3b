"""Level batching: several sparsity levels of one layer in one forward of the sensitivity suffix.

The fast engine (:mod:`pruning_core.sensitivity`) runs the suffix of the cut model once per level per batch.
Here the levels' pruned weights are stacked along a new leading dimension and the suffix runs once under
``torch.func.vmap`` of ``torch.func.functional_call``: the pruned layer becomes one wider (grouped)
convolution or matmul over all levels, and every later layer runs once on the levels folded into the batch.
The arithmetic is the suffix's own, per level, so the points are the per-level loop's (on CPU bit for bit on
the networks tested; loss within 1e-5 relative, the bound the tests hold the engines to).

- Memory: the levels of one forward hold their activations side by side, so they are split into groups that
  fit: a level's peak activation bytes are measured once per suffix (an ``fx`` pass over one chunk, counting
  each value until its last use), doubled for vmap's temporaries, plus the stacked weights. The budget is half
  the free device memory on CUDA, the analysis' ``memory_budget_mb`` elsewhere.
- Fallback: where vmap cannot run a suffix (an in-place op writing a batched value into an unbatched one, an
  ``.item()`` or other data-dependent call, an output that is not tensors) the first attempt's error is logged
  once per suffix and the caller loops over the levels (``outputs`` returns None). Live inputs the suffix
  writes in place go in as one copy per level, which is what lets an in-place residual add batch.
- Autocast (``amp``, approximate points): the levels are looped, as vmap's batched ops do not follow its casts
  (a bf16 input meets float weights in the batched convolution and batch norm).
- CUDA graphs (CUDA only): the batched suffix of a repeated input shape is captured on its
  second call and kept only where one replay beats the eager call it replaces (small, launch-bound suffixes)
  and gives the eager call's outputs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx
from torch.func import functional_call, vmap
from torch.utils import _pytree as pytree

from pruning_core.fastpath import Segment

log = logging.getLogger(__name__)

Weights = dict[str, torch.Tensor]


def _nbytes(value: Any) -> int:
    return sum(t.nelement() * t.element_size() for t in pytree.tree_leaves(value) if isinstance(t, torch.Tensor))


class _PeakMeter(fx.Interpreter):
    """Runs a graph and records the peak bytes of the values it holds (each until its last use)."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        nodes = list(module.graph.nodes)
        order = {n: i for i, n in enumerate(nodes)}
        self._frees: dict[int, list[fx.Node]] = {}
        for n in nodes:
            self._frees.setdefault(max((order[u] for u in n.users), default=order[n]), []).append(n)
        self._order, self._bytes, self.held, self.peak = order, {}, 0, 0

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if n.op not in ("placeholder", "get_attr", "output"):
            self._bytes[n] = _nbytes(out)
            self.held += self._bytes[n]
            self.peak = max(self.peak, self.held)
        for done in self._frees.get(self._order[n], ()):
            self.held -= self._bytes.pop(done, 0)
        return out


def peak_bytes(suffix: Segment, live: Sequence[Any]) -> int:
    """Peak activation bytes of one run of ``suffix`` on ``live`` (inputs it writes in place are cloned)."""
    args = [a.clone() if i in suffix.clone else a for i, a in enumerate(live)]
    meter = _PeakMeter(suffix.module)
    meter.run(*args)
    return meter.peak


def memory_budget(device: torch.device, budget_bytes: int) -> int:
    """Bytes one batched forward may take: half the free memory of a CUDA device, else ``budget_bytes``."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    return budget_bytes


def _autocast_on(device: torch.device) -> bool:
    try:
        return torch.is_autocast_enabled(device.type)
    except TypeError:  # a torch without the per-device query
        return torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()


@dataclass
class _SuffixState:
    """What is known about batching one suffix: levels per forward, why it cannot, what it keeps."""

    suffix: Segment
    group: int | None = None
    failed: str | None = None
    graphs: dict[tuple, Any] = field(default_factory=dict)  # input key -> eager seconds | _Captured | None
    stacks: dict[tuple, tuple[list[torch.Tensor], Weights]] = field(default_factory=dict)  # -> (sources, stacked)


class _Captured:
    """One CUDA graph of a batched suffix: inputs copied into static buffers, outputs cloned out."""

    def __init__(self, fn: Callable[..., Any], args: Sequence[Any]) -> None:
        self.static = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            fn(*self.static)  # warm-up on the capture stream (lazy handles are made outside the capture)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=stream):
            self.out = fn(*self.static)

    def __call__(self, args: Sequence[Any]) -> Any:
        for s, a in zip(self.static, args, strict=True):
            if isinstance(s, torch.Tensor):
                s.copy_(a)
        self.graph.replay()
        return pytree.tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, self.out)


class LevelBatcher:
    """Runs a suffix once for several levels' weights (``outputs``); remembers per suffix how, or why not.

    ``ran`` says whether any batched forward ran; ``reasons`` lists why suffixes fell back to the loop.
    """

    def __init__(self, device: torch.device, budget_bytes: int, cuda_graphs: bool | None = None) -> None:
        self.device, self.budget_bytes = device, budget_bytes
        self.cuda_graphs = device.type == "cuda" if cuda_graphs is None else cuda_graphs and device.type == "cuda"
        self.ran = False
        self.reasons: list[str] = []
        self._states: dict[int, _SuffixState] = {}
        self._current: _SuffixState | None = None

    def outputs(self, suffix: Segment, lives: list[tuple],
                weights_by_level: dict[float, Weights]) -> dict[float, list[Any]] | None:
        """Per level, the suffix's output on each chunk of ``lives``; None where the levels cannot be batched
        (the reason is logged once per suffix) and the caller should run them one by one."""
        state = self._state(suffix)
        if state.failed is not None or len(weights_by_level) < 2:
            return None
        if _autocast_on(self.device):
            if "autocast" not in self.reasons:
                self.reasons.append("autocast")
                log.warning("level batching off under autocast (vmap's batched convolutions and batch norms do "
                            "not follow autocast's casts): looping over levels")
            return None
        names = sorted({p for w in weights_by_level.values() for p in w})
        params = dict(suffix.module.named_parameters())
        missing = [p for p in names if p not in params]
        if missing:
            return self._fail(state, f"the suffix does not hold {missing[0]!r}")
        if state.group is None:
            state.group = self._group_size(state, lives[0], names, params)
            if state.group < 2:
                return self._fail(state, "two levels' activations do not fit the memory budget together")
        levels = list(weights_by_level)
        result: dict[float, list[Any]] = {lv: [] for lv in levels}
        size = min(state.group, len(levels))
        for start in range(0, len(levels), size):
            group = levels[start:start + size]
            stacked = self._stack(state, group, names, params, weights_by_level)
            for live in lives:
                out = self._forward(state, stacked, live, len(group))
                if out is None:
                    return None
                for i, lv in enumerate(group):
                    result[lv].append(pytree.tree_map(lambda t, i=i: t[i], out))
        self.ran = True
        return result

    # -- per suffix ------------------------------------------------------------------------------
    def _state(self, suffix: Segment) -> _SuffixState:
        state = self._states.get(id(suffix))
        if state is None or state.suffix is not suffix:
            state = self._states[id(suffix)] = _SuffixState(suffix)
        if self._current is not state:
            for old in self._states.values():  # another layer: the other suffixes' stacked weights and
                if old is not state:  # graphs (with their memory pools) go
                    old.graphs.clear()
                    old.stacks.clear()
            self._current = state
        return state

    def _fail(self, state: _SuffixState, reason: str) -> None:
        state.failed = reason
        self.reasons.append(reason)
        log.warning("level batching off for a suffix, looping over levels: %s", reason)
        return None

    def _group_size(self, state: _SuffixState, live: tuple, names: list[str], params: dict) -> int:
        """Levels per forward: the memory budget over a level's bytes (twice its peak activations, its
        weights, its copies of the inputs written in place)."""
        per_level = 2 * peak_bytes(state.suffix, live) + sum(_nbytes(params[p]) for p in names) + \
            sum(_nbytes(live[i]) for i in state.suffix.clone)
        return memory_budget(self.device, self.budget_bytes) // max(per_level, 1)

    def _stack(self, state: _SuffixState, group: list[float], names: list[str], params: dict,
               weights_by_level: dict[float, Weights]) -> Weights:
        """The group's weights stacked per name (a level missing a name uses the trained tensor), kept for the
        pass's next batches; other weights (another parameter, a new wave) drop the stacks kept."""
        sources = [weights_by_level[lv].get(p, params[p]) for p in names for lv in group]
        key = (tuple(group), tuple(names))
        kept = state.stacks.get(key)
        if kept is not None and all(a is b for a, b in zip(kept[0], sources, strict=True)):
            return kept[1]
        if kept is not None:  # new weights: the stacks and the graphs made with the old ones go
            state.stacks.clear()
            state.graphs.clear()
        n = len(group)
        stacked = {p: torch.stack(sources[i * n:(i + 1) * n]) for i, p in enumerate(names)}
        state.stacks[key] = (sources, stacked)
        return stacked

    # -- one forward -----------------------------------------------------------------------------
    def _forward(self, state: _SuffixState, stacked: Weights, live: tuple, n: int) -> Any:
        """The batched suffix on one chunk (leading dimension: the level); None after a logged fallback."""
        try:
            return self._call(state, stacked, live, n)
        except torch.cuda.OutOfMemoryError:
            if n < 2:
                raise
            state.group = n // 2  # the estimate was short: smaller groups from now on, this one split
            torch.cuda.empty_cache()
            log.info("level batching: out of memory, %d levels per forward from now on", state.group)
            halves = [self._forward(state, {p: w[part] for p, w in stacked.items()}, live, len(range(n)[part]))
                      for part in (slice(0, n // 2), slice(n // 2, n))]
            if any(h is None for h in halves):
                return None
            (first, spec), (second, _) = (pytree.tree_flatten(h) for h in halves)
            return pytree.tree_unflatten([torch.cat(pair) for pair in zip(first, second, strict=True)], spec)
        except Exception as exc:  # noqa: BLE001 - vmap raises many types for what it cannot batch
            return self._fail(state, f"vmap cannot run the suffix: {type(exc).__name__}: {exc}")

    def _call(self, state: _SuffixState, stacked: Weights, live: tuple, n: int) -> Any:
        suffix = state.suffix
        args, dims = [], []
        for i, value in enumerate(live):  # an input written in place: one copy per level (the cache is kept)
            mutated = i in suffix.clone
            args.append(value.unsqueeze(0).expand(n, *value.shape).clone() if mutated else value)
            dims.append(0 if mutated else None)

        def one(weights: Weights, *inputs: Any) -> Any:
            return functional_call(suffix.module, weights, inputs)

        fn = vmap(one, in_dims=(0, *dims))
        if not self.cuda_graphs:
            return fn(stacked, *args)
        return self._graphed(state, fn, stacked, args)

    def _graphed(self, state: _SuffixState, fn: Callable[..., Any], stacked: Weights, args: list) -> Any:
        """Eager on a shape's first call (timed), captured on its second, replayed after where it pays."""
        key = (tuple(id(w) for w in stacked.values()),
               tuple((tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else repr(a) for a in args))
        seen = state.graphs.get(key, "new")
        if isinstance(seen, _Captured):
            return seen(args)
        if seen is None:
            return fn(stacked, *args)
        torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        out = fn(stacked, *args)
        torch.cuda.synchronize(self.device)
        eager = time.perf_counter() - start
        if seen == "new":
            state.graphs[key] = eager
            return out
        try:
            captured = _Captured(lambda *a: fn(stacked, *a), args)
            torch.cuda.synchronize(self.device)
            start = time.perf_counter()
            again = captured(args)
            torch.cuda.synchronize(self.device)
            replay = time.perf_counter() - start
        except Exception as exc:  # noqa: BLE001 - capture fails on host syncs and unsupported ops
            log.info("level batching: no CUDA graph for a suffix (%s: %s)", type(exc).__name__, exc)
            state.graphs[key] = None
            return out
        same = all(torch.allclose(a, b, rtol=1e-5, atol=0) for a, b in
                   zip(pytree.tree_leaves(again), pytree.tree_leaves(out), strict=True))
        if not same:
            log.warning("level batching: a CUDA graph's replay differs from the eager suffix; not used")
        state.graphs[key] = captured if same and replay < 0.9 * min(eager, seen) else None
        return out
