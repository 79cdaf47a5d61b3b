"""Checkpoints: weights, pruning masks and JSON-like metadata in one ``torch.save`` file.

Loading always uses ``torch.load(weights_only=True)``: a checkpoint is data, and a pickle that
would import or call anything (the classic "checkpoint runs code" attack) is refused before any of
it runs. A zip checkpoint is first scanned statically (:mod:`pruning_core.checkpoint_scan`, the same
scan the API runs at upload), so zip bombs and huge declared tensors are refused before torch
allocates anything. A bare ``state_dict`` file (what most training scripts save) is accepted too,
and so is a safetensors file (told apart by content), checked by
:mod:`pruning_core.safetensors_scan` before ``safetensors.torch.load_file`` reads it; its string
``__metadata__`` may name the architecture under ``arch``.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pruning_core.checkpoint_scan import (
    FORMAT_SAFETENSORS,
    ZIP_MAGIC,
    CheckpointError,
    ScanLimits,
    UnsafeCheckpointError,
    detect_format,
    scan_archive,
)
from pruning_core.models import canonical_name, create_model
from pruning_core.names import EXPORTED_ARCHITECTURE

if TYPE_CHECKING:
    from pruning_core.masks import MaskSet

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "UnsafeCheckpointError",
    "FORMAT",
    "load_checkpoint",
    "load_model",
    "load_model_and_masks",
    "save_checkpoint",
    "ScanLimits",
]

FORMAT = "prunescope-checkpoint"
VERSION = 1

PathLike = str | os.PathLike[str]


@dataclass
class Checkpoint:
    """What a checkpoint holds. ``arch`` is None for a bare state_dict file."""

    arch: str | None
    state_dict: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    num_classes: int | None = None
    input_shape: tuple[int, ...] | None = None


def _check_json_like(value: Any, where: str) -> None:
    """Metadata must survive ``weights_only`` loading and JSON export: plain data only."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"checkpoint metadata {where}: key {key!r} is not a string")
            _check_json_like(item, f"{where}.{key}")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json_like(item, f"{where}[{i}]")
        return
    raise TypeError(f"checkpoint metadata {where}: {type(value).__name__} is not JSON-like data")


def _num_classes(model: nn.Module) -> int | None:
    """The output width of the model's last Linear layer (how rebuilding knows a non-default head)."""
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    return None if last is None else int(last.out_features)


def save_checkpoint(
    path: PathLike,
    model: nn.Module,
    *,
    arch: str,
    masks: MaskSet | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write weights (on CPU), masks and metadata; written to a temp file then renamed, so a crash
    never leaves a half-written checkpoint under the final name."""
    meta = dict(metadata or {})
    _check_json_like(meta, "metadata")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "num_classes": _num_classes(model),
        "input_shape": list(getattr(model, "input_shape", ()) or ()) or None,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "masks": {k: v.detach().cpu().bool() for k, v in (masks.state_dict() if masks is not None else {}).items()},
        "metadata": meta,
    }
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, target)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _strip_module_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DataParallel (and Distiller) checkpoints prefix every key with ``module.``."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def _read(path: Path, limits: ScanLimits) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found")
    with path.open("rb") as fh:
        is_zip = fh.read(4) == ZIP_MAGIC
    if is_zip:
        try:
            scan_archive(path, limits)
        except CheckpointError as exc:
            raise type(exc)(f"{path}: {exc}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        offender = _offender(str(exc)) or _scan_plain_pickle(path)
        if offender:
            raise UnsafeCheckpointError(
                f"{path}: refused: the file contains code (its pickle would import or call {offender}), "
                "so it is not a plain weights checkpoint; none of it was run. Save tensors and "
                "state_dicts only, e.g. torch.save(model.state_dict(), path)"
            ) from None
        raise CheckpointError(
            f"{path}: truncated or not a PyTorch checkpoint that loads safely (weights_only): {_first_line(exc)}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
        if "TorchScript" in str(exc):
            raise CheckpointError(f"{path}: a TorchScript archive, not a weights checkpoint") from None
        raise CheckpointError(f"{path}: truncated or not a PyTorch checkpoint ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _offender(message: str) -> str | None:
    """The global named by torch's weights-only unpickler (``builtins.open``), if it named one."""
    match = re.search(r"GLOBAL ([\w.]+)", message)
    return match.group(1) if match else None


_CODE_OPCODES = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD", "EXT1", "EXT2"}


def _scan_plain_pickle(path: Path) -> str | None:
    """For a raw (non-zip) pickle torch could not parse: statically list opcodes that import or
    call something. Never executes the pickle; returns None for a harmless (or unparsable) file."""
    if zipfile.is_zipfile(path):
        return None
    found: list[str] = []
    strings: list[str] = []  # STACK_GLOBAL takes module and name from the two strings pushed before it
    try:
        with path.open("rb") as f:
            for op, arg, _pos in pickletools.genops(f):
                if isinstance(arg, str) and "UNICODE" in op.name:
                    strings.append(arg)
                if op.name in ("GLOBAL", "INST") and arg:
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif op.name in _CODE_OPCODES:
                    found.append(op.name)
    except Exception:  # noqa: BLE001 - a damaged pickle is reported as unreadable by the caller
        pass
    if not found:
        return None
    names = [f for f in found if f not in _CODE_OPCODES]
    return names[0] if names else f"objects ({found[0]} opcode)"


def _load_safetensors(path: Path, limits: ScanLimits) -> Checkpoint:
    """A safetensors file, scanned first (the upload's check), then read by the ``safetensors`` package.
    It holds tensors and string metadata only: no masks; ``arch`` may be named in its metadata."""
    from safetensors.torch import load_file

    from pruning_core.safetensors_scan import scan_safetensors

    try:
        scanned = scan_safetensors(path, limits)
        state = load_file(path, device="cpu")
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the package raises its own errors for files the scan let through
        raise CheckpointError(f"{path}: not a safetensors file that loads ({_first_line(exc)})") from None
    arch = scanned.metadata.get("arch")
    return Checkpoint(arch=arch or None, state_dict=_strip_module_prefix(state),
                      metadata={"safetensors_metadata": dict(scanned.metadata)})


def load_checkpoint(path: PathLike, limits: ScanLimits | None = None) -> Checkpoint:
    """Read a prunescope checkpoint, a bare/wrapped state_dict (``{'state_dict': ...}``) or a safetensors file.

    ``limits`` bounds what a zip or safetensors file may declare (sizes, tensor storages) before it is read."""
    p = Path(path)
    if p.is_file() and detect_format(p) == FORMAT_SAFETENSORS:
        return _load_safetensors(p, limits or ScanLimits())
    obj = _read(p, limits or ScanLimits())
    if _is_state_dict(obj):
        return Checkpoint(arch=None, state_dict=_strip_module_prefix(obj))
    if isinstance(obj, Mapping) and _is_state_dict(obj.get("state_dict")):
        arch = obj.get("arch")
        masks = obj.get("masks") or {}
        if not isinstance(masks, Mapping) or not all(isinstance(v, torch.Tensor) for v in masks.values()):
            raise CheckpointError(f"{p}: 'masks' must map parameter names to bool tensors")
        metadata = obj.get("metadata") or {}
        num_classes = obj.get("num_classes")
        shape = obj.get("input_shape")
        return Checkpoint(
            arch=arch if isinstance(arch, str) else None,
            state_dict=_strip_module_prefix(obj["state_dict"]),
            masks={str(k): v.bool() for k, v in masks.items()},
            metadata=dict(metadata) if isinstance(metadata, Mapping) else {"value": metadata},
            num_classes=num_classes if isinstance(num_classes, int) else None,
            input_shape=tuple(int(d) for d in shape) if isinstance(shape, (list, tuple)) and shape else None,
        )
    raise CheckpointError(
        f"{p}: holds a {type(obj).__name__}, not a state_dict or a prunescope checkpoint "
        "(expected a dict of tensors, or a dict with a 'state_dict' entry)"
    )


def load_model_and_masks(
    path: PathLike | None,
    arch: str | None,
    num_classes: int | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> tuple[nn.Module, MaskSet | None, Checkpoint | None]:
    """Build ``arch``, load the checkpoint's weights strictly and re-apply its masks.

    ``arch`` may be None to use the checkpoint's own; a checkpoint of another architecture is an
    error rather than a confusing missing-keys report. Without a path the model has fresh weights.
    A thinned checkpoint (``thinning_history`` in its metadata) is rebuilt to its thinned shapes first.
    """
    if path is None:
        if arch is None:
            raise ValueError("load_model needs an architecture or a checkpoint")
        return create_model(arch, num_classes, input_shape=input_shape), None, None
    ck = load_checkpoint(path)
    if arch is None and ck.arch is None:
        raise ValueError(f"{path}: a bare state_dict names no architecture; pass the model name")
    name = canonical_name(arch if arch is not None else ck.arch)  # type: ignore[arg-type]
    if ck.arch is not None and arch is not None:
        try:
            saved = canonical_name(ck.arch)
        except ValueError:
            saved = ck.arch
        if saved != name:
            raise ValueError(f"{path}: checkpoint is for architecture {ck.arch!r}, not {arch!r}")
    shape = ck.input_shape or input_shape
    model = create_model(name, num_classes if num_classes is not None else ck.num_classes, input_shape=shape)
    history = ck.metadata.get("thinning_history")
    if history:
        from pruning_core.thinning import rebuild_thinned

        example = torch.zeros(1, *model.input_shape)
        model = rebuild_thinned(model, history, example)
    misfit = _misfit(model.state_dict(), ck.state_dict)
    if misfit:
        raise CheckpointError(f"{path}: weights do not fit {name!r}: {misfit}")
    try:
        model.load_state_dict(ck.state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit {name!r}: {str(exc).splitlines()[0]}") from None
    masks = None
    if ck.masks:
        from pruning_core.masks import MaskSet

        masks = MaskSet(model)
        try:
            masks.load_state_dict(ck.masks)  # also zeroes the pruned weights
        except (KeyError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: masks do not fit {name!r}: {exc}") from None
    return model, masks, ck


def _misfit(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor], show: int = 3) -> str:
    """Missing keys, unexpected keys and wrong shapes, named (torch's own message is one vague line)."""
    def names(keys: list[str]) -> str:
        return ", ".join(keys[:show]) + (f" and {len(keys) - show} more" if len(keys) > show else "")

    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k} is {tuple(given[k].shape)}, the model's {tuple(v.shape)}"
              for k, v in expected.items() if k in given and given[k].shape != v.shape]
    parts = [f"missing {names(missing)}" if missing else "", f"unexpected {names(unexpected)}" if unexpected else "",
             f"wrong shape: {names(shapes)}" if shapes else ""]
    return "; ".join(p for p in parts if p)


def load_model(
    path_or_none: PathLike | None,
    arch: str | None,
    num_classes: int | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> nn.Module:
    """The model ``arch`` with the checkpoint's weights and masks applied (fresh weights if no path)."""
    return load_model_and_masks(path_or_none, arch, num_classes, input_shape)[0]


def load_for_dataset(path_or_none: PathLike | None, arch: str, bundle: Any) -> nn.Module:
    """What a job or the CLI runs on a dataset: ``arch`` with the checkpoint's weights, sized for the
    dataset's input where the architecture depends on it (lenet-300-100 on 8x8 digits; a language model's
    vocabulary is the dataset's); a registered torch.export program (``arch`` ``torch-export``) is loaded
    from its file after the static scan, running no code from it."""
    if arch == EXPORTED_ARCHITECTURE:
        from pruning_core.exported import load_program

        if path_or_none is None:
            raise ValueError(f"architecture {arch!r} is a registered program's: name the registered model or its file")
        return load_program(path_or_none)
    vocab = bundle.num_classes if getattr(bundle, "task", None) == "language-model" else None
    return load_model(path_or_none, arch, num_classes=vocab, input_shape=bundle.input_shape)
