"""A sensitivity sweep on every core: contiguous shards of the parameters, one worker process each.

torch's intra-op threads scale poorly on the small convolutions of a sweep (ResNet-20 on CIFAR), while
independent processes with one thread each scale with the cores. The selected parameters are cut into
contiguous shards (model order), balanced by their expected work (:func:`sweep_work`: the suffix MACs the
fast engine runs per level, plus the prefix its chain advances through), so each shard keeps the fast
engine's prefix chain. The analysis is built once here (options checked, parameters selected and
skipped, the work counted), then every worker runs ``sensitivity.analyze`` on its shard alone with
``torch.set_num_threads(1)``: its points are those one process measures, merged back in model order. Each
worker evaluates the unpruned model once, so a sweep on ``k`` workers runs ``k - 1`` extra unpruned passes.

On Linux the workers are forked (the model, loader and options are inherited, nothing is pickled; torch's
DataLoader workers rely on the same fork-then-one-thread pattern). CUDA cannot be forked:
``start_method="spawn"`` (the default off CPU) pickles them, and on a GPU the default is one process anyway,
as several only help with several GPUs. ``workers=1`` is the in-process path, ``sensitivity.analyze`` itself.
"""

from __future__ import annotations

import logging
import os
import queue as queue_mod
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from pruning_core.cores import usable_cores
from pruning_core.points import SensitivityPoint
from pruning_core.sensitivity import SensitivityAnalysis, SensitivityResult, analyze, point_progress

log = logging.getLogger(__name__)


class ShardFailed(RuntimeError):
    """A worker's shard raised (its traceback is in the message) or its process died."""


# -- the expected work of a sweep --------------------------------------------------------------------


@dataclass
class SweepWork:
    """MACs per sample of the pieces a sweep runs: the whole model, and per parameter what lies before
    and after the fast engine's cut for it (``pruning_core.measures`` counts every layer)."""

    full: int
    prefix: dict[str, int]
    suffix: dict[str, int]

    def engine(self, params: Sequence[str], changed: dict[str, int], fast: bool = True) -> int:
        """The engine's MACs per sample over ``params`` (``changed``: levels pruning something, per
        parameter): one unpruned pass, the prefix chain advanced once to the last cut, each changed level's
        suffix; the plain engine runs the whole model for the unpruned pass and every level."""
        if not fast:
            return self.full * (1 + sum(changed[p] for p in params))
        chain = max((self.prefix[p] for p in params), default=0)
        return self.full + chain + sum(changed[p] * self.suffix[p] for p in params)

    def distiller(self, points: int) -> int:
        """Distiller's loop: the whole model per point."""
        return self.full * points


def sweep_work(model: nn.Module, example: torch.Tensor | Callable[[], Any], params: Sequence[str]) -> SweepWork:
    """Where the fast engine cuts for each of ``params`` and the MACs on either side of the cut; a model the
    engine cannot trace runs whole (prefix 0)."""
    from pruning_core.fastpath import GraphSplitter, UntraceableModel
    from pruning_core.measures import LAYERS, count, positions

    at = positions(model, example)
    layers = {name: m for name, m in model.named_modules() if isinstance(m, LAYERS)}
    macs = {name: count(m, at)[0] - sum(count(c, at)[0] for c in m.children()) for name, m in layers.items()}
    full = sum(macs.values())
    try:
        splitter = GraphSplitter(model)
    except UntraceableModel:
        return SweepWork(full, dict.fromkeys(params, 0), dict.fromkeys(params, full))
    used = {name: splitter.first_use(f"{name}.weight") for name in layers}
    prefix, suffix = {}, {}
    for p in params:
        try:
            cut = splitter.cut([p])
        except KeyError:
            cut = 0
        after = sum(m for name, m in macs.items() if used[name] is not None and used[name] >= cut)
        prefix[p], suffix[p] = full - after, after
    return SweepWork(full, prefix, suffix)


def balanced_shards(params: Sequence[str], cost: Callable[[Sequence[str]], float], shards: int) -> list[list[str]]:
    """``params`` cut into at most ``shards`` contiguous, non-empty pieces whose largest ``cost`` is least
    (``cost`` must not fall as a piece grows): a bisection on the bound, each bound checked greedily."""
    params = list(params)
    shards = max(1, min(shards, len(params)))

    def pieces(bound: float) -> list[list[str]]:
        out: list[list[str]] = [[]]
        for p in params:
            if out[-1] and cost([*out[-1], p]) > bound:
                out.append([])
            out[-1].append(p)
        return out

    low, high = max(cost([p]) for p in params), cost(params)
    for _ in range(48):
        if high - low <= 1e-6 * high:
            break
        mid = (low + high) / 2
        low, high = (low, mid) if len(pieces(mid)) <= shards else (mid, high)
    out = pieces(high)
    while len(out) < shards:  # the least bound may need fewer pieces: split the costliest, so every worker works
        i = max((j for j, piece in enumerate(out) if len(piece) > 1), key=lambda j: cost(out[j]))
        piece = out[i]
        k = min(range(1, len(piece)), key=lambda k: max(cost(piece[:k]), cost(piece[k:])))
        out[i:i + 1] = [piece[:k], piece[k:]]
    return out


def _shards(run: SensitivityAnalysis, workers: int) -> list[list[str]]:
    """The analysis' parameters in contiguous shards balanced by the work its engine will do (by their count
    when the model takes no single input tensor to count MACs on)."""
    if run.example is None:
        return balanced_shards(run.params, len, workers)
    work = sweep_work(run.model, run.example, run.params)
    fast = run.engine == "fast"  # which reuses the unpruned evaluation for a level pruning nothing (level 0)
    changed = dict.fromkeys(run.params, sum(1 for lv in run.levels if lv > 0) if fast else len(run.levels))
    return balanced_shards(run.params, lambda ps: work.engine(ps, changed, fast), workers)


# -- the worker processes --------------------------------------------------------------------------


def _measure(model: nn.Module, loader: DataLoader, options: dict, shard: list[str], index: int, out: Any) -> None:
    """Measure one shard in this (worker) process with one torch thread: ``analyze`` restricted to the shard,
    each point sent as it comes, then the result without its points (or the traceback of what failed)."""
    try:
        torch.set_num_threads(1)
        result = analyze(model, loader, **options, params=shard,
                         on_point=lambda point: out.put(("point", index, point)))
        result.points = []
        out.put(("done", index, result))
    except BaseException:  # noqa: BLE001 - whatever it is, the parent reports it with this traceback
        out.put(("error", index, traceback.format_exc()))


class ParallelSweep:
    """One analysis measured by worker processes, one contiguous shard each.

    Built like ``SensitivityAnalysis`` (the same keywords; it is built here first, so a bad option fails at
    once and ``skipped``/``engine``/``total_points`` are known); iterating starts the workers and yields the
    points in model order, ``on_arrival`` sees each one as it arrives from any worker.
    """

    def __init__(self, model: nn.Module, loader: DataLoader, *, workers: int, start_method: str | None = None,
                 **options: Any) -> None:
        self.model, self.loader, self.options = model, loader, options
        self._was_training = model.training  # the analysis sets eval mode; its iteration (here: none) restores
        self.run = SensitivityAnalysis(model, loader, **options)
        self.shards = _shards(self.run, workers) if self.run.params else []
        if start_method is None:
            start_method = "fork" if self.run.device.type == "cpu" and os.name == "posix" else "spawn"
        self.start_method = start_method
        self.results: list[SensitivityResult] = []  # each shard's, without its points, once iterated

    @property
    def total_points(self) -> int:
        return self.run.total_points

    def __iter__(self) -> Iterator[SensitivityPoint]:
        return self.points()

    def points(self, on_arrival: Callable[[SensitivityPoint], None] | None = None) -> Iterator[SensitivityPoint]:
        """The points in model order; ``on_arrival(point)`` as each arrives (progress, storage)."""
        import torch.multiprocessing as mp

        ctx = mp.get_context(self.start_method)
        out = ctx.Queue()
        options = {k: v for k, v in self.options.items() if k != "params"}
        # forked, the arguments are inherited as they are; spawned, they are pickled
        procs = [ctx.Process(target=_measure, args=(self.model, self.loader, options, shard, i, out),
                             name=f"sensitivity-shard-{i}") for i, shard in enumerate(self.shards)]
        log.info("sensitivity: %d parameters in %d shards (%s), one torch thread each", len(self.run.params),
                 len(procs), self.start_method)
        buffered: list[list[SensitivityPoint]] = [[] for _ in procs]
        ended: list[tuple | None] = [None] * len(procs)
        try:
            for p in procs:
                p.start()
            shown = 0  # the shards whose points are all yielded
            while shown < len(procs):
                message = self._next(out, procs, ended)
                kind, index = message[0], message[1]
                if kind == "error":
                    raise ShardFailed(f"sensitivity shard {index} ({self._span(index)}) failed in its worker "
                                      f"process:\n{message[2]}")
                if kind == "point":
                    if on_arrival is not None:
                        on_arrival(message[2])
                    if index == shown:
                        yield message[2]
                    else:
                        buffered[index].append(message[2])
                else:
                    ended[index] = message
                while shown < len(procs) and ended[shown] is not None:
                    shown += 1
                    if shown < len(procs):
                        yield from buffered[shown]
                        buffered[shown] = []
            self.results = [message[2] for message in ended]
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
                p.join()
            out.close()
            self.model.train(self._was_training)

    def merged(self, points: list[SensitivityPoint]) -> SensitivityResult:
        """The analysis' result from its shards': the points given (model order), the parameters skipped
        when selecting and then by each shard, the first shard's engine, baseline and info (every shard measures
        the same unpruned model with the same options), whether any shard batched levels, and how many workers
        measured it."""
        first = self.results[0]
        skipped = [*self.run.skipped, *(s for r in self.results for s in r.skipped)]
        batched = any(r.info.get("level_batch") for r in self.results)
        return SensitivityResult(points, skipped, first.engine, first.engine_note, first.baseline,
                                 {**first.info, "level_batch": batched, "workers": len(self.results)})

    def _span(self, index: int) -> str:
        shard = self.shards[index]
        return shard[0] if len(shard) == 1 else f"{shard[0]} .. {shard[-1]}"

    def _next(self, out: Any, procs: list, ended: list) -> tuple:
        """The next message from the workers; ShardFailed when one died without a word."""
        while True:
            try:
                return out.get(timeout=0.5)
            except queue_mod.Empty:
                for i, p in enumerate(procs):
                    if ended[i] is None and p.exitcode is not None:
                        try:
                            return out.get(timeout=1.0)  # its last words may still be in the pipe
                        except queue_mod.Empty:
                            raise ShardFailed(f"sensitivity shard {i} ({self._span(i)}): its worker process "
                                              f"exited with code {p.exitcode} before finishing") from None


def default_workers(device: str | torch.device | None) -> int:
    """Every usable core on a CPU; one process on an accelerator (several only help with several GPUs)."""
    from pruning_core.training import resolve_device

    return usable_cores() if resolve_device(device).type == "cpu" else 1


def analyze_parallel(model: nn.Module, loader: DataLoader, *, workers: int | None = None,
                     start_method: str | None = None,
                     on_point: Callable[[SensitivityPoint], None] | None = None, progress: bool = False,
                     **options: Any) -> SensitivityResult:
    """``sensitivity.analyze`` on ``workers`` processes (default :func:`default_workers`), the same result.

    ``workers=1``, a single parameter, and ``latency=True`` (timings need the machine to themselves) run
    in this process through ``analyze``. ``on_point`` and the ``progress`` bar see points as they arrive;
    the result holds them in model order."""
    if workers is None:
        workers = default_workers(options.get("device"))
    if workers < 1:
        raise ValueError("workers must be at least 1")
    if workers == 1 or options.get("latency"):
        return analyze(model, loader, on_point=on_point, progress=progress, **options)
    sweep = ParallelSweep(model, loader, workers=workers, start_method=start_method, **options)
    run = sweep.run
    if len(sweep.shards) <= 1:
        return analyze(model, loader, on_point=on_point, progress=progress, **options)
    with point_progress(run.total_points, on_point, progress, f"sensitivity x{len(sweep.shards)}") as arrived:
        points = list(sweep.points(arrived))
    return sweep.merged(points)
