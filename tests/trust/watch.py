"""A live server's footprint while hostile work runs (issue 13): its memory, with all its children, and
how many helper processes it holds, sampled from a thread. Shared by the bounded-work and upload tests."""

from __future__ import annotations

import threading

import psutil

#: One gibibyte: the most a burst of hostile requests may add to the server's idle memory.
GIB = 2**30


class ServerWatch:
    """Samples the server's memory (RSS of it and all its children) and its helper processes from a thread."""

    def __init__(self, pid: int, period_s: float = 0.05) -> None:
        self.process = psutil.Process(pid)
        self.period_s = period_s
        self.idle = self.rss()
        self.peak = self.idle
        self.max_helpers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def rss(self) -> int:
        total = 0
        for proc in [self.process, *self.process.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def helpers(self) -> int:
        count = 0
        for proc in self.process.children(recursive=True):
            try:
                count += "worker.helpers" in " ".join(proc.cmdline())
            except psutil.NoSuchProcess:
                pass
        return count

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            self.max_helpers = max(self.max_helpers, self.helpers())
            self._stop.wait(self.period_s)

    def __enter__(self) -> ServerWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def report(self, what: str) -> str:
        return (f"{what}: idle {self.idle / 2**20:.0f} MB, peak {self.peak / 2**20:.0f} MB "
                f"(+{(self.peak - self.idle) / 2**20:.0f} MB), at most {self.max_helpers} helper(s)")
