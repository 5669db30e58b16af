"""Fit plots with mplhep: stacked pre-/post-fit predictions with data per region, and the pulls.

Figures are built with :class:`matplotlib.figure.Figure` (no pyplot, no global backend or style change)
and written as PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ("plot_pulls", "plot_stack")

_DPI = 110


def _style() -> Any:
    import matplotlib as mpl
    import mplhep

    return mpl.rc_context(mplhep.style.CMS | {"figure.figsize": (8, 8), "font.size": 16})


def plot_stack(
    path: Path,
    *,
    edges: np.ndarray,
    yields: Sequence[np.ndarray],
    labels: Sequence[str],
    total_stdev: np.ndarray,
    data: np.ndarray,
    title: str,
    xlabel: str,
) -> Path:
    """Stacked sample *yields* with an uncertainty band, *data* as points and a data/model ratio panel.

    Examples
    --------
    >>> import numpy as np
    >>> from pathlib import Path
    >>> plot_stack(
    ...     Path("stack.png"), edges=np.array([0.0, 1.0, 2.0]), yields=[np.array([5.0, 3.0])],
    ...     labels=["signal"], total_stdev=np.array([1.0, 1.0]), data=np.array([6.0, 2.0]),
    ...     title="SR", xlabel="x",
    ... )  # doctest: +SKIP
    PosixPath('stack.png')
    """
    import mplhep
    from matplotlib.figure import Figure

    with _style():
        fig = Figure()
        ax, rax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05})
        order = np.argsort([float(np.sum(y)) for y in yields])  # largest on top
        mplhep.histplot(
            [yields[i] for i in order],
            edges,
            stack=True,
            histtype="fill",
            label=[labels[i] for i in order],
            ax=ax,
        )
        total = np.sum(yields, axis=0)
        band = dict(
            step="post", facecolor="none", edgecolor="0.3", hatch="///", linewidth=0, label="Uncertainty"
        )
        ax.fill_between(edges, np.append(total - total_stdev, 0), np.append(total + total_stdev, 0), **band)
        data_err = np.sqrt(np.maximum(data, 0.0))
        mplhep.histplot(data, edges, yerr=data_err, histtype="errorbar", color="black", label="Data", ax=ax)
        ax.set_ylabel("Events / bin")
        ax.set_ylim(0, 1.35 * max(float(np.max(total + total_stdev)), float(np.max(data + data_err)), 1e-9))
        ax.legend(ncol=2, fontsize=12)
        ax.set_title(title, fontsize=16, loc="left")
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(total > 0, data / total, np.nan)
            ratio_err = np.where(total > 0, data_err / total, np.nan)
            rel = np.where(total > 0, total_stdev / total, 0.0)
        rax.fill_between(edges, np.append(1 - rel, 1), np.append(1 + rel, 1), **{**band, "label": None})
        mplhep.histplot(ratio, edges, yerr=ratio_err, histtype="errorbar", color="black", ax=rax)
        rax.axhline(1.0, color="0.5", linewidth=1)
        rax.set_ylim(0.5, 1.5)
        rax.set_ylabel("Data / Model")
        rax.set_xlabel(xlabel)
        fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    return path


def plot_pulls(path: Path, *, labels: Sequence[str], values: np.ndarray, errors: np.ndarray) -> Path:
    """Pulls ``(theta - theta0) / sigma0`` of the constrained nuisance parameters with their errors.

    Examples
    --------
    >>> import numpy as np
    >>> from pathlib import Path
    >>> plot_pulls(
    ...     Path("pulls.png"), labels=["jes", "lumi"], values=np.array([0.3, -0.1]), errors=np.ones(2)
    ... )  # doctest: +SKIP
    PosixPath('pulls.png')
    """
    from matplotlib.figure import Figure

    with _style():
        n = len(labels)
        fig = Figure(figsize=(8, max(3.0, 0.45 * n + 1.5)))
        ax = fig.subplots()
        y = np.arange(n)[::-1]
        ax.axvspan(-2, 2, color="#fff2a8")
        ax.axvspan(-1, 1, color="#a8e6a3")
        ax.axvline(0, color="0.4", linestyle="--", linewidth=1)
        ax.errorbar(values, y, xerr=errors, fmt="o", color="black")
        ax.set_yticks(y, labels, fontsize=12)
        ax.set_xlim(-3, 3)
        ax.set_ylim(-0.5, n - 0.5)
        ax.set_xlabel(r"$(\hat{\theta} - \theta_0) / \Delta\theta$")
        fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    return path
