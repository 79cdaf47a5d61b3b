"""Static safety scan of a ``torch.save`` zip checkpoint. Never imports torch, never runs the pickle's code.

Shared by the API (at upload; the API process must not import torch) and by
:mod:`pruning_core.checkpoint` (at load, before ``torch.load``), so both refuse the same files with
the same messages. Why each rule exists:

- unpickling runs whatever callables the pickle names, so the pickle's opcodes are walked with
  :mod:`pickletools` and only the globals a plain tensor/container checkpoint needs are allowed;
- torch (and :mod:`zipfile`) allocate what a zip member *declares*, so declared sizes, compression
  ratios and declared tensor storage sizes are checked against limits before anything is read;
- odd archive layouts (path traversal names, several roots, nested archives, data in front of the
  archive, TorchScript code) are not what ``torch.save`` writes and are refused outright;
- the pickle's length and opcode count are bounded (walking it costs time, building it memory), and
  its top object must be what the loader accepts (a state_dict, or a dict holding one under
  ``state_dict``): once the allowlist held, it is rebuilt with inert stand-ins for every torch object
  (no tensor data is read), so a file holding a bare int is refused at upload, not at first use.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import posixpath
import re
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .names import EXPORTED_ARCHITECTURE

__all__ = [
    "ALLOWED_GLOBALS",
    "CheckpointError",
    "FORMAT_PROGRAM",
    "ProgramScan",
    "ScanLimits",
    "ScanResult",
    "UnsafeCheckpointError",
    "ZIP_MAGIC",
    "check_pickle",
    "check_top_object",
    "detect_format",
    "drop_module_prefix",
    "is_program",
    "scan_archive",
    "scan_checkpoint",
    "scan_program",
]

ZIP_MAGIC = b"PK\x03\x04"


class CheckpointError(ValueError):
    """The file is not a checkpoint we can read (truncated, not a torch file, wrong content, too big)."""


class UnsafeCheckpointError(CheckpointError):
    """The file's pickle would import or call code; it was refused without running any of it."""


#: Bytes per element of each legacy typed storage class named in a checkpoint's pickle.
STORAGE_ITEMSIZE: dict[str, int] = {
    "FloatStorage": 4, "DoubleStorage": 8, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
    "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
    "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16, "UntypedStorage": 1,
}
_DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
           "complex64", "complex128")
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {("collections", "OrderedDict"), ("_codecs", "encode"),
     ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
     ("torch._utils", "_rebuild_parameter_with_state"), ("torch", "Size"), ("torch", "device"),
     ("torch._tensor", "_rebuild_from_type_v2"), ("torch", "Tensor"), ("torch.nn.parameter", "Parameter")}
    | {("torch", name) for name in STORAGE_ITEMSIZE}
    | {("torch", dt) for dt in _DTYPES}
    | {(mod, kind) for mod in ("builtins", "__builtin__") for kind in ("set", "frozenset")}
)
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
               "SHORT_BINSTRING"}
_INT_OPS = {"BININT", "BININT1", "BININT2", "INT", "LONG", "LONG1", "LONG4"}
_MEMO_PUT = {"BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"}
_MEMO_GET = {"BINGET", "LONG_BINGET", "GET"}
# Opcodes that consume everything down to the last MARK (and push one value, or none).
_MARK_PUSH = {"LIST", "DICT", "FROZENSET", "OBJ", "INST"}
_MARK_NO_PUSH = {"SETITEMS", "APPENDS", "ADDITEMS", "POP_MARK"}
# Members that are archives or pickles themselves: torch.save never nests them.
_NESTED_SUFFIXES = (".zip", ".pt", ".pth", ".pt2", ".ckpt", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".pkl",
                    ".pickle", ".npy", ".npz")


@dataclass(frozen=True)
class ScanLimits:
    """Upper bounds checked against what the archive *declares*, before any member is read."""

    max_total_bytes: int = 8 * 2**30  # sum of the members' uncompressed sizes
    max_tensor_bytes: int = 4 * 2**30  # one tensor storage
    # data.pkl is read into memory and walked op by op (~0.7 us each): a state_dict needs ~40 ops and
    # ~120 bytes per tensor (resnet50's: 39 KB, 10,898 ops for 320 tensors), so these allow ~7,500
    # tensors and keep the walk of the worst file within the limits near 0.2 s.
    max_pickle_bytes: int = 4 * 2**20
    max_pickle_ops: int = 300_000
    max_members: int = 100_000
    # torch.save stores members uncompressed; a member (or the archive) inflating more than this is a
    # zip bomb, checked for every member whatever its size (beyond a few KiB of slack).
    max_ratio: float = 200.0
    # a torch.export program's graph JSON (models/model.json): ~2 KB per node, so ~15,000 nodes
    max_program_bytes: int = 32 * 2**20


def _code_refusal(offender: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"refused: the file contains code (its pickle would import or call {offender}), so it is not a "
        "plain weights checkpoint; none of it was run. Save tensors and state_dicts only, e.g. "
        "torch.save(model.state_dict(), path)"
    )


def _allow(module: str, attr: str) -> str:
    if (module, attr) not in ALLOWED_GLOBALS:
        raise _code_refusal(f"{module}.{attr}")
    return f"{module}.{attr}"


def check_pickle(data: bytes, max_ops: int = ScanLimits.max_pickle_ops) -> list[tuple[str, str, int]]:
    """Refuse a pickle naming any global outside the allowlist, or longer than ``max_ops`` opcodes;
    return its tensor storages.

    Each storage is ``(storage class, record key, declared element count)``, taken from torch's
    persistent ids ``('storage', <class>, key, location, numel)``. Values are tracked only as far as
    those tuples need (strings, ints, globals, the memo); nothing is ever executed.
    """
    frames: list[list[Any]] = [[]]
    memo: dict[Any, Any] = {}
    storages: list[tuple[str, str, int]] = []
    try:
        for count, (op, arg, _pos) in enumerate(pickletools.genops(data), 1):
            if count > max_ops:
                raise CheckpointError(f"data.pkl has more than {max_ops:,} pickle opcodes (the limit; a "
                                      "state_dict needs ~40 per tensor): refused before building it")
            name, top = op.name, frames[-1]
            if name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
                top.append(("global", _allow(module, attr)))
            elif name in _MARK_PUSH or name in _MARK_NO_PUSH:
                if name == "INST":
                    module, _, attr = str(arg).partition(" ")
                    _allow(module, attr)
                if len(frames) > 1:
                    frames.pop()
                if name in _MARK_PUSH:
                    frames[-1].append(None)
            elif name == "STACK_GLOBAL":
                module, attr = (top[-2:] if len(top) >= 2 else [None, None])
                if not (isinstance(module, str) and isinstance(attr, str)):
                    raise UnsafeCheckpointError("refused: the pickle builds a global name dynamically, so it "
                                                "could name any code; none of it was run")
                del top[-2:]
                top.append(("global", _allow(module, attr)))
            elif name in ("EXT1", "EXT2", "EXT4"):
                raise UnsafeCheckpointError(f"refused: the pickle uses the {name} extension registry, which "
                                            "can name any code; none of it was run")
            elif name in _STRING_OPS:
                top.append(arg if isinstance(arg, str) else bytes(arg).decode("latin-1"))
            elif name in _INT_OPS:
                top.append(arg)
            elif name in _MEMO_PUT:
                memo[len(memo) if name == "MEMOIZE" else arg] = top[-1] if top else None
            elif name in _MEMO_GET:
                top.append(memo.get(arg))
            elif name == "MARK":
                frames.append([])
            elif name == "TUPLE" and len(frames) > 1:
                items = frames.pop()
                frames[-1].append(tuple(items))
            elif name == "BINPERSID" and top:
                storages.append(_storage(top.pop()))
                top.append(None)
            else:
                top.append(None)  # any other value: not needed to find storages
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoding failure means "not a valid pickle"
        raise CheckpointError(f"the checkpoint's pickle is truncated or malformed ({exc})") from None
    return storages


class _Inert:
    """Stands for any torch object while the pickle is rebuilt: it holds nothing and accepts any state."""

    def __setstate__(self, state: Any) -> None:
        pass


class _TensorStandIn(_Inert):
    """What a tensor (or Parameter) builder returns in the rebuilt pickle: the tensor's declared size
    (None where the builder does not say it), so the API learns an upload's shapes without torch."""

    def __init__(self, shape: tuple[int, ...] | None = None) -> None:
        self.shape = shape


def _declared_shape(key: tuple[str, str], args: tuple[Any, ...]) -> tuple[int, ...] | None:
    """The size a tensor builder's arguments declare: ``_rebuild_tensor_v2(storage, offset, size, ...)``
    names it; the Parameter builders wrap a tensor stand-in; ``_rebuild_from_type_v2(func, type, args,
    state)`` calls ``func`` (one of our stand-in builders, so nothing real) on ``args``."""
    if key == ("torch._utils", "_rebuild_tensor_v2") and len(args) > 2 and isinstance(args[2], tuple) \
            and all(isinstance(d, int) for d in args[2]):
        return tuple(args[2])
    if key[1].startswith("_rebuild_parameter") and args and isinstance(args[0], _TensorStandIn):
        return args[0].shape
    if key == ("torch._tensor", "_rebuild_from_type_v2") and len(args) > 2 and callable(args[0]) \
            and isinstance(args[2], tuple):
        built = args[0](*args[2])
        return built.shape if isinstance(built, _TensorStandIn) else None
    return None


_TENSOR_BUILDERS = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
                    ("torch._utils", "_rebuild_parameter_with_state"), ("torch._tensor", "_rebuild_from_type_v2"),
                    ("torch", "Tensor"), ("torch.nn.parameter", "Parameter")}
_REAL_TYPES: dict[tuple[str, str], Callable[..., Any]] = {
    ("collections", "OrderedDict"): OrderedDict,
    **{(mod, "set"): set for mod in ("builtins", "__builtin__")},
    **{(mod, "frozenset"): frozenset for mod in ("builtins", "__builtin__")},
}


class _StandInUnpickler(pickle.Unpickler):
    """Rebuilds an allowlisted pickle with inert stand-ins: every global resolves to a harmless callable
    of ours (containers to the real container types), storages to a placeholder; nothing is imported."""

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key not in ALLOWED_GLOBALS:
            raise _code_refusal(f"{module}.{name}")
        if key in _REAL_TYPES:
            return _REAL_TYPES[key]
        if key in _TENSOR_BUILDERS:
            return lambda *args, **kwargs: _TensorStandIn(_declared_shape(key, args))
        return lambda *args, **kwargs: _Inert()

    def persistent_load(self, pid: Any) -> Any:
        return _Inert()


def _is_state_dict(obj: Any) -> bool:
    """The loader's rule (``pruning_core.checkpoint``): a non-empty mapping of names to tensors."""
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, _TensorStandIn) for k, v in obj.items())


@dataclass(frozen=True)
class ScanResult:
    """What a passing scan learnt without torch: each tensor's declared shape (state_dict names, a
    DataParallel ``module.`` prefix dropped as the loader drops it; None where undeclared), and whether
    the checkpoint says it was thinned (its shapes then differ from the architecture's on purpose)."""

    shapes: dict[str, tuple[int, ...] | None]
    thinned: bool = False


def drop_module_prefix(shapes: Mapping[str, Any]) -> dict[str, Any]:
    """The loader's rule: DataParallel (and Distiller) prefix every key with ``module.``, which is dropped."""
    strip = bool(shapes) and all(n.startswith("module.") for n in shapes)
    return {(n[len("module."):] if strip else n): v for n, v in shapes.items()}


def _shapes(state: Mapping[str, _TensorStandIn]) -> dict[str, tuple[int, ...] | None]:
    return drop_module_prefix({n: t.shape for n, t in state.items()})


def check_top_object(data: bytes) -> ScanResult:
    """Refuse a pickle (already allowlisted by :func:`check_pickle`) whose top object the loader would
    refuse: a state_dict, or a mapping with a ``state_dict`` entry that is one, are accepted. Returns the
    state_dict's declared shapes."""
    try:
        obj = _StandInUnpickler(io.BytesIO(data)).load()
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - a pickle that does not rebuild is malformed
        raise CheckpointError(f"the checkpoint's pickle does not rebuild ({type(exc).__name__}: "
                              f"{str(exc)[:200]})") from None
    if _is_state_dict(obj):
        return ScanResult(_shapes(obj))
    if isinstance(obj, Mapping) and _is_state_dict(obj.get("state_dict")):
        metadata = obj.get("metadata")
        thinned = isinstance(metadata, Mapping) and bool(metadata.get("thinning_history"))
        return ScanResult(_shapes(obj["state_dict"]), thinned)
    what = ("an empty mapping" if isinstance(obj, Mapping) and not obj else
            "a mapping that is not of names to tensors (nor has a 'state_dict' entry that is)"
            if isinstance(obj, Mapping) else
            "a tensor" if isinstance(obj, _TensorStandIn) else f"a value of type {type(obj).__name__}")
    raise CheckpointError(f"holds {what}, not a state_dict: expected a mapping of parameter names to tensors, "
                          "or a dict with a 'state_dict' entry that is one; save it with "
                          "torch.save(model.state_dict(), path)")


def _storage(pid: Any) -> tuple[str, str, int]:
    """Validate a persistent id; anything but a well-formed tensor storage reference is refused."""
    if (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], tuple)
            and isinstance(pid[2], str) and isinstance(pid[4], int)):
        kind = str(pid[1][1]).rpartition(".")[2]
        if kind in STORAGE_ITEMSIZE:
            return kind, pid[2], pid[4]
    raise CheckpointError(f"the pickle has a persistent reference that is not a tensor storage: {pid!r}")


def _bad_name(name: str) -> str | None:
    """Why a member name is one no torch.save archive has (path traversal and friends), or None."""
    if "\x00" in name or "\\" in name:
        return "contains a NUL or backslash"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "is an absolute path"
    if ".." in name.split("/") or posixpath.normpath(name) != name.rstrip("/"):
        return "is not a normalized relative path (.. or empty components)"
    return None


def _damaged(exc: Exception) -> CheckpointError:
    return CheckpointError(f"truncated or damaged: not a PyTorch checkpoint that reads back "
                           f"({type(exc).__name__}: {exc})")


def _open(source: BinaryIO | str | os.PathLike[str]) -> tuple[BinaryIO, bool]:
    if isinstance(source, (str, os.PathLike)):
        return Path(source).open("rb"), True
    return source, False


def scan_archive(source: BinaryIO | str | os.PathLike[str], limits: ScanLimits = ScanLimits(),
                 *, verify: bool = True) -> ScanResult:
    """Raise CheckpointError (UnsafeCheckpointError for code) unless ``source`` is a plain
    ``torch.save`` zip within ``limits``. ``verify`` also reads every member to check its CRC
    (bounded: declared sizes were checked first), so truncated or tampered data is caught here.
    Returns the tensors' declared shapes (:class:`ScanResult`)."""
    fh, owned = _open(source)
    try:
        return _scan(fh, limits, verify)
    finally:
        if owned:
            fh.close()


def _scan(fh: BinaryIO, limits: ScanLimits, verify: bool) -> ScanResult:
    start = fh.tell()
    head = fh.read(4)
    fh.seek(start)
    if head != ZIP_MAGIC:
        kind = "a raw pickle" if head[:1] == b"\x80" else "empty" if not head else "not a zip archive"
        raise CheckpointError(f"not a PyTorch zip checkpoint ({kind}) nor a safetensors file; legacy or foreign "
                              "files are refused: re-save with torch.save in its default format, or with "
                              "safetensors.torch.save_file")
    try:
        archive = zipfile.ZipFile(fh)
    except Exception as exc:  # noqa: BLE001 - BadZipFile, OSError, struct errors on damaged files
        raise _damaged(exc) from None
    with archive:
        infos = archive.infolist()
        _check_layout(infos, limits)
        prefix = infos[0].filename.split("/", 1)[0]
        pkl = archive.getinfo(f"{prefix}/data.pkl")
        try:
            data = archive.read(pkl)
            storages = check_pickle(data, limits.max_pickle_ops)
            sizes = {i.filename: i.file_size for i in infos}
            for kind, key, numel in storages:
                _check_storage(kind, key, numel, sizes.get(f"{prefix}/data/{key}"), limits)
            result = check_top_object(data)
            if verify:
                for info in infos:
                    with archive.open(info) as member:
                        while member.read(1 << 20):
                            pass
            return result
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - CRC mismatch, truncated member, bad local header
            raise _damaged(exc) from None


_RATIO_SLACK = 4096  # a few KiB any member may inflate by, whatever its ratio


def _check_members(infos: list[zipfile.ZipInfo], limits: ScanLimits) -> None:
    """What every accepted zip (a checkpoint, a ``.pt2`` program, the archives nested in one) must be,
    from the central directory alone: member count, names, declared sizes and ratios (nothing is read)."""
    if not infos:
        raise CheckpointError("the zip archive is empty: not a torch.save checkpoint")
    if len(infos) > limits.max_members:
        raise CheckpointError(f"the archive has {len(infos)} members (limit {limits.max_members})")
    if min(i.header_offset for i in infos) != 0:
        raise CheckpointError("the file has data in front of its zip archive (a polyglot file): refused")
    seen: set[str] = set()
    total = packed = 0
    for info in infos:
        name = info.filename
        if (why := _bad_name(name)) is not None:
            raise CheckpointError(f"archive member {name!r} {why}: refused (path traversal)")
        if name in seen:
            raise CheckpointError(f"archive member {name!r} appears twice: refused")
        seen.add(name)
        if info.flag_bits & 0x1:
            raise CheckpointError(f"archive member {name!r} is encrypted: refused")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CheckpointError(f"archive member {name!r} uses compression method {info.compress_type}: refused")
        total += info.file_size
        packed += info.compress_size
        if total > limits.max_total_bytes:
            raise CheckpointError(f"the archive declares {total:,} uncompressed bytes, over the "
                                  f"{limits.max_total_bytes:,}-byte limit (a zip bomb?): refused before reading")
        if info.file_size > limits.max_ratio * info.compress_size + _RATIO_SLACK:
            raise CheckpointError(f"archive member {name!r} inflates {info.file_size:,} bytes from "
                                  f"{info.compress_size:,} (over the {limits.max_ratio:g}x ratio limit; a zip bomb): "
                                  "refused before reading")
    if total > limits.max_ratio * packed + _RATIO_SLACK:
        raise CheckpointError(f"the archive's {len(infos):,} members inflate {total:,} bytes from {packed:,} (over the "
                              f"{limits.max_ratio:g}x ratio limit; a zip bomb): refused before reading")


def _check_layout(infos: list[zipfile.ZipInfo], limits: ScanLimits) -> None:
    """A ``torch.save`` checkpoint's layout: :func:`_check_members`, then one root holding data.pkl."""
    _check_members(infos, limits)
    seen = {i.filename for i in infos}
    roots = {i.filename.split("/", 1)[0] for i in infos}
    if len(roots) != 1 or any("/" not in i.filename for i in infos):
        raise CheckpointError(f"the archive has {len(roots)} top-level entries ({', '.join(sorted(roots)[:3])}); "
                              "torch.save writes everything under one folder: refused")
    prefix = roots.pop()
    if f"{prefix}/constants.pkl" in seen or any(n.startswith(f"{prefix}/code/") for n in seen):
        raise CheckpointError("a TorchScript archive (it carries code), not a weights checkpoint: "
                              "save model.state_dict() with torch.save")
    if f"{prefix}/archive_format" in seen or any(n.startswith(f"{prefix}/models/") for n in seen):
        raise CheckpointError("a torch.export program (.pt2), not a weights checkpoint (none of it was read or "
                              "run): register it without an architecture (POST /api/v1/models), or load it with "
                              "pruning_core.exported.load_program")
    if f"{prefix}/data.pkl" not in seen:
        raise CheckpointError("the archive has no data.pkl: not a torch.save checkpoint")
    nested = [n for n in seen if n != f"{prefix}/data.pkl" and n.lower().endswith(_NESTED_SUFFIXES)]
    if nested:
        raise CheckpointError(f"archive member {nested[0]!r} is a nested archive or pickle: refused")
    pkl_size = next(i.file_size for i in infos if i.filename == f"{prefix}/data.pkl")
    if pkl_size > limits.max_pickle_bytes:
        raise CheckpointError(f"data.pkl declares {pkl_size:,} bytes (limit {limits.max_pickle_bytes:,}): refused")


def _check_storage(kind: str, key: str, numel: int, stored: int | None, limits: ScanLimits) -> None:
    nbytes = numel * STORAGE_ITEMSIZE[kind]
    if numel < 0 or nbytes > limits.max_tensor_bytes:
        raise CheckpointError(f"tensor storage {key!r} declares {numel:,} elements ({nbytes:,} bytes), over the "
                              f"{limits.max_tensor_bytes:,}-byte tensor limit: refused before allocating it")
    if stored is None:
        raise CheckpointError(f"tensor storage {key!r} has no data record in the archive (truncated?)")
    if stored < nbytes:
        raise CheckpointError(f"tensor storage {key!r} declares {nbytes:,} bytes but its record holds "
                              f"{stored:,} (truncated or tampered)")


def scan_bytes(data: bytes, limits: ScanLimits = ScanLimits()) -> ScanResult:
    """:func:`scan_archive` for an in-memory file (tests, small uploads)."""
    return scan_archive(io.BytesIO(data), limits)


#: What :func:`detect_format` tells apart, by content: a ``torch.save`` zip, or a safetensors file.
FORMAT_ZIP = "torch-zip"
FORMAT_SAFETENSORS = "safetensors"


def detect_format(source: BinaryIO | str | os.PathLike[str]) -> str | None:
    """:data:`FORMAT_ZIP` (the zip magic), :data:`FORMAT_SAFETENSORS` (a plausible safetensors header) or
    None, from the file's first bytes, never its name (an upload's name is the client's word)."""
    from pruning_core.safetensors_scan import looks_like_safetensors

    fh, owned = _open(source)
    try:
        start = fh.tell()
        head = fh.read(9)
        fh.seek(start)
    finally:
        if owned:
            fh.close()
    if head[:4] == ZIP_MAGIC:
        return FORMAT_ZIP
    return FORMAT_SAFETENSORS if looks_like_safetensors(head) else None


def scan_checkpoint(source: BinaryIO | str | os.PathLike[str], limits: ScanLimits = ScanLimits()) -> ScanResult:
    """The upload and load check of any accepted format: :func:`pruning_core.safetensors_scan.scan_safetensors`
    for a safetensors file, else :func:`scan_archive` (which refuses anything that is not a torch.save zip)."""
    if detect_format(source) == FORMAT_SAFETENSORS:
        from pruning_core.safetensors_scan import scan_safetensors

        return scan_safetensors(source, limits)
    return scan_archive(source, limits)


# -- torch.export programs (.pt2) -------------------------------------------------------------------------------
#
# ``torch.export.load`` is not safe on its own (torch 2.14, torch/export/pt2_archive/_package.py and
# torch/_export/serde/serialize.py): it unpickles tensor subclasses and the sample inputs with
# ``weights_only=False`` as a fallback, unpickles custom objects (``pickle.loads``, TorchBind), loads compiled
# AOTInductor libraries, ``exec`` s the program's ``guards_code``, ``sympy.sympify`` s (``eval``) every symbolic
# shape expression, and resolves node targets by walking attributes from ``torch``/``operator`` (so a target can
# name any reachable function, run when the graph runs). The scan below admits only what a plain exported
# network needs: raw tensor records, allowlisted pickles, ATen operators, and shape expressions made of
# allowlisted sympy names; so what torch then does with the file runs no code from it.

FORMAT_PROGRAM = EXPORTED_ARCHITECTURE  # a registered program's architecture is its format

#: Bytes per element of each dtype code of torch.export's schema (``torch/_export/serde/schema.py``, ScalarType).
_PROGRAM_ITEMSIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 2, 7: 4, 8: 8, 9: 4, 10: 8, 11: 16, 12: 1, 13: 2, 28: 2,
                     29: 1, 30: 1, 31: 1, 32: 1, 33: 1, 34: 4, 35: 8}
#: Python operators an exported graph may call on sizes and tuples (``_operator.getitem`` for multi-output ops).
_PYTHON_OPS = frozenset({"getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "neg", "pow", "eq", "ne",
                         "lt", "le", "gt", "ge", "and_", "or_", "not_"})
_ATEN_TARGET = re.compile(r"torch\.ops\.aten\.[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*")
_FQN = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")
_SYMBOL = re.compile(r"[a-z]+[0-9]+")
_EXPR_TOKEN = re.compile(r"\s+|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<str>'[^']*')|[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?"
                         r"|\*\*|==|!=|<=|>=|[-+*/%(),=<>]")
#: The names a symbolic shape expression may use (sympy's and torch.utils._sympy's), besides symbols like ``s0``.
_EXPR_NAMES = frozenset({
    "Symbol", "Integer", "Float", "Rational", "Add", "Mul", "Pow", "Mod", "Abs", "Max", "Min", "Eq", "Ne", "Lt", "Le",
    "Gt", "Ge", "And", "Or", "Not", "True", "False", "oo", "floor", "ceiling", "FloorDiv", "CeilDiv", "CleanDiv",
    "ModularIndexing", "PythonMod", "IntTrueDiv", "FloatTrueDiv", "TruncToInt", "TruncToFloat", "RoundToInt",
    "RoundDecimal", "ToFloat", "FloorToInt", "CeilToInt", "Where", "Identity", "positive", "negative", "nonnegative",
    "nonpositive", "integer", "real", "finite", "zero"})
_FIXED_MEMBERS = ("archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id",
                  "models/model.json", "data/weights/model_weights_config.json",
                  "data/constants/model_constants_config.json", "data/sample_inputs/model.pt")
_REQUIRED_MEMBERS = ("archive_format", "models/model.json", "data/weights/model_weights_config.json",
                     "data/constants/model_constants_config.json", "data/sample_inputs/model.pt")
_LEGACY_MEMBERS = ("serialized_exported_program.json", "serialized_state_dict.pt", "serialized_constants.pt",
                   "serialized_example_inputs.pt", "version", "byteorder")
_NOT_RUN = "; none of it was run"


@dataclass(frozen=True)
class ProgramScan:
    """A passing ``.pt2`` scan: the weights' declared shapes (parameters and buffers, by the exported module's
    names), the operators the graph calls, and the archive layout (``pt2`` since torch 2.7, ``legacy`` before)."""

    shapes: dict[str, tuple[int, ...] | None]
    ops: tuple[str, ...]
    layout: str


def _code(what: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(f"refused: the torch.export program {what}, so loading or running it could run "
                                 f"code from the file{_NOT_RUN}. Export a network of standard PyTorch layers "
                                 "(plain ATen operators and tensors only)")


def _check_target(target: Any) -> str:
    """A node's operator: an ATen op overload, or a Python operator on sizes; anything else could be any code."""
    if isinstance(target, str) and "__" not in target:
        if _ATEN_TARGET.fullmatch(target):
            return target
        if target.startswith("_operator.") and target[len("_operator."):] in _PYTHON_OPS:
            return target
    if isinstance(target, str) and target.startswith("torch.ops.") and target.count(".") >= 2:
        namespace = target.split(".")[2]
        raise _code(f"calls {target[:120]!r}, an operator of the {namespace!r} namespace, not a plain ATen op "
                    "(it needs that library's code)")
    if isinstance(target, str) and target.startswith("#"):
        raise _code(f"calls {target[:120]!r}, an operator of a serialization extension, not a plain ATen op")
    raise _code(f"calls {str(target)[:120]!r}, which is not a plain ATen operator")


def _check_expr(expr: Any) -> None:
    """Symbolic shapes are parsed by ``sympy.sympify`` (``eval``): only allowlisted names and symbol literals."""
    if not isinstance(expr, str) or len(expr) > 10_000:
        raise _code("holds a shape expression that is not a short string")
    pos = 0
    while pos < len(expr):
        match = _EXPR_TOKEN.match(expr, pos)
        name, literal = (match.group("name"), match.group("str")) if match else (None, None)
        if (match is None or match.end() == pos or (name is not None and name not in _EXPR_NAMES
                                                    and not _SYMBOL.fullmatch(name))
                or (literal is not None and not _SYMBOL.fullmatch(literal[1:-1]))):
            raise _code(f"holds the shape expression {expr[:120]!r}, which is not a plain size formula "
                        "(it is evaluated by sympy)")
        pos = match.end()


def _check_fqn(name: Any, what: str) -> str:
    if not isinstance(name, str) or not _FQN.fullmatch(name) or any(p.startswith("__") for p in name.split(".")):
        raise CheckpointError(f"the program names a {what} {str(name)[:120]!r}, which is not a module path: refused")
    return name


def _json(data: bytes, what: str, limits: ScanLimits) -> Any:
    if len(data) > limits.max_program_bytes:
        raise CheckpointError(f"{what} is {len(data):,} bytes (limit {limits.max_program_bytes:,}): refused")
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise CheckpointError(f"{what} nests too deeply: refused") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise CheckpointError(f"{what} is not JSON ({str(exc)[:120]}): refused") from None


def _control_chars(text: str) -> bool:
    """Generated graph code carries strings from the file in comments: a CR would end the comment."""
    return any(ord(c) < 32 and c not in "\n\t" for c in text)


def _check_program(doc: Any) -> tuple[str, ...]:
    """Walk the program JSON (iteratively: its depth is the file's choice) and refuse what could run code."""
    if not isinstance(doc, dict) or not isinstance(doc.get("graph_module"), dict):
        raise CheckpointError("the program JSON has no graph_module: not a torch.export program")
    ops: set[str] = set()
    stack: list[Any] = [doc]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if _control_chars(value):
                raise _code("holds a string with control characters (they could break out of generated code)")
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, dict):
            if "target" in value and "inputs" in value and "outputs" in value:
                ops.add(_check_target(value["target"]))
            for key, item in value.items():
                stack.append(key)
                if key == "expr_str":
                    _check_expr(item)
                elif key == "as_operator":
                    ops.add(_check_target(item))
                elif key in ("as_graph", "as_graphs") and item:
                    raise _code("holds a subgraph (a higher-order operator such as cond or a grad-mode wrapper)")
                elif key in ("as_custom_obj", "custom_obj", "custom_obj_values", "as_opaque_obj") and item:
                    raise _code("holds a custom (TorchBind or Python) object, which is unpickled")
                elif key == "guards_code" and item:
                    raise _code("carries guards code, which torch executes as Python")
                elif key in ("parameter_name", "buffer_name", "tensor_constant_name"):
                    _check_fqn(item, key.split("_")[0])
                elif key == "opset_version" and isinstance(item, dict) and set(item) - {"aten"}:
                    raise _code(f"declares the operator namespace {sorted(set(item) - {'aten'})[0]!r}, not ATen")
                stack.append(item)
    return tuple(sorted(ops))


def _as_int(value: Any, what: str) -> int:
    if not (isinstance(value, dict) and set(value) == {"as_int"} and type(value["as_int"]) is int
            and value["as_int"] >= 0):
        raise CheckpointError(f"{what} is not a fixed non-negative size ({str(value)[:80]}): refused")
    return value["as_int"]


def _check_payloads(config: Any, kind: str, records: Mapping[str, int], limits: ScanLimits
                    ) -> dict[str, tuple[int, ...]]:
    """A weights/constants config: every entry a raw tensor record (never a pickle nor an object) whose
    declared extent fits its record and the tensor limit (torch allocates what it declares)."""
    if not (isinstance(config, dict) and isinstance(config.get("config"), dict)):
        raise CheckpointError(f"the program's {kind} config is not a mapping of tensors: refused")
    shapes = {}
    for fqn, meta in config["config"].items():
        _check_fqn(fqn, "tensor")
        path = meta.get("path_name") if isinstance(meta, dict) else None
        if not isinstance(path, str):
            raise CheckpointError(f"the program's {kind} entry {fqn!r} has no record name: refused")
        if path.startswith(("custom_obj", "opaque_obj")):
            raise _code(f"holds {fqn!r} as a custom object ({path!r}), which is unpickled")
        if meta.get("use_pickle"):
            raise _code(f"holds {fqn!r} as a pickled tensor, which torch loads with weights_only=False")
        if not re.fullmatch(r"(weight|tensor)_[0-9]+", path) or path not in records:
            raise CheckpointError(f"the program's {kind} entry {fqn!r} names the record {path[:80]!r}, which the "
                                  "archive does not hold: refused")
        tmeta = meta.get("tensor_meta")
        if not isinstance(tmeta, dict) or tmeta.get("dtype") not in _PROGRAM_ITEMSIZE:
            raise CheckpointError(f"the program's {kind} entry {fqn!r} has no known dtype: refused")
        device = tmeta.get("device")
        if not (isinstance(device, dict) and device.get("type") in ("cpu", "cuda")):
            raise CheckpointError(f"the program's {kind} entry {fqn!r} is on device {str(device)[:60]}: refused")
        sizes = [_as_int(d, f"{fqn!r}'s size") for d in tmeta.get("sizes") or []]
        strides = [_as_int(d, f"{fqn!r}'s stride") for d in tmeta.get("strides") or []]
        offset = _as_int(tmeta.get("storage_offset", {"as_int": 0}), f"{fqn!r}'s storage offset")
        itemsize = _PROGRAM_ITEMSIZE[tmeta["dtype"]]
        numel = 1
        for d in sizes:
            numel *= d
        extent = 0 if numel == 0 else offset + 1 + sum((d - 1) * s for d, s in zip(sizes, strides, strict=False))
        if len(strides) != len(sizes) or max(numel, extent) * itemsize > limits.max_tensor_bytes:
            raise CheckpointError(f"tensor {fqn!r} declares shape {sizes} ({numel * itemsize:,} bytes), over the "
                                  f"{limits.max_tensor_bytes:,}-byte tensor limit or malformed: refused before "
                                  "allocating it")
        if records[path] and extent * itemsize > records[path]:
            raise CheckpointError(f"tensor {fqn!r} declares {extent * itemsize:,} bytes but its record holds "
                                  f"{records[path]:,} (truncated or tampered): refused")
        shapes[fqn] = tuple(sizes)
    return shapes


def _check_nested_pickle(data: bytes, name: str, limits: ScanLimits) -> bytes:
    """A ``torch.save`` zip inside the program (sample inputs; legacy weights): allowlisted pickle, sized
    storages. Returns its data.pkl."""
    if not data.startswith(ZIP_MAGIC):
        raise _code(f"holds {name!r} as a raw pickle, not a torch.save archive")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as inner:
            infos = inner.infolist()
            _check_members(infos, limits)
            roots = {i.filename.split("/", 1)[0] for i in infos}
            names = {i.filename for i in infos}
            prefix = next(iter(roots))
            if len(roots) != 1 or f"{prefix}/data.pkl" not in names:
                raise CheckpointError(f"{name!r} is not a torch.save archive: refused")
            if any(n.startswith(f"{prefix}/code/") or n.endswith(_NESTED_SUFFIXES) and n != f"{prefix}/data.pkl"
                   for n in names):
                raise _code(f"holds code or a nested archive inside {name!r}")
            pkl = inner.getinfo(f"{prefix}/data.pkl")
            if pkl.file_size > limits.max_pickle_bytes:
                raise CheckpointError(f"{name!r}'s data.pkl declares {pkl.file_size:,} bytes: refused")
            raw = inner.read(pkl)
            sizes = {i.filename: i.file_size for i in infos}
            try:
                storages = check_pickle(raw, limits.max_pickle_ops)
            except UnsafeCheckpointError as exc:
                raise UnsafeCheckpointError(f"the torch.export program's {name} would run code: {exc}") from None
            for kind, key, numel in storages:
                _check_storage(kind, key, numel, sizes.get(f"{prefix}/data/{key}"), limits)
            for info in infos:
                inner.read(info)
            return raw
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - BadZipFile, CRC errors
        raise CheckpointError(f"{name!r} inside the program is damaged ({type(exc).__name__}: {exc})") from None


def is_program(source: BinaryIO | str | os.PathLike[str]) -> bool:
    """Whether the file is a zip laid out as ``torch.export.save`` writes it (by content, not by name)."""
    fh, owned = _open(source)
    start = fh.tell()
    try:
        if fh.read(4) != ZIP_MAGIC:
            return False
        fh.seek(start)
        with zipfile.ZipFile(fh) as archive:
            names = archive.namelist()
        return any(n.count("/") == 1 and n.endswith("/archive_format") for n in names) or (
            "serialized_exported_program.json" in names)
    except Exception:  # noqa: BLE001 - not a readable zip
        return False
    finally:
        fh.seek(start)
        if owned:
            fh.close()


def scan_program(source: BinaryIO | str | os.PathLike[str], limits: ScanLimits = ScanLimits()) -> ProgramScan:
    """Raise CheckpointError (UnsafeCheckpointError where the file would run code) unless ``source`` is a
    ``torch.export.save`` program of ATen operators and raw tensors within ``limits``. Torch-free."""
    fh, owned = _open(source)
    start = fh.tell()
    try:
        head = fh.read(4)
        if head != ZIP_MAGIC:
            kind = "a raw pickle" if head[:1] == b"\x80" else "empty" if not head else "not a zip archive"
            raise CheckpointError(f"not a torch.export program ({kind}): a .pt2 file is the zip archive "
                                  "torch.export.save writes; nothing was read or run")
        fh.seek(start)
        try:
            archive = zipfile.ZipFile(fh)
        except Exception as exc:  # noqa: BLE001
            raise _damaged(exc) from None
        with archive:
            try:
                return _scan_program(archive, limits)
            except CheckpointError:
                raise
            except Exception as exc:  # noqa: BLE001 - CRC mismatch, truncated member
                raise _damaged(exc) from None
    finally:
        fh.seek(start)
        if owned:
            fh.close()


def _scan_program(archive: zipfile.ZipFile, limits: ScanLimits) -> ProgramScan:
    infos = archive.infolist()
    _check_members(infos, limits)
    names = {i.filename for i in infos}
    if "serialized_exported_program.json" in names:
        return _scan_legacy(archive, names, limits)
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1 or any("/" not in n for n in names):
        raise CheckpointError("not a torch.export program: its members are not under one folder")
    root = roots.pop()
    rel = {n[len(root) + 1:] for n in names}
    for member in _REQUIRED_MEMBERS:
        if member not in rel:
            raise CheckpointError(f"not a torch.export program: it has no {member} (torch.export.save writes one)")
    if archive.read(f"{root}/archive_format").strip() != b"pt2":
        raise CheckpointError("not a torch.export program: its archive_format is not 'pt2'")
    read = lambda member: archive.read(f"{root}/{member}")  # noqa: E731
    records = {"weights": {}, "constants": {}}
    for info in infos:
        member = info.filename[len(root) + 1:]
        if member in _FIXED_MEMBERS:
            continue
        folder, _, record = member.rpartition("/")
        if folder in ("data/weights", "data/constants") and re.fullmatch(r"(weight|tensor)_[0-9]+", record):
            records[folder.split("/")[1]][record] = info.file_size
        elif member.startswith("data/aotinductor/"):
            raise _code("holds AOTInductor compiled code (a shared library torch would load)")
        elif member.startswith(("data/constants/custom_obj", "data/constants/opaque_obj")):
            raise _code(f"holds a custom object ({member!r}), which is unpickled")
        else:
            raise CheckpointError(f"the program holds {member[:120]!r}, which torch.export.save does not write for "
                                  "a plain program (extra files, several models, other back-ends): refused")
    ops = _check_program(_json(read("models/model.json"), "the program JSON", limits))
    shapes = _check_payloads(_json(read("data/weights/model_weights_config.json"), "the weights config", limits),
                             "weights", records["weights"], limits)
    _check_payloads(_json(read("data/constants/model_constants_config.json"), "the constants config", limits),
                    "constants", records["constants"], limits)
    _check_nested_pickle(read("data/sample_inputs/model.pt"), "sample inputs", limits)
    for info in infos:  # CRCs: truncated or tampered data is caught here, not by torch
        with archive.open(info) as member:
            while member.read(1 << 20):
                pass
    return ProgramScan(shapes, ops, "pt2")


def _scan_legacy(archive: zipfile.ZipFile, names: set[str], limits: ScanLimits) -> ProgramScan:
    """torch < 2.7 wrote a flat zip: the program JSON beside torch.save archives (loaded with full pickle there)."""
    for name in names - set(_LEGACY_MEMBERS):
        raise CheckpointError(f"the program holds {name[:120]!r}, which torch.export.save does not write for a "
                              "plain program: refused")
    ops = _check_program(_json(archive.read("serialized_exported_program.json"), "the program JSON", limits))
    shapes: dict[str, tuple[int, ...] | None] = {}
    for name in ("serialized_state_dict.pt", "serialized_constants.pt", "serialized_example_inputs.pt"):
        if name in names and archive.getinfo(name).file_size:
            raw = _check_nested_pickle(archive.read(name), name, limits)
            if name == "serialized_state_dict.pt":
                shapes = check_top_object(raw).shapes
    return ProgramScan(shapes, ops, "legacy")
