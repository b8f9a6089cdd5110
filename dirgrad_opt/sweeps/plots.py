"""PNG figures (matplotlib, Agg backend): learning curves, performance profiles, hyperparameter
sensitivity, loss slices.

matplotlib is imported inside each function, so the rest of the sweep package works without it.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dirgrad_opt.sweeps.analysis import MEASURE_LABELS, Curve, Profile
from dirgrad_opt.sweeps.sensitivity import Panel

METRIC_LABELS = {
    "train_loss": "training loss (full training set)",
    "test_loss": "test loss",
    "test_accuracy": "test accuracy",
    "train_accuracy": "training accuracy",
    "loss": "training loss (mini-batch window mean)",
    "final_train_loss": "final training loss (full training set)",
    "final_test_loss": "final test loss",
    "final_test_accuracy": "final test accuracy",
    "final_train_accuracy": "final training accuracy",
}


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: str | os.PathLike) -> Path:
    """Lays out ``fig``, writes it as a PNG at ``path`` (creating folders) and closes it."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


_LINESTYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">")


def line_style(i: int, n: int) -> dict[str, Any]:
    """Colour, line style and marker of line ``i`` of ``n``, distinct for every line.

    Up to 10 lines: matplotlib's default colours ``C0``–``C9``, solid. Beyond: the 20 colours of
    the ``tab20`` map (dark and light of 10 hues; the light one of each pair dashed) and, past
    20 lines, the next line style. Every line also gets its own marker (10 shapes), so lines that
    coincide (e.g. several optimizers at ρ = 0) stay identifiable in the legend and on the plot.
    """
    if n <= 10:
        color: Any = f"C{i % 10}"
        linestyle = "-"
    else:
        from matplotlib import colormaps

        color = colormaps["tab20"](i % 20)
        linestyle = _LINESTYLES[(i % 2 + i // 20) % len(_LINESTYLES)]
    return {"color": color, "linestyle": linestyle, "marker": _MARKERS[i % len(_MARKERS)]}


def _markevery(i: int, points: int, marks: int = 6) -> tuple[int, int]:
    """Marker positions of line ``i``: ``marks`` per line, staggered so that markers of
    coinciding lines do not hide each other."""
    every = max(1, points // marks)
    return (i * max(1, every // 7)) % every, every


def slug(text: str) -> str:
    """A file-name-safe version of ``text`` (``mnist1d/mnist1d_mlp`` → ``mnist1d_mnist1d_mlp``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def plot_curves(
    curves_by_metric: dict[str, Sequence[Curve]],
    measure: str,
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """One panel per metric, ``metric`` vs ``measure``, one line per curve (mean over seeds;
    its label names the optimizer and the configuration's swept hyperparameters) with a
    shaded min–max band over seeds.

    Losses get a log y axis when every plotted value is positive.

    Args:
      curves_by_metric: ``{metric: [Curve, ...]}``.
      measure: ``steps``, ``seconds`` or ``fpe`` (the x axis).
      path: the PNG to write.
      title: the figure title.

    Returns:
      The written path.
    """
    plt = _pyplot()
    metrics = [m for m, curves in curves_by_metric.items() if curves]
    if not metrics:
        raise ValueError(f"no curves to plot for {path}")
    many = max(len(curves_by_metric[m]) for m in metrics) > 10
    width = 5.5 * len(metrics) + (3.5 * len(metrics) if many else 0.0)
    fig, axes = plt.subplots(1, len(metrics), figsize=(width, 4.0), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        positive = True
        curves = curves_by_metric[metric]
        for i, c in enumerate(curves):
            style = line_style(i, len(curves))
            x = c.x[measure]
            label = f"{c.label} ({c.seeds} seed{'s' if c.seeds != 1 else ''})"
            ax.plot(x, c.mean, label=label, linewidth=1.6, markersize=4,
                    markevery=_markevery(i, len(x)), **style)  # fmt: skip
            if c.seeds > 1:
                ax.fill_between(x, c.low, c.high, color=style["color"], alpha=0.2, linewidth=0)
            positive = positive and bool((c.low > 0).all())
        if "loss" in metric and positive:
            ax.set_yscale("log")
        ax.set_xlabel(MEASURE_LABELS[measure])
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.grid(True, alpha=0.3)
        _legend(ax, max(len(curves_by_metric[m]) for m in metrics))
    if title:
        fig.suptitle(title)
    return _save(plt, fig, path)


def _legend(ax: Any, n: int, loc: str = "best") -> None:
    """The legend inside the axes for up to 10 lines, beside them (right) for more."""
    if n <= 10:
        ax.legend(fontsize=8, loc=loc)
    else:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def plot_profile(profile: Profile, path: str | os.PathLike, title: str = "") -> Path:
    """ρ_s(τ) per optimizer (step plot), with the score in the legend."""
    plt = _pyplot()
    n = len(profile.rho)
    fig, ax = plt.subplots(figsize=(6.0 if n <= 10 else 9.5, 4.0 if n <= 10 else 5.0))
    for i, (name, rho) in enumerate(sorted(profile.rho.items())):
        ax.step(
            profile.taus,
            rho,
            where="post",
            label=f"{name} (score {profile.score[name]:.3f})",
            markersize=4,
            markevery=_markevery(i, len(profile.taus)),
            **line_style(i, n),
        )
    ax.set_xlim(1.0, float(profile.taus[-1]))
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"τ: ratio to the fastest optimizer ({profile.measure})")
    ax.set_ylabel("fraction of workloads within τ")
    ax.grid(True, alpha=0.3)
    _legend(ax, n, loc="lower right")
    ax.set_title(title or f"Performance profile ({MEASURE_LABELS[profile.measure]})", fontsize=10)
    return _save(plt, fig, path)


def plot_sensitivity(panels: Sequence[Panel], path: str | os.PathLike, title: str = "") -> Path:
    """One panel per (metric, swept numeric binding): the metric against the binding's value,
    mean ± sample std over seeds as error bars, one line per combination of the optimizer's
    other swept bindings. The x axis is logarithmic when the values are positive and span a
    factor of 10 or more; losses get a log y axis when every value is positive.

    Args:
      panels: from :func:`dirgrad_opt.sweeps.sensitivity.panels` (rows: metrics, in order).
      path: the PNG to write.
      title: the figure title.
    """
    plt = _pyplot()
    metrics = list(dict.fromkeys(p.metric for p in panels))
    bindings = list(dict.fromkeys(p.binding for p in panels))
    fig, axes = plt.subplots(
        len(metrics),
        len(bindings),
        figsize=(4.8 * len(bindings), 3.4 * len(metrics)),
        squeeze=False,
    )
    for ax in axes.flat:
        ax.set_visible(False)
    for panel in panels:
        ax = axes[metrics.index(panel.metric)][bindings.index(panel.binding)]
        ax.set_visible(True)
        xs = [x for s in panel.series for x in s.x]
        ys = [m for s in panel.series for m in s.mean]
        for i, s in enumerate(panel.series):
            seeds = f"{min(s.n)}–{max(s.n)}" if min(s.n) != max(s.n) else f"{s.n[0]}"
            label = f"{s.label + ', ' if s.label else ''}{seeds} seed(s)"
            ax.errorbar(s.x, s.mean, yerr=s.std, capsize=3, linewidth=1.4, markersize=4,
                        label=label, **line_style(i, len(panel.series)))  # fmt: skip
        if min(xs) > 0 and max(xs) >= 10 * min(xs):
            ax.set_xscale("log")
        if "loss" in panel.metric and min(ys) > 0:
            ax.set_yscale("log")
        ax.set_xlabel(panel.label)
        ax.set_ylabel(METRIC_LABELS.get(panel.metric, panel.metric))
        ax.grid(True, alpha=0.3)
        _legend(ax, len(panel.series))
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(plt, fig, path)


def plot_slice(data: dict[str, Any], path: str | os.PathLike, title: str = "") -> Path:
    """Loss along a line ``L(w + t·d)``: the batch loss, the full-training-set loss, and the
    quadratic model ``L + t·∇L·d + ½t²·dᵀHd`` of the batch loss at ``t = 0``.

    Args:
      data: the output of :func:`dirgrad_opt.sweeps.landscape.loss_slice`.
      path: the PNG to write.
      title: the figure title.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    t = data["t"]
    ax.plot(t, data["batch_loss"], color="C0", label="mini-batch loss", linewidth=1.6)
    if data.get("train_loss") is not None:
        ax.plot(t, data["train_loss"], color="C1", label="training-set loss", linewidth=1.6)
    quadratic = data["loss0"] + t * data["slope"] + 0.5 * t**2 * data["curvature"]
    finite = [v for v in data["batch_loss"] if math.isfinite(v)]
    if finite:
        low, high = min(finite), max(finite)
        span = high - low or 1.0
        ax.plot(t, quadratic, "--", color="C2", label="quadratic model at t = 0", linewidth=1.0)
        ax.set_ylim(low - 0.1 * span, high + 0.1 * span)
    ax.axvline(0.0, color="gray", linewidth=0.8)
    if data.get("newton_step") is not None:
        ax.axvline(data["newton_step"], color="C2", linewidth=0.8, linestyle=":",
                   label=f"Newton step along d: t = {data['newton_step']:.3g}")  # fmt: skip
    ax.set_xlabel(f"t (w + t·d, d = {data['direction']})")
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or f"Loss along the step direction at step {data['step']}", fontsize=10)
    return _save(plt, fig, path)
