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

STRUCTURE_KINDS = ("filters", "channels", "rows", "cols", "kernels2d")


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


def _structures(t: torch.Tensor, kind: str) -> torch.Tensor:
    """View ``t`` as one row per structure of ``kind`` (rows x elements), or raise ValueError."""
    if kind not in STRUCTURE_KINDS:
        raise ValueError(f"unknown structure kind {kind!r}; expected one of {', '.join(STRUCTURE_KINDS)}")
    if kind in ("rows", "cols") and t.dim() != 2:
        raise ValueError(f"{kind} apply to 2-D (linear) weights, not a {t.dim()}-D tensor")
    if kind in ("filters", "channels") and t.dim() < 2:
        raise ValueError(f"{kind} need a tensor with at least 2 dims, not a {t.dim()}-D tensor")
    if kind == "kernels2d" and t.dim() < 3:
        raise ValueError(f"kernels apply to conv weights (>= 3-D), not a {t.dim()}-D tensor")
    if kind in ("filters", "rows"):
        return t.reshape(t.shape[0], -1)
    if kind in ("channels", "cols"):
        return t.transpose(0, 1).reshape(t.shape[1], -1)
    return t.reshape(t.shape[0] * t.shape[1], -1)


def structure_sparsity(t: torch.Tensor, kind: str) -> float:
    """Share of structures of ``kind`` that are entirely zero.

    ``filters``/``rows`` are dim-0 slices, ``channels``/``cols`` dim-1 slices, ``kernels2d`` each
    (filter, channel) kernel of a conv weight. Raises ValueError where the kind does not apply.
    """
    view = _structures(t.detach(), kind)
    if view.shape[0] == 0:
        return 0.0
    zero = view.shape[0] - int(torch.count_nonzero(view.ne(0).any(dim=1)))
    return zero / view.shape[0]


@dataclass
class SummaryRow:
    """One line of the sparsity summary; the structure columns are % of all-zero structures.

    A column that does not apply to the tensor's shape is 0.0, as in Distiller (cols/rows only for
    2-D weights; ch/k2d/k3d only for conv weights).
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


def _pct(t: torch.Tensor, kind: str, applies: bool) -> float:
    return 100.0 * structure_sparsity(t, kind) if applies else 0.0


def _summary_row(name: str, t: torch.Tensor) -> SummaryRow:
    t = t.detach()
    is_linear, is_conv = t.dim() == 2, t.dim() >= 3
    return SummaryRow(
        name=name,
        shape=tuple(t.shape),
        nnz_dense=t.numel(),
        nnz_sparse=int(torch.count_nonzero(t)),
        cols=_pct(t, "cols", is_linear),
        rows=_pct(t, "rows", is_linear),
        ch=_pct(t, "channels", is_conv),
        k2d=_pct(t, "kernels2d", is_conv),
        k3d=_pct(t, "filters", is_conv),
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


_HEADER = ("Name", "Shape", "NNZ (dense)", "NNZ (sparse)", "Cols (%)", "Rows (%)", "Ch (%)",
           "2D (%)", "3D (%)", "Fine (%)", "Std", "Mean", "Abs-Mean")


def format_summary(rows: list[SummaryRow]) -> str:
    """Render summary rows as a fixed-width text table (names left, numbers right-aligned)."""
    cells = [list(_HEADER)]
    for r in rows:
        shape = "-" if not r.shape else " x ".join(str(d) for d in r.shape)
        pcts = [f"{v:.2f}" for v in (r.cols, r.rows, r.ch, r.k2d, r.k3d, r.fine)]
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
