"""Plots of response curves: median and inter-quartile band per group."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = {"real": "#1f77b4", "random": "#d62728", "heldout": "#1f77b4", "submission": "#2ca02c"}


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """``tight_layout``, create the folder, save, close; the one place figures are written."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_curve_groups(
    groups: dict[str, np.ndarray],
    path: str | Path,
    *,
    x: np.ndarray | None = None,
    xlabel: str = "step",
    ylabel: str = "L2 distance at read-out",
    title: str = "",
    normalise: bool = False,
    logy: bool = False,
    panels: dict[str, dict[str, np.ndarray]] | None = None,
) -> Path:
    """One line (median) and band (25-75 %) per group; ``panels`` draws several such axes."""
    panels = panels or {ylabel: groups}
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (label, grp) in zip(axes[0], panels.items(), strict=True):
        for i, (name, c) in enumerate(grp.items()):
            c = np.asarray(c, dtype=np.float64)
            if normalise:
                last = c[:, -1:]
                c = np.divide(c, last, out=np.zeros_like(c), where=last != 0)
            xs = np.arange(c.shape[1]) if x is None else x
            med, lo, hi = np.median(c, 0), np.percentile(c, 25, 0), np.percentile(c, 75, 0)
            col = COLORS.get(name, f"C{i + 2}")
            ax.plot(xs, med, color=col, label=f"{name} (n={len(c)})")
            ax.fill_between(xs, lo, hi, color=col, alpha=0.2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        if logy:
            ax.set_yscale("symlog", linthresh=1e-3)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, dpi=110)


def plot_hist_groups(
    groups: dict[str, np.ndarray], path: str | Path, *, xlabel: str, title: str = "", bins: int = 30
) -> Path:
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    allv = np.concatenate([np.asarray(v, float) for v in groups.values()])
    edges = np.histogram_bin_edges(allv, bins=bins)
    for i, (name, v) in enumerate(groups.items()):
        ax.hist(
            v,
            bins=edges,
            alpha=0.5,
            label=f"{name} (n={len(v)})",
            color=COLORS.get(name, f"C{i + 2}"),
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path, dpi=110)
