"""Static safety check of an uploaded PyTorch checkpoint, without importing torch.

A torch checkpoint is a zip archive whose ``data.pkl`` is a pickle. Unpickling runs whatever
callables the pickle names, so we walk its opcodes with :mod:`pickletools` (which never executes
anything) and accept only the globals ``torch.load(weights_only=True)`` would accept for plain
tensors and containers. Anything else (``os.system``, ``builtins.eval``, custom classes) is refused
with the offending name. The worker loads it later with ``weights_only=True`` anyway.
"""

from __future__ import annotations

import pickletools
import zipfile
from typing import BinaryIO

_STORAGES = {
    f"{kind}Storage" for kind in (
        "Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool",
        "ComplexFloat", "ComplexDouble", "Untyped",
    )
}
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"), ("_codecs", "encode"),
     ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
     ("torch._utils", "_rebuild_parameter_with_state"), ("torch", "Size"), ("torch", "device"),
     ("torch._tensor", "_rebuild_from_type_v2"), ("torch", "Tensor"), ("torch.nn.parameter", "Parameter")}
    | {("torch", name) for name in _STORAGES}
    | {("torch", dt) for dt in ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16",
                                "int8", "uint8", "bool", "complex64", "complex128")}
)
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
               "SHORT_BINSTRING"}
_REFUSED_OPS = {"EXT1", "EXT2", "EXT4"}


class UnsafeCheckpoint(ValueError):
    """The upload is not a checkpoint we can load safely; the message says why."""


def check_pickle(data: bytes) -> None:
    """Raise UnsafeCheckpoint if the pickle names any callable outside the allowlist."""
    strings: list[str] = []
    try:
        for op, arg, _pos in pickletools.genops(data):
            name = op.name
            if name in _STRING_OPS:
                strings.append(arg if isinstance(arg, str) else arg.decode("latin-1"))
                continue
            if name in ("BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"):
                continue  # memoizing keeps the stack as it is
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                _allow(module, attr)
            elif name == "STACK_GLOBAL":
                if len(strings) < 2:
                    raise UnsafeCheckpoint("the pickle builds a global name dynamically; refused")
                _allow(strings[-2], strings[-1])
            elif name in _REFUSED_OPS:
                raise UnsafeCheckpoint(f"the pickle uses the {name} extension registry; refused")
            strings = []
    except UnsafeCheckpoint:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoding failure means "not a valid pickle"
        raise UnsafeCheckpoint(f"the checkpoint's pickle is malformed: {exc}") from None


def _allow(module: str, attr: str) -> None:
    if (module, attr) not in ALLOWED_GLOBALS:
        raise UnsafeCheckpoint(
            f"the pickle references {module}.{attr}, which is not a tensor or plain container: "
            "checkpoints that carry code are refused (save tensors/state_dicts only)"
        )


def check_checkpoint(fh: BinaryIO) -> None:
    """Check a torch.save zip archive (TorchScript archives too: their pickles are checked alike)."""
    try:
        archive = zipfile.ZipFile(fh)
    except zipfile.BadZipFile:
        raise UnsafeCheckpoint(
            "not a PyTorch zip checkpoint (legacy or foreign pickle files are refused; "
            "re-save with torch.save in its default format)"
        ) from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith(".pkl")]
        if not any(n.endswith("data.pkl") for n in pickles):
            raise UnsafeCheckpoint("the archive has no data.pkl: not a torch.save checkpoint")
        for name in pickles:
            if archive.getinfo(name).file_size > 512 * 2**20:
                raise UnsafeCheckpoint(f"{name} is larger than 512 MiB")
            check_pickle(archive.read(name))
