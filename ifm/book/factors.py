"""Table 1 of the paper: the input-aware factors m_x,i that IFM's FEN gives two fields in three test
instances, at every seed of Table 3's IFM, derived from its weights and kept as a derived record;
and how our factors vary over the whole test set, against the paper's three instances
(`factor_statistics`, judged by `ifm.book.rules.judge_factors`)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ifm.book.rules import PAPER_FACTOR_RANGES, PAPER_SHARE_BOUNDS, judge_factors
from ifm.book.studies import per_recipe, seeds_of
from ifm.book.rows import row_of
from ifm.runs.experiment import Experiment
from ifm.runs.records import read_json, write_json_atomic
from ifm.training.loop import predict

@dataclass
class FactorStudy:
    """Table 1: `table` (the chosen test instances, FM and IFM errors, their factors),
    `distribution` (every test instance's factor of every field, long form) and `summary`
    (per-field statistics of the factors)."""
    table: pd.DataFrame
    distribution: pd.DataFrame
    summary: pd.DataFrame
    attrs: dict

    @classmethod
    def joined(cls, parts: list["FactorStudy"], attrs: dict) -> "FactorStudy":
        """One study of several recipes' parts, each frame stacked and carrying the joined attrs."""
        frames = [pd.concat([getattr(p, name) for p in parts], ignore_index=True)
                  for name in ("table", "distribution", "summary")]
        for frame in frames:
            frame.attrs.update(attrs)
        return cls(*frames, attrs)


TABLE1_FIELDS = {"frappe": (2, 8)}     # the paper's x3 and x9 (0-based); other data: its first two fields


@per_recipe
def factor_study(exp: Experiment, *, dataset: str = "frappe", fields=None) -> FactorStudy:
    """Table 1: input-aware factors m_x,i of two fields in three test instances, at each seed of
    Table 3's IFM.

    The paper's x3 and x9 are read as the 3rd and 9th field of an instance (1-based, as the
    paper numbers x_1..x_h), i.e. 0-based columns 2 and 8: daytime and country on Frappe.
    The paper does not say how its three instances were chosen. Here: among the test
    instances that share the most frequent pair of features in those two fields (so that,
    as in the paper, the *same* two features appear in all three), the ones with the largest,
    median and smallest factor of the first field. Errors are |y_hat - y| with predictions
    bounded to the label range, for IFM and for the FM that IFM was pre-trained from.

    The result is kept as a derived record (``factors-<dataset>-<IFM key>.json`` beside the
    runs: the chosen instances and every test instance's factors), so that the book reads it
    without the models' weights, which are not committed.
    """
    fields = [int(f) for f in (fields if fields is not None else TABLE1_FIELDS.get(dataset, (0, 1)))]
    parts = [factor_seed(exp, dataset, fields, seed) for seed in seeds_of(exp, exp.profile.seeds)]
    found = [p for p in parts if p is not None]
    table = pd.concat([p[0] for p in found], ignore_index=True) if found else pd.DataFrame()
    distribution = pd.concat([p[1] for p in found], ignore_index=True) if found else pd.DataFrame(
        {"seed": pd.Series(dtype=int), "test_index": pd.Series(dtype=int), "field": pd.Series(dtype=int),
         "field_name": pd.Series(dtype=object), "factor": pd.Series(dtype=float)})
    names = found[0][2] if found else []
    q = distribution.groupby(["field", "field_name"])["factor"]
    summary = pd.DataFrame({"mean": q.mean(), "std": q.std(), "p05": q.quantile(0.05), "median": q.median(),
                            "p95": q.quantile(0.95), "share_far_from_1": q.apply(lambda s: float(
                                ((s < 0.5) | (s > 2)).mean()))}).reset_index()
    summary["recipe"] = exp.profile.recipe
    exp_attrs = {"study": "factors", "profile": exp.profile.name, "recipe": exp.profile.recipe, "device": exp.device,
                 "seeds": [int(p[0].seed.iloc[0]) for p in found],
                 "fields": fields, "field_names": [names[f] for f in fields] if names else [],
                 "common_pair": found[0][3] if found else [],
                 "profile_differences": exp.profile.differences(), "missing": exp.missing,
                 "complete": not exp.missing, "report": exp.report("factors")}
    exp.missing = []
    exp.say(exp_attrs["report"])
    for frame in (table, distribution, summary):
        frame.attrs.update(exp_attrs)
    return FactorStudy(table, distribution, summary, exp_attrs)


def factor_seed(exp: Experiment, dataset: str, fields: list[int], seed: int):
    """One seed of Table 1: (its instances, every test factor in long form, the field names, the
    common pair), from the derived record of Table 3's IFM at that seed, made here when the runner
    trains (it needs the weights of that IFM and its FM: a run whose weights are not on this
    machine is trained again, which on the machine that made the record gives the very same run,
    and on another a slightly different one: the table keeps the record's test MAE beside the
    model's, so that the caption can say so); None (and noted missing, and for `fill` wanted) when
    that record is not made yet."""
    ifm_config, fm_config = exp.config(dataset, "ifm", seed), exp.config(dataset, "fm", seed)
    ifm_record = exp.run(ifm_config, dataset, save_state=exp.train_missing)
    fm_record = exp.run(fm_config, dataset, save_state=exp.train_missing)
    derived = None
    if ifm_record is not None and fm_record is not None:
        path = exp.cache.derived_path("factors", dataset, ifm_record["cache"]["key"])
        derived = exp.cache.read(path, run_record=False) if path.is_file() else None
        if derived is not None and (derived.get("fields") != fields or derived.get("fm_key") != fm_record["cache"]["key"]):
            derived = None
        if derived is None and exp.train_missing:
            write_json_atomic(path, _compute_factors(exp, dataset, fields, ifm_record, fm_record))
            derived = read_json(path)   # one path for fresh and stored results
        if derived is None:
            exp.missing.append(f"Table 1 factors of IFM on {dataset}, seed {seed} (needs its saved weights)")
            exp.stats["missing"] += 1
            if exp.wanted is not None:
                exp.wanted.append((ifm_config, dataset, {}, {"factors": fields}))
    if derived is None:
        return None
    base = row_of(exp, ifm_record, dataset)
    common_cols = {k: base.get(k) for k in ("profile", "dataset", "dataset_label", "seed", "train_instances",
                                            "test_instances", "data_note", "device", "device_name")}
    common_cols.update(profile=exp.profile.name, recipe=exp.profile.recipe)
    table = pd.DataFrame([{**common_cols, **r} for r in derived["table"]])
    table["candidates"] = derived["candidates"]
    table["fm_test_mae"], table["ifm_test_mae"] = derived["fm_test_mae"], derived["ifm_test_mae"]
    table["record_test_mae"] = (ifm_record.get("test") or {}).get("mae", np.nan)   # the run the other pages report
    names = derived["field_names"]
    factors = np.asarray(derived["factors"], dtype=float)   # [field, instance]
    h, n = factors.shape
    distribution = pd.DataFrame({"seed": seed, "test_index": np.tile(np.arange(n), h),
                                 "field": np.repeat(np.arange(1, h + 1), n),
                                 "field_name": np.repeat(np.asarray(names, dtype=object), n),
                                 "factor": factors.reshape(-1)})
    distribution["dataset"] = dataset
    distribution["profile"], distribution["recipe"] = exp.profile.name, exp.profile.recipe
    distribution["device"], distribution["device_name"] = base.get("device"), base.get("device_name")
    return table, distribution, names, derived["common_pair"]


def _compute_factors(exp: Experiment, dataset: str, fields: list[int], ifm_record: dict, fm_record: dict) -> dict:
    """Table 1 from the trained IFM and FM: the chosen instances and every test factor."""
    data = exp.dataset(dataset)
    if max(fields) >= data.num_fields:
        raise ValueError(f"{dataset} has {data.num_fields} fields; fields {fields} are out of range")
    ifm, fm = exp.model(ifm_record, dataset), exp.model(fm_record, dataset)
    x, y = data.test.x, data.test.y
    with torch.no_grad():
        factors = torch.cat([ifm.factors(x[i:i + 16384]) for i in range(0, len(x), 16384)]).numpy()
    low, high = data.train.y.min().item(), data.train.y.max().item()
    bounded = (lambda p: p.clamp(low, high)) if data.task == "regression" else torch.sigmoid
    ifm_error = (bounded(predict(ifm, x)) - y).abs().numpy()
    fm_error = (bounded(predict(fm, x)) - y).abs().numpy()

    xa = x.numpy()
    pair_ids, counts = np.unique(xa[:, fields], axis=0, return_counts=True)
    common = pair_ids[np.argmax(counts)]
    candidates = np.flatnonzero((xa[:, fields] == common).all(axis=1))
    by_factor = candidates[np.argsort(-factors[candidates, fields[0]], kind="stable")]
    picks = {"largest": 0, "median": len(by_factor) // 2, "smallest": len(by_factor) - 1}
    chosen, chosen_as = [], []
    for why, position in picks.items():   # fewer than 3 candidates: fewer rows
        if by_factor[position] not in chosen:
            chosen.append(by_factor[position])
            chosen_as.append(why)
    rows = []
    for n, (i, why) in enumerate(zip(chosen, chosen_as), start=1):
        row = {"instance": n, "test_index": int(i), "chosen_as": f"{why} m of x{fields[0] + 1}",
               "y": float(y[i]), "fm_error": float(fm_error[i]), "ifm_error": float(ifm_error[i])}
        for f in fields:
            row[f"feature_x{f + 1}"] = int(xa[i, f])
            row[f"ifm_factor_x{f + 1}"] = float(factors[i, f])
        rows.append(row)
    names = data.provenance.get("fields") or [f"field {j + 1}" for j in range(data.num_fields)]
    return {"kind": "factors", "dataset": dataset, "fields": fields, "field_names": list(names),
            "ifm_key": ifm_record["cache"]["key"], "fm_key": fm_record["cache"]["key"],
            "common_pair": common.tolist(), "candidates": int(len(candidates)),
            "fm_test_mae": float(fm_error.mean()), "ifm_test_mae": float(ifm_error.mean()), "table": rows,
            # every test instance's factor of every field, 5 significant digits: the figure's data
            "factors": [[float(f"{v:.5g}") for v in column] for column in factors.T]}


def factor_statistics(fs, field: int) -> pd.DataFrame:
    """Per seed: the 5th and 95th percentile of a field's factor (1-based) over the test set, and
    the median over test instances of the largest factor's share of h."""
    d = fs.distribution
    rows = []
    for seed, part in d.groupby("seed", sort=False):
        factors = part.pivot_table(index="test_index", columns="field", values="factor")
        share = factors.max(axis=1) / factors.sum(axis=1)
        mine = factors[field]
        rows.append({"seed": seed, "p05": mine.quantile(0.05), "p95": mine.quantile(0.95),
                     "median_share": float(share.median())})
    return pd.DataFrame(rows, columns=["seed", "p05", "p95", "median_share"])


def factor_verdicts(fs) -> pd.DataFrame:
    """The factors page's table: per reading and field, the seeds, the mean spread and largest
    share (`factor_statistics`) and the verdict of `rules.judge_factors`."""
    rows = []
    for recipe in list(dict.fromkeys(fs.table.recipe)) if fs is not None and len(fs.table) else []:
        part = factor_part(fs, recipe)
        for field in [f + 1 for f in fs.attrs["fields"]]:
            paper_range = PAPER_FACTOR_RANGES.get(field, (math.nan, math.nan))
            j = judge_factors(factor_statistics(part, field), paper_range)
            rows.append({"recipe": recipe, "field": f"x{field}", "seeds": ", ".join(str(s) for s in j.seeds),
                         "5th-95th width (ours)": f"{j.width:.2f}",
                         "width of the paper's instances": f"{paper_range[1] - paper_range[0]:.2f}",
                         "median largest share of h (ours)": f"{j.median_share:.2f}",
                         "paper's instances allow": f"{min(b[0] for b in PAPER_SHARE_BOUNDS):.2f}-"
                                                    f"{max(b[1] for b in PAPER_SHARE_BOUNDS):.2f}",
                         "verdict": j.verdict})
    return pd.DataFrame(rows).set_index(["recipe", "field"]) if rows else pd.DataFrame()


def factor_part(fs, recipe):
    """One recipe's share of a Table 1 study; None when it has no instances under that recipe."""
    if fs is None or fs.table.empty:
        return None
    pick = [frame[frame.recipe == recipe] for frame in (fs.table, fs.distribution, fs.summary)]
    return FactorStudy(*pick, fs.attrs) if len(pick[0]) else None
