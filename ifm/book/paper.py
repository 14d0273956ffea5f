"""The paper's reported numbers (book/paper_reported.json, a copy of shared/paper/reported.json)
as tidy frames, and its best FEN settings."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ifm.models import DISPLAY_NAMES
from ifm.runs.records import read_json

PAPER_REPORTED = Path(__file__).resolve().parents[2] / "book" / "paper_reported.json"


def paper_reported(path: str | os.PathLike | None = None) -> dict:
    """The paper's published numbers (a copy of shared/paper/reported.json kept in the book)."""
    return read_json(path or PAPER_REPORTED)


_PAPER_MODEL_IDS = {v: k for k, v in DISPLAY_NAMES.items() if k != "fm"} | {"FM": "fm"}


def paper_table(item: str, reported: dict | None = None) -> pd.DataFrame:
    """The paper's numbers of one item as a tidy frame.

    item: 'table3' (dataset, model, MAE, RMSE), 'table4' (model, AUC, Logloss),
    'table2' (dataset, model, RI), 'table1' (the three rows), 'best' (dataset, fen_layers,
    dropout, activation of the paper's best IFM).
    """
    r = reported or paper_reported()
    if item == "table3":
        return pd.DataFrame([{"dataset": ds, "model": _PAPER_MODEL_IDS[m], "model_name": m, **vals}
                             for ds, models in r["table3_regression"].items() if isinstance(models, dict)
                             for m, vals in models.items()])
    if item == "table4":
        return pd.DataFrame([{"model": _PAPER_MODEL_IDS[m], "model_name": m, **vals}
                             for m, vals in r["table4_avazu"].items() if isinstance(vals, dict)])
    if item == "table2":
        return pd.DataFrame([{"dataset": ds, "model": _PAPER_MODEL_IDS[m], "model_name": m, "RI": v}
                             for ds, models in r["table2_component_relative_improvement"].items()
                             if isinstance(models, dict) for m, v in models.items()])
    if item == "table1":
        return pd.DataFrame(r["table1_factors_frappe"]["rows"])
    if item == "best":
        return pd.DataFrame([{"dataset": ds, "fen_layers": b["depth"], "dropout": b["dropout"],
                              "activation": b["activation"]}
                             for ds, b in r["settings"]["ifm_best"].items()])
    raise ValueError(f"unknown paper item {item!r}")


def paper_best(option: str, reported: dict | None = None) -> dict:
    """{dataset: the paper's best value of a FEN option} ('fen_layers', 'dropout', 'activation')."""
    best = paper_table("best", reported)
    return dict(zip(best.dataset, best[option]))
