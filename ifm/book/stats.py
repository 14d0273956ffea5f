"""Seeds into numbers: means with Student-t intervals, summaries per group, and the significance
table of Table 3 (its tests from `ifm.book.rules`)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ifm.models import DISPLAY_NAMES

ALPHA = 0.05


def t_interval(values, confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of the two-sided Student-t interval; half-width NaN for n < 2."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan")
    if len(v) < 2:
        return float(v.mean()), float("nan")
    half = stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(half)


def mean_interval(values, digits: int = 4) -> str:
    """"mean ± half-width" of `t_interval` (the mean alone for one value; "not run" for none)."""
    mean, half = t_interval(values)
    if math.isnan(mean):
        return "not run"
    return f"{mean:.{digits}f}" + ("" if math.isnan(half) else f" ± {half:.{digits}f}")


def panels(df: pd.DataFrame, *columns) -> list:
    """The columns that split a study's rows into independent comparisons: the recipe (when the
    frame names one) and then `columns` (e.g. the dataset)."""
    return (["recipe"] if "recipe" in df.columns else []) + list(columns)


def recipes_of(df) -> list:
    """The recipes of a frame's rows, in order of appearance, when there are several ([] for one:
    the page's caption names it)."""
    recipes = list(dict.fromkeys(df["recipe"].tolist())) if "recipe" in df and len(df) else []
    return recipes if len(recipes) > 1 else []


def by_recipe(df) -> list:
    """[(recipe, rows)]: one part per recipe of a frame that holds several, else [(None, df)]."""
    recipes = recipes_of(df)
    return [(r, df[df.recipe == r]) for r in recipes] if recipes else [(None, df)]


def summarize(df: pd.DataFrame, by, metrics, confidence: float = 0.95) -> pd.DataFrame:
    """Mean, 95% t-interval (low, high, half-width), std and n per group, one row per group."""
    rows = []
    for keys, group in df.groupby(list(by), sort=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        row = dict(zip(by, keys))
        for metric in metrics:
            values = group[metric].to_numpy(dtype=float)
            mean, half = t_interval(values, confidence)
            row.update({f"{metric}_mean": mean, f"{metric}_half": half, f"{metric}_low": mean - half,
                        f"{metric}_high": mean + half,
                        f"{metric}_std": float(np.nanstd(values, ddof=1)) if np.sum(~np.isnan(values)) > 1
                        else float("nan"), f"{metric}_n": int(np.sum(~np.isnan(values)))})
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs.update(df.attrs)
    return out


def significance(df: pd.DataFrame, metrics=("test_mae", "test_rmse"), reference: str = "ifm",
                 alpha: float = ALPHA, lower_is_better: bool = True) -> pd.DataFrame:
    """The paper's test of Table 3, on matched seeds: is `reference` better than each other model?

    Per recipe, dataset and metric, only the seeds that every model has are used (`rules.matched`).
    Each baseline: the paired difference reference - baseline with its 95% t-interval, a two-sided
    paired t-test, and the p-value Holm-corrected across the baselines (`rules.holm`); significant
    when the Holm p < alpha and the reference's mean is better.
    """
    from ifm.book.rules import holm, matched, paired

    rows = []
    by = panels(df, "dataset")
    for keys, data in df.groupby(by, sort=False):
        where = dict(zip(by, keys if isinstance(keys, tuple) else (keys,)))
        if reference not in set(data.model):
            continue
        for metric in metrics:
            wide = matched(data, "model", metric)
            baselines = [m for m in wide.columns if m != reference]
            tests = [paired(wide[reference], wide[m]) for m in baselines]
            p_holm = holm([t.p for t in tests])
            for model, t, ph in zip(baselines, tests, p_holm):
                better = (t.difference < 0) if lower_is_better else (t.difference > 0)   # False when NaN
                rows.append({"recipe": where.get("recipe"), "dataset": where["dataset"], "reference": reference,
                             "baseline": model, "baseline_name": DISPLAY_NAMES.get(model, model), "metric": metric,
                             "n_pairs": t.n, "reference_mean": _mean(wide[reference]),
                             "baseline_mean": _mean(wide[model]), "mean_difference": t.difference,
                             "ci_half": t.half, "t": t.t, "p_value": t.p, "p_holm": ph, "better": bool(better),
                             "significant": bool(better and not math.isnan(ph) and ph < alpha),
                             "verdict": "not testable (< 2 pairs)" if math.isnan(ph) else
                             f"{reference.upper()} {'better' if better else 'worse'}, Holm p < {alpha:g}" if ph < alpha
                             else "no significant difference"})
    return pd.DataFrame(rows, columns=SIGNIFICANCE_COLUMNS)


SIGNIFICANCE_COLUMNS = ["recipe", "dataset", "reference", "baseline", "baseline_name", "metric", "n_pairs", "reference_mean",
                        "baseline_mean", "mean_difference", "ci_half", "t", "p_value", "p_holm", "better", "significant",
                        "verdict"]


def _mean(values) -> float:
    """Mean of the finite values; NaN (without a warning) when there are none."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else float("nan")
