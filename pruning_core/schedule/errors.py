"""The one error type of schedules: every mistake names its key path and line."""

from __future__ import annotations


class ScheduleError(ValueError):
    """A schedule mistake, located: ``s.yaml line 7: pruners.p1.final_sparsity: must be ...``."""

    def __init__(self, message: str, *, key: str = "", line: int | None = None, source: str = "<schedule>"):
        self.key, self.line, self.source, self.reason = key, line, source, message
        where = source + (f" line {line}" if line is not None else "")
        super().__init__(f"{where}: {key + ': ' if key else ''}{message}")
