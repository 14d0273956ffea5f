"""Do the paper's claims hold? One row per claim and dataset: the paper's evidence, ours (mean
over seeds, with the seeds), and a verdict by the rule in `RULE`, applied by the functions below
and never typed by hand (tests/test_scorecard.py holds each rule to constructed numbers)."""
from __future__ import annotations

import math

import pandas as pd

from ifm.experiments import Experiment
from ifm.paper import paper_best
from ifm.stats import ALPHA, paired_t_test, significance
from ifm.studies import (activation_study, component_study, convergence_study, convergence_summary, ctr_study,
                         depth_study, dropout_study, factor_study, regression_study)

REPRODUCED, PARTLY, NOT, UNTESTABLE = "reproduced", "partly", "not reproduced", "cannot be tested here"

RULE = (
    f"**How a verdict is reached.** A claim that one model beats another is *{REPRODUCED}* when ours "
    f"agrees in the mean and a two-sided paired t-test over seeds gives p < {ALPHA}; *{PARTLY}* when "
    f"ours agrees in the mean but not significantly (or with one seed, where no test is possible); "
    f"*{NOT}* when ours disagrees in the mean. A claimed best setting is *{REPRODUCED}* when our best "
    f"is the same; *{PARTLY}* when ours differs but our best is not better than the paper's by more "
    f"than seed noise (paired t-test, p >= {ALPHA}, or one seed); *{NOT}* when our best is better by "
    "more than seed noise. The factor-spread claim is *reproduced* when the 5th-95th percentile range "
    "of our factors spans at least the ratio of the paper's extremes (3.12 / 0.05), *partly* when it "
    f"spans more than 2, *{NOT}* otherwise. Any claim on data that is not the paper's (a MovieLens "
    f"stand-in, an Avazu sample) or without runs is *{UNTESTABLE}*."
)
PAPER_FACTOR_RANGE = (0.05, 3.12)          # Table 1's smallest and largest factor


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


def spread_verdict(low: float, high: float) -> str:
    """The same feature gets very different factors: our 5th-95th percentile range against the paper's."""
    if not (low > 0 and high > 0):
        return UNTESTABLE
    ratio, paper = high / low, PAPER_FACTOR_RANGE[1] / PAPER_FACTOR_RANGE[0]
    return REPRODUCED if ratio >= paper else PARTLY if ratio > 2 else NOT


def _testable(df: pd.DataFrame, name: str) -> bool:
    """Whether a dataset's runs are on the paper's data (exact or reconstructed), not a stand-in
    or a sample."""
    labels = df.loc[df.dataset == name, "dataset_label"]
    return not any(word in labels.iloc[0] for word in ("stand-in", "sample")) if len(labels) else False


def _row(claim, evidence, label, ours, seeds, verdict) -> dict:
    return {"claim": claim, "paper": evidence, "data": label, "ours": ours, "seeds": seeds, "verdict": verdict}


def beats_fm(conv: pd.DataFrame) -> list[dict]:
    """IFM beats FM: best validation RMSE per seed (Fig. 6's runs), paired over seeds."""
    rows = []
    for name, part in conv.groupby("dataset", sort=False):
        best = part.groupby(["model", "seed"])["valid_rmse"].min().unstack(0).dropna()
        if not {"fm", "ifm"} <= set(best.columns):
            continue
        p = paired_t_test(best["ifm"], best["fm"])[1]
        ifm, fm = best["ifm"].mean(), best["fm"].mean()
        rows.append(_row("IFM beats FM", "Fig. 6, Table 3: IFM's error below FM's", part.dataset_label.iloc[0],
                         f"validation RMSE IFM {ifm:.4f} vs FM {fm:.4f} (p = {p:.2g})", len(best),
                         comparison_verdict(ifm < fm, p, _testable(conv, name))))
    return rows


def beats_every_baseline(reg: pd.DataFrame) -> list[dict]:
    """IFM beats every baseline significantly (Table 3, test RMSE)."""
    rows = []
    sig = significance(reg, metrics=("test_rmse",))
    for name, part in sig.groupby("dataset", sort=False):
        n_better, n_sig = int(part.better.sum()), int(part.significant.sum())
        worst = part.loc[part.p_value.fillna(1.0).idxmax()]
        verdict = comparison_verdict(n_better == len(part), 0.0 if n_sig == len(part) else float(worst.p_value),
                                     _testable(reg, name))
        rows.append(_row("IFM beats every baseline, significantly", "Table 3: IFM best in every column, all "
                         "significant", reg.loc[reg.dataset == name, "dataset_label"].iloc[0],
                         f"IFM's mean test RMSE below {n_better} of {len(part)} baselines, significantly below "
                         f"{n_sig}", int(part.n_pairs.min()), verdict))
    return rows


def fen_adds_most(comp: pd.DataFrame) -> list[dict]:
    """The FEN adds more over a frozen FM than a DNN or attention (Table 2), IFM against the runner-up."""
    rows = []
    parts = comp[comp.model != "fm"] if len(comp) else comp
    for name, part in parts.groupby("dataset", sort=False):
        means = part.groupby("model")["ri_rmse"].mean().sort_values(ascending=False)
        if "ifm" not in means.index or len(means) < 2:
            continue
        rival = means.index[1] if means.index[0] == "ifm" else means.index[0]
        per_seed = part.pivot_table(index="seed", columns="model", values="ri_rmse").dropna()
        p = paired_t_test(per_seed["ifm"], per_seed[rival])[1]
        rows.append(_row("The FEN adds more over a frozen FM than a DNN or attention",
                         "Table 2: IFM 30% / 18% against at most 21%", part.dataset_label.iloc[0],
                         f"RI of RMSE: IFM {100 * means['ifm']:.1f}%, best other {part.loc[part.model == rival, 'model_name'].iloc[0]}"
                         f" {100 * means[rival]:.1f}% (p = {p:.2g})", len(per_seed),
                         comparison_verdict(means.index[0] == "ifm", p, _testable(comp, name))))
    return rows


def best_settings(df: pd.DataFrame, option: str, claim: str, evidence: str) -> list[dict]:
    """A claimed best FEN setting (Figs. 3-5), per dataset, by validation RMSE."""
    from ifm.plots import best_setting_table

    if df.empty:
        return []
    table = best_setting_table(df, option, paper_best(option))
    rows = []
    for (label, row), name in zip(table.iterrows(), dict.fromkeys(df.dataset)):
        ours, paper = row["our best by validation RMSE"], row["paper's best"]
        p = row["p (ours vs paper's best)"]
        p = float("nan") if p == "n/a" else float(p)
        rows.append(_row(claim, f"{evidence}: {paper}", label, f"our best {ours}"
                         + ("" if str(ours) == str(paper) or math.isnan(p) else f" (p = {p:.2g} against {paper})"),
                         int(row["seeds"]), setting_verdict(str(ours) == str(paper), p, _testable(df, name))))
    return rows


def converges_faster(conv: pd.DataFrame) -> list[dict]:
    """IFM converges faster than FM and to lower training and validation error (Fig. 6)."""
    rows = []
    summary = convergence_summary(conv)
    for name, part in summary.groupby("dataset", sort=False):
        models = part.set_index("model")
        if not {"fm", "ifm"} <= set(models.index):
            continue
        ifm, fm = models.loc["ifm"], models.loc["fm"]
        checks = {"lower validation RMSE": ifm.valid_rmse < fm.valid_rmse,
                  "lower training RMSE": ifm.get("train_rmse", math.nan) < fm.get("train_rmse", math.nan),
                  "earlier best epoch": ifm.best_epoch < fm.best_epoch}
        held = [k for k, ok in checks.items() if ok]
        verdict = UNTESTABLE if not _testable(conv, name) else REPRODUCED if len(held) == 3 else \
            PARTLY if held else NOT
        rows.append(_row("IFM converges faster than FM, to lower training and validation error",
                         "Fig. 6", ifm.dataset_label, "holds: " + (", ".join(held) or "none of the three"),
                         int(ifm.n_seeds), verdict))
    return rows


def factors_vary(fs) -> list[dict]:
    """The same feature gets very different factors in different instances (Table 1)."""
    if fs.summary is None or not len(fs.summary) or not len(fs.table):
        return []
    rows = []
    for field in [f + 1 for f in fs.attrs["fields"]]:
        s = fs.summary.set_index("field").loc[field]
        rows.append(_row(f"The same feature gets very different factors (x{field})",
                         "Table 1: factors from 0.05 to 3.12", fs.table.dataset_label.iloc[0],
                         f"5th-95th percentile {s['p05']:.3g}-{s['p95']:.3g}", len(fs.attrs["seeds"]),
                         spread_verdict(float(s["p05"]), float(s["p95"]))))
    return rows


def best_on_avazu(ctr: pd.DataFrame) -> list[dict]:
    """IFM is best on Avazu (Table 4): by mean test log loss, against every other model."""
    rows = []
    for name, part in ctr.groupby("dataset", sort=False):
        means = part.groupby("model")["test_logloss"].mean()
        ours = f"lowest mean test log loss: {part.loc[part.model == means.idxmin(), 'model_name'].iloc[0]}"
        sig = significance(part, metrics=("test_logloss",))
        verdict = comparison_verdict(means.idxmin() == "ifm", 0.0 if sig.significant.all() else 1.0,
                                     _testable(ctr, name))
        rows.append(_row("IFM is best on Avazu", "Table 4: IFM best AUC and log loss", part.dataset_label.iloc[0],
                         ours, int(part.seed.nunique()), verdict))
    return rows


def scorecard(exp: Experiment) -> pd.DataFrame:
    """Every claim of the paper against the runner's records (or runs), one row per claim and dataset."""
    frames = {name: study(exp) for name, study in (
        ("convergence", convergence_study), ("regression", regression_study), ("components", component_study),
        ("depth", depth_study), ("dropout", dropout_study), ("activation", activation_study), ("ctr", ctr_study))}
    rows = beats_fm(frames["convergence"]) + beats_every_baseline(frames["regression"])
    rows += fen_adds_most(frames["components"])
    rows += best_settings(frames["depth"], "fen_layers", "FEN depth is best at 2 (Frappe) / 3 (MovieLens)",
                          "Fig. 3a / 4a")
    rows += best_settings(frames["dropout"], "dropout", "FEN dropout is best at 0.3 / 0.4", "Fig. 3b / 4b")
    rows += best_settings(frames["activation"], "activation", "ReLU is the best FEN activation", "Fig. 5")
    rows += converges_faster(frames["convergence"])
    missing = [m for df in frames.values() for m in df.attrs.get("missing", [])]
    if "frappe" in (exp.datasets or exp.profile.datasets):
        fs = factor_study(exp, dataset="frappe")
        rows += factors_vary(fs)
        missing += fs.attrs["missing"]
    rows += best_on_avazu(frames["ctr"])
    out = pd.DataFrame(rows, columns=["claim", "paper", "data", "ours", "seeds", "verdict"])
    out.attrs.update(profile=exp.profile.name, recipe=exp.profile.recipe, device=exp.device, missing=missing,
                     complete=not missing, seeds=sorted(set(exp.seeds or exp.profile.seeds)),
                     profile_differences=exp.profile.differences(), report=exp.report("scorecard", total=True))
    return out
