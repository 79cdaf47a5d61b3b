"""Static check of a safetensors file. Never imports torch; reads the header and the file's size only.

The format: 8 bytes of little-endian header length ``N``, ``N`` bytes of UTF-8 JSON
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``, then the
tensors' bytes (offsets are relative to the end of the header). The format cannot carry code, but a
loader trusts what the header declares, so everything it declares is checked before anything is
allocated, with the same messages at upload (the API, torch-free) and at load (before
``safetensors.torch.load_file``):

- ``N`` is bounded by :data:`MAX_HEADER_BYTES` before it is read (the header is parsed in memory);
- the JSON is strict: no NaN/Infinity, no duplicate keys, no nesting beyond what the format has;
- every dtype is known, every shape a list of non-negative ints, every byte size ``numel x itemsize``
  within ``ScanLimits.max_tensor_bytes`` and their sum within ``max_total_bytes``;
- the data is exactly the tensors: offsets in order, contiguous, non-overlapping, starting at 0 and
  ending at the end of the file (no holes, no trailing data for a polyglot to hide in).
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pruning_core.checkpoint_scan import CheckpointError, ScanLimits, ScanResult, drop_module_prefix

__all__ = ["DTYPE_ITEMSIZE", "MAX_HEADER_BYTES", "SafetensorsScan", "looks_like_safetensors", "scan_safetensors"]

#: Bytes per element of each safetensors dtype the loader (``safetensors.torch``) maps to a torch dtype.
#: Sub-byte dtypes (F4, F6_*) and others are refused: no model prunescope builds stores them.
DTYPE_ITEMSIZE: dict[str, int] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E4M3FNUZ": 1, "F8_E5M2": 1, "F8_E5M2FNUZ": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}
#: The header is read into memory, parsed as JSON and checked entry by entry. A tensor's entry takes
#: ~70-120 bytes (resnet50's 320 tensors: ~30 KB; an LLM shard's few hundred: < 100 KB), so 2 MiB allows
#: ~20,000 tensors (the zip scan's pickle bound allows ~7,500), while the worst header within it is
#: refused or passed well within the 1 s promise on a busy 2-core box (~0.3 s, ~30 MB; the check costs
#: ~10 us per tensor). safetensors' own 100 MB bound would take ~15 s and over 1 GB to parse.
MAX_HEADER_BYTES = 2 * 2**20
#: Dimensions a tensor may declare (torch's own limit is 64; no layer has more than 5).
MAX_DIMS = 64
_METADATA = "__metadata__"
_FIELDS = frozenset({"dtype", "shape", "data_offsets"})


@dataclass(frozen=True)
class SafetensorsScan(ScanResult):
    """A passing scan: the tensors' shapes (as :class:`ScanResult`) and the header's string metadata."""

    metadata: dict[str, str] = field(default_factory=dict)


def looks_like_safetensors(head: bytes) -> bool:
    """Whether the first bytes of a file are a plausible safetensors start: a header length, then ``{``
    (the format requires the JSON header to begin with it). Decided by content, never by file name."""
    return len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] >= 2


def _refuse(why: str) -> CheckpointError:
    return CheckpointError(f"not a valid safetensors file: {why}; refused before loading it. Save it again with "
                           "safetensors.torch.save_file(model.state_dict(), path)")


def _no_constant(name: str) -> Any:
    raise _refuse(f"the header holds {name}, which is not a number JSON allows")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Each JSON object, refused if a key repeats (json keeps the last, another reader may keep the first)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise _refuse(f"the header names {key[:80]!r} twice")
    return out


def _parse_header(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _refuse(f"the header is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        header = json.loads(text, object_pairs_hook=_pairs, parse_constant=_no_constant)
    except CheckpointError:
        raise
    except RecursionError:
        raise _refuse("the header's JSON nests too deeply (the format nests 3 levels)") from None
    except ValueError as exc:  # JSONDecodeError, and ints longer than Python's digit limit
        raise _refuse(f"the header is not JSON ({str(exc)[:120]})") from None
    if not isinstance(header, dict):
        raise _refuse(f"the header is a JSON {type(header).__name__}, not an object of tensors")
    return header


def _short(value: Any) -> str:
    """A declared value for a message, at most ~80 characters, without first printing all of a huge list."""
    if isinstance(value, list) and len(value) > 8:
        return f"[{', '.join(repr(v)[:12] for v in value[:8])}, ... ({len(value):,} items)]"
    return repr(value)[:80]


class _Shown:
    """A tensor's name for a message, formatted only if a message is made (a header may hold 40,000)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __format__(self, spec: str) -> str:
        return repr(self.name[:80])


def _entry(name: str, entry: Any, limits: ScanLimits) -> tuple[tuple[int, ...], int, int]:
    """``(shape, begin, end)`` of one tensor's header entry, each field checked; its byte size must fit."""
    shown = _Shown(name)
    if type(entry) is not dict or entry.keys() != _FIELDS:
        keys = [k[:40] for k in sorted(entry)[:5]] if isinstance(entry, dict) else type(entry).__name__
        raise _refuse(f"tensor {shown} must have exactly dtype, shape and data_offsets, not {keys}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_ITEMSIZE:
        raise _refuse(f"tensor {shown} has unknown dtype {_short(dtype)[:40]} (known: {', '.join(DTYPE_ITEMSIZE)})")
    if type(shape) is not list or len(shape) > MAX_DIMS or not all(type(d) is int and d >= 0 for d in shape):
        raise _refuse(f"tensor {shown} has shape {_short(shape)}: expected a list of at most {MAX_DIMS} "
                      "non-negative integers")
    if not (type(offsets) is list and len(offsets) == 2 and type(offsets[0]) is int and type(offsets[1]) is int
            and 0 <= offsets[0] <= offsets[1]):
        raise _refuse(f"tensor {shown} has data_offsets {_short(offsets)}: expected [begin, end] with "
                      "0 <= begin <= end")
    nbytes = math.prod(shape) * DTYPE_ITEMSIZE[dtype]
    if nbytes > limits.max_tensor_bytes:
        raise _refuse(f"tensor {shown} declares shape {shape} of {dtype}, {nbytes:,} bytes, over the "
                      f"{limits.max_tensor_bytes:,}-byte tensor limit (PRUNESCOPE_MAX_TENSOR_MB)")
    if offsets[1] - offsets[0] != nbytes:
        raise _refuse(f"tensor {shown} declares shape {shape} of {dtype} ({nbytes:,} bytes) but data_offsets "
                      f"{offsets} span {offsets[1] - offsets[0]:,} bytes")
    return tuple(shape), offsets[0], offsets[1]


def _metadata(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        bad = next((k for k, v in value.items() if not isinstance(v, str)), None) if isinstance(value, dict) else None
        what = f"entry {bad[:80]!r} is not a string" if bad is not None else "it is not an object"
        raise _refuse(f"__metadata__ must map strings to strings ({what})")
    return value


def _check(header: Mapping[str, Any], data_bytes: int, limits: ScanLimits) -> SafetensorsScan:
    metadata = _metadata(header.get(_METADATA, {}))
    tensors = [(n, e) for n, e in header.items() if n != _METADATA]
    if not tensors:
        raise _refuse("it holds no tensors (an empty state_dict)")
    if len(tensors) > limits.max_members:
        raise _refuse(f"it declares {len(tensors):,} tensors, over the limit of {limits.max_members:,}")
    shapes: dict[str, tuple[int, ...]] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in tensors:
        shapes[name], begin, end = _entry(name, entry, limits)
        spans.append((begin, end, name))
    spans.sort()
    position = 0
    for begin, end, name in spans:
        if begin != position:
            what = "overlaps the tensor before it" if begin < position else "leaves a gap before it"
            raise _refuse(f"tensor {name[:80]!r} at data_offsets [{begin}, {end}] {what} (the data must be the "
                          "tensors, contiguous and in order)")
        position = end
    if position > limits.max_total_bytes:
        raise _refuse(f"its tensors declare {position:,} bytes, over the {limits.max_total_bytes:,}-byte limit "
                      "(PRUNESCOPE_MAX_CHECKPOINT_MB)")
    if position != data_bytes:
        where = "past the end of the file" if position > data_bytes else "short of the end of the file"
        raise _refuse(f"the tensors end at data offset {position:,}, {where} ({data_bytes:,} data bytes: "
                      f"{'truncated' if position > data_bytes else 'trailing data after the tensors'})")
    return SafetensorsScan(drop_module_prefix(shapes), metadata=dict(metadata))


def _scan(fh: BinaryIO, limits: ScanLimits) -> SafetensorsScan:
    start = fh.tell()
    size = fh.seek(0, io.SEEK_END) - start
    fh.seek(start)
    prefix = fh.read(8)
    if len(prefix) < 8:
        raise _refuse(f"the file has {len(prefix)} bytes, fewer than the 8 of the header length")
    length = struct.unpack("<Q", prefix)[0]
    if length > MAX_HEADER_BYTES:
        raise _refuse(f"its header length is {length:,} bytes, over the {MAX_HEADER_BYTES:,}-byte header limit")
    if 8 + length > size:
        raise _refuse(f"its header length {length:,} runs past the end of the {size:,}-byte file (truncated)")
    header = _parse_header(fh.read(length))
    return _check(header, size - 8 - length, limits)


def scan_safetensors(source: BinaryIO | str | os.PathLike[str], limits: ScanLimits = ScanLimits()) -> SafetensorsScan:
    """Raise CheckpointError (the reason, naming the tensor or field and the limit) unless ``source`` is a
    well-formed safetensors file within ``limits``; return its shapes and metadata."""
    if isinstance(source, (str, os.PathLike)):
        with Path(source).open("rb") as fh:
            return _scan(fh, limits)
    return _scan(source, limits)
