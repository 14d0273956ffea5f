"""Do the paper's claims hold? One row per claim and dataset: the paper's evidence, ours (mean
over seeds, with the seeds), and a verdict by the rule in `RULE`, applied by the functions below
and never typed by hand (tests/test_scorecard.py holds each rule to constructed numbers)."""
from __future__ import annotations

import math

import pandas as pd

from ifm.experiments import Experiment
from ifm.registry import DATASET_NAMES
from ifm.paper import paper_best
from ifm.stats import ALPHA, by_recipe, paired_t_test, significance, t_interval
from ifm.studies import (activation_study, component_study, convergence_study, convergence_summary, ctr_study,
                         depth_study, dropout_study, factor_study, regression_study)

REPRODUCED, PARTLY, NOT, UNTESTABLE = "reproduced", "partly", "not reproduced", "cannot be tested here"
NOT_RUN = "not run yet"
# The row's verdict from its recipes': the data decides testability for both; a reproduction under
# either reading counts; a recipe still to run can still reproduce it; then the better of the rest.
ORDER = (UNTESTABLE, REPRODUCED, NOT_RUN, PARTLY, NOT)

RULE = (
    f"**How a verdict is reached.** A claim that one model beats another is *{REPRODUCED}* when ours "
    f"agrees in the mean and a two-sided paired t-test over seeds gives p < {ALPHA}; *{PARTLY}* when "
    f"ours agrees in the mean but not significantly (or with one seed, where no test is possible); "
    f"*{NOT}* when ours disagrees in the mean. A claimed best setting is *{REPRODUCED}* when our best "
    f"is the same; *{PARTLY}* when ours differs but our best is not better than the paper's by more "
    f"than seed noise (paired t-test, p >= {ALPHA}, or one seed); *{NOT}* when our best is better by "
    "more than seed noise. The factor-spread claim is judged on the factor's scale (IFM's factors "
    "average 1 over an instance's fields): it is *reproduced* when the 5th-95th percentile range of "
    "our factors of the field over the test set is at least as wide as the paper's three instances "
    "span (x3: 0.67-3.12, a width of 2.45; x9: 0.05-1.19, a width of 1.14), *partly* when it is at "
    f"least half as wide, *{NOT}* otherwise (a factor near 0 in almost every instance does not vary, "
    "however large the ratio of its tiny values). Any claim on data that is not the paper's (a MovieLens "
    f"stand-in, an Avazu sample) is *{UNTESTABLE}*; a claim whose runs are not in the records yet is "
    f"*{NOT_RUN}*. Each recipe (the paper's text, the authors' released code) gets its own verdict, and "
    f"the row's verdict is the first of these that either recipe has: *{UNTESTABLE}*, *{REPRODUCED}* (a "
    f"claim counts as reproduced when either reading of the method reproduces it), *{NOT_RUN}* (the "
    f"recipe still to run may yet reproduce it), *{PARTLY}*, *{NOT}*; `by` names the recipe that gives it."
)
PAPER_FACTOR_RANGES = {3: (0.67, 3.12), 9: (0.05, 1.19)}   # Table 1: each field's factors over its 3 instances

# Every claim of the paper the scorecard judges: (claim, the paper's evidence, which datasets).
CLAIMS = (
    ("IFM beats FM", "Fig. 6, Table 3: IFM's error below FM's", "regression"),
    ("IFM beats every baseline, significantly", "Table 3: IFM best in every column, all significant", "regression"),
    ("The FEN adds more over a frozen FM than a DNN or attention", "Table 2: IFM 30% / 18% against at most 21%",
     "regression"),
    ("FEN depth is best at 2 (Frappe) / 3 (MovieLens)", "Fig. 3a / 4a", "regression"),
    ("FEN dropout is best at 0.3 / 0.4", "Fig. 3b / 4b", "regression"),
    ("ReLU is the best FEN activation", "Fig. 5", "regression"),
    ("IFM converges faster than FM, to lower training and validation error", "Fig. 6", "regression"),
    ("The same feature gets very different factors", "Table 1: factors from 0.05 to 3.12", "frappe"),
    ("IFM is best on Avazu", "Table 4: IFM best AUC and log loss", "ctr"),
)


def comparison_verdict(ours_better: bool, p: float, testable: bool = True) -> str:
    """A model-beats-model claim: agreement in the mean, and significance over paired seeds."""
    if not testable:
        return UNTESTABLE
    if not ours_better:
        return NOT
    return REPRODUCED if (p == p and p < ALPHA) else PARTLY


def setting_verdict(same: bool, p: float, testable: bool = True) -> str:
    """A claimed best setting: ours the same, or different within seed noise, or clearly different."""
    if not testable:
        return UNTESTABLE
    if same:
        return REPRODUCED
    return NOT if (p == p and p < ALPHA) else PARTLY


def spread_verdict(low: float, high: float, paper: tuple = PAPER_FACTOR_RANGES[3]) -> str:
    """The same feature gets very different factors: the width of our 5th-95th percentile range
    against the width of the paper's range for the field (`paper`: its lowest and highest factor)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return UNTESTABLE
    ours, theirs = high - low, paper[1] - paper[0]
    return REPRODUCED if ours >= theirs else PARTLY if ours >= theirs / 2 else NOT


def _testable(df: pd.DataFrame, name: str) -> bool:
    """Whether a dataset's runs are on the paper's data (exact or reconstructed), not a stand-in
    or a sample."""
    labels = df.loc[df.dataset == name, "dataset_label"]
    return not any(word in labels.iloc[0] for word in ("stand-in", "sample")) if len(labels) else False


def _row(claim, evidence, dataset, label, ours, seeds, verdict) -> dict:
    return {"claim": claim, "paper": evidence, "dataset": dataset, "data": label, "ours": ours, "seeds": seeds,
            "verdict": verdict}


def _pm(values) -> str:
    """Mean ± 95% half-width over seeds (the mean alone for one seed)."""
    mean, half = t_interval(values)
    return f"{mean:.4f}" if math.isnan(half) else f"{mean:.4f} ± {half:.4f}"


def beats_fm(conv: pd.DataFrame) -> list[dict]:
    """IFM beats FM: best validation RMSE per seed (Fig. 6's runs), paired over seeds."""
    rows = []
    for name, part in conv.groupby("dataset", sort=False):
        best = part.groupby(["model", "seed"])["valid_rmse"].min().unstack(0).dropna()
        if not {"fm", "ifm"} <= set(best.columns):
            continue
        p = paired_t_test(best["ifm"], best["fm"])[1]
        ifm, fm = best["ifm"].mean(), best["fm"].mean()
        rows.append(_row(CLAIMS[0][0], CLAIMS[0][1], name, part.dataset_label.iloc[0],
                         f"best validation RMSE IFM {_pm(best['ifm'])} vs FM {_pm(best['fm'])} (p = {p:.2g})", len(best),
                         comparison_verdict(ifm < fm, p, _testable(conv, name))))
    return rows


def _partial(verdict: str, refuted: bool, run: int, expected: int | None) -> str:
    """A claim over several models with some not run: refuted already by those run (*not
    reproduced*), else *not run yet* until every expected model has runs."""
    if verdict in (UNTESTABLE, NOT) or refuted or expected is None or run >= expected:
        return verdict
    return NOT_RUN


def beats_every_baseline(reg: pd.DataFrame, baselines: int | None = None) -> list[dict]:
    """IFM beats every baseline significantly (Table 3, test RMSE), paired over the seeds both
    have; with `baselines` (how many the table has), *not run yet* while some are missing or share
    no seed with IFM, unless one compared already beats IFM. *Not run yet* too while IFM is."""
    rows = []
    sig = significance(reg, metrics=("test_rmse",))
    for name in dict.fromkeys(reg.dataset):
        runs = reg[reg.dataset == name]
        ifm, others = runs[runs.model == "ifm"], runs[runs.model != "ifm"]
        own = others.groupby("model_name", sort=False)["test_rmse"].mean()      # each baseline over its own seeds
        shown = ", ".join(f"{b} {m:.4f}" for b, m in own.items())
        label = runs.dataset_label.iloc[0]
        part = sig[(sig.dataset == name) & (sig.n_pairs > 0)] if len(sig) else sig
        if ifm.empty or part.empty:
            what = (f"IFM not run yet; baselines run: {shown}" if ifm.empty and shown else
                    f"IFM test RMSE {_pm(ifm.test_rmse)}; none of the {baselines or 'other'} baselines "
                    + ("run yet" if not shown else f"shares a seed with it yet ({shown})"))
            rows.append(_row(CLAIMS[1][0], CLAIMS[1][1], name, label, what, int(ifm.seed.nunique()), NOT_RUN))
            continue
        n_better, n_sig = int(part.better.sum()), int(part.significant.sum())
        worst = part.loc[part.p_value.fillna(1.0).idxmax()]
        verdict = comparison_verdict(n_better == len(part), 0.0 if n_sig == len(part) else float(worst.p_value),
                                     _testable(reg, name))
        unpaired = len(own) - len(part)
        rows.append(_row(CLAIMS[1][0], CLAIMS[1][1], name, label,
                         f"IFM test RMSE {_pm(ifm.test_rmse)}: below {n_better} of the {len(part)} baselines compared"
                         + (f" (of {baselines})" if baselines and baselines > len(part) else "")
                         + f" ({shown}), significantly below {n_sig}"
                         + (f"; {unpaired} run on no seed of IFM's" if unpaired else ""), int(ifm.seed.nunique()),
                         _partial(verdict, n_better < len(part), len(part), baselines)))
    return rows


def fen_adds_most(comp: pd.DataFrame, models: int | None = None) -> list[dict]:
    """The FEN adds more over a frozen FM than a DNN or attention (Table 2), IFM against the
    runner-up; with `models` (how many the table has), *not run yet* while some are missing."""
    rows = []
    parts = comp[comp.model != "fm"] if len(comp) else comp
    for name, part in parts.groupby("dataset", sort=False):
        means = part.groupby("model")["ri_rmse"].mean().sort_values(ascending=False)
        if "ifm" not in means.index or len(means) < 2:
            continue
        rival = means.index[1] if means.index[0] == "ifm" else means.index[0]
        per_seed = part.pivot_table(index="seed", columns="model", values="ri_rmse").dropna()
        p = paired_t_test(per_seed["ifm"], per_seed[rival])[1]
        rows.append(_row(CLAIMS[2][0], CLAIMS[2][1], name, part.dataset_label.iloc[0],
                         f"RI of RMSE: IFM {100 * means['ifm']:.1f}%, best other {part.loc[part.model == rival, 'model_name'].iloc[0]}"
                         f" {100 * means[rival]:.1f}% (p = {p:.2g})"
                         + (f"; {len(means)} of {models} models run" if models and models > len(means) else "")
                         + _handover_note(part),
                         len(per_seed), _partial(comparison_verdict(means.index[0] == "ifm", p, _testable(comp, name)),
                                                 means.index[0] != "ifm", len(means), models)))
    return rows


def _handover_note(part: pd.DataFrame) -> str:
    """Which frozen models start from an FM trained through batch norm that they do not inherit
    (recipe code: code/FM.py's pre-training), so that their frozen interaction term is not the FM's."""
    if "fm_batch_norm" not in part.columns:
        return ""
    names = list(dict.fromkeys(part.loc[part.fm_batch_norm.fillna(False).astype(bool), "model_name"]))
    return (f"; {' and '.join(names)} start{'s' if len(names) == 1 else ''} from an FM trained with batch norm on its "
            "pooled vector, which the hand-over of w0, w and v leaves behind" if names else "")


def best_settings(df: pd.DataFrame, option: str, claim: str, evidence: str, grid=None) -> list[dict]:
    """A claimed best FEN setting (Figs. 3-5), per dataset, by validation RMSE; *not run yet* until
    every setting of the `grid` has a run (a best of part of the grid says nothing)."""
    from ifm.plots import best_setting_table

    if df.empty:
        return []
    table = best_setting_table(df, option, paper_best(option))
    rows = []
    for (label, row), name in zip(table.iterrows(), dict.fromkeys(df.dataset)):
        ours, paper = row["our best by validation RMSE"], row["paper's best"]
        p = row["p (ours vs paper's best)"]
        p = float("nan") if p == "n/a" else float(p)
        run = set(df.loc[df.dataset == name, option])
        if grid is not None and not set(grid) <= run:
            rows.append(_row(claim, evidence, name, label, f"{len(run & set(grid))} of {len(grid)} settings run "
                             f"(best so far {ours}; paper's: {paper})", int(row["seeds"]), NOT_RUN))
            continue
        rows.append(_row(claim, evidence, name, label, f"our best {ours} (paper's: {paper})"
                         + ("" if str(ours) == str(paper) or math.isnan(p) else f" (p = {p:.2g} against {paper})"),
                         int(row["seeds"]), setting_verdict(str(ours) == str(paper), p, _testable(df, name))))
    return rows


def epochs_to_reach(conv: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, seed): the epoch of FM's best validation RMSE, and the first epoch at which
    IFM's validation RMSE is at or below that best (NaN when it never gets there)."""
    rows = []
    for (name, seed), part in conv.groupby(["dataset", "seed"], sort=False):
        fm, ifm = part[part.model == "fm"], part[part.model == "ifm"]
        if fm.empty or ifm.empty:
            continue
        best = fm.loc[fm.valid_rmse.idxmin()]
        reached = ifm[ifm.valid_rmse <= best.valid_rmse].epoch
        rows.append({"dataset": name, "seed": seed, "fm_best_epoch": int(best.epoch),
                     "ifm_epoch": float(reached.min()) if len(reached) else math.nan})
    return pd.DataFrame(rows, columns=["dataset", "seed", "fm_best_epoch", "ifm_epoch"])


def converges_faster(conv: pd.DataFrame) -> list[dict]:
    """IFM converges faster than FM and to lower training and validation error (Fig. 6): in the
    mean over seeds, IFM's best validation RMSE and its training RMSE there are below FM's, and
    IFM reaches FM's best validation RMSE in fewer epochs than FM took to reach it."""
    rows = []
    summary = convergence_summary(conv)
    speed = epochs_to_reach(conv)
    for name, part in summary.groupby("dataset", sort=False):
        models = part.set_index("model")
        if not {"fm", "ifm"} <= set(models.index):
            continue
        ifm, fm = models.loc["ifm"], models.loc["fm"]
        mine = speed[speed.dataset == name]
        faster = bool(len(mine) and mine.ifm_epoch.notna().all() and mine.ifm_epoch.mean() < mine.fm_best_epoch.mean())
        checks = {"lower validation RMSE": ifm.valid_rmse < fm.valid_rmse,
                  "lower training RMSE": ifm.get("train_rmse", math.nan) < fm.get("train_rmse", math.nan),
                  "reaches FM's best sooner": faster}
        held = [k for k, ok in checks.items() if ok]
        verdict = UNTESTABLE if not _testable(conv, name) else REPRODUCED if len(held) == 3 else \
            PARTLY if held else NOT
        when = (f"; IFM reaches FM's best validation RMSE at epoch {mine.ifm_epoch.mean():.0f}, FM at "
                f"{mine.fm_best_epoch.mean():.0f}" if len(mine) and mine.ifm_epoch.notna().all() else
                "; IFM does not reach FM's best validation RMSE in every seed" if len(mine) else "")
        rows.append(_row(CLAIMS[6][0], CLAIMS[6][1], name, ifm.dataset_label,
                         "holds: " + (", ".join(held) or "none of the three") + when, int(ifm.n_seeds), verdict))
    return rows


def factors_vary(fs) -> list[dict]:
    """The same feature gets very different factors in different instances (Table 1)."""
    if fs.summary is None or not len(fs.summary) or not len(fs.table):
        return []
    rows = []
    for field in [f + 1 for f in fs.attrs["fields"]]:
        s = fs.summary.set_index("field").loc[field]
        rows.append(_row(f"{CLAIMS[7][0]} (x{field})", CLAIMS[7][1], fs.table.dataset.iloc[0],
                         fs.table.dataset_label.iloc[0],
                         f"5th-95th percentile {s['p05']:.2f}-{s['p95']:.2f} (paper's instances: "
                         f"{PAPER_FACTOR_RANGES.get(field, ('?', '?'))[0]}-{PAPER_FACTOR_RANGES.get(field, ('?', '?'))[1]})",
                         len(fs.attrs["seeds"]),
                         spread_verdict(float(s["p05"]), float(s["p95"]), PAPER_FACTOR_RANGES.get(field, (math.nan,) * 2))))
    return rows


def best_on_avazu(ctr: pd.DataFrame, models: int | None = None) -> list[dict]:
    """IFM is best on Avazu (Table 4): by mean test log loss, against every other model."""
    rows = []
    for name, part in ctr.groupby("dataset", sort=False):
        means = part.groupby("model")["test_logloss"].mean()
        ours = f"lowest mean test log loss: {part.loc[part.model == means.idxmin(), 'model_name'].iloc[0]}"
        sig = significance(part, metrics=("test_logloss",))
        verdict = comparison_verdict(means.idxmin() == "ifm", 0.0 if sig.significant.all() else 1.0,
                                     _testable(ctr, name))
        rows.append(_row(CLAIMS[8][0], CLAIMS[8][1], name, part.dataset_label.iloc[0],
                         ours + (f" ({len(means)} of {models} models run)" if models and models > len(means) else ""),
                         int(part.seed.nunique()), _partial(verdict, means.idxmin() != "ifm", len(means), models)))
    return rows


def claim_rows(frames: dict, fs, grids: dict | None = None, models: dict | None = None) -> list[dict]:
    """Every claim's rows (one per dataset) from one recipe's study frames and Table 1 study;
    `grids`: each sweep's settings ({"fen_layers": (0, 1, ...), ...}); `models`: how many models
    each table has ({"regression": 6, "components": 4, "ctr": 5})."""
    grids, models = grids or {}, models or {}
    rows = beats_fm(frames["convergence"])
    rows += beats_every_baseline(frames["regression"], models.get("regression", 1) - 1 if models else None)
    rows += fen_adds_most(frames["components"], models.get("components"))
    rows += best_settings(frames["depth"], "fen_layers", *CLAIMS[3][:2], grids.get("fen_layers"))
    rows += best_settings(frames["dropout"], "dropout", *CLAIMS[4][:2], grids.get("dropout"))
    rows += best_settings(frames["activation"], "activation", *CLAIMS[5][:2], grids.get("activation"))
    rows += converges_faster(frames["convergence"])
    rows += factors_vary(fs) if fs is not None else []
    return rows + best_on_avazu(frames["ctr"], models.get("ctr"))


def best_verdict(verdicts) -> str:
    """The row's verdict from its recipes' verdicts: the first of `ORDER` that one of them has."""
    return min(verdicts, key=ORDER.index)


def wide(rows: list[dict], recipes, expected: list[tuple]) -> pd.DataFrame:
    """One row per (claim, dataset) of `expected` and of `rows`: the paper's evidence, then ours,
    seeds and verdict under each recipe, then the row's verdict and the recipe that gives it. A
    (claim, dataset, recipe) without a row is *not run yet*."""
    found = {(r["claim"], r["dataset"], r["recipe"]): r for r in rows}
    keys = list(dict.fromkeys([(c, e, d, label) for c, e, d, label in expected]
                              + [(r["claim"], r["paper"], r["dataset"], r["data"]) for r in rows]))
    seen, out = set(), []
    for claim, evidence, dataset, label in keys:
        if (claim, dataset) in seen:
            continue
        seen.add((claim, dataset))
        mine = {r: found.get((claim, dataset, r)) for r in recipes}
        known = next((m for m in mine.values() if m is not None), None)
        row = {"claim": claim, "paper": known["paper"] if known else evidence,
               "data": known["data"] if known else label}
        for recipe, r in mine.items():
            row[f"ours ({recipe})"] = r["ours"] if r else "no runs in the records"
            row[f"seeds ({recipe})"] = r["seeds"] if r else 0
            row[f"verdict ({recipe})"] = r["verdict"] if r else NOT_RUN
        verdicts = [row[f"verdict ({r})"] for r in recipes]
        row["verdict"] = best_verdict(verdicts)
        row["by"] = ", ".join(r for r, v in zip(recipes, verdicts) if v == row["verdict"])
        out.append(row)
    return pd.DataFrame(out)


def scorecard(exp: Experiment) -> pd.DataFrame:
    """Every claim of the paper against the runner's records (or runs) under each of its recipes:
    one row per claim and dataset."""
    frames = {name: study(exp) for name, study in (
        ("convergence", convergence_study), ("regression", regression_study), ("components", component_study),
        ("depth", depth_study), ("dropout", dropout_study), ("activation", activation_study), ("ctr", ctr_study))}
    regression_sets = list(exp.datasets or exp.profile.datasets)
    fs = factor_study(exp, dataset="frappe") if "frappe" in regression_sets else None
    models = {"regression": len(exp.profile.regression_models), "components": len(exp.profile.component_models),
              "ctr": len(exp.profile.ctr_models)}
    grids = {"fen_layers": exp.profile.depth_grid, "dropout": exp.profile.dropout_grid,
             "activation": exp.profile.activation_grid}
    rows = []
    for recipe in exp.recipes:
        mine = {name: df[df.recipe == recipe] if "recipe" in df else df for name, df in frames.items()}
        rows += [{**r, "recipe": recipe} for r in claim_rows(mine, _factor_part(fs, recipe), grids, models)]
    ctr_sets = [d for d in exp.datasets or () if d not in regression_sets] or list(exp.profile.ctr_datasets)
    where = {"regression": regression_sets, "frappe": [d for d in regression_sets if d == "frappe"], "ctr": ctr_sets}
    expected = [(claim + (f" (x{f + 1})" if kind == "frappe" else ""), evidence, d, f"{DATASET_NAMES.get(d, d)}")
                for claim, evidence, kind in CLAIMS for d in where[kind]
                for f in (fs.attrs["fields"] if kind == "frappe" and fs is not None else [None])]
    out = wide(rows, exp.recipes, expected)
    missing = [m for df in frames.values() for m in df.attrs.get("missing", [])] + (fs.attrs["missing"] if fs else [])
    out.attrs.update(profile=exp.profile.name, recipe=", ".join(exp.recipes), device=exp.device, missing=missing,
                     complete=not missing, seeds=sorted(set(exp.seeds or exp.profile.seeds)),
                     profile_differences=exp.profile.differences(), report=exp.report("scorecard", total=True))
    return out


def _factor_part(fs, recipe):
    """One recipe's share of a Table 1 study; None when it has no instances under that recipe."""
    from ifm.studies import FactorStudy

    if fs is None or fs.table.empty:
        return None
    pick = [frame[frame.recipe == recipe] for frame in (fs.table, fs.distribution, fs.summary)]
    return FactorStudy(*pick, fs.attrs) if len(pick[0]) else None
