"""The structure groups: what a pruner, a regularizer, a metric or a sensitivity sweep removes as one.

One vocabulary, torch-free, used by every layer. A weight is indexed as PyTorch stores it:
``(out, in)`` for a linear layer, ``(filters, channels, kh, kw)`` for a convolution.

==========  =======================================================  ===========================
name        one structure is                                         applies to
==========  =======================================================  ===========================
element     one weight                                               any tensor
filters     a dim-0 slice (a conv filter, a linear output feature)  >= 2-D
channels    a dim-1 slice (a conv input channel, a linear input)    >= 2-D
rows        a dim-0 slice of a matrix (``W[i, :]``, output feature)  2-D
cols        a dim-1 slice of a matrix (``W[:, j]``, input feature)   2-D
kernels     one (filter, channel) kernel ``W[f, c, :, :]``          >= 3-D (conv)
tensor      the whole tensor                                         >= 2-D
blocks      Distiller's super-blocks (``block_shape``)               4-D
==========  =======================================================  ===========================

Distiller's names are aliases, and Distiller itself gives "Rows" two meanings, recorded here once
(measured against its code, not its docs):

- thresholding and Group Lasso (``thresholding.group_threshold_binary_map``, ``group_lasso``):
  ``Rows`` are dim-0 slices of a 2-D weight and ``Cols`` dim-1 slices: :data:`DISTILLER`.
- the ranked-structure pruners (``rank_and_prune_rows``) rank "the rows of W transposed", i.e. the
  columns of the stored weight (``rank_cols`` + ``expand_binary_map(param, 'Cols')``), so a ranked
  ``Rows`` pruner on ``fc.weight`` removes input features, as Distiller's own ResNet-20 schedules
  intend: :data:`DISTILLER_RANKED`.
- ``weights_sparsity_summary`` labels its columns the same transposed way (``sparsity_cols`` counts
  zero dim-0 slices, ``sparsity_rows`` zero dim-1 slices): :data:`DISTILLER_SUMMARY`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Group:
    """One kind of structure: the dim its slices run along (None for element/kernels/tensor/blocks)
    and the tensor ranks it applies to."""

    name: str
    dim: int | None
    min_dims: int
    max_dims: int | None = None
    description: str = ""

    def applies(self, ndim: int) -> bool:
        """Whether a tensor with ``ndim`` dims has structures of this kind."""
        return ndim >= self.min_dims and (self.max_dims is None or ndim <= self.max_dims)


GROUPS: dict[str, Group] = {g.name: g for g in (
    Group("element", None, 0, description="one weight"),
    Group("filters", 0, 2, description="a dim-0 slice: a conv filter or a linear output feature"),
    Group("channels", 1, 2, description="a dim-1 slice: a conv input channel or a linear input feature"),
    Group("rows", 0, 2, 2, description="a dim-0 slice of a matrix: W[i, :], one output feature"),
    Group("cols", 1, 2, 2, description="a dim-1 slice of a matrix: W[:, j], one input feature"),
    Group("kernels", None, 3, description="one (filter, channel) kernel W[f, c, ...] of a conv weight"),
    Group("tensor", None, 2, description="the whole tensor"),
    Group("blocks", None, 4, 4, description="Distiller's super-blocks of block_shape [repetitions, depth, 1, 1]"),
)}

#: Distiller's group types in thresholding and regularization (and the ranked pruners, but for Rows).
DISTILLER: Mapping[str, str] = {
    "Filters": "filters", "3D": "filters", "Channels": "channels", "Rows": "rows", "Cols": "cols",
    "2D": "kernels", "4D": "tensor", "Blocks": "blocks",
}
#: Distiller's ranked-structure pruners: "Rows" ranks the columns of the stored weight (see above).
DISTILLER_RANKED: Mapping[str, str] = {
    "Filters": "filters", "3D": "filters", "Channels": "channels", "Rows": "cols", "Blocks": "blocks"}
#: Distiller's combined regularization groups: the penalty is the sum of both parts.
DISTILLER_COMBINED: Mapping[str, tuple[str, str]] = {
    "Rows+Cols": ("rows", "cols"), "Cols+Rows": ("rows", "cols"),
    "Channels+4D": ("channels", "tensor"), "4D+Channels": ("channels", "tensor"),
}
#: ``weights_sparsity_summary``'s structure columns -> the group each counts (transposed labels, see above).
DISTILLER_SUMMARY: Mapping[str, str] = {
    "Cols (%)": "rows", "Rows (%)": "cols", "Ch (%)": "channels", "2D (%)": "kernels", "3D (%)": "filters",
}
#: The sweep's names (``prunescope sense --group``, a sensitivity spec's ``group``).
SENSITIVITY: Mapping[str, str] = {"element": "element", "filter": "filters", "channel": "channels"}
#: Earlier spellings still accepted where a canonical name is expected.
ALIASES: Mapping[str, str] = {"kernels2d": "kernels", "2d": "kernels", "filter": "filters", "channel": "channels"}

#: The group types a ranked-structure pruner accepts, and a Group Lasso regularizer, as schedules spell them.
RANKED_GROUP_TYPES = tuple(DISTILLER_RANKED)
REGULARIZER_GROUP_TYPES = (*(n for n in DISTILLER if n != "Blocks"), *DISTILLER_COMBINED)
SENSITIVITY_GROUPS = tuple(SENSITIVITY)


def group(name: str, aliases: Mapping[str, str] | None = None) -> Group:
    """The group ``name`` means: a canonical name, an earlier spelling, or a key of ``aliases`` (one of the
    Distiller tables). ValueError naming what is accepted otherwise."""
    key = (aliases or {}).get(name, name)
    key = ALIASES.get(key, key)
    if key not in GROUPS:
        known = ", ".join([*(aliases or {}), *GROUPS])
        raise ValueError(f"structure group {name!r} is not known; use one of {known}")
    return GROUPS[key]


def distiller_name(name: str, aliases: Mapping[str, str]) -> str | None:
    """A Distiller group type written case-insensitively (``filters`` -> ``Filters``), or None."""
    return {n.lower(): n for n in aliases}.get(str(name).lower())
