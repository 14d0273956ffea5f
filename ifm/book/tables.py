"""The book's tables and the lines under them: ours beside the paper's, the captions that say
which runs made a page (and which are missing), and the verdict tables. They lay out what
`ifm.book` computed; no verdict is decided here.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ifm.data.registry import DATASET_NAMES
from ifm.book.rules import sweep_judgements
from ifm.book.stats import by_recipe, recipes_of, summarize
from ifm.book.words import LEGACY_NOTE, devices_text, fmt, markdown, metric_label, nothing, ours_label, seeds_text


DATA_PAGE = "../book/data.html"    # the one page on the data and runs (a link from any page's output)


def caption(df, extra: str = ""):
    """A short Markdown line under a figure or table: profile, recipes, seeds, data kind, device,
    and whether every run the page needs is in the records (which are missing, and the command
    that makes them); the rest of the provenance is on the one "Data and runs" page it links to."""
    from IPython.display import Markdown

    recipe = df.attrs.get("recipe", "?")
    data = ""
    if "dataset_label" in df and len(df):
        data = " Data: " + "; ".join(dict.fromkeys(df["dataset_label"].dropna())) + "."
    lines = [f"**Ours** — profile `{df.attrs.get('profile', '?')}`, recipe{'s' if ',' in str(recipe) else ''} "
             f"`{recipe}`, {seeds_text(df)}, device {devices_text(df)}.{data} Where the data and runs come "
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
                     + "; ".join(examples[:3]) + ". " + (f"{df.attrs['command']} trains them." if df.attrs.get("command")
                                                         else f"{fill_command(df)} trains them (`--list` shows them all)."))
    ignored = [m for m in missing if "was ignored: " in m]
    if ignored:
        lines.append(f"**Records ignored:** {len(ignored)} record(s) failed verification and are not shown: "
                     + "; ".join(ignored[:3]) + ".")
    if "diverged" in df and df["diverged"].fillna(False).astype(bool).any():
        runs = df[df["diverged"].fillna(False).astype(bool)]
        lines.append(f"**Diverged:** {len(runs)} run(s) diverged (their numbers are those of the last epoch with a "
                     "finite validation metric, or none): " + "; ".join(
                         f"{r.model_name} on {r.dataset}, seed {r.seed}" for r in runs.head(3).itertuples()) + ".")
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
    from ifm.runs.plan import FILL_STUDY
    from ifm.training.recipes import RECIPES

    study = FILL_STUDY.get(df.attrs.get("study", ""))
    named = [r.strip() for r in str(df.attrs.get("recipe", "")).split(",")]
    recipe = ",".join(r for r in named if r in RECIPES) or ",".join(RECIPES)   # not the legacy points
    return (f"`python -m ifm fill --profile {df.attrs.get('profile', 'paper')} --recipe {recipe}"
            + (f" --study {study}" if study else "") + "`")


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
            out[(title, ours_label(recipe))] = [fmt(m * scale, h * scale, digits) for m, h in
                                           zip(part[f"{ours_col}_mean"], part[f"{ours_col}_half"])]
    for recipe, part in mine.items():
        out[("seeds", recipe or "")] = pd.to_numeric(part[f"{ours_cols[0]}_n"]).fillna(0).astype(int).to_numpy()
    out.columns = pd.MultiIndex.from_tuples(out.columns)
    return out


def significance_table(sig: pd.DataFrame) -> pd.DataFrame:
    """Table 3's tests laid out for the page: per reading, dataset, baseline and metric, the shared
    seeds, IFM − baseline with its 95% interval, p and Holm's p across the baselines, and the verdict."""
    if sig.empty:
        return nothing("table")
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
    """Per reading and dataset, what `ifm.book.rules.sweep_judgements` found: the paper's best and ours
    over the seeds every setting shares, the set S of settings not significantly worse than ours,
    the settings significantly worse than the paper's, the seed noise at the paper's setting and
    the verdict; its attrs["separating_t"] holds, per row judged, the paired t a rival needs to be
    told apart (`SettingJudgement.needed_t`). It only lays out the judgement; the rule is in
    `ifm.book.rules`."""
    if df.empty:
        return pd.DataFrame({"paper's best": paper_best}).rename_axis("data")
    rows, separating = [], {}
    for recipe, name, label, j, sd, sd_seeds in sweep_judgements(df, option, paper_best, grid or df.attrs.get("grid")):
        data = label + ("" if recipe is None else f", recipe {recipe}")
        if not math.isnan(j.needed_t):
            separating[data] = j.needed_t
        rows.append({
            "data": data,
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
    out.attrs["separating_t"] = separating   # for the sentence under the table, which has no room for it
    return out


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


def factor_summary_table(fs) -> pd.DataFrame:
    """Each field's factor over the test set (all seeds of a reading pooled), readable headers."""
    d = fs.summary
    if d is None or d.empty:
        return nothing("table")
    out = pd.DataFrame({"recipe": d["recipe"], "field": [f"x{f} {n}" for f, n in zip(d.field, d.field_name)],
                        "mean": d["mean"], "SD": d["std"], "5th pct": d["p05"], "median": d["median"],
                        "95th pct": d["p95"], "share outside 0.5-2": d["share_far_from_1"]})
    return out.set_index(["recipe", "field"]).round(3)


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
    return pd.DataFrame(rows).style.hide(axis="index") if rows else nothing("table")    # a Styler: no cut cells


def coverage_table(ov: pd.DataFrame):
    """The data page: per study, the runs read and missing, seeds, devices and hours."""
    return pd.DataFrame(ov.attrs["coverage"]).style.hide(axis="index").format({"hours": "{:.1f}"})


def ranking_table(ranks: pd.DataFrame) -> pd.DataFrame:
    """The results page's ranking agreement with readable headers."""
    if ranks.empty:
        return nothing("table")
    out = pd.DataFrame({"item": ranks["item"], "recipe": ranks["recipe"], "data": ranks["dataset_label"],
                        "metric": ranks["metric"], "seeds": ranks["seeds"], "paper's order": ranks["paper_order"],
                        "our order": ranks["our_order"], "Kendall's τ": ranks["kendall_tau"].map(lambda v: f"{v:.2f}"),
                        "same best": ranks["same_best"].map({True: "yes", False: "no"})})
    return out.set_index(["item", "recipe", "data", "metric"])


def convergence_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Best validation error of FM and IFM per dataset with the epoch it was reached."""
    if summary.empty:
        return nothing("table")
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


def verdict_cell(verdict: str, seeds: int) -> str:
    """A verdict with the seeds its runs share: "not reproduced (3 seeds)" (the verdict alone for none)."""
    return f"{verdict} ({seeds} seed{'s' if seeds != 1 else ''})" if seeds else verdict


def verdict_colour(value) -> str:
    """The CSS of a verdict cell ("not reproduced (3 seeds)"): its verdict's background colour."""
    return f"background-color: {VERDICT_COLOURS.get(str(value).split(' (')[0], 'white')}"


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
        out[(READINGS.get(r, r), "verdict")] = [verdict_cell(v, n) for v, n in
                                                zip(rows[f"verdict ({r})"], rows[f"seeds ({r})"])]
    out.columns = pd.MultiIndex.from_tuples(out.columns)
    verdict_columns = [c for c in out.columns if c[1] == "verdict"]
    return (out.style.hide(axis="index")
            .map(verdict_colour, subset=verdict_columns))


def evidence_table(card: pd.DataFrame) -> pd.DataFrame:
    """Behind each verdict of the scorecard: per claim, dataset and reading, every test with its
    difference, interval and Holm-corrected p, and the seeds shared."""
    recipes = [c[len("verdict ("):-1] for c in card.columns if c.startswith("verdict (")]
    rows = [{"claim": r["claim"], "data": r["data"], "reading": f"recipe {recipe}",
             "verdict": r[f"verdict ({recipe})"], "evidence": r[f"details ({recipe})"]}
            for _, r in card.iterrows() for recipe in recipes]
    return pd.DataFrame(rows).set_index(["claim", "data", "reading"])
