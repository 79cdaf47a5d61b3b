"""The upload-time checkpoint check: :mod:`pruning_core.checkpoint_scan` with the service's limits.

The scan is torch-free (the API process never imports torch) and is the very one the worker runs
again before ``torch.load(weights_only=True)``, so upload and load refuse the same files alike.
"""

from __future__ import annotations

from typing import BinaryIO

from api.settings import Settings
from pruning_core.checkpoint_scan import CheckpointError, ScanLimits, scan_archive

#: Anything the scan refuses (unsafe code, zip bombs, damaged or foreign files).
UnsafeCheckpoint = CheckpointError

__all__ = ["UnsafeCheckpoint", "check_checkpoint", "limits_for"]


def limits_for(settings: Settings) -> ScanLimits:
    """Declared-size limits from the settings (``PRUNESCOPE_MAX_CHECKPOINT_MB``, ``..._MAX_TENSOR_MB``)."""
    return ScanLimits(max_total_bytes=int(settings.max_checkpoint_mb * 2**20),
                      max_tensor_bytes=int(settings.max_tensor_mb * 2**20))


def check_checkpoint(fh: BinaryIO, settings: Settings) -> None:
    """Raise UnsafeCheckpoint with the reason unless ``fh`` is a plain torch.save zip within limits."""
    scan_archive(fh, limits_for(settings))
