"""The leaderboard's figures: ROC curves and faithfulness curves per task (and model, where
a task runs on several), a line per method.

Drawn with matplotlib's object API (no pyplot, so no global backend is touched) and
written atomically.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from circuitx.files import atomic_open

FPR_GRID = np.linspace(0.0, 1.0, 201)


def mean_roc(curves: list[dict[str, list[float]]]) -> np.ndarray:
    """The seeds' true-positive rates averaged at each false-positive rate of FPR_GRID."""
    return np.mean([np.interp(FPR_GRID, c["fpr"], c["tpr"]) for c in curves], axis=0)


def _figure(n_panels: int, width: float = 5.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * n_panels, 4.6), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(1, n_panels, squeeze=False)[0]


def _save(figure, path: Path) -> None:
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=110)


LINE_STYLES = ("solid", "dashed", "dashdot", "dotted")


def method_styles(methods: Iterable[str]) -> dict[str, dict[str, str]]:
    """A colour and line style per method: the colour cycle's colours, then again dashed,
    and so on, so that no two of the leaderboard's 14 rows look alike. The leaderboard
    passes one map to every figure, so that a method looks the same in all of them (a
    method without a curve in one does not shift the others')."""
    import matplotlib

    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    return {
        method: {
            "color": cycle[i % len(cycle)],
            "linestyle": LINE_STYLES[i // len(cycle) % len(LINE_STYLES)],
        }
        for i, method in enumerate(methods)
    }


Styles = dict[str, dict[str, str]]


def _widths(n: int) -> list[float]:
    """Line widths for ``n`` lines drawn in turn, widest first, so that a line drawn over
    an identical one leaves its edges showing (a trial's ROC plot showed one of three
    methods whose curves coincide)."""
    return [1.2 + 2.8 * (n - 1 - i) / max(n - 1, 1) for i in range(n)]


def _same_as(line: np.ndarray, drawn: dict[str, np.ndarray]) -> str:
    """`` = METHOD`` where ``line`` is a line already drawn (to 1e-4: one to the eye), else
    ""."""
    same = [method for method, other in drawn.items() if np.allclose(line, other, atol=1e-4)]
    return f" = {same[0]}" if same else ""


def roc_figure(
    label: str, curves: dict[str, dict[str, list]], path: Path, styles: Styles | None = None
) -> bool:
    """Node and edge ROC curves for ``label`` (a task, or a task and its model);
    ``curves[method][level]`` lists one curve per seed. Each line is the seeds' mean curve,
    labelled with their mean AUC (and ``= METHOD`` where it is an earlier one's, drawn
    narrower over it); ``styles`` (default :func:`method_styles` of these methods) draws
    it. False (nothing written) when no method has a curve."""
    levels = [lv for lv in ("node", "edge") if any(c.get(lv) for c in curves.values())]
    if not levels:
        return False
    figure, axes = _figure(len(levels))
    styles = styles or method_styles(curves)
    for ax, level in zip(axes, levels):
        at_level = {m: seeds for m, by_level in curves.items() if (seeds := by_level.get(level))}
        drawn: dict[str, np.ndarray] = {}
        for (method, seeds), width in zip(at_level.items(), _widths(len(at_level))):
            auc = np.mean([np.trapezoid(c["tpr"], c["fpr"]) for c in seeds])
            line = mean_roc(seeds)
            named = f"{method} ({auc:.2f}){_same_as(line, drawn)}"
            ax.plot(FPR_GRID, line, **styles[method], linewidth=width, label=named)
            drawn[method] = line
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set(
            title=f"{label}: {level} ROC",
            xlabel="false positive rate",
            ylabel="true positive rate",
            xlim=(0, 1),
            ylim=(0, 1.02),
        )
        ax.legend(fontsize="small", loc="lower right", title="method (AUC)")
    _save(figure, path)
    return True


def faithfulness_figure(
    label: str,
    curves: dict[str, list[list[dict[str, Any]]]],
    path: Path,
    styles: Styles | None = None,
    signed: dict[str, list[list[dict[str, Any]]]] | None = None,
) -> bool:
    """Faithfulness against the share of edges kept, mean over seeds, a line per method
    drawn in ``styles`` (default :func:`method_styles` of these methods): the edges kept
    by |score| (CMD's curve), and, where ``signed`` (CPR's curves, by signed score) gives
    another line, that one thin with x markers in the method's colour. False (nothing
    written) when no method has a curve."""
    drawn = {m: seeds for m, seeds in curves.items() if seeds}
    if not drawn:
        return False
    figure, (ax,) = _figure(1, width=7.6)
    styles = styles or method_styles(drawn)
    lines: dict[str, np.ndarray] = {}
    for (method, seeds), width in zip(drawn.items(), _widths(len(drawn))):
        fractions = [point["fraction"] for point in seeds[0]]
        mean = _mean_curve(seeds)
        same = _same_as(mean, lines) if all(len(v) == len(mean) for v in lines.values()) else ""
        ax.plot(
            fractions, mean, marker="o", markersize=3, **styles[method], linewidth=width,
            label=method + same,
        )  # fmt: skip
        lines[method] = mean
    for method, seeds in (signed or {}).items():
        if method not in lines or not seeds:
            continue
        mean = _mean_curve(seeds)
        if len(mean) == len(lines[method]) and np.allclose(mean, lines[method], atol=1e-4):
            continue  # scores of one sign: CPR's curve is this one
        fractions = [point["fraction"] for point in seeds[0]]
        ax.plot(
            fractions, mean, color=styles[method]["color"], linestyle=(0, (1, 1)), marker="x",
            markersize=5, linewidth=1, label=f"{method}, by signed score (CPR's)",
        )  # fmt: skip
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set(
        title=f"{label}: faithfulness of the top edges by |score| (CMD's curve;\n"
        "x markers: by signed score, CPR's, where it differs)",
        xscale="log",
        xlabel="share of edges kept",
        ylabel="faithfulness",
    )
    # beside the axes: over them it hides the curves' steps near 1
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5))
    _save(figure, path)
    return True


def _mean_curve(seeds: list[list[dict[str, Any]]]) -> np.ndarray:
    """The seeds' faithfulness at each point of the curve, averaged."""
    return np.mean([[point["faithfulness"] for point in curve] for curve in seeds], axis=0)
