"""The upload-time checkpoint check: :mod:`pruning_core.checkpoint_scan` with the service's limits.

The scan is torch-free (the API process never imports torch) and is the very one the worker runs
again before ``torch.load(weights_only=True)`` (or, for a safetensors file, before
``safetensors.torch.load_file``), so upload and load refuse the same files alike. It
runs in the bounded helper pool (:mod:`api.compute`), never on a request thread: a scan's cost grows
with its input (CRCs of every member, the pickle walk), so it gets the pool's time and memory budget
and a burst of hostile uploads queues there instead of freezing the server.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from api.compute import run_helper
from api.shared.settings import Settings
from pruning_core.checkpoint_scan import FORMAT_ZIP, CheckpointError, ScanLimits, ScanResult, UnsafeCheckpointError

#: Anything the scan refuses (unsafe code, zip bombs, damaged or foreign files).
UnsafeCheckpoint = CheckpointError

__all__ = ["UnsafeCheckpoint", "UploadScan", "check_checkpoint", "limits_for"]


@dataclass(frozen=True)
class UploadScan(ScanResult):
    """A passing upload scan: the shapes, the format the content is in (``FORMAT_ZIP`` or
    ``FORMAT_SAFETENSORS``) and a safetensors file's string metadata (empty for a zip)."""

    format: str = FORMAT_ZIP
    metadata: dict[str, str] = field(default_factory=dict)
    #: a torch.export program's: ``{"fine_tuning": None or why it cannot be fine-tuned}`` where a helper with
    #: torch loaded it; empty where none could (the worker checks it when a prune or train job loads it)
    program: dict[str, str | None] = field(default_factory=dict)


def limits_for(settings: Settings) -> ScanLimits:
    """Declared-size limits from the settings (``PRUNESCOPE_MAX_CHECKPOINT_MB``, ``..._MAX_TENSOR_MB``)."""
    return ScanLimits(max_total_bytes=int(settings.max_checkpoint_mb * 2**20),
                      max_tensor_bytes=int(settings.max_tensor_mb * 2**20))


def check_checkpoint(path: Path, settings: Settings) -> UploadScan:
    """Raise UnsafeCheckpoint with the reason unless the file at ``path`` is a plain torch.save zip holding a
    state_dict, a well-formed safetensors file, or a torch.export program of ATen operators, within limits;
    HTTPException 503 if the pool is full or the scan broke its budget. Returns the tensors' declared shapes
    and the file's format."""
    out = run_helper("scan_checkpoint", {"path": str(path), "limits": dataclasses.asdict(limits_for(settings))})
    if "error" in out:
        raise (UnsafeCheckpointError if out.get("unsafe") else CheckpointError)(out["error"])
    return UploadScan({n: None if d is None else tuple(d) for n, d in out.get("shapes", [])},
                      bool(out.get("thinned")), out.get("format") or FORMAT_ZIP, dict(out.get("metadata") or {}),
                      {"fine_tuning": out["fine_tuning"]} if "fine_tuning" in out else {})
