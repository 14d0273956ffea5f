"""Seeds into numbers: means with Student-t intervals, the paired t-test over seeds, the
significance table of Table 3, and the best setting of a sweep."""
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


def paired_t_test(a, b) -> tuple[float, float]:
    """(t, two-sided p) of the paired t-test of a vs b (same seeds); NaN when undefined."""
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError("paired samples must have the same length")
    ok = ~(np.isnan(a) | np.isnan(b))
    a, b = a[ok], b[ok]
    d = a - b
    if len(d) < 2 or np.std(d, ddof=1) == 0:   # t undefined: too few pairs or identical differences
        return float("nan"), float("nan")
    result = stats.ttest_rel(a, b)
    return float(result.statistic), float(result.pvalue)


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
    """The paper's test of Table 3: is `reference` better than each other model?

    A two-sided paired t-test over seeds (each seed pairs the runs of the two models that
    share the split and seed); significant when p < alpha and the reference's mean is better.
    """
    rows = []
    by = panels(df, "dataset")
    for keys, data in df.groupby(by, sort=False):
        where = dict(zip(by, keys))
        ref = data[data.model == reference].set_index("seed")
        for model, other in data[data.model != reference].groupby("model", sort=False):
            other = other.set_index("seed")
            seeds = sorted(set(ref.index) & set(other.index))
            for metric in metrics:
                a, b = ref.loc[seeds, metric].to_numpy(float), other.loc[seeds, metric].to_numpy(float)
                t, p = paired_t_test(a, b)
                ma, mb = _mean(a), _mean(b)
                better = (ma < mb) if lower_is_better else (ma > mb)   # False when either is NaN
                rows.append({"recipe": where.get("recipe"), "dataset": where["dataset"], "reference": reference, "baseline": model,
                             "baseline_name": DISPLAY_NAMES.get(model, model), "metric": metric,
                             "n_pairs": len(seeds), "reference_mean": ma, "baseline_mean": mb,
                             "mean_difference": _mean(a - b), "t": t, "p_value": p, "better": bool(better),
                             "significant": bool(better and not math.isnan(p) and p < alpha),
                             "verdict": "not testable (< 2 pairs)" if math.isnan(p) else
                             f"{reference.upper()} {'better' if better else 'worse'}, p < {alpha:g}" if p < alpha
                             else "no significant difference"})
    return pd.DataFrame(rows, columns=SIGNIFICANCE_COLUMNS)


SIGNIFICANCE_COLUMNS = ["recipe", "dataset", "reference", "baseline", "baseline_name", "metric", "n_pairs", "reference_mean",
                        "baseline_mean", "mean_difference", "t", "p_value", "better", "significant", "verdict"]


def _mean(values) -> float:
    """Mean of the finite values; NaN (without a warning) when there are none."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else float("nan")


def best_by(df: pd.DataFrame, option: str, metric: str = "valid_rmse") -> pd.DataFrame:
    """Per dataset (and recipe): the sweep value with the lowest mean `metric` over seeds."""
    means = df.groupby(panels(df, "dataset", option), sort=False)[metric].mean().reset_index()
    idx = means.groupby(panels(df, "dataset"), sort=False)[metric].idxmin()
    return means.loc[idx.dropna()].reset_index(drop=True)


def seeds_per_setting(df: pd.DataFrame, option: str) -> int:
    """The seeds behind every setting of a sweep: the fewest any setting has."""
    return int(df.groupby(option)["seed"].nunique().min())
