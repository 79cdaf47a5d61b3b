"""Sparsity metrics: how many weights, and how many whole structures, are zero.

Structure counts matter because only whole zero structures (filters, channels, rows) can be
removed physically; fine-grained zeros only help sparse kernels. The summary mirrors Distiller's
``weights_sparsity_summary`` so numbers can be compared with published Distiller logs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from pruning_core.groups import ALIASES, DISTILLER_SUMMARY, GROUPS

#: The groups :func:`structure_sparsity` counts (canonical names; ``kernels2d`` is accepted for kernels).
STRUCTURE_KINDS = ("filters", "channels", "rows", "cols", "kernels", "tensor")


def sparsity(t: torch.Tensor) -> float:
    """Fraction of elements that are exactly zero (0.0 for an empty tensor)."""
    n = t.numel()
    return 0.0 if n == 0 else (n - int(torch.count_nonzero(t))) / n


def density(t: torch.Tensor) -> float:
    """Fraction of non-zero elements (Distiller's l0 density); ``1 - sparsity``."""
    n = t.numel()
    return 0.0 if n == 0 else int(torch.count_nonzero(t)) / n


def prunable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The weights that pruning targets by default: ``.weight`` of conv and linear layers (dim >= 2).

    Biases, BatchNorm and embeddings are left out because pruning them saves little and breaks
    more; name them explicitly to include them.
    """
    found: list[tuple[str, nn.Parameter]] = []
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        if not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            continue
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter) and weight.dim() >= 2 and id(weight) not in seen:
            seen.add(id(weight))
            found.append((f"{mod_name}.weight" if mod_name else "weight", weight))
    return found


def _selected(model: nn.Module, names: Iterable[str] | None) -> list[tuple[str, nn.Parameter]]:
    """The prunable weights, or exactly the parameters ``names`` (KeyError naming any missing)."""
    if names is None:
        return prunable_parameters(model)
    params = dict(model.named_parameters())
    names = list(names)
    missing = [n for n in names if n not in params]
    if missing:
        raise KeyError(f"parameters not in the model: {', '.join(missing)}")
    return [(n, params[n]) for n in names]


def model_sparsity(model: nn.Module, names: Iterable[str] | None = None) -> float:
    """Share of zeros over the prunable weights, or over the parameters ``names`` (exact names)."""
    tensors = [p for _, p in _selected(model, names)]
    total = sum(t.numel() for t in tensors)
    zeros = sum(t.numel() - int(torch.count_nonzero(t)) for t in tensors)
    return 0.0 if total == 0 else zeros / total


def structure_view(t: torch.Tensor, kind: str) -> torch.Tensor:
    """``t`` as (structures x elements), one row per structure of group ``kind`` (:mod:`pruning_core.groups`),
    or ValueError where the group does not apply. Pruners, regularizers and metrics all slice with this,
    so a group means the same structures everywhere."""
    g = GROUPS.get(ALIASES.get(kind, kind))
    if g is None or g.name in ("element", "blocks"):
        known = ", ".join(n for n in GROUPS if n not in ("element", "blocks"))
        raise ValueError(f"unknown structure kind {kind!r}; expected one of {known}")
    if not g.applies(t.dim()):
        if g.max_dims == g.min_dims:
            raise ValueError(f"{g.name} apply to {g.min_dims}-D weights ({g.description}), not a {t.dim()}-D tensor")
        raise ValueError(f"{g.name} need a tensor with at least {g.min_dims} dims ({g.description}), "
                         f"not a {t.dim()}-D tensor")
    if g.dim is not None:
        return t.movedim(g.dim, 0).reshape(t.shape[g.dim], -1)
    if g.name == "kernels":
        return t.reshape(t.shape[0] * t.shape[1], -1)
    return t.reshape(1, -1)  # tensor


def structure_sparsity(t: torch.Tensor, kind: str) -> float:
    """Share of structures of ``kind`` that are entirely zero.

    ``filters``/``rows`` are dim-0 slices, ``channels``/``cols`` dim-1 slices, ``kernels`` each
    (filter, channel) kernel of a conv weight. Raises ValueError where the kind does not apply.
    """
    view = structure_view(t.detach(), kind)
    if view.shape[0] == 0:
        return 0.0
    zero = view.shape[0] - int(torch.count_nonzero(view.ne(0).any(dim=1)))
    return zero / view.shape[0]


@dataclass
class SummaryRow:
    """One line of the sparsity summary; the structure columns are % of all-zero structures.

    The columns are Distiller's (``groups.DISTILLER_SUMMARY``), labelled as Distiller labels them for
    PyTorch's transposed matrices: ``cols`` ("Cols (%)") counts all-zero rows ``W[i, :]`` and ``rows``
    ("Rows (%)") all-zero columns ``W[:, j]``, so the numbers compare with Distiller's logs. A column
    that does not apply to the tensor's shape is 0.0, as in Distiller (cols/rows only for 2-D weights;
    ch/k2d/k3d only for conv weights).
    """

    name: str
    shape: tuple[int, ...]
    nnz_dense: int
    nnz_sparse: int
    cols: float
    rows: float
    ch: float
    k2d: float
    k3d: float
    fine: float
    std: float
    mean: float
    abs_mean: float


#: SummaryRow's structure fields, in table order, and the Distiller column each one is.
_SUMMARY_FIELDS = {"cols": "Cols (%)", "rows": "Rows (%)", "ch": "Ch (%)", "k2d": "2D (%)", "k3d": "3D (%)"}


def _summary_row(name: str, t: torch.Tensor) -> SummaryRow:
    t = t.detach()
    is_linear, is_conv = t.dim() == 2, t.dim() >= 3
    structures = {}
    for field, column in _SUMMARY_FIELDS.items():
        applies = is_linear if field in ("cols", "rows") else is_conv
        structures[field] = 100.0 * structure_sparsity(t, DISTILLER_SUMMARY[column]) if applies else 0.0
    return SummaryRow(
        name=name,
        shape=tuple(t.shape),
        nnz_dense=t.numel(),
        nnz_sparse=int(torch.count_nonzero(t)),
        **structures,
        fine=100.0 * sparsity(t),
        std=t.float().std().item() if t.numel() > 1 else 0.0,
        mean=t.float().mean().item() if t.numel() else 0.0,
        abs_mean=t.float().abs().mean().item() if t.numel() else 0.0,
    )


def sparsity_summary(model: nn.Module, names: Iterable[str] | None = None) -> list[SummaryRow]:
    """Distiller's ``weights_sparsity_summary``: one row per prunable weight (or per ``names``),
    then a ``Total`` row whose ``fine`` is the overall sparsity (its other % and stats are 0)."""
    rows = [_summary_row(n, p) for n, p in _selected(model, names)]
    dense = sum(r.nnz_dense for r in rows)
    nnz = sum(r.nnz_sparse for r in rows)
    fine = 0.0 if dense == 0 else 100.0 * (dense - nnz) / dense
    rows.append(SummaryRow("Total", (), dense, nnz, 0.0, 0.0, 0.0, 0.0, 0.0, fine, 0.0, 0.0, 0.0))
    return rows


_HEADER = ("Name", "Shape", "NNZ (dense)", "NNZ (sparse)", *_SUMMARY_FIELDS.values(), "Fine (%)", "Std", "Mean",
           "Abs-Mean")


def format_summary(rows: list[SummaryRow]) -> str:
    """Render summary rows as a fixed-width text table (names left, numbers right-aligned)."""
    cells = [list(_HEADER)]
    for r in rows:
        shape = "-" if not r.shape else " x ".join(str(d) for d in r.shape)
        pcts = [f"{getattr(r, f):.2f}" for f in (*_SUMMARY_FIELDS, "fine")]
        stats = [f"{v:.5f}" for v in (r.std, r.mean, r.abs_mean)]
        cells.append([r.name, shape, str(r.nnz_dense), str(r.nnz_sparse), *pcts, *stats])
    widths = [max(len(row[i]) for row in cells) for i in range(len(_HEADER))]

    def line(row: list[str]) -> str:
        cols = enumerate(zip(row, widths, strict=True))
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in cols)

    rule = "  ".join("-" * w for w in widths)
    body = [line(c) for c in cells[1:]]
    if rows and rows[-1].name == "Total":
        body.insert(len(body) - 1, rule)
    return "\n".join([line(cells[0]), rule, *body])
