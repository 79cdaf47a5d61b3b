"""How many cores this process may use: one definition for the sweep's workers, the embedded executor, the
Celery worker's torch threads and the image loaders. Torch-free, so the API process can ask too."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, where the OS has one; else every core)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
