"""Every paper-vs-ours number in one frame (the book's results page) and the agreement of
the rankings. Each study has one function that turns its frame into tidy comparison rows
(item, dataset, dataset_label, quantity, paper, ours, interval, n_seeds, model, metric);
`overview` only runs the studies and concatenates their rows.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ifm.book.rows import dataset_label
from ifm.runs.experiment import Experiment
from ifm.models import DISPLAY_NAMES
from ifm.book.paper import paper_best, paper_reported, paper_table
from ifm.runs.records import read_json
from ifm.book.rules import matched
from ifm.book.stats import by_recipe, panels, t_interval
from ifm.book.factors import factor_study
from ifm.book.studies import (activation_study, component_study, convergence_study, ctr_study, depth_study,
                              dropout_study, regression_study)

COLUMNS = ["item", "recipe", "dataset", "dataset_label", "quantity", "paper", "ours", "interval", "n_seeds", "model", "metric"]
SWEEP_WORDS = {"fen_layers": "FEN depth", "dropout": "FEN dropout", "activation": "FEN activation"}
SWEEPS = (("Fig. 3a / 4a", "fen_layers", depth_study), ("Fig. 3b / 4b", "dropout", dropout_study),
          ("Fig. 5", "activation", activation_study))


def _row(item, recipe, dataset, label, quantity, paper, ours, half=float("nan"), n=1, model=None,
         metric=None) -> dict:
    return dict(zip(COLUMNS, (item, recipe, dataset, label, quantity, paper, ours, half, n, model, metric)))


def _groups(df: pd.DataFrame, *columns):
    """(recipe, keys, rows) per group of `columns` within each recipe of the frame."""
    for recipe, rows in by_recipe(df):
        for keys, group in rows.groupby(list(columns), sort=False):
            yield (recipe or df.attrs.get("recipe")), keys, group


def _setting(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:g}" if isinstance(value, (int, float, np.integer, np.floating)) else str(value)


def compare_sweep(df: pd.DataFrame, item: str, option: str, grid, reported: dict | None = None) -> list[dict]:
    """Figs. 3-5: our best setting (by validation RMSE and MAE) beside the paper's, per dataset."""
    if df.empty:
        return []
    best = paper_best(option, reported)
    rows = []
    for metric in ("valid_rmse", "valid_mae"):
        for recipe, (name,), runs in _groups(df, "dataset"):
            wide = matched(runs, option, metric)          # the seeds every setting shares, alone
            ours = wide.mean().idxmin() if len(wide) else None
            rows.append(_row(item, recipe, name, runs.dataset_label.iloc[0],
                             f"best {SWEEP_WORDS[option]} by validation {metric.split('_')[1].upper()}"
                             f" ({runs[option].nunique()} of {len(grid)} settings run, on the seeds all share)",
                             _setting(best.get(name)), _setting(ours), n=len(wide)))
    return rows


def compare_convergence(df: pd.DataFrame) -> list[dict]:
    """Fig. 6: each model's best validation RMSE (mean over seeds); the paper shows only shapes."""
    rows = []
    for recipe, (name, model), group in _groups(df, "dataset", "model"):
        per_seed = group.groupby("seed")["valid_rmse"].min()
        mean, half = t_interval(per_seed)
        rows.append(_row("Fig. 6", recipe, name, group.dataset_label.iloc[0],
                         f"{DISPLAY_NAMES[model]} best validation RMSE (paper: shape only)",
                         "IFM lower than FM", mean, half, len(per_seed)))
    return rows


def compare_factors(fs, reported: dict | None = None) -> list[dict]:
    """Table 1: the errors and factors of our three instances beside the paper's three."""
    rows = []
    pairs = [(recipe or fs.attrs.get("recipe"), ours, paper) for recipe, table in by_recipe(fs.table)
             for ours, paper in zip(table.itertuples(), paper_table("table1", reported).itertuples())]
    for recipe, ours, paper in pairs:
        for col, what in (("fm_error", "FM |y_hat - y|"), ("ifm_error", "IFM |y_hat - y|"),
                          ("ifm_factor_x3", "IFM factor of x3"), ("ifm_factor_x9", "IFM factor of x9")):
            rows.append(_row("Table 1", recipe, "frappe", ours.dataset_label, f"instance {ours.instance}: {what}",
                             getattr(paper, col), getattr(ours, col, float("nan"))))
    return rows


def compare_components(df: pd.DataFrame, reported: dict | None = None) -> list[dict]:
    """Table 2: each component's relative improvement of RMSE over the frozen FM."""
    paper = paper_table("table2", reported)
    rows = []
    for recipe, (name, model), group in _groups(df[df.model != "fm"] if len(df) else df, "dataset", "model"):
        mean, half = t_interval(group["ri_rmse"])
        p = paper[(paper.dataset == name) & (paper.model == model)]["RI"]
        rows.append(_row("Table 2", recipe, name, group.dataset_label.iloc[0],
                         f"{DISPLAY_NAMES[model]} relative improvement of RMSE over FM",
                         float(p.iloc[0]) if len(p) else float("nan"), mean, half, len(group), model, "RI"))
    return rows


def compare_means(item: str, df: pd.DataFrame, paper: pd.DataFrame, metrics) -> list[dict]:
    """Tables 3-4: per (dataset, model), the mean and interval over seeds of each (metric, column,
    unit) beside the paper's."""
    rows = []
    for recipe, (name, model), group in _groups(df, "dataset", "model"):
        for metric, col, unit in metrics:
            mean, half = t_interval(group[col])
            p = paper[(paper.dataset == name) & (paper.model == model)][metric]
            rows.append(_row(item, recipe, name, group.dataset_label.iloc[0], f"{DISPLAY_NAMES[model]} test {metric}{unit}",
                             float(p.iloc[0]) if len(p) else float("nan"), mean, half, len(group), model, metric))
    return rows


def _coverage(study: str, df: pd.DataFrame) -> dict:
    """A study's runs, missing runs, seeds, devices, and the hours its runs took (each run once;
    one thread per run on CPU)."""
    runs = df.drop_duplicates("key") if "key" in df else df.iloc[0:0]
    hours = float(runs["wall_seconds"].sum()) / 3600 if "wall_seconds" in runs else 0.0
    return {"study": study, "runs": int(len(runs)), "hours": round(hours, 2),
            "missing": len(df.attrs.get("missing", [])),
            "seeds": ",".join(str(v) for v in sorted(df["seed"].unique())) if len(df) else "",
            "devices": "; ".join(sorted({f"{d} ({n})" for d, n in zip(df.get("device", []), df.get("device_name", []))}))}


def overview(exp: Experiment) -> pd.DataFrame:
    """Every paper-vs-ours number of sections 5.2-5.4 in one frame: the studies' comparison rows,
    concatenated. attrs: profile, recipe, missing runs, coverage per study, seeds."""
    rep = paper_reported()
    rows, frames = [], []
    grids = {"fen_layers": exp.profile.depth_grid, "dropout": exp.profile.dropout_grid,
             "activation": exp.profile.activation_grid}
    for item, option, study in SWEEPS:
        df = study(exp)
        frames.append(df)
        rows += compare_sweep(df, item, option, grids[option], rep)
    frames.append(convergence_study(exp))
    rows += compare_convergence(frames[-1])
    missing, coverage = [], []
    if "frappe" in (exp.datasets or exp.profile.datasets):
        fs = factor_study(exp, dataset="frappe")
        rows += compare_factors(fs, rep)
        missing += fs.attrs["missing"]
        coverage.append({**_coverage("factors", fs.table), "runs": 2 if fs.attrs["complete"] else 0,
                         "missing": len(fs.attrs["missing"])})
    frames.append(component_study(exp))
    rows += compare_components(frames[-1], rep)
    frames.append(regression_study(exp))
    rows += compare_means("Table 3", frames[-1], paper_table("table3", rep),
                          [("MAE", "test_mae", ""), ("RMSE", "test_rmse", "")])
    frames.append(ctr_study(exp))
    # The paper's Table 4 is on the full Avazu; each of our CTR datasets is compared with it.
    table4 = pd.concat([paper_table("table4", rep).assign(dataset=name) for name in frames[-1].dataset.unique()]
                       or [paper_table("table4", rep).assign(dataset=None)])
    rows += compare_means("Table 4", frames[-1], table4, [("AUC", "test_auc_pct", " (%)"), ("Logloss", "test_logloss", "")])

    notes, devices = {}, {}
    for df in frames:
        coverage.append(_coverage(df.attrs.get("study"), df))
        missing += df.attrs.get("missing", [])
        if len(df):
            notes.update(dict(zip(df.dataset, df.data_note)))
            for name, device, device_name in zip(df.dataset, df.device, df.device_name):
                devices.setdefault(name, set()).add(f"{device} ({device_name})")
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["data_note"] = out.dataset.map(lambda n: notes.get(n, ""))
    out["device"] = out.dataset.map(lambda n: ", ".join(sorted(devices.get(n, ()))))
    out.attrs.update(profile=exp.profile.name, recipe=", ".join(exp.recipes), device=exp.device, missing=missing,
                     complete=not missing, coverage=coverage, datasets=datasets_of(frames),
                     seeds=sorted(set(exp.seeds or exp.profile.seeds) | set(exp.seeds or exp.profile.sweep_seeds)),
                     profile_differences=exp.profile.differences(), report=exp.report("overview", total=True))
    return out


def datasets_of(frames) -> list[dict]:
    """What data the book's runs used, one entry per dataset: its kind and description, split
    sizes, data identities (a hash of the provenance: files, split, sizes), when the records were
    written, on which devices, and by which package and training versions."""
    rows = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else None
    if rows is None:
        return []
    out = []
    for name, part in rows.groupby("dataset", sort=False):
        whole = part[part.get("train_fraction", pd.Series(1.0, index=part.index)).fillna(1.0) == 1.0]
        whole = whole if len(whole) else part
        dates = part["written_at_utc"].dropna().str[:10]
        out.append({"data": part.dataset_label.iloc[0], "what it is": part.data_note.iloc[0],
                    "train / valid / test": " / ".join(f"{int(v):,}" if v == v else "?" for v in
                                                       whole[["train_instances", "valid_instances",
                                                              "test_instances"]].iloc[0]),
                    "data identity": ", ".join(sorted(part.data_identity.dropna().unique())),
                    "records written (UTC)": f"{dates.min()} to {dates.max()}" if len(dates) else "",
                    "devices": "; ".join(sorted({f"{d} ({n})" for d, n in zip(part.device, part.device_name)})),
                    "runs": int(part.key.nunique()) if "key" in part else len(part),
                    "package / training version": ", ".join(sorted({f"{p} / {t}" for p, t in zip(
                        part.get("package_version", pd.Series(["?"] * len(part))).fillna("?"),
                        part.get("training_version", pd.Series(["?"] * len(part))).fillna("?"))}))})
    return out


HIGHER_IS_BETTER = {"AUC", "RI"}


def ranking_agreement(ov: pd.DataFrame) -> pd.DataFrame:
    """Per (item, dataset, metric) of Tables 2-4: the paper's and our order of the models (best
    first), Kendall's tau between them, and whether both put the same model first."""
    from scipy import stats

    rows = []
    tables = ov[ov.model.notna() & ov.ours.map(lambda v: isinstance(v, (int, float)) and not math.isnan(v))]
    by = ["item", *panels(ov, "dataset", "metric")]
    for keys, part in tables.groupby(by, sort=False):
        where = dict(zip(by, keys))
        item, recipe, name, metric = where["item"], where.get("recipe"), where["dataset"], where["metric"]
        part = part[part.paper.notna()]
        if len(part) < 2:
            continue
        sign = -1 if metric in HIGHER_IS_BETTER else 1
        paper_order = part.sort_values("paper", key=lambda v: sign * v.astype(float)).model.tolist()
        our_order = part.sort_values("ours", key=lambda v: sign * v.astype(float)).model.tolist()
        tau = stats.kendalltau(part.paper.astype(float), part.ours.astype(float)).statistic
        rows.append({"item": item, "recipe": recipe, "dataset": name, "dataset_label": part.dataset_label.iloc[0], "metric": metric,
                     "models": len(part), "paper_order": " > ".join(DISPLAY_NAMES[m] for m in paper_order),
                     "our_order": " > ".join(DISPLAY_NAMES[m] for m in our_order), "kendall_tau": float(tau),
                     "paper_best": DISPLAY_NAMES[paper_order[0]], "our_best": DISPLAY_NAMES[our_order[0]],
                     "same_best": paper_order[0] == our_order[0],
                     "seeds": int(part.n_seeds.min())})
    return pd.DataFrame(rows, columns=RANKING_COLUMNS)


RANKING_COLUMNS = ["item", "recipe", "dataset", "dataset_label", "metric", "models", "paper_order", "our_order", "kendall_tau",
                   "paper_best", "our_best", "same_best", "seeds"]


def cli_runs(directory: str | os.PathLike) -> pd.DataFrame:
    """The `python -m ifm train --out` records of a folder as rows beside the paper's Table 3:
    model, recipe, seed, data, device, test RMSE / MAE (at the kept epoch), epochs, and for IFM
    the 5th-95th percentile of its factors on the test set."""
    paper = paper_table("table3").set_index(["dataset", "model"])
    rows = []
    for path in sorted(Path(directory).glob("*.json")):
        r = read_json(path)
        c, env, prov = r["config"], r.get("environment", {}), r["dataset"]["provenance"]
        # The paper's Table 3 has no plain FM row: its FM is LibFM.
        model = "libfm" if c["model"] == "fm" else c["model"]
        ref = paper.loc[(prov["dataset"], model)] if (prov["dataset"], model) in paper.index else None
        factors = r.get("factors_test")
        rows.append({"model": DISPLAY_NAMES.get(c["model"], c["model"]), "recipe": c.get("recipe", "legacy"),
                     "seed": c["seed"], "data": dataset_label(prov), "device": env.get("device_name"),
                     "test RMSE": r["test"]["rmse"], "paper RMSE": None if ref is None else ref["RMSE"],
                     "test MAE": r["test"]["mae"], "paper MAE": None if ref is None else ref["MAE"],
                     "kept epoch / run": f"{r.get('kept_epoch', r['best_epoch'])} / {r['epochs_run']}",
                     "factors p5-p95": "" if not factors else f"{factors['p5']:.2g}-{factors['p95']:.3g}"})
    return pd.DataFrame(rows).sort_values(["recipe", "model", "seed"], ascending=[False, True, True],
                                          ignore_index=True)
