"""A ``prunescope.models`` plugin package written by a test, as ``pip install`` would lay it out: the
package and a ``.dist-info`` folder whose ``entry_points.txt`` declares the architectures."""

from __future__ import annotations

import contextlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

#: The plugin's network, in no catalogue: a conv, a ReLU and a linear head for 1x8x8 samples.
TINY_NET = '''
from torch import nn


class TinyNet(nn.Module):
    """A network no catalogue knows: a conv, a ReLU and a linear head, for 1x8x8 samples."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Linear(4 * 8 * 8, num_classes)

    def forward(self, x):
        return self.head(self.relu(self.conv(x)).flatten(1))


def build(num_classes: int = 3) -> nn.Module:
    return TinyNet(num_classes)


build.input_shape = (1, 8, 8)
build.num_classes = 3
'''


def write_plugin(root: Path, source: str, entry_points: str) -> Path:
    """Package ``myplug`` (``source`` as its ``__init__``) under ``root``, declaring ``entry_points``."""
    (root / "myplug").mkdir(parents=True)
    (root / "myplug" / "__init__.py").write_text(textwrap.dedent(source))
    info = root / "myplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    return root


@contextlib.contextmanager
def plugin_on_path(monkeypatch: pytest.MonkeyPatch, root: Path, source: str, entry_points: str) -> Iterator[Path]:
    """The plugin package on sys.path (as a pip install into site-packages would put it), forgotten after."""
    monkeypatch.syspath_prepend(str(write_plugin(root, source, entry_points)))
    try:
        yield root
    finally:
        sys.modules.pop("myplug", None)
