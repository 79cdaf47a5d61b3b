"""JSON rows -> pandas DataFrames, and the sensitivity figure (plotly), without torch.

pandas and plotly are imported inside the functions so that ``import api.client`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

EPOCH_COLUMNS = ("epoch", "train_loss", "top1", "top5", "loss", "lr", "sparsity")
#: y-axis titles and the 20-colour palette of the dashboard (frontend/sensitivity.js, frontend/util.js); any
#: other metric is titled by its name.
METRIC_LABELS = {"top1": "top1 (%)", "top5": "top5 (%)", "loss": "loss (cross-entropy)"}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354",
           "#756bb1", "#636363")


def __getattr__(name: str) -> Any:
    """``POINT_COLUMNS``: the columns of ``GET /jobs/{id}/points``, every field of a sensitivity point
    (``pruning_core.points.POINT_FIELDS``), looked up on first use so ``import api.client`` stays light."""
    if name == "POINT_COLUMNS":
        from pruning_core.points import POINT_FIELDS

        return POINT_FIELDS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def points_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (parameter, sparsity) in the server's order (model order, then sparsity): every point field
    (``POINT_COLUMNS``, ``metrics`` as the server sends it), then one column per key of ``metrics``
    (``perplexity``, a custom metric's name) as first seen, NaN where a point lacks it, so a language model's
    frame is plotted and filtered like a classifier's ``top1``."""
    import pandas as pd

    from pruning_core.points import POINT_FIELDS, metric_names

    extra = [m for m in metric_names(rows) if m not in POINT_FIELDS]
    flat = [{**{c: r.get(c) for c in POINT_FIELDS}, **{m: (r.get("metrics") or {}).get(m) for m in extra}}
            for r in rows]
    return pd.DataFrame(flat, columns=[*POINT_FIELDS, *extra])


def epochs_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per epoch; the typed columns first, then whatever else the engine reported (``data``)."""
    import pandas as pd

    flat = [{**{c: r.get(c) for c in EPOCH_COLUMNS}, **(r.get("data") or {})} for r in rows]
    extra = list(dict.fromkeys(k for r in flat for k in r if k not in EPOCH_COLUMNS))
    return pd.DataFrame(flat, columns=[*EPOCH_COLUMNS, *extra])


def compare_frame(body: dict[str, Any]) -> pd.DataFrame:
    """``GET /compare`` as a table: parameter, sparsity, then one column ``job N`` per job (NaN where absent)."""
    import pandas as pd

    labels = {str(j): f"job {j}" for j in body["jobs"]}
    rows = [{"parameter": r["parameter"], "sparsity": r["sparsity"],
             **{labels[j]: v for j, v in r["values"].items()}} for r in body["rows"]]
    frame = pd.DataFrame(rows, columns=["parameter", "sparsity", *labels.values()])
    frame.attrs["metric"] = body["metric"]
    return frame


def _rgba(hex_color: str, alpha: float) -> str:
    n = int(hex_color[1:], 16)
    return f"rgba({(n >> 16) & 255},{(n >> 8) & 255},{n & 255},{alpha})"


def sensitivity_figure(points: pd.DataFrame, metric: str = "top1", title: str | None = None) -> go.Figure:
    """The dashboard's curves (frontend/sensitivity.js): one line per parameter of ``metric`` (any column of a
    ``points()`` frame's metrics: top1, top5, loss, perplexity, a custom one) against sparsity, bands of the
    95 % Wilson interval beneath them for top1/top5, the same colours and axes. Unmeasured points (after an
    early stop) and points without the metric are left out."""
    import plotly.graph_objects as go

    from pruning_core.points import COLUMN_METRICS, POINT_FIELDS

    have = [c for c in COLUMN_METRICS if c in points.columns and points[c].notna().any()] + \
        [c for c in points.columns if c not in POINT_FIELDS]  # points_frame's metric columns
    if metric not in have:
        raise ValueError(f"the points have no {metric!r}; they have: {', '.join(have) or 'no metric'}")
    measured = points[points["measured"].fillna(True).astype(bool) & points[metric].notna()]
    curves = list(measured.groupby("parameter", sort=False))
    lines, bands = [], []
    for i, (name, curve) in enumerate(curves):
        curve = curve.sort_values("sparsity")
        color = PALETTE[i % len(PALETTE)]
        x = curve["sparsity"].tolist()
        lines.append(go.Scatter(
            x=x, y=curve[metric].tolist(), mode="lines+markers" if len(curves) <= 20 else "lines", name=name,
            legendgroup=name, line={"color": color, "width": 1.6}, marker={"size": 4, "color": color},
            hovertemplate=f"<b>{name}</b><br>sparsity %{{x:.4f}}<br>{metric} %{{y:.3f}}<extra></extra>"))
        if f"{metric}_low" in points.columns:
            band = curve.dropna(subset=[f"{metric}_low", f"{metric}_high"])
            if len(band) > 1:
                bx = band["sparsity"].tolist()
                bands.append(go.Scatter(
                    x=bx + bx[::-1], y=band[f"{metric}_high"].tolist() + band[f"{metric}_low"].tolist()[::-1],
                    mode="lines", fill="toself", fillcolor=_rgba(color, 0.12), line={"width": 0, "color": color},
                    name=f"{name} 95%", legendgroup=name, showlegend=False, hoverinfo="skip"))
    fig = go.Figure([*bands, *lines])  # bands beneath the lines
    fig.update_layout(
        title=title, xaxis={"title": {"text": "sparsity"}, "tickformat": ".0%", "range": [-0.02, 1.0],
                            "zeroline": False},
        yaxis={"title": {"text": METRIC_LABELS.get(metric, metric)}, "zeroline": False}, hovermode="closest",
        plot_bgcolor="#fff", paper_bgcolor="#fff", template="plotly_white",
        font={"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12})
    return fig
