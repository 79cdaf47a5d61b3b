"""One embedded server per data directory: an ``flock`` on ``<data dir>/server.lock``.

The embedded executor resumes every unfinished shard at start-up, on the assumption that no other
process can be running them. A second server (or ``Client.local()``) over the same folder would run
the live server's shards a second time, so whoever runs the embedded executor holds this lock for
as long as it does. The kernel releases an ``flock`` when its holder dies, even by SIGKILL, so a
crashed server never leaves a stale lock behind; the file only records who holds it (pid, host,
since when) for the error message. The file is never removed: unlinking a lock file races with
the next process opening it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

LOCK_NAME = "server.lock"


class DataDirLocked(RuntimeError):
    """Another live process runs an embedded server over this data directory."""

    def __init__(self, data_dir: Path, holder: dict[str, Any]) -> None:
        self.data_dir, self.holder = data_dir, holder
        who = (f"pid {holder.get('pid')} on host {holder.get('host')} (since {holder.get('since')})"
               if holder.get("pid") else "another process (still starting: its pid is not written yet)")
        super().__init__(
            f"data dir {data_dir} is in use by {who}: one embedded server per data dir. Stop that server "
            f"(or connect to it), or use another data dir (PRUNESCOPE_DATA_DIR, or Client.local(data_dir)); "
            f"its lock {data_dir / LOCK_NAME} frees itself when the holder exits"
        )


class DataDirLock:
    """An exclusive, non-blocking lock on a data dir, held until :meth:`release` or process exit."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DataDirLock:
        """Take the lock or raise :class:`DataDirLocked` naming its holder; never waits."""
        if self._fd is not None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # O_CLOEXEC: helper processes started with exec never inherit (and so never keep) the lock.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise DataDirLocked(self.data_dir, holder) from None
        except BaseException:
            os.close(fd)
            raise
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock up (the file stays, emptied, so the next holder never races an unlink)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> DataDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, Any]:
    """What the holder wrote about itself; empty while it is between taking the lock and writing."""
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
