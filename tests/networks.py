"""Networks in no catalogue, shared by the library and service tests of models without code (torch.export)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    """In no catalogue: a depthwise conv, a concatenated skip, LayerNorm, GELU, a linear head, and a bare
    parameter the graph reads with get_attr (``mix``: kept as an ATen matmul in the loaded program)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(16, 12, 1)
        self.mix = nn.Parameter(torch.randn(12, 12) / 4)
        self.norm = nn.LayerNorm(12)
        self.head = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn(self.stem(x)))
        b = F.gelu(self.dw(a))
        c = self.pw(torch.cat([a, b], 1)).mean((2, 3))
        return self.head(self.norm(c @ self.mix))


def calibrated_net() -> Net:
    """A seeded Net in eval mode whose BatchNorm statistics differ from their defaults (one pass of data)."""
    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        model(torch.randn(16, 3, 8, 8))
    return model.eval()
