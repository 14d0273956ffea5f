"""Your own data: libfm files or a CSV of categorical columns, as an ``ifm`` Dataset.

- libfm (any suffix but .csv/.tsv): ``label id:1 id:1 ...`` with the same number of active
  features on every line, one per field (the reader checks that every id keeps its
  position); one file is split 8:1:1 by ``split_seed``, three are train, validation, test.
- CSV / TSV with a header: ``target`` names the label column; every other column (or those
  named in ``fields``) is one categorical field, its values numbered by first appearance.
The task is ``binary`` (log loss, AUC) when every label is 0 or 1, else ``regression``.
Your files are read, never written.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .registry import Dataset, random_split, to_split
from .download import file_digests
from .libfm import DataFormatError, read_libfm

__all__ = ["load_files"]


def load_files(paths, *, target: str | None = None, fields=None, split_seed: int = 0,
               name: str | None = None) -> Dataset:
    """A Dataset from one file (split 8:1:1 by ``split_seed``) or three (train, valid, test)."""
    paths = [Path(p).expanduser() for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if len(paths) not in (1, 3):
        raise ValueError(f"--data takes one file or three (train,valid,test), got {len(paths)}")
    for p in paths:
        try:
            if not p.is_file():
                raise FileNotFoundError(f"--data: {p} is not a readable file")
            open(p, "rb").close()
        except OSError as err:
            if isinstance(err, FileNotFoundError) and str(err).startswith("--data"):
                raise
            raise FileNotFoundError(f"--data: {p} is not a readable file ({err.strerror or err})") from None
    is_csv = [p.suffix.lower() in (".csv", ".tsv") for p in paths]
    if any(is_csv) != all(is_csv):
        raise ValueError("--data: give all files as CSV or all as libfm, not a mix")
    if all(is_csv):
        arrays, field_names = _read_csvs(paths, target, fields)
    else:
        if target or fields:
            raise ValueError("--target and --fields are for CSV files; libfm files hold their label first")
        arrays, field_names = _read_libfms(paths), None
    labels = np.unique(np.concatenate([y for _, y in arrays]))
    task = "binary" if set(labels.tolist()) <= {0.0, 1.0} else "regression"
    x_all = np.concatenate([x for x, _ in arrays])
    num_features = int(x_all.max()) + 1
    splits = arrays if len(arrays) == 3 else random_split(*arrays[0], split_seed)
    tensors = [to_split(x, y) for x, y in splits]
    num_fields = x_all.shape[1]
    rule = ("your train, validation and test files" if len(paths) == 3 else
            f"seeded random 8:1:1 of {len(arrays[0][1]):,} instances (seed {split_seed})")
    provenance = dict(
        dataset=name or paths[0].stem, task=task, source="your files", data_kind="user",
        files=[dict(role=r, path=str(p.resolve()), sha256=file_digests(p)[0])
               for r, p in zip(("train", "valid", "test") if len(paths) == 3 else ("all",), paths)],
        split_rule=rule, split_seed=split_seed if len(paths) == 1 else None, notes=[],
        sizes=dict(train=len(tensors[0]), valid=len(tensors[1]), test=len(tensors[2]),
                   total=sum(len(t) for t in tensors)),
        num_features=num_features, num_fields=num_fields, fields=field_names,
        paper_instances=None, fraction_of_paper=None, labels=labels[:10].tolist())
    return Dataset(provenance["dataset"], task, num_features, num_fields, *tensors, provenance)


def _read_libfms(paths):
    arrays = [read_libfm(paths[0])]
    h = arrays[0][0].shape[1]
    for p in paths[1:]:
        arrays.append(read_libfm(p, h))
    columns = [np.unique(np.concatenate([x[:, j] for x, _ in arrays])) for j in range(h)]
    for j in range(h):
        for k in range(j + 1, h):
            shared = np.intersect1d(columns[j], columns[k])
            if len(shared):
                raise DataFormatError(f"{', '.join(map(str, paths))}: feature id {int(shared[0])} is in position "
                                      f"{j + 1} in one file and {k + 1} in another: each position must be one field")
    return arrays


def _read_csvs(paths, target, fields):
    if not target:
        raise ValueError("--target is required with CSV data: name the label column")
    sep = "\t" if paths[0].suffix.lower() == ".tsv" else ","
    frames, columns = [], None
    for p in paths:
        # the first rows first: a malformed large file fails in seconds, not after it is read whole
        _check_csv(p, _read_csv(p, sep, nrows=HEAD_ROWS), target, fields, columns, paths)
        df = _read_csv(p, sep)
        columns = _check_csv(p, df, target, fields, columns, paths)
        y = pd.to_numeric(df[target], errors="coerce").to_numpy(np.float64)
        frames.append((df[columns], y.astype(np.float32)))
    allx = pd.concat([f for f, _ in frames], ignore_index=True)
    codes, offset = [], 0
    for c in columns:
        local, uniques = pd.factorize(allx[c], sort=False)
        codes.append(local + offset)
        offset += len(uniques)
    x = np.stack(codes, axis=1).astype(np.int64)
    bounds = np.cumsum([0] + [len(f) for f, _ in frames])
    return [(x[a:b], y) for (a, b), (_, y) in zip(zip(bounds[:-1], bounds[1:]), frames)], columns


HEAD_ROWS = 10_000      # rows of each CSV checked before it is read whole


def _read_csv(p, sep: str, nrows: int | None = None):
    try:
        return pd.read_csv(p, sep=sep, dtype=str, keep_default_na=False, nrows=nrows)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataFormatError(f"{p}: cannot parse as CSV: {err}") from None


def _check_csv(p, df, target, fields, columns, paths) -> list:
    """The feature columns of CSV `p` (read as `df`), after checking its header and target."""
    mine = list(fields) if fields else [c for c in df.columns if c != target]
    if columns is not None and set(mine) != set(columns):
        raise DataFormatError(f"{p}, line 1: feature columns {sorted(mine)} differ from {paths[0].name}'s "
                              f"{sorted(columns)}: every file needs the same columns")
    columns = columns or mine
    missing = [c for c in [target, *columns] if c not in df.columns]
    if missing:
        raise DataFormatError(f"{p}, line 1: header lacks columns {missing} (it has {list(df.columns)})")
    if not columns:
        raise DataFormatError(f"{p}: no feature columns besides the target {target!r}")
    if df.empty:
        raise DataFormatError(f"{p}: no rows")
    y = pd.to_numeric(df[target], errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(y)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataFormatError(f"{p}, line {i + 2}: target {df[target].iloc[i]!r} is not a number")
    return columns
