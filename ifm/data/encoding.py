"""How a table of yours becomes IFM's input, fitted on the training rows only and kept with a
saved model (`ifm.training.bundle`), so that new rows are encoded exactly as the training rows were.

Each feature column is one field. A field owns a block of feature ids: one per value of its
vocabulary, then one for "missing" (an empty cell, or NA, NaN, null, None in any case), then one
"rare" bucket for the values seen fewer than `min_count` times in training and for values never
seen there (at prediction time). Columns of whole numbers (ids, codes, hours) are categorical.
A column whose values are numbers and not all whole (a price) is numeric: it is cut into
`numeric_bins` quantile bins of its training values, or refused when no bin count is given.

The target: a 0/1 column is a CTR task. With `task="ctr"` any two-valued numeric target is
mapped, the smaller value to 0 and the larger to 1 (-1/1, 1/2); with `task="regression"` any
numeric target is a value to predict. Anything else is refused: a task is never guessed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .libfm import DataFormatError

FORMAT = 1
MISSING = {"", "na", "nan", "null", "none", "n/a"}
TASKS = ("ctr", "regression")


class EncodingError(DataFormatError):
    """Data that cannot be encoded; the message names the file and column."""


def is_missing(values: pd.Series) -> np.ndarray:
    return values.astype(str).str.strip().str.lower().isin(MISSING).to_numpy()


@dataclass
class Encoded:
    x: np.ndarray                   # [rows, fields] int64 feature ids
    y: np.ndarray | None            # [rows] float32 labels (None: the table has no target column)
    missing: dict                   # field: rows with a missing value
    rare: dict                      # field: rows whose value went to the rare bucket


@dataclass
class Encoding:
    target: str
    task: str                                       # "ctr" or "regression"
    fields: list
    kinds: dict                                     # field: "categorical" or "numeric"
    vocab: dict                                     # field: its values (categorical) or bin labels
    edges: dict = field(default_factory=dict)       # numeric field: the inner quantile edges
    target_map: dict | None = None                  # ctr: {"negative": 0.0, "positive": 1.0} (or -1, 1...)
    min_count: int = 1

    # ------------------------------------------------------------------ the layout of the ids
    def block(self, name: str) -> int:
        return len(self.vocab[name]) + 2            # values, missing, rare

    def offsets(self) -> list[int]:
        return np.cumsum([0] + [self.block(f) for f in self.fields])[:-1].tolist()

    @property
    def num_features(self) -> int:
        return int(sum(self.block(f) for f in self.fields))

    def field_ids(self) -> list[np.ndarray]:
        """Each field's feature ids, in field order (the per-feature layout of a loaded model)."""
        return [np.arange(o, o + self.block(f)) for o, f in zip(self.offsets(), self.fields)]

    # ------------------------------------------------------------------ fit and apply
    @classmethod
    def fit(cls, frame: pd.DataFrame, target: str, fields, *, task: str | None = None,
            numeric_bins: int | None = None, numeric=(), min_count: int = 1, source: str = "the data") -> "Encoding":
        """The encoding of `frame`'s training rows (every value a string, as `read_table` gives)."""
        fields = list(fields)
        kinds, vocab, edges = {}, {}, {}
        floats = [f for f in fields if f in set(numeric) or _has_fractions(frame[f])]
        if floats and numeric_bins is None:
            raise EncodingError(f"{source}: column{'s' if len(floats) > 1 else ''} {', '.join(floats)} hold"
                                f"{'' if len(floats) > 1 else 's'} numbers with decimals; IFM's fields are "
                                "categorical: give --numeric-bins N to cut them into N quantile bins, or leave "
                                "them out with --fields")
        for name in fields:
            values = frame[name].astype(str).str.strip()
            present = values[~is_missing(values)]
            if name in floats:
                numbers = pd.to_numeric(present, errors="coerce")
                if numbers.isna().any():
                    bad = present[numbers.isna()].iloc[0]
                    raise EncodingError(f"{source}: column {name} is numeric (--numeric) but holds {bad!r}")
                inner = np.unique(np.quantile(numbers.to_numpy(float), np.linspace(0, 1, numeric_bins + 1)[1:-1])) \
                    if len(numbers) else np.array([])
                kinds[name], edges[name] = "numeric", inner.tolist()
                bounds = ["-inf", *(f"{e:.6g}" for e in inner), "inf"]
                vocab[name] = [f"[{a}, {b})" for a, b in zip(bounds[:-1], bounds[1:])]
            else:
                counts = present.value_counts(sort=False)
                kept = set(counts.index[counts >= min_count])
                kinds[name] = "categorical"
                vocab[name] = [v for v in pd.unique(present) if v in kept]     # by first appearance
        task = _task_of(frame[target], target, task, source)
        target_map = _target_map(frame[target], target, source) if task == "ctr" else None
        return cls(target, task, fields, kinds, vocab, edges, target_map, min_count)

    def transform(self, frame: pd.DataFrame, source: str = "the data") -> Encoded:
        """`frame`'s rows as feature ids (and labels, when it has the target column)."""
        absent = [f for f in self.fields if f not in frame.columns]
        if absent:
            raise EncodingError(f"{source}: lacks column{'s' if len(absent) > 1 else ''} {', '.join(absent)} "
                                f"(the model was trained on {', '.join(self.fields)})")
        ids, missing, rare = [], {}, {}
        for offset, name in zip(self.offsets(), self.fields):
            values = frame[name].astype(str).str.strip()
            gone = is_missing(values)
            n = len(self.vocab[name])
            if self.kinds[name] == "numeric":
                numbers = pd.to_numeric(values.where(~gone, "nan"), errors="coerce").to_numpy(float)
                bad = ~gone & np.isnan(numbers)
                if bad.any():
                    i = int(np.argmax(bad))
                    raise EncodingError(f"{source}, line {i + 2}: column {name} is numeric; {values.iloc[i]!r} "
                                        "is not a number")
                local = np.searchsorted(np.asarray(self.edges[name]), np.nan_to_num(numbers), side="right")
                unseen = np.zeros(len(values), bool)
            else:
                index = {v: i for i, v in enumerate(self.vocab[name])}
                local = values.map(index).to_numpy()
                unseen = pd.isna(local) & ~gone
                local = np.where(unseen, n + 1, np.nan_to_num(local.astype(float), nan=n)).astype(np.int64)
            local = np.where(gone, n, local)
            ids.append(offset + local.astype(np.int64))
            missing[name], rare[name] = int(gone.sum()), int(unseen.sum())
        y = self.labels(frame[self.target], source) if self.target in frame.columns else None
        x = np.stack(ids, axis=1) if ids else np.zeros((len(frame), 0), np.int64)
        return Encoded(x, y, missing, rare)

    def labels(self, column: pd.Series, source: str = "the data") -> np.ndarray:
        y = target_numbers(column, self.target, source)
        if self.task == "ctr":
            low, high = self.target_map["negative"], self.target_map["positive"]
            bad = (y != low) & (y != high)
            if bad.any():
                i = int(np.argmax(bad))
                raise EncodingError(f"{source}, line {i + 2}: target {self.target} is {column.iloc[i]!r}; the model "
                                    f"knows {low:g} (no click) and {high:g} (click)")
            return (y == high).astype(np.float32)
        return y.astype(np.float32)

    # ------------------------------------------------------------------ the bundle's JSON
    def to_dict(self) -> dict:
        return {"format": FORMAT, "target": self.target, "task": self.task, "fields": self.fields,
                "kinds": self.kinds, "vocab": self.vocab, "edges": self.edges, "target_map": self.target_map,
                "min_count": self.min_count}

    @classmethod
    def from_dict(cls, d: dict) -> "Encoding":
        return cls(d["target"], d["task"], list(d["fields"]), d["kinds"], d["vocab"], d.get("edges", {}),
                   d.get("target_map"), d.get("min_count", 1))


def _has_fractions(column: pd.Series) -> bool:
    """Numbers, and not all whole: a measurement (price), not an id."""
    values = column.astype(str).str.strip()
    present = values[~is_missing(values)]
    numbers = pd.to_numeric(present, errors="coerce")
    return len(present) > 0 and not numbers.isna().any() and bool((numbers % 1 != 0).any())


def target_numbers(column: pd.Series, target: str, source: str) -> np.ndarray:
    y = pd.to_numeric(column.astype(str).str.strip(), errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(y)
    if bad.any():
        i = int(np.argmax(bad))
        raise EncodingError(f"{source}, line {i + 2}: target {target} is {column.iloc[i]!r}, not a number")
    return y


def _task_of(column: pd.Series, target: str, task: str | None, source: str) -> str:
    y = target_numbers(column, target, source)
    values = np.unique(y)
    if len(values) < 2:
        raise EncodingError(f"{source}: target {target} has one value ({values[0]:g}) in the training rows: "
                            "nothing to learn")
    if task is None:
        if set(values.tolist()) == {0.0, 1.0}:
            return "ctr"
        shown = ", ".join(f"{v:g}" for v in values[:5]) + (", ..." if len(values) > 5 else "")
        raise EncodingError(f"{source}: target {target} takes {len(values)} values ({shown}), not 0/1: say "
                            f"--task regression to predict it as a number"
                            + (", or --task ctr to take the larger value as a click" if len(values) == 2 else ""))
    if task == "ctr" and len(values) != 2:
        raise EncodingError(f"{source}: --task ctr needs a target with two values; {target} takes {len(values)}")
    if task not in TASKS:
        raise EncodingError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    return task


def _target_map(column: pd.Series, target: str, source: str) -> dict:
    """A CTR target's two values: the smaller is no click (0), the larger a click (1)."""
    values = np.unique(target_numbers(column, target, source))
    return {"negative": float(values[0]), "positive": float(values[1])}
