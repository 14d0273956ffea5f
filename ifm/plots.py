"""The book's figure style and the helpers that put our numbers beside the paper's.

Importing this module sets one seaborn style for every figure (`use_style`). Conventions
in every figure: ours in blue with 95% t-intervals over seeds as error bars (none with one
seed), the paper in orange: a dashed line where the paper gives only a shape or a best
setting, a hollow diamond where it gives a number. Every figure's title names the profile,
device and seeds that produced it; `caption` says the same in words, with the data used.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter, NullLocator
import numpy as np
import pandas as pd
import seaborn as sns

from ifm.models import DISPLAY_NAMES
from ifm.registry import DATASET_NAMES
from ifm.rules import matched, sweep_judgements
from ifm.stats import by_recipe, panels, recipes_of, summarize, t_interval

OURS = "#0173b2"      # seaborn colorblind blue
PAPER = "#de8f05"     # seaborn colorblind orange
MODEL_COLORS = {"fm": "#949494", "ifm": OURS}
RECIPE_COLORS = {"paper": OURS, "code": "#029e73", "legacy": "#949494"}   # ours under each recipe
RECIPE_LINES = {"paper": "-", "code": "--", "legacy": ":"}
RECIPE_MARKERS = {"paper": "o", "code": "s", "legacy": "X"}
METRIC_LABELS = {"rmse": "RMSE", "mae": "MAE", "auc": "AUC", "logloss": "log loss", "auc_pct": "AUC (%)"}
STYLE = dict(context="notebook", style="whitegrid", palette="colorblind", font_scale=0.9,
             rc={"figure.dpi": 100, "savefig.dpi": 100, "axes.titlesize": "medium",
                 "figure.titlesize": "medium", "legend.fontsize": "small", "figure.constrained_layout.use": True})


def use_style() -> None:
    """Set the one style of the book's figures (called on import)."""
    sns.set_theme(**STYLE)


use_style()


# --------------------------------------------------------------------------- words
def _ours(recipe) -> str:
    return "ours" if recipe is None else f"ours, recipe {recipe}"


def metric_label(column: str) -> str:
    split, _, metric = column.partition("_")
    names = {"valid": "validation", "test": "test", "train": "training"}
    return f"{names.get(split, split)} {METRIC_LABELS.get(metric, metric)}"


def _seeds_text(df) -> str:
    """The seeds behind the numbers shown (those of the rows), and those asked for when more."""
    asked = list(df.attrs.get("seeds") or [])
    seeds = sorted(df["seed"].unique().tolist()) if "seed" in df and len(df) else asked
    text = f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({', '.join(str(s) for s in seeds)})"
    if "seed" in df and set(asked) - set(seeds):
        text += f" of the {len(asked)} asked for ({', '.join(str(s) for s in asked)})"
    return text


def _devices_text(df) -> str:
    if "device" not in df or not len(df):
        return str(df.attrs.get("device", "?"))
    if "device_name" not in df:   # the overview: one "device (name)" text per row
        return "; ".join(sorted({d for d in df.device if d}))
    pairs = df[["device", "device_name"]].drop_duplicates().itertuples(index=False)
    return "; ".join(f"{d} ({n})" for d, n in pairs)


SMOKE_TITLE = "SMOKE CHECK, not a reproduction | "


def stamp(df) -> str:
    """One line for a figure title: profile, recipe, device, seeds (a smoke re-run says it is one)."""
    return ((SMOKE_TITLE if df.attrs.get("profile") == "smoke" else "")
            + f"ours: profile {df.attrs.get('profile', '?')}, recipe {df.attrs.get('recipe', '?')} | "
            f"{_devices_text(df)} | {_seeds_text(df)}")


LEGACY_NOTE = ("Recipe `legacy` marks the book's earlier records, which predate the two recipes and the "
               "paper's Frappe split: 30% of Frappe (NFM's validation and test files) re-split 8:1:1, with its "
               "own validation and test sets, trained with the settings of recipe `legacy` (Adagrad "
               "accumulator 0.1, stop after 5 epochs without a new best, NFM's two dropouts swapped). They "
               "stay in the book only as the smallest point of the data-scaling study.")


DATA_PAGE = "../book/data.html"    # the one page on the data and runs (a link from any page's output)


def caption(df, extra: str = "") -> "IPython.display.Markdown":
    """A short Markdown line under a figure or table: profile, recipes, seeds, data kind, device,
    and whether every run the page needs is in the records (which are missing, and the command
    that makes them); the rest of the provenance is on the one "Data and runs" page it links to."""
    from IPython.display import Markdown

    recipe = df.attrs.get("recipe", "?")
    data = ""
    if "dataset_label" in df and len(df):
        data = " Data: " + "; ".join(dict.fromkeys(df["dataset_label"].dropna())) + "."
    lines = [f"**Ours** — profile `{df.attrs.get('profile', '?')}`, recipe{'s' if ',' in str(recipe) else ''} "
             f"`{recipe}`, {_seeds_text(df)}, device {_devices_text(df)}.{data} Where the data and runs come "
             f"from: [Data and runs]({DATA_PAGE})."]
    if df.attrs.get("profile") == "smoke":
        lines.insert(0, "**Smoke check, not a reproduction.**")
    if "legacy" in str(recipe):
        lines.append(LEGACY_NOTE)
    differences = df.attrs.get("profile_differences") or []
    if differences:
        lines.append("Not the paper's settings: " + "; ".join(differences) + ".")
    missing = df.attrs.get("missing") or []
    if not missing:
        lines.append("**Complete:** every run this page asks for is in the records.")
    else:
        examples = list(dict.fromkeys(m.split(" (")[0] for m in missing))
        lines.append(f"**Incomplete:** {len(missing)} run(s) of this page are not in the records yet, e.g. "
                     + "; ".join(examples[:3]) + f". {fill_command(df)} trains them (`--list` shows them all).")
    if extra:
        lines.append(extra)
    return Markdown(" ".join(lines))


def require_runs(df, notebook: str):
    """A page with none of its runs in the records says so, with the command that fills it (its
    figures and tables then show the paper alone); a page whose study found nothing to run and
    nothing missing is an error."""
    if len(df):
        return None
    missing = df.attrs.get("missing") or []
    command = fill_command(df)
    if not missing:
        raise RuntimeError(f"no run of this page is in the records of profile {df.attrs.get('profile', '?')!r} and "
                           f"none is missing: the study asked for no runs; make them with {command}")
    return markdown(f"**No run of this page is in the records yet** ({len(missing)} needed, e.g. "
                    f"{'; '.join(missing[:3])}): its tables show the paper's numbers alone. {command} makes "
                    f"them (or `python -m ifm reproduce --profile {df.attrs.get('profile', 'paper')} --only {notebook}`, "
                    "or this notebook re-run with train_missing=True).")


def fill_command(df) -> str:
    """The command that trains a page's missing runs: `python -m ifm fill` for its study and recipes."""
    from ifm.fill import FILL_STUDY
    from ifm.settings import RECIPES

    study = FILL_STUDY.get(df.attrs.get("study", ""))
    named = [r.strip() for r in str(df.attrs.get("recipe", "")).split(",")]
    recipe = ",".join(r for r in named if r in RECIPES) or ",".join(RECIPES)   # not the legacy points
    return (f"`python -m ifm fill --profile {df.attrs.get('profile', 'paper')} --recipe {recipe}"
            + (f" --study {study}" if study else "") + "`")


def _nothing(what: str = "figure"):
    """What a figure or table shows when none of its runs are in the records."""
    return markdown(f"*(no run of this {what} is in the records yet: see the note above)*")


def runs_table(df: pd.DataFrame, columns) -> pd.DataFrame:
    """A page's runs, one row each: its recipe, then `columns` (those the rows have), errors to 4
    decimals and seconds whole."""
    out = df[[c for c in ["recipe", *columns] if c in df.columns]].copy()
    for c in out.columns:
        if c.endswith("seconds") or c == "samples_per_second":
            out[c] = out[c].round(0).astype("Int64")
        elif pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].round(4)
    return out


def fmt(mean: float, half: float = float("nan"), digits: int = 4) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    if half is None or math.isnan(half):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


# --------------------------------------------------------------------------- tables
def side_by_side(ours: pd.DataFrame, paper: pd.DataFrame, index, metrics: dict, digits: int = 4,
                 scale: float = 1.0, paper_scale: float = 1.0) -> pd.DataFrame:
    """Paper and ours in adjacent columns (ours once per recipe when the rows hold several).

    ``ours``: raw rows (one per run); they are summarised here (mean ± 95% t half-width).
    ``paper``: the paper's values, same ``index`` columns. ``metrics``: {title: (our column,
    paper column[, digits])}. ``scale`` multiplies ours (e.g. 100 for AUC in %).
    """
    index = list(index)
    metrics = {k: (v[0], v[1], v[2] if len(v) > 2 else digits) for k, v in metrics.items()}
    ours_cols = [v[0] for v in metrics.values()]
    recipes = recipes_of(ours)
    summary = summarize(ours, index + (["recipe"] if recipes else []), ours_cols)
    if summary.empty:
        summary = pd.DataFrame(columns=index + [f"{c}_{k}" for c in ours_cols for k in ("mean", "half", "n")])
    keys = summary[index]
    if paper is not None and len(paper):   # a row the paper has and ours lack shows ours as n/a
        shown = paper[paper[index[0]].isin(ours[index[0]])] if len(ours) else paper
        keys = pd.concat([keys, shown[index]])
    keys = keys.drop_duplicates().reset_index(drop=True)
    merged = keys.merge(paper, on=index, how="left") if paper is not None and len(paper) else keys
    order = list(dict.fromkeys(ours[index[-1]].tolist() + merged[index[-1]].tolist()))
    merged["_order"] = merged[index[-1]].map({k: i for i, k in enumerate(order)})
    merged = merged.sort_values([*index[:-1], "_order"]).reset_index(drop=True)
    mine = {r: merged[index].merge(summary if r is None else summary[summary.recipe == r], on=index, how="left")
            for r in (recipes or [None])}
    out = pd.DataFrame(index=pd.MultiIndex.from_frame(merged[index]))
    for title, (ours_col, paper_col, digits) in metrics.items():
        paper_values = merged[paper_col] if paper_col in merged else pd.Series(np.nan, index=merged.index)
        out[(title, "paper")] = [fmt(v * paper_scale if pd.notna(v) else float("nan"), digits=digits)
                                 for v in paper_values]
        for recipe, part in mine.items():
            out[(title, _ours(recipe))] = [fmt(m * scale, h * scale, digits) for m, h in
                                           zip(part[f"{ours_col}_mean"], part[f"{ours_col}_half"])]
    for recipe, part in mine.items():
        out[("seeds", recipe or "")] = pd.to_numeric(part[f"{ours_cols[0]}_n"]).fillna(0).astype(int).to_numpy()
    out.columns = pd.MultiIndex.from_tuples(out.columns)
    return out


def significance_table(sig: pd.DataFrame) -> pd.DataFrame:
    """Table 3's tests laid out for the page: per reading, dataset, baseline and metric, the shared
    seeds, IFM − baseline with its 95% interval, p and Holm's p across the baselines, and the verdict."""
    if sig.empty:
        return _nothing("table")
    out = pd.DataFrame({
        "recipe": sig.recipe, "data": sig.dataset.map(lambda d: DATASET_NAMES.get(d, d)),
        "baseline": sig.baseline_name, "metric": sig.metric.map(metric_label),
        "shared seeds": sig.n_pairs,
        "IFM − baseline (95% CI)": [fmt(d, h) for d, h in zip(sig.mean_difference, sig.ci_half)],
        "p": [f"{v:.2g}" if v == v else "n/a" for v in sig.p_value],
        "Holm p": [f"{v:.2g}" if v == v else "n/a" for v in sig.p_holm], "verdict": sig.verdict})
    return out.set_index(["recipe", "data", "baseline", "metric"] if sig.recipe.notna().all()
                         else ["data", "baseline", "metric"])


def rename_index(table: pd.DataFrame, names: dict | None = None) -> pd.DataFrame:
    """Readable index labels: dataset and model ids -> display names."""
    from ifm.models import DISPLAY_NAMES

    names = {**DATASET_NAMES, **DISPLAY_NAMES, **(names or {})}
    table = table.copy()
    table.index = table.index.map(lambda k: tuple(names.get(v, v) for v in k) if isinstance(k, tuple)
                                  else names.get(k, k))
    table.index.names = [n.replace("_", " ") if n else n for n in table.index.names]
    return table


def best_setting_table(df: pd.DataFrame, option: str, paper_best: dict, grid=None) -> pd.DataFrame:
    """Per reading and dataset, what `ifm.rules.sweep_judgements` found: the paper's best and ours
    over the seeds every setting shares, the set S of settings not significantly worse than ours,
    the settings significantly worse than the paper's, the seed noise at the paper's setting, and
    the verdict. It only lays out the judgement; the rule is in `ifm.rules`."""
    if df.empty:
        return pd.DataFrame({"paper's best": paper_best}).rename_axis("data")
    rows = []
    for recipe, name, label, j, sd, sd_seeds in sweep_judgements(df, option, paper_best, grid or df.attrs.get("grid")):
        rows.append({
            "data": label + ("" if recipe is None else f", recipe {recipe}"),
            "paper's best": j.paper, "our best": j.best if j.best is not None else "n/a",
            "shared seeds": len(j.seeds),
            "ours at the paper's": fmt(j.means.get(j.paper, float("nan"))),
            "ours at our best": fmt(j.means.get(j.best, float("nan"))),
            "seed SD at the paper's": "n/a" if sd != sd else f"{sd:.4f} ({len(sd_seeds)} seeds)",
            "S: not worse than our best": ", ".join(str(v) for v in j.in_s) or "n/a",
            "worse than the paper's": ", ".join(str(v) for v in j.worse_than_paper)
            if j.in_s else "n/a",
            "verdict": j.verdict + (f" ({len(j.missing)} settings not run)" if j.missing else "")})
    out = pd.DataFrame(rows).set_index("data")
    out.attrs.update(df.attrs)
    return out


def _datasets(df):
    return list(dict.fromkeys(df["dataset"].tolist()))


def _label(df, dataset):
    return df.loc[df.dataset == dataset, "dataset_label"].iloc[0]


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
    validation RMSE on those seeds (`ifm.rules.sweep_judgements`), the dashed orange line the
    paper's best setting (the paper gives no numbers)."""
    if df.empty:
        return _nothing()
    datasets = _datasets(df)
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
                    ax.annotate(f"{_ours(recipe)}: no seed shared by all settings", (0.02, 0.95 - 0.08 * n),
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
                            label=f"{_ours(recipe)}: mean over the seeds every setting shares (bars: 95% CI)")
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
            ax.set_title(_label(df, name) + ("\nshared seeds: " + ", ".join(seeds_shown) if seeds_shown else ""),
                         fontsize="small")
    figure_legend(fig, axes)
    stamp_text = ((SMOKE_TITLE if df.attrs.get("profile") == "smoke" else "")
                  + f"ours: profile {df.attrs.get('profile', '?')}, recipe {df.attrs.get('recipe', '?')} | "
                  f"{_devices_text(df)}")
    fig.suptitle(f"{title}\n{stamp_text}" if title else stamp_text)
    return fig


def convergence_figure(df: pd.DataFrame, metric: str = "rmse", title: str = "") -> plt.Figure:
    """Per-epoch training (solid) and validation (dashed) error of FM and IFM, mean over seeds.
    The paper's Fig. 6 gives only the shape (IFM lower and faster), so there is no paper line."""
    if df.empty:
        return _nothing()
    datasets, parts = _datasets(df), by_recipe(df)
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
        ax.set_title(_label(df, name) + ("" if recipe is None else f"\nrecipe {recipe}"))
    figure_legend(fig, axes)
    fig.suptitle(f"{title}\n{stamp(df)}" if title else stamp(df))
    return fig


def comparison_figure(df: pd.DataFrame, paper: pd.DataFrame | None, metrics: dict, *, title: str = "",
                      scale: float = 1.0) -> plt.Figure:
    """Dot plot per dataset and metric: ours (blue, 95% interval) and the paper (hollow orange
    diamond). ``metrics``: {label: (our column, paper column)}."""
    if df.empty:
        return _nothing()
    datasets = _datasets(df)
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
                            color=color, capsize=3, label=f"{_ours(recipe)} ({'mean ± 95% CI' if has_bars else '1 seed'})")
                for yi, m, pv in zip(y, mean, p):   # a model without a number here (diverged, not run) says so
                    if np.isnan(m):
                        where = pv if not np.isnan(pv) else np.nanmean(p) if not np.all(np.isnan(p)) else 0.0
                        ax.annotate(f"{_ours(recipe)}: n/a", (where, yi + offset), color=color,
                                    fontsize="small", va="center")
            ax.set_yticks(y, names)
            ax.invert_yaxis()
            ax.set_xlabel(label)
            ax.set_title(_label(df, name))
    figure_legend(fig, axes)
    fig.suptitle(f"{title}\n{stamp(df)}" if title else stamp(df))
    return fig


def factor_figure(distribution: pd.DataFrame, highlight=(), title: str = "") -> plt.Figure:
    """Distribution of each field's input-aware factor over the test set (log scale), one panel per
    recipe; FM corresponds to m = 1 everywhere (grey line). Highlighted fields are the Table 1 ones."""
    if distribution.empty:
        return _nothing()
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


def factor_table(ours: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Table 1 side by side: per instance, the paper's and our FM error, IFM factors, IFM error
    (our instances once per recipe when the rows hold several)."""
    if ours.empty:
        return paper.set_index("instance")
    cols = [c for c in ours.columns if c.startswith("ifm_factor_x")]
    pairs = [("FM |ŷ − y|", "fm_error")] + [(f"IFM m of {c.split('_')[-1]}", c) for c in cols] + \
        [("IFM |ŷ − y|", "ifm_error")]
    feature_cols = [c for c in ours.columns if c.startswith("feature_x")]
    p = paper.set_index("instance")
    tables = []
    seeds = "seed" in ours and ours.seed.nunique() > 1
    for recipe, o in by_recipe(ours):
        instances = o["instance"].to_numpy()
        out = pd.DataFrame(index=pd.RangeIndex(len(o)))
        for title, col in pairs:
            out[(title, "paper")] = [fmt(v, digits=2) for v in (p[col].reindex(instances) if col in p
                                                                 else [float("nan")] * len(o))]
            out[(title, "ours")] = [fmt(v, digits=2) for v in o[col]]
        out[("our instance", "test row")] = o["test_index"].to_numpy()
        out[("our instance", "feature ids")] = [", ".join(str(v) for v in row) for row in o[feature_cols].to_numpy()]
        out[("our instance", "chosen as")] = o["chosen_as"].to_numpy()
        levels = ([("recipe", [recipe] * len(o))] if recipe is not None else []) + \
            ([("seed", o["seed"].tolist())] if seeds else []) + [("instance", instances.tolist())]
        out.index = pd.MultiIndex.from_arrays([v for _, v in levels], names=[n for n, _ in levels]) \
            if len(levels) > 1 else pd.Index(instances, name="instance")
        tables.append(out)
    out = pd.concat(tables)
    out.columns = pd.MultiIndex.from_tuples(out.columns)
    return out


def _precision(quantity: str) -> tuple[int, float, str]:
    """(decimals, scale, unit) a quantity of the overview is printed with, as the paper prints it:
    AUC in % with 2 decimals, relative improvements in % with 1, errors with 4."""
    if "AUC" in quantity:
        return 2, 1.0, ""
    if "relative improvement" in quantity:
        return 1, 100.0, "%"
    return 4, 1.0, ""


def overview_table(ov: pd.DataFrame) -> pd.DataFrame:
    """The results page: one row per paper number, paper and ours side by side, each quantity at
    the paper's precision (AUC and improvements in %)."""
    def show(v, quantity):
        if isinstance(v, str):
            return v
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "n/a"
        if isinstance(v, (int, np.integer)) or (isinstance(v, float) and v.is_integer() and abs(v) < 100
                                                 and "relative" not in quantity):
            return f"{v:g}"
        digits, scale, unit = _precision(quantity)
        if unit == "%":         # the paper prints its improvements as whole percents (Table 2: 30%)
            digits = 0
        return f"{scale * v:.{digits}f}{unit}"

    def ours(v, h, quantity):
        if isinstance(v, str) or pd.isna(h):
            return show(v, quantity)
        digits, scale, unit = _precision(quantity)
        return f"{scale * v:.{digits}f} ± {scale * h:.{digits}f}{unit}"

    out = pd.DataFrame({
        "item": ov["item"], "data": ov["dataset_label"], "recipe": ov["recipe"], "quantity": ov["quantity"],
        "paper": [show(v, q) for v, q in zip(ov["paper"], ov["quantity"])],
        "ours": [ours(v, h, q) for v, h, q in zip(ov["ours"], ov["interval"], ov["quantity"])],
        "seeds": ov["n_seeds"]})
    return out.set_index(["item", "data", "recipe", "quantity"])


def datasets_table(ov: pd.DataFrame):
    """The data page: one row per dataset the runs used (`overview.datasets_of`)."""
    rows = ov.attrs.get("datasets") or []
    return pd.DataFrame(rows).style.hide(axis="index") if rows else _nothing("table")    # a Styler: no cut cells


def coverage_table(ov: pd.DataFrame):
    """The data page: per study, the runs read and missing, seeds, devices and hours."""
    return pd.DataFrame(ov.attrs["coverage"]).style.hide(axis="index").format({"hours": "{:.1f}"})


def ranking_table(ranks: pd.DataFrame) -> pd.DataFrame:
    """The results page's ranking agreement with readable headers."""
    if ranks.empty:
        return _nothing("table")
    out = pd.DataFrame({"item": ranks["item"], "recipe": ranks["recipe"], "data": ranks["dataset_label"],
                        "metric": ranks["metric"], "seeds": ranks["seeds"], "paper's order": ranks["paper_order"],
                        "our order": ranks["our_order"], "Kendall's τ": ranks["kendall_tau"].map(lambda v: f"{v:.2f}"),
                        "same best": ranks["same_best"].map({True: "yes", False: "no"})})
    return out.set_index(["item", "recipe", "data", "metric"])


def convergence_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Best validation error of FM and IFM per dataset with the epoch it was reached."""
    if summary.empty:
        return _nothing("table")
    out = pd.DataFrame({
        "data": summary.dataset_label, "recipe": summary.get("recipe", "?"), "model": summary.model_name,
        "best validation RMSE": [fmt(m, h) for m, h in zip(summary.valid_rmse, summary.valid_rmse_half)],
        "best validation MAE": [fmt(m, h) for m, h in zip(summary.valid_mae, summary.valid_mae_half)],
        "training RMSE there": [fmt(m, h) for m, h in zip(summary.train_rmse, summary.train_rmse_half)],
        "validation RMSE after epoch 1": [fmt(v) for v in summary.first_epoch_valid_rmse],
        "best epoch (mean)": summary.best_epoch.round(1), "epochs run": summary.epochs_run,
        "training error": summary.get("train_error", "?"), "seeds": summary.n_seeds})
    return out.set_index(["data", "recipe", "model"])


VERDICT_COLOURS = {"reproduced": "#d8f0d8", "consistent, not separated": "#e8f0f8", "partly": "#fdf0c8",
                   "not reproduced": "#f6d0cc", "too few seeds": "#f2f2f2", "cannot be tested here": "#e6e6e6",
                   "not run yet": "#ffffff"}


READINGS = {"paper": "the paper's text (recipe paper)", "code": "the released code (recipe code)"}


def scorecard_table(card: pd.DataFrame, testable: bool = True):
    """The claims the paper's data can test here (or, with `testable=False`, the others, shown
    apart): the claim and the paper's evidence, then under each reading our headline number and its
    verdict with the seeds all compared runs share, the verdict cell coloured by its verdict."""
    if card.empty:
        return card
    rows = card[card.testable == testable]
    recipes = [c[len("verdict ("):-1] for c in card.columns if c.startswith("verdict (")]
    out = pd.DataFrame({("claim", ""): rows.claim + ("" if testable else " — " + rows.data),
                        ("the paper", ""): rows.paper})
    for r in recipes:
        out[(READINGS.get(r, r), "ours")] = rows[f"ours ({r})"]
        out[(READINGS.get(r, r), "verdict")] = [f"{v} ({n} seed{'s' if n != 1 else ''})" if n else v
                                                for v, n in zip(rows[f"verdict ({r})"], rows[f"seeds ({r})"])]
    out.columns = pd.MultiIndex.from_tuples(out.columns)
    verdict_columns = [c for c in out.columns if c[1] == "verdict"]
    return (out.style.hide(axis="index")
            .map(lambda v: f"background-color: {VERDICT_COLOURS.get(str(v).split(' (')[0], 'white')}",
                 subset=verdict_columns))


def evidence_table(card: pd.DataFrame) -> pd.DataFrame:
    """Behind each verdict of the scorecard: per claim, dataset and reading, every test with its
    difference, interval and Holm-corrected p, and the seeds shared."""
    recipes = [c[len("verdict ("):-1] for c in card.columns if c.startswith("verdict (")]
    rows = [{"claim": r["claim"], "data": r["data"], "reading": f"recipe {recipe}",
             "verdict": r[f"verdict ({recipe})"], "evidence": r[f"details ({recipe})"]}
            for _, r in card.iterrows() for recipe in recipes]
    return pd.DataFrame(rows).set_index(["claim", "data", "reading"])


def markdown(text: str):
    """A paragraph of Markdown in a page (the rules and notes the library writes)."""
    from IPython.display import Markdown
    return Markdown(text)


def scaling_figure(df: pd.DataFrame, paper: pd.DataFrame, metric: str = "test_rmse", title: str = "") -> plt.Figure:
    """Test error against the number of training instances (log scale), mean and 95% interval over
    seeds per model; the paper's value at the whole training set as an open marker (its FM is LibFM)."""
    if df.empty:
        return _nothing()
    datasets = _datasets(df)
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
                        + ("30% pool (earlier records, recipe legacy)" if recipe == "legacy" else _ours(recipe)))
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
        ax.set_title(_label(df, name))
    figure_legend(fig, axes)
    fig.suptitle(f"{title}\n{stamp(df)}" if title else stamp(df))
    return fig
