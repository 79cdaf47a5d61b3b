"""A sensitivity sweep on every core: worker processes that claim the parameters one at a time.

torch's intra-op threads scale poorly on the small convolutions of a sweep (ResNet-20 on CIFAR), while
independent processes with one thread each scale with the cores. The analysis is built once here (options
checked, parameters selected and skipped, the memory layout chosen), then every worker builds it again with
``torch.set_num_threads(1)`` and claims the next parameter in model order whenever it is free (a shared
counter): each worker's claims rise, so its fast-engine prefix chain only advances, and the work balances to
one parameter whatever each costs (an early layer's suffix is the whole model; contiguous shards balanced by
MACs still left ResNet-20's first shard 1.33x the second, as a MAC of a 16-channel convolution at 32x32 costs
more than one at 64x8x8). Its points are those one process measures, merged back in model order. Each worker
evaluates the unpruned model once and advances its chain to its last claim, so a sweep on ``k`` workers runs
at most ``2(k - 1)`` extra unpruned passes. (The service's shards are contiguous pieces balanced by
:func:`sweep_work`, :func:`balanced_shards`: its Celery tasks cannot share a counter.)

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


def _claim(claims: Any) -> int:
    """The next parameter's position for a worker that is free (a counter shared by the workers)."""
    with claims.get_lock():
        claimed = claims.value
        claims.value += 1
    return claimed


def _measure(model: nn.Module, loader: DataLoader, options: dict, params: list[str], claims: Any, index: int,
             out: Any) -> None:
    """One worker (process) with one torch thread: the parameters it claims, one after another in model order
    (its fast-engine chain only advances), each point sent as it comes, each parameter's end said; then the
    result without its points (or the traceback of what failed)."""
    try:
        torch.set_num_threads(1)
        run = SensitivityAnalysis(model, loader, **options, params=params)

        def claimed() -> Iterator[str]:
            while (i := _claim(claims)) < len(params):
                out.put(("claim", index, i))
                yield params[i]
                out.put(("param", index, i))  # resumed: all its points (or its skip) are sent

        for point in run.measure(claimed()):
            out.put(("point", index, point))
        out.put(("done", index, run.result([])))
    except BaseException:  # noqa: BLE001 - whatever it is, the parent reports it with this traceback
        out.put(("error", index, traceback.format_exc()))


class ParallelSweep:
    """One analysis measured by worker processes that claim its parameters one at a time.

    Built like ``SensitivityAnalysis`` (the same keywords; it is built here first, so a bad option fails at
    once and ``skipped``/``engine``/``total_points`` are known, and its memory layout is the workers'); iterating
    starts the workers and yields the points in model order, ``on_arrival`` sees each one as it arrives.
    """

    def __init__(self, model: nn.Module, loader: DataLoader, *, workers: int, start_method: str | None = None,
                 **options: Any) -> None:
        self.model, self.loader, self.options = model, loader, options
        self.run = SensitivityAnalysis(model, loader, **options)
        self.workers = min(workers, len(self.run.params))
        if start_method is None:
            start_method = "fork" if self.run.device.type == "cpu" and os.name == "posix" else "spawn"
        self.start_method = start_method
        self.results: list[SensitivityResult] = []  # each worker's, without its points, once iterated
        self._measuring: dict[int, int] = {}  # per worker, the position of the parameter it last claimed

    @property
    def total_points(self) -> int:
        return self.run.total_points

    def __iter__(self) -> Iterator[SensitivityPoint]:
        return self.points()

    def points(self, on_arrival: Callable[[SensitivityPoint], None] | None = None) -> Iterator[SensitivityPoint]:
        """The points in model order; ``on_arrival(point)`` as each arrives (progress, storage)."""
        import torch.multiprocessing as mp

        ctx = mp.get_context(self.start_method)
        out, claims = ctx.Queue(), ctx.Value("i", 0)
        params = list(self.run.params)
        position = {name: i for i, name in enumerate(params)}
        options = {**{k: v for k, v in self.options.items() if k != "params"},
                   "memory_format": self.run.memory_format}
        # forked, the arguments are inherited as they are; spawned, they are pickled
        procs = [ctx.Process(target=_measure, args=(self.model, self.loader, options, params, claims, i, out),
                             name=f"sensitivity-worker-{i}") for i in range(self.workers)]
        log.info("sensitivity: %d parameters on %d workers (%s), one torch thread each", len(params), len(procs),
                 self.start_method)
        buffered: dict[int, list[SensitivityPoint]] = {}
        finished: set[int] = set()
        self._measuring.clear()
        ended: list[tuple | None] = [None] * len(procs)
        shown = 0  # the parameters whose points are all yielded, in model order
        try:
            for p in procs:
                p.start()
            while any(e is None for e in ended):
                kind, index, body = self._next(out, procs, ended)
                if kind == "error":
                    raise ShardFailed(f"sensitivity worker {index} ({self._span(index)}) failed in its "
                                      f"process:\n{body}")
                if kind == "claim":
                    self._measuring[index] = body
                elif kind == "point":
                    if on_arrival is not None:
                        on_arrival(body)
                    if position[body.parameter] == shown:
                        yield body
                    else:
                        buffered.setdefault(position[body.parameter], []).append(body)
                elif kind == "param":
                    finished.add(body)
                else:
                    ended[index] = (kind, index, body)
                while shown in finished:
                    shown += 1
                    yield from buffered.pop(shown, [])
            self.results = [message[2] for message in ended]
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
                p.join()
            out.close()
            self.run.restore()

    def merged(self, points: list[SensitivityPoint]) -> SensitivityResult:
        """The analysis' result from its workers': the points given (model order), the parameters skipped
        when selecting and then by each worker, the first worker's engine, baseline and info (every worker measures
        the same unpruned model with the same options), whether any worker batched levels, and how many workers
        measured it."""
        first = self.results[0]
        skipped = [*self.run.skipped, *(s for r in self.results for s in r.skipped)]
        skipped.sort(key=lambda s: self.run.params.index(s.parameter) if s.parameter in self.run.params else -1)
        batched = any(r.info.get("level_batch") for r in self.results)
        return SensitivityResult(points, skipped, first.engine, first.engine_note, first.baseline,
                                 {**first.info, "level_batch": batched, "workers": len(self.results)})

    def _span(self, index: int) -> str:
        """What worker ``index`` was measuring, for an error."""
        at = self._measuring.get(index)
        return "before its first parameter" if at is None else f"measuring {self.run.params[at]}"

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
                            raise ShardFailed(f"sensitivity worker {i} ({self._span(i)}): its process exited "
                                              f"with code {p.exitcode} before finishing") from None


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
    if sweep.workers <= 1:
        run.restore()
        return analyze(model, loader, on_point=on_point, progress=progress, **options)
    with point_progress(run.total_points, on_point, progress, f"sensitivity x{sweep.workers}") as arrived:
        points = list(sweep.points(arrived))
    return sweep.merged(points)
