"""Static safety scan of a ``torch.save`` zip checkpoint. Never imports torch, never unpickles.

Shared by the API (at upload; the API process must not import torch) and by
:mod:`pruning_core.checkpoint` (at load, before ``torch.load``), so both refuse the same files with
the same messages. Why each rule exists:

- unpickling runs whatever callables the pickle names, so the pickle's opcodes are walked with
  :mod:`pickletools` and only the globals a plain tensor/container checkpoint needs are allowed;
- torch (and :mod:`zipfile`) allocate what a zip member *declares*, so declared sizes, compression
  ratios and declared tensor storage sizes are checked against limits before anything is read;
- odd archive layouts (path traversal names, several roots, nested archives, data in front of the
  archive, TorchScript code) are not what ``torch.save`` writes and are refused outright.
"""

from __future__ import annotations

import io
import os
import pickletools
import posixpath
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "ALLOWED_GLOBALS",
    "CheckpointError",
    "ScanLimits",
    "UnsafeCheckpointError",
    "ZIP_MAGIC",
    "check_pickle",
    "scan_archive",
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
    max_pickle_bytes: int = 64 * 2**20  # data.pkl is read into memory to be scanned
    max_members: int = 100_000
    # torch.save stores members uncompressed; a member inflating more than this is a zip bomb.
    max_ratio: float = 200.0


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


def check_pickle(data: bytes) -> list[tuple[str, str, int]]:
    """Refuse a pickle naming any global outside the allowlist; return its tensor storages.

    Each storage is ``(storage class, record key, declared element count)``, taken from torch's
    persistent ids ``('storage', <class>, key, location, numel)``. Values are tracked only as far as
    those tuples need (strings, ints, globals, the memo); nothing is ever executed.
    """
    frames: list[list[Any]] = [[]]
    memo: dict[Any, Any] = {}
    storages: list[tuple[str, str, int]] = []
    try:
        for op, arg, _pos in pickletools.genops(data):
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
                 *, verify: bool = True) -> None:
    """Raise CheckpointError (UnsafeCheckpointError for code) unless ``source`` is a plain
    ``torch.save`` zip within ``limits``. ``verify`` also reads every member to check its CRC
    (bounded: declared sizes were checked first), so truncated or tampered data is caught here."""
    fh, owned = _open(source)
    try:
        _scan(fh, limits, verify)
    finally:
        if owned:
            fh.close()


def _scan(fh: BinaryIO, limits: ScanLimits, verify: bool) -> None:
    start = fh.tell()
    head = fh.read(4)
    fh.seek(start)
    if head != ZIP_MAGIC:
        kind = "a raw pickle" if head[:1] == b"\x80" else "empty" if not head else "not a zip archive"
        raise CheckpointError(f"not a PyTorch zip checkpoint ({kind}); legacy or foreign files are refused: "
                              "re-save with torch.save in its default format")
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
            storages = check_pickle(archive.read(pkl))
            sizes = {i.filename: i.file_size for i in infos}
            for kind, key, numel in storages:
                _check_storage(kind, key, numel, sizes.get(f"{prefix}/data/{key}"), limits)
            if verify:
                for info in infos:
                    with archive.open(info) as member:
                        while member.read(1 << 20):
                            pass
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - CRC mismatch, truncated member, bad local header
            raise _damaged(exc) from None


def _check_layout(infos: list[zipfile.ZipInfo], limits: ScanLimits) -> None:
    """Names, declared sizes and structure, from the central directory alone (nothing is read)."""
    if not infos:
        raise CheckpointError("the zip archive is empty: not a torch.save checkpoint")
    if len(infos) > limits.max_members:
        raise CheckpointError(f"the archive has {len(infos)} members (limit {limits.max_members})")
    if min(i.header_offset for i in infos) != 0:
        raise CheckpointError("the file has data in front of its zip archive (a polyglot file): refused")
    seen: set[str] = set()
    total = 0
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
        if total > limits.max_total_bytes:
            raise CheckpointError(f"the archive declares {total:,} uncompressed bytes, over the "
                                  f"{limits.max_total_bytes:,}-byte limit (a zip bomb?): refused before reading")
        if info.file_size > (1 << 20) and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise CheckpointError(f"archive member {name!r} inflates {info.file_size:,} bytes from "
                                  f"{info.compress_size:,} (a zip bomb): refused before reading")
    roots = {i.filename.split("/", 1)[0] for i in infos}
    if len(roots) != 1 or any("/" not in i.filename for i in infos):
        raise CheckpointError(f"the archive has {len(roots)} top-level entries ({', '.join(sorted(roots)[:3])}); "
                              "torch.save writes everything under one folder: refused")
    prefix = roots.pop()
    if f"{prefix}/constants.pkl" in seen or any(n.startswith(f"{prefix}/code/") for n in seen):
        raise CheckpointError("a TorchScript archive (it carries code), not a weights checkpoint: "
                              "save model.state_dict() with torch.save")
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


def scan_bytes(data: bytes, limits: ScanLimits = ScanLimits()) -> None:
    """:func:`scan_archive` for an in-memory file (tests, small uploads)."""
    scan_archive(io.BytesIO(data), limits)
