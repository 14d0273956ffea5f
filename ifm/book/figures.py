"""The book's figures: one style for all, ours beside the paper's.

Importing this module sets one seaborn style for every figure (`use_style`). Conventions in
every figure: ours in blue (recipe paper) or green (recipe code) with 95% t-intervals over
seeds as error bars (none with one seed), the paper in orange: a dashed line where the paper
gives only a shape or a best setting, a hollow diamond where it gives a number; one legend per
figure, below the panels. Every title names the profile, device and seeds that produced it.
Figures draw what `ifm.book` computed (a sweep's best setting comes from `ifm.book.rules`).
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter, NullLocator
import numpy as np
import pandas as pd
import seaborn as sns

from ifm.models import DISPLAY_NAMES
from ifm.book.rules import matched, sweep_judgements
from ifm.book.stats import by_recipe, panels, recipes_of, summarize, t_interval
from ifm.book.words import (METRIC_LABELS, SMOKE_TITLE, datasets_in, devices_text, label_of, metric_label, nothing,
                            ours_label, stamp)


OURS = "#0173b2"      # seaborn colorblind blue


PAPER = "#de8f05"     # seaborn colorblind orange


MODEL_COLORS = {"fm": "#949494", "ifm": OURS}


RECIPE_COLORS = {"paper": OURS, "code": "#029e73", "legacy": "#949494"}   # ours under each recipe


RECIPE_LINES = {"paper": "-", "code": "--", "legacy": ":"}


RECIPE_MARKERS = {"paper": "o", "code": "s", "legacy": "X"}


STYLE = dict(context="notebook", style="whitegrid", palette="colorblind", font_scale=0.9,
             rc={"figure.dpi": 100, "savefig.dpi": 100, "axes.titlesize": "medium",
                 "figure.titlesize": "medium", "legend.fontsize": "small", "figure.constrained_layout.use": True})


def use_style() -> None:
    """Set the one style of the book's figures (called on import)."""
    sns.set_theme(**STYLE)


use_style()


def figure_legend(fig: plt.Figure, axes) -> None:
    """One legend for the whole figure, below the panels (outside the data): every distinct label
    of `axes` once, and no legend inside a panel."""
    handles, labels = [], []
    for ax in np.ravel(axes):
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels and not label.startswith("_"):
                handles.append(h)
                labels.append(label)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(3, len(labels)), fontsize="small",
                   frameon=False)


def sweep_figure(df: pd.DataFrame, option: str, paper_best: dict, *, metrics=("valid_rmse", "valid_mae"),
                 xlabel: str | None = None, title: str = "") -> plt.Figure:
    """Ours: mean validation error per setting over the seeds every setting shares (95% interval
    when they are several), so that no 3-seed mean meets single runs; the star is our best by
    validation RMSE on those seeds (`ifm.book.rules.sweep_judgements`), the dashed orange line the
    paper's best setting (the paper gives no numbers)."""
    if df.empty:
        return nothing()
    datasets = datasets_in(df)
    categorical = df[option].dtype == object or isinstance(df[option].iloc[0], str)
    fig, axes = plt.subplots(len(metrics), len(datasets), figsize=(4.6 * len(datasets), 3.0 * len(metrics)),
                             squeeze=False)
    parts = by_recipe(df)
    grid = list(df.attrs.get("grid") or [])     # the sweep's settings, run or not: the x axis shows them all
    judged = {(r, n): j for r, n, _, j, _, _ in sweep_judgements(df, option, paper_best, grid or None)}
    for col, name in enumerate(datasets):
        values = list(dict.fromkeys(grid + df.loc[df.dataset == name, option].tolist()))
        x_all = np.arange(len(values)) if categorical else np.asarray(values, dtype=float)
        for row, metric in enumerate(metrics):
            ax = axes[row, col]
            seeds_shown = []
            for n, (recipe, rows) in enumerate(parts):
                part = rows[rows.dataset == name]
                if part.empty:
                    continue
                wide = matched(part, option, metric)
                mine = [v for v in values if v in wide.columns]
                if not mine:     # no seed shared by every setting run: nothing can be compared
                    ax.annotate(f"{ours_label(recipe)}: no seed shared by all settings", (0.02, 0.95 - 0.08 * n),
                                xycoords="axes fraction", fontsize="small", color=RECIPE_COLORS.get(recipe, OURS))
                    continue
                x = x_all[[values.index(v) for v in mine]] + (0.08 * (n - (len(parts) - 1) / 2) if categorical else 0)
                color = OURS if recipe is None else RECIPE_COLORS.get(recipe, OURS)
                stats = [t_interval(wide[v]) for v in mine]
                mean, half = np.array([m for m, _ in stats]), np.array([h for _, h in stats])
                has_bars = not np.all(np.isnan(half))
                k = len(wide)
                ax.errorbar(x, mean, yerr=np.nan_to_num(half) if has_bars else None, color=color, marker="o",
                            capsize=3, lw=1.5, ls="none" if categorical else RECIPE_LINES.get(recipe, "-"),
                            label=f"{ours_label(recipe)}: mean over the seeds every setting shares (bars: 95% CI)")
                seeds_shown.append(f"{'' if recipe is None else recipe + ' '}{k}")
                j = judged.get((recipe, name))
                if j is not None and j.best in mine and metric == "valid_rmse":
                    i = mine.index(j.best)
                    ax.plot(x[i], mean[i], marker="*", ms=14, color=color, ls="none",
                            label=f"our best{'' if recipe is None else f', recipe {recipe}'} (by validation RMSE)")
            if name in paper_best:
                pb = paper_best[name]
                px = values.index(pb) if categorical and pb in values else (None if categorical else pb)
                if px is not None:
                    ax.axvline(px, color=PAPER, ls="--", lw=1.5, label=f"paper's best: {pb}")
            if categorical:
                ax.set_xticks(x_all, [str(v) for v in values])
                ax.set_xlim(-0.5, len(values) - 0.5)
            else:
                ax.set_xticks(x_all)
                ax.set_xlim(x_all.min() - 0.05 * max(np.ptp(x_all), 1), x_all.max() + 0.05 * max(np.ptp(x_all), 1))
            ax.set_xlabel(xlabel or option)
            ax.set_ylabel(metric_label(metric))
            ax.set_title(label_of(df, name) + ("\nshared seeds: " + ", ".join(seeds_shown) if seeds_shown else ""),
                         fontsize="small")
    figure_legend(fig, axes)
    stamp_text = ((SMOKE_TITLE if df.attrs.get("profile") == "smoke" else "")
                  + f"ours: profile {df.attrs.get('profile', '?')}, recipe {df.attrs.get('recipe', '?')} | "
                  f"{devices_text(df)}")
    fig.suptitle(f"{title}\n{stamp_text}" if title else stamp_text)
    return fig


def convergence_figure(df: pd.DataFrame, metric: str = "rmse", title: str = "") -> plt.Figure:
    """Per-epoch training (solid) and validation (dashed) error of FM and IFM, mean over seeds.
    The paper's Fig. 6 gives only the shape (IFM lower and faster), so there is no paper line."""
    if df.empty:
        return nothing()
    datasets, parts = datasets_in(df), by_recipe(df)
    fig, axes = plt.subplots(len(parts), len(datasets), figsize=(4.8 * len(datasets), 3.4 * len(parts)),
                             squeeze=False)
    for ax, (recipe, rows, name) in zip(axes.flat, [(r, rows, n) for r, rows in parts for n in datasets]):
        part = rows[rows.dataset == name]
        for model, group in part.groupby("model", sort=False):
            # the training error where the runs have it (a running MAE is not kept: no MAE train curve)
            columns = [c for c in (f"train_{metric}", f"valid_{metric}") if c in group and group[c].notna().any()]
            curve = group.groupby("epoch")[columns].mean()
            color = MODEL_COLORS.get(model)
            label = group["model_name"].iloc[0]
            if f"train_{metric}" in columns:
                running = str(group.get("train_error", pd.Series([""])).iloc[0]).startswith("running")
                ax.plot(curve.index, curve[f"train_{metric}"], color=color, marker=".",
                        label=f"{label} train{' (running, dropout on)' if running else ''}")
            ax.plot(curve.index, curve[f"valid_{metric}"], color=color, ls="--", marker=".",
                    label=f"{label} validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.set_title(label_of(df, name) + ("" if recipe is None else f"\nrecipe {recipe}"))
    figure_legend(fig, axes)
    fig.suptitle(f"{title}\n{stamp(df)}" if title else stamp(df))
    return fig


def comparison_figure(df: pd.DataFrame, paper: pd.DataFrame | None, metrics: dict, *, title: str = "",
                      scale: float = 1.0) -> plt.Figure:
    """Dot plot per dataset and metric: ours (blue, 95% interval) and the paper (hollow orange
    diamond). ``metrics``: {label: (our column, paper column)}."""
    if df.empty:
        return nothing()
    datasets = datasets_in(df)
    fig, axes = plt.subplots(len(metrics), len(datasets), squeeze=False,
                             figsize=(max(6.0, 4.6 * len(datasets)),
                                      0.45 * df.model.nunique() * len(metrics) * max(1, len(recipes_of(df))) + 1.6))
    for col, name in enumerate(datasets):
        part = df[df.dataset == name]
        models = list(dict.fromkeys(part.model.tolist()))
        names = [part.loc[part.model == m, "model_name"].iloc[0] for m in models]
        y = np.arange(len(models))
        for row, (label, (ours_col, paper_col)) in enumerate(metrics.items()):
            ax = axes[row, col]
            p = np.full(len(models), np.nan)
            if paper is not None and paper_col in paper:
                p = paper[paper.dataset == name] if "dataset" in paper else paper
                p = p.set_index("model").reindex(models)[paper_col].to_numpy(dtype=float)
                if not np.all(np.isnan(p)):
                    ax.plot(p, y - 0.12, "D", mfc="none", mec=PAPER, mew=1.8, ls="none", label="paper")
            for n, (recipe, rows) in enumerate(by_recipe(part)):
                s = summarize(rows, ["model"], [c for c, _ in metrics.values()]).set_index("model").reindex(models)
                mean = s[f"{ours_col}_mean"].to_numpy() * scale
                half = s[f"{ours_col}_half"].to_numpy() * scale
                has_bars = not np.all(np.isnan(half))
                color, offset = OURS if recipe is None else RECIPE_COLORS.get(recipe, OURS), 0.12 + 0.2 * n
                ax.errorbar(mean, y + offset, xerr=np.nan_to_num(half) if has_bars else None, fmt="o",
                            color=color, capsize=3, label=f"{ours_label(recipe)} ({'mean ± 95% CI' if has_bars else '1 seed'})")
                for yi, m, pv in zip(y, mean, p):   # a model without a number here (diverged, not run) says so
                    if np.isnan(m):
                        where = pv if not np.isnan(pv) else np.nanmean(p) if not np.all(np.isnan(p)) else 0.0
                        ax.annotate(f"{ours_label(recipe)}: n/a", (where, yi + offset), color=color,
                                    fontsize="small", va="center")
            ax.set_yticks(y, names)
            ax.invert_yaxis()
            ax.set_xlabel(label)
            ax.set_title(label_of(df, name))
    figure_legend(fig, axes)
    fig.suptitle(f"{title}\n{stamp(df)}" if title else stamp(df))
    return fig


def factor_figure(distribution: pd.DataFrame, highlight=(), title: str = "") -> plt.Figure:
    """Distribution of each field's input-aware factor over the test set (log scale), one panel per
    recipe; FM corresponds to m = 1 everywhere (grey line). Highlighted fields are the Table 1 ones."""
    if distribution.empty:
        return nothing()
    parts = by_recipe(distribution)
    fig, axes = plt.subplots(len(parts), 1, figsize=(10, 3.6 * len(parts)), squeeze=False)
    positive = distribution.factor[distribution.factor > 0]
    low = 10 ** math.floor(math.log10(max(positive.min(), 1e-6))) if len(positive) else 0.1
    limits = (min(low, 0.1), 10 ** math.ceil(math.log10(max(positive.max(), 10.0))) if len(positive) else 10)
    for ax, (recipe, d) in zip(axes[:, 0], parts):
        d = d.copy()
        d["label"] = [f"x{f}\n{n}" for f, n in zip(d.field, d.field_name)]
        order = list(dict.fromkeys(d.sort_values("field").label))
        highlight_labels = {lab for lab in order if int(lab.split("\n")[0][1:]) in set(highlight)}
        palette = {lab: (OURS if lab in highlight_labels else "#bbbbbb") for lab in order}
        sns.boxplot(data=d, x="label", y="factor", hue="label", order=order, palette=palette, legend=False,
                    ax=ax, fliersize=1.5, linewidth=1)
        ax.axhline(1.0, color="#555555", lw=1, ls=":", label="FM (m = 1)")
        ax.set_yscale("log")
        ax.set_ylim(*limits)
        ax.yaxis.set_major_locator(LogLocator(base=10, numticks=12))    # one tick per decade
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("field")
        ax.tick_params(axis="x", labelsize="small")
        ax.set_ylabel("input-aware factor $m_{x,i}$")
        if recipe is not None:
            ax.set_title(f"recipe {recipe}")
    figure_legend(fig, axes)
    fig.suptitle(f"{title}\n{stamp(distribution)}" if title else stamp(distribution))
    return fig


def scaling_figure(df: pd.DataFrame, paper: pd.DataFrame, metric: str = "test_rmse", title: str = "") -> plt.Figure:
    """Test error against the number of training instances (log scale), mean and 95% interval over
    seeds per model; the paper's value at the whole training set as an open marker (its FM is LibFM)."""
    if df.empty:
        return nothing()
    datasets = datasets_in(df)
    fig, axes = plt.subplots(1, len(datasets), figsize=(7.6 * len(datasets), 4.0), squeeze=False)
    palette = dict(zip(df.model.unique(), sns.color_palette("dark", n_colors=df.model.nunique())))
    for ax, name in zip(axes[0], datasets):
        part = df[df.dataset == name]
        stats = summarize(part, panels(part, "model", "train_instances"), [metric])
        for keys, line in stats.groupby(panels(part, "model"), sort=False):
            recipe, model = keys if len(keys) == 2 else (None, keys[0])
            ax.errorbar(line.train_instances, line[f"{metric}_mean"], yerr=line[f"{metric}_half"].fillna(0),
                        marker=RECIPE_MARKERS.get(recipe, "o"), color=palette[model], ls=RECIPE_LINES.get(recipe, "-"),
                        capsize=3, ms=11 if recipe == "legacy" else 6, mec="black" if recipe == "legacy" else None, label=f"{DISPLAY_NAMES.get(model, model)}, "
                        + ("30% pool (earlier records, recipe legacy)" if recipe == "legacy" else ours_label(recipe)))
        for model in part.model.unique():
            ref = paper[(paper.dataset == name) & (paper.model == ("libfm" if model == "fm" else model))]
            if len(ref):
                ax.scatter([(part.train_instances / part.train_fraction).max()], [ref[metric.split("_")[1].upper()].iloc[0]],
                           s=110, marker="D", facecolors="none", edgecolors=palette[model], linewidths=1.5,
                           label=f"{DISPLAY_NAMES.get(model, model)} (paper{', LibFM' if model == 'fm' else ''})")
        ax.set_xscale("log")
        sizes = sorted(part.loc[part.recipe != "legacy", "train_instances"].unique()) if "recipe" in part \
            else sorted(part.train_instances.unique())
        ax.set_xticks(sizes, [f"{n:,}" for n in sizes], minor=False)    # the sizes run, not powers of ten
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("training instances (log scale)")
        ax.set_ylabel(metric_label(metric))
        ax.set_title(label_of(df, name))
    figure_legend(fig, axes)
    fig.suptitle(f"{title}\n{stamp(df)}" if title else stamp(df))
    return fig
