"""Interactive HTML report of sensitivity curves (plotly), readable offline.

One curve per parameter with its 95 % Wilson band; a menu switches the metric between those the points
have (top1, top5 and loss; a language model's loss and perplexity; a custom metric), opening on the first.
plotly.js is inlined so the file opens without network access.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from pruning_core.points import SensitivityPoint, metric_names, metric_value  # torch-free: the API exports it

#: Axis titles of the metrics that have a unit; any other is titled by its name.
UNITS = {"top1": "top1 (%)", "top5": "top5 (%)"}


def _curves(points: Iterable[SensitivityPoint]) -> dict[str, list[SensitivityPoint]]:
    curves: dict[str, list[SensitivityPoint]] = {}
    for p in points:
        if p.measured:
            curves.setdefault(p.parameter, []).append(p)
    return {name: sorted(ps, key=lambda p: p.sparsity) for name, ps in curves.items()}


def build_figure(points: Iterable[SensitivityPoint], title: str = "Sensitivity analysis"):
    """The plotly Figure: per parameter a line trace, then (top1/top5) a band trace, per metric."""
    import plotly.graph_objects as go

    curves = _curves(points)
    metrics = metric_names([p for ps in curves.values() for p in ps]) or ["top1"]
    fig = go.Figure()
    owner: list[tuple[str, bool]] = []  # (metric, is_band) per trace, to build visibility masks
    for metric in metrics:
        for name, ps in curves.items():
            x = [p.sparsity * 100 for p in ps]
            y = [metric_value(p, metric) for p in ps]
            visible = metric == metrics[0]
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=name, legendgroup=name,
                                     visible=visible, meta=metric,
                                     hovertemplate=f"{name}<br>sparsity %{{x:.1f}}%<br>{metric} %{{y:.3f}}"
                                                   "<extra></extra>"))
            owner.append((metric, False))
            if metric in UNITS:  # top1/top5 have 95 % bounds
                low = [getattr(p, f"{metric}_low") for p in ps]
                high = [getattr(p, f"{metric}_high") for p in ps]
                if all(v is not None for v in low + high):
                    fig.add_trace(go.Scatter(x=x + x[::-1], y=high + low[::-1], fill="toself", mode="none",
                                             opacity=0.2, name=f"{name} 95% CI", legendgroup=name,
                                             showlegend=False, hoverinfo="skip", visible=visible,
                                             meta=f"{metric}-band"))
                    owner.append((metric, True))
    buttons = [dict(label=m, method="update",
                    args=[{"visible": [o == m for o, _ in owner]},
                          {"yaxis": {"title": {"text": UNITS.get(m, m)}}}])
               for m in metrics]
    fig.update_layout(title=title, xaxis_title="sparsity (%)", yaxis_title=UNITS.get(metrics[0], metrics[0]),
                      updatemenus=[dict(buttons=buttons, direction="down", x=1.0, y=1.15)],
                      template="plotly_white")
    return fig


def write_html(points: Iterable[SensitivityPoint], path: str | Path, title: str = "Sensitivity analysis") -> Path:
    """Write a self-contained HTML file (plotly.js inline, no CDN)."""
    path = Path(path)
    build_figure(points, title).write_html(str(path), include_plotlyjs=True, full_html=True)
    return path


_REMOTE_SCRIPT = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"']?(https?:)?//", re.IGNORECASE)


def offline_problems(html: str) -> list[str]:
    """Why a report page would not work without network (empty if it is self-contained)."""
    problems = []
    if _REMOTE_SCRIPT.search(html):
        problems.append("loads a script from the network")
    if "plotly.js v" not in html:
        problems.append("plotly.js is not inlined")
    if "Plotly.newPlot" not in html:
        problems.append("no figure is drawn")
    return problems
