"""Do the paper's claims hold? One row per claim and dataset: the paper's evidence, and under each
reading of the method (recipe `paper`, the paper's text; recipe `code`, the authors' released code)
ours, the seeds every compared run shares, and a verdict. The verdicts come from `ifm.book.rules`, on
matched seeds, one per reading: never the better of the two (tests/test_scorecard.py holds each
claim's function to constructed frames, tests/test_rules.py the rules)."""
from __future__ import annotations

import math

import pandas as pd

from ifm.runs.experiment import Experiment
from ifm.book.paper import paper_best
from ifm.data.registry import DATASET_NAMES
from ifm.book.rules import (COMPARISON_RULE, FACTOR_RULE, NOT, NOT_RUN, PAPER_FACTOR_RANGES,
                            REPRODUCED, SETTING_RULE, UNTESTABLE, VERDICTS, judge_all, judge_comparison, judge_factors,
                            matched, sweep_judgements)
from ifm.book.stats import mean_interval
from ifm.book.factors import factor_part, factor_statistics, factor_study
from ifm.book.studies import (activation_study, component_study, convergence_study, ctr_study, depth_study,
                              dropout_study, regression_study)

RULE = (
    "Each reading of the method gets its own verdict, from its own runs; the two are never merged into "
    "the better of them. Claims on data that is not the paper's (the MovieLens stand-in, the Avazu "
    f"sample) are *{UNTESTABLE}*, whatever the numbers, and are listed apart; a claim whose runs are not "
    f"all in the records is *{NOT_RUN}*.\n\n" + COMPARISON_RULE + " Fig. 6's claim has three parts (lower "
    "best validation RMSE, lower training RMSE there, and the epoch at which IFM first reaches FM's best "
    "validation RMSE against the epoch FM reaches it; a seed where IFM never does counts one epoch past "
    "its last): it is reproduced when all three are, refuted when any is.\n\n" + SETTING_RULE + "\n\n"
    + FACTOR_RULE)

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


def _testable(df: pd.DataFrame, name: str) -> bool:
    """Whether a dataset's runs are on the paper's data (exact or reconstructed), not a stand-in
    or a sample."""
    labels = df.loc[df.dataset == name, "dataset_label"]
    return on_papers_data(labels.iloc[0]) if len(labels) else False


def on_papers_data(label: str) -> bool:
    """Whether a dataset label names the paper's data (exact or reconstructed), not a stand-in, a
    sample, local files that are not the upstream bytes, or the open benchmark's Frappe_x1."""
    return not any(word in str(label) for word in ("stand-in", "sample", "not the upstream bytes", "BARS split",
                                                   "Frappe_x1"))


def _row(claim, evidence, dataset, label, ours, seeds, verdict, testable=True, details: str = "") -> dict:
    """One claim on one dataset under one reading: `ours` is the headline (a number or two),
    `details` the evidence behind the verdict (each test, the shared seeds)."""
    return {"claim": claim, "paper": evidence, "dataset": dataset, "data": label, "ours": ours, "seeds": seeds,
            "verdict": verdict if testable or verdict == NOT_RUN else UNTESTABLE, "details": details or ours}


def _seeds_note(wide: pd.DataFrame, df: pd.DataFrame) -> str:
    """' (seeds 0, 1, 2 shared; 1 run on other seeds left out)' for a comparison's shared seeds."""
    left_out = int((~df.seed.isin(wide.index)).sum()) if "seed" in df else 0
    shared = ", ".join(str(s) for s in wide.index) or "none"
    return f" [seeds shared: {shared}" + (f"; {left_out} run(s) on other seeds left out]" if left_out else "]")


def _comparison_row(claim: int, name, label, runs, wide, judgement, what: str, testable: bool, unit: str = "",
                    scale: float = 1.0) -> dict:
    """A model-against-model row: `what` (the headline numbers), each rival's difference with its
    interval and Holm-corrected p, and which seeds were shared (`runs`: one row per run)."""
    details = (f"IFM − rival: {judgement.reason(scale=scale, unit=unit)}" if judgement.rows is not None
               and len(judgement.rows) else what)
    return _row(CLAIMS[claim][0], CLAIMS[claim][1], name, label, what, len(wide), judgement.verdict, testable,
                details + _seeds_note(wide, runs))


def beats_fm(conv: pd.DataFrame) -> list[dict]:
    """IFM beats FM: best validation RMSE per seed (Fig. 6's runs), paired over shared seeds."""
    rows = []
    for name, part in conv.groupby("dataset", sort=False):
        best = part.groupby(["model", "seed"], as_index=False)["valid_rmse"].min()
        if not {"fm", "ifm"} <= set(best.model):
            continue
        best = best[best.model.isin(["fm", "ifm"])]
        wide = matched(best, "model", "valid_rmse")
        j = judge_comparison(wide, "ifm", ["fm"], names={"fm": "FM"})
        what = f"best validation RMSE: IFM {mean_interval(wide['ifm'])}, FM {mean_interval(wide['fm'])}"
        rows.append(_comparison_row(0, name, part.dataset_label.iloc[0], best, wide, j, what, _testable(conv, name)))
    return rows


def beats_every_baseline(reg: pd.DataFrame, baselines: int | None = None) -> list[dict]:
    """IFM beats every baseline significantly (Table 3, test RMSE), on the seeds that IFM and every
    baseline share, Holm-corrected across the baselines; *not run yet* while IFM or some of the
    `baselines` (how many the table has) have no run, or share no seed, unless a baseline already
    run is significantly better than IFM (then the claim is refuted whatever the others give)."""
    rows = []
    for name in dict.fromkeys(reg.dataset):
        runs = reg[reg.dataset == name]
        names = dict(zip(runs.model, runs.model_name))
        wide = matched(runs, "model", "test_rmse")
        others = [m for m in names if m != "ifm"]
        label = runs.dataset_label.iloc[0]
        short = baselines is not None and len(others) < baselines
        refuted = "ifm" in names and others and judge_comparison(wide, "ifm", others).verdict == NOT
        if "ifm" not in names or not others or (short and not refuted) or not len(wide):
            own = runs.groupby("model_name", sort=False)["test_rmse"].mean()
            what = ("IFM not run yet" if "ifm" not in names else
                    f"{len(others)} of {baselines if baselines is not None else len(others)} baselines run")
            rows.append(_row(CLAIMS[1][0], CLAIMS[1][1], name, label, what + (": " if len(own) else "")
                             + ", ".join(f"{m} {v:.4f}" for m, v in own.items())
                             + ("" if len(wide) or not len(own) else "; no seed shared by all"), len(wide), NOT_RUN))
            continue
        j = judge_comparison(wide, "ifm", others, names=names)
        what = (f"IFM {mean_interval(wide['ifm'])}: significantly below {int(j.rows.better.sum())}, above "
                f"{int(j.rows.worse.sum())} of {len(others)} baselines" + (f" (of {baselines}; refuted already)"
                                                                           if short else ""))
        rows.append(_comparison_row(1, name, label, runs, wide, j, what, _testable(reg, name)))
    return rows


def fen_adds_most(comp: pd.DataFrame, models: int | None = None) -> list[dict]:
    """The FEN adds more over a frozen FM than a DNN or attention (Table 2): IFM's relative
    improvement against every other frozen model's, on shared seeds, Holm-corrected; *not run yet*
    while some of the `models` (how many the table has, FM included) are missing."""
    rows = []
    parts = comp[comp.model != "fm"] if len(comp) else comp
    for name, part in parts.groupby("dataset", sort=False):
        names = dict(zip(part.model, part.model_name))
        wide = matched(part, "model", "ri_rmse")
        short = models is not None and len(names) + 1 < models
        if "ifm" not in names or len(names) < 2 or short:
            means = part.groupby("model_name", sort=False)["ri_rmse"].mean()
            rows.append(_row(CLAIMS[2][0], CLAIMS[2][1], name, part.dataset_label.iloc[0],
                             f"{len(names)} of {models - 1 if models else len(names)} frozen models run: "
                             + ", ".join(f"{m} {100 * v:.1f}%" for m, v in means.items()), len(wide), NOT_RUN))
            continue
        j = judge_comparison(wide, "ifm", lower_is_better=False, names=names)
        means = {m: 100 * wide[m].mean() for m in wide.columns}
        rival = max((m for m in means if m != "ifm"), key=means.get)
        what = f"RI of test RMSE: IFM {means['ifm']:.1f}%, best other {names[rival]} {means[rival]:.1f}%"
        row = _comparison_row(2, name, part.dataset_label.iloc[0], part, wide, j, what, _testable(comp, name),
                              unit=" points", scale=100)
        row["details"] = ("RI of test RMSE: " + ", ".join(f"{names[m]} {v:.1f}%" for m, v in means.items()) + "; "
                          + row["details"] + _handover_note(part))
        rows.append(row)
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
    """A claimed best FEN setting (Figs. 3-5), per dataset, by `ifm.book.rules.judge_setting` on
    validation RMSE over the seeds every setting shares; *not run yet* until every setting of the
    `grid` has a run."""
    rows = []
    for _, name, label, j, sd, _ in sweep_judgements(df, option, paper_best(option), grid) if len(df) else []:
        if j.missing:
            ours = details = f"{len(grid) - len(j.missing)} of {len(grid)} settings run"
        else:
            ours = f"our best {j.best}" + (f"; S: {', '.join(str(v) for v in j.in_s)}" if j.in_s else "")
            details = j.reason() + (f"; seed SD at {j.paper}: {sd:.4f}" if sd == sd else "")
        rows.append(_row(claim, evidence, name, label, ours, len(j.seeds), j.verdict, _testable(df, name), details))
    return rows


def per_seed_convergence(conv: pd.DataFrame) -> pd.DataFrame:
    """Per (model, seed): the best validation RMSE, the training RMSE at that epoch, and the epoch
    at which the run first reaches FM's best validation RMSE of the same seed (FM: its best epoch;
    IFM: one past its last epoch when it never does)."""
    rows = []
    for seed, part in conv.groupby("seed", sort=False):
        fm = part[part.model == "fm"]
        fm_best = fm.valid_rmse.min() if len(fm) else math.nan
        for model, runs in part.groupby("model", sort=False):
            best = runs.loc[runs.valid_rmse.idxmin()] if runs.valid_rmse.notna().any() else None
            if best is None:
                continue
            reached = runs[runs.valid_rmse <= fm_best].epoch
            rows.append({"model": model, "seed": seed, "valid_rmse": best.valid_rmse,
                         "train_rmse": best.get("train_rmse", math.nan),
                         "epochs": float(reached.min()) if len(reached) else float(runs.epoch.max() + 1)})
    return pd.DataFrame(rows, columns=["model", "seed", "valid_rmse", "train_rmse", "epochs"])


def converges_faster(conv: pd.DataFrame) -> list[dict]:
    """IFM converges faster than FM and to lower training and validation error (Fig. 6): three
    paired comparisons over the seeds both share (best validation RMSE, training RMSE there, the
    epoch that reaches FM's best validation RMSE), all of which must hold (`rules.judge_all`)."""
    rows = []
    for name, part in conv.groupby("dataset", sort=False):
        per_seed = per_seed_convergence(part)
        if not {"fm", "ifm"} <= set(per_seed.model):
            continue
        parts, texts, shared = [], [], []
        for what, column in (("lower validation RMSE", "valid_rmse"), ("lower training RMSE", "train_rmse"),
                             ("reaches FM's best sooner", "epochs")):
            wide = matched(per_seed, "model", column)
            j = judge_comparison(wide, "ifm", ["fm"], names={"fm": "FM"})
            parts.append(j.verdict if len(wide) else NOT_RUN)
            digits = 1 if column == "epochs" else 4
            texts.append(f"{what}: {j.verdict} ({j.reason(digits=digits)})" if len(wide) else f"{what}: no data")
            shared.append(len(wide))
        verdict = judge_all(parts)
        held = [what for what, v in zip(("lower validation RMSE", "lower training RMSE", "reaches FM's best sooner"),
                                        parts) if v == REPRODUCED]
        rows.append(_row(CLAIMS[6][0], CLAIMS[6][1], name, part.dataset_label.iloc[0],
                         "significant: " + (", ".join(held) or "none of the three"), min(shared), verdict,
                         _testable(conv, name), "IFM − FM, " + "; ".join(texts)))
    return rows


def factors_vary(fs) -> list[dict]:
    """The same feature gets very different factors in different instances (Table 1), and they vary
    as the paper's do: `rules.judge_factors` on each field's spread and each instance's largest share."""
    if fs.summary is None or not len(fs.summary) or not len(fs.table):
        return []
    rows = []
    for field in [f + 1 for f in fs.attrs["fields"]]:
        paper_range = PAPER_FACTOR_RANGES.get(field, (math.nan, math.nan))
        j = judge_factors(factor_statistics(fs, field), paper_range)
        rows.append(_row(f"{CLAIMS[7][0]} (x{field})", CLAIMS[7][1], fs.table.dataset.iloc[0],
                         fs.table.dataset_label.iloc[0], f"width {j.width:.2f}, largest share {j.median_share:.2f}",
                         len(j.seeds), j.verdict, details=j.reason(paper_range)))
    return rows


def best_on_avazu(ctr: pd.DataFrame, models: int | None = None) -> list[dict]:
    """IFM is best on Avazu (Table 4): test log loss against every other model, on shared seeds,
    Holm-corrected; *not run yet* while some of the `models` are missing."""
    rows = []
    for name, part in ctr.groupby("dataset", sort=False):
        names = dict(zip(part.model, part.model_name))
        wide = matched(part, "model", "test_logloss")
        if "ifm" not in names or (models is not None and len(names) < models) or not len(wide):
            rows.append(_row(CLAIMS[8][0], CLAIMS[8][1], name, part.dataset_label.iloc[0],
                             f"{len(names)} of {models or len(names)} models run", len(wide), NOT_RUN))
            continue
        j = judge_comparison(wide, "ifm", names=names)
        what = f"IFM test log loss {mean_interval(wide['ifm'])}, lowest {names[wide.mean().idxmin()]}"
        rows.append(_comparison_row(8, name, part.dataset_label.iloc[0], part, wide, j, what, _testable(ctr, name)))
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


def wide(rows: list[dict], recipes, expected: list[tuple]) -> pd.DataFrame:
    """One row per (claim, dataset) of `expected` and of `rows`: the paper's evidence, then ours,
    the shared seeds and the verdict under each recipe side by side (never merged), and whether the
    data can test the claim. A (claim, dataset, recipe) without a row is *not run yet*."""
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
               "data": known["data"] if known else label, "dataset": dataset}
        for recipe, r in mine.items():
            row[f"ours ({recipe})"] = r["ours"] if r else "no runs in the records"
            row[f"details ({recipe})"] = r.get("details", r["ours"]) if r else ""
            row[f"seeds ({recipe})"] = r["seeds"] if r else 0
            row[f"verdict ({recipe})"] = r["verdict"] if r else NOT_RUN
        row["testable"] = UNTESTABLE not in [row[f"verdict ({r})"] for r in recipes] and on_papers_data(row["data"])
        out.append(row)
    return pd.DataFrame(out)


def summary(card: pd.DataFrame, recipes) -> str:
    """The page's count of verdicts per reading over the claims the data can test: "under the
    released code (recipe code): k of n reproduced, ..."."""
    words = {"paper": "the paper's text (recipe paper)", "code": "the released code (recipe code)"}
    testable = card[card.testable] if len(card) else card
    parts = []
    for recipe in recipes:
        counts = testable[f"verdict ({recipe})"].value_counts()
        shown = ", ".join(f"{counts[v]} {v}" for v in VERDICTS if v in counts)
        parts.append(f"under {words.get(recipe, f'recipe {recipe}')}: {shown or 'nothing'}")
    data = ", ".join(dict.fromkeys(testable.data)) if len(testable) else "none"
    smoke = "**Smoke check, not a reproduction** (profile `smoke`). " if card.attrs.get("profile") == "smoke" else ""
    return (smoke + f"Of the {len(testable)} claims that the paper's data can test here ({data}), " + "; ".join(parts) + ".")


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
        rows += [{**r, "recipe": recipe} for r in claim_rows(mine, factor_part(fs, recipe), grids, models)]
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
