"""Your own data: libfm files or a CSV of categorical columns, as an ``ifm`` Dataset.

- CSV / TSV with a header: ``target`` names the label column; every other column (or those
  named in ``fields``) is one field. The values are encoded by `ifm.data.encoding.Encoding`,
  fitted on the training rows only: each field's values, a "missing" category and a rare
  bucket (values unseen in training); columns with decimals are cut into quantile bins when
  ``numeric_bins`` is given, else refused.
- libfm (any suffix but .csv/.tsv): ``label id:1 id:1 ...`` with one active feature per field,
  the same number on every line; each position is a field whose values are the feature ids.
One file is split 8:1:1 by ``split_seed``; three are train, validation, test. The task is said,
not guessed (see `ifm.data.encoding`): a 0/1 target is CTR, anything else needs ``task``.
Your files are read, never written.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .download import file_digests
from .encoding import Encoding, EncodingError, target_numbers
from .libfm import DataFormatError, read_libfm
from .registry import Dataset, random_split, to_split

__all__ = ["load_files", "read_table", "libfm_table", "check_paths"]
HEAD_ROWS = 10_000      # rows of each CSV checked before it is read whole
MIN_ROWS = 10           # one file is split 8:1:1: fewer rows leave a split empty
LIBFM_TARGET = "label"


def load_files(paths, *, target: str | None = None, fields=None, split_seed: int = 0, name: str | None = None,
               task: str | None = None, numeric_bins: int | None = None, numeric=(), min_count: int = 1) -> Dataset:
    """A Dataset from one file (split 8:1:1 by ``split_seed``) or three (train, valid, test), with
    its fitted encoding as ``dataset.encoding``."""
    paths = check_paths(paths)
    is_csv = [p.suffix.lower() in (".csv", ".tsv") for p in paths]
    if any(is_csv) != all(is_csv):
        raise ValueError("--data: give all files as CSV or all as libfm, not a mix")
    if all(is_csv):
        if not target:
            raise ValueError("--target is required with CSV data: name the label column")
        # every label a number, said with its line, from the first rows of a large file before it is read whole
        frames = [read_table(p, [target, *(fields or [])], lambda rows, p=p: target_numbers(rows[target], target, str(p)))
                  for p in paths]
        columns = _feature_columns(paths, frames, target, fields)
    else:
        if target or fields:
            raise ValueError("--target and --fields are for CSV files; libfm files hold their label first")
        frames, target = _libfm_frames(paths), LIBFM_TARGET
        columns = [c for c in frames[0].columns if c != target]
    if len(paths) == 1:
        if len(frames[0]) < MIN_ROWS:
            raise DataFormatError(f"{paths[0]}: {len(frames[0])} row{'s' if len(frames[0]) != 1 else ''}; one "
                                  f"file is split 8:1:1 into train, validation and test, which needs at least "
                                  f"{MIN_ROWS} rows")
        rows = np.arange(len(frames[0]))
        frames = [frames[0].iloc[part].reset_index(drop=True) for part, _ in random_split(rows, rows, split_seed)]
    roles = ("train", "valid", "test")
    sources = [f"{paths[0]} ({r} rows)" for r in roles] if len(paths) == 1 else [str(p) for p in paths]
    encoding = Encoding.fit(frames[0], target, columns, task=task, numeric_bins=numeric_bins, numeric=numeric,
                            min_count=min_count, source=sources[0])
    encoded = [encoding.transform(f, s) for f, s in zip(frames, sources)]
    tensors = [to_split(e.x, e.y) for e in encoded]
    rule = ("your train, validation and test files" if len(paths) == 3 else
            f"seeded random 8:1:1 of {sum(len(f) for f in frames):,} instances (seed {split_seed})")
    internal = "binary" if encoding.task == "ctr" else "regression"
    provenance = dict(
        dataset=name or paths[0].stem, task=internal, source="your files", data_kind="user",
        files=[dict(role=r, path=str(p.resolve()), sha256=file_digests(p)[0])
               for r, p in zip(roles if len(paths) == 3 else ("all",), paths)],
        split_rule=rule, split_seed=split_seed if len(paths) == 1 else None, notes=_notes(encoding, encoded),
        sizes=dict(train=len(tensors[0]), valid=len(tensors[1]), test=len(tensors[2]),
                   total=sum(len(t) for t in tensors)),
        num_features=encoding.num_features, num_fields=len(columns), fields=columns,
        paper_instances=None, fraction_of_paper=None,
        labels=np.unique(np.concatenate([e.y for e in encoded]))[:10].tolist())
    return Dataset(provenance["dataset"], internal, encoding.num_features, len(columns), *tensors, provenance,
                   encoding)


def check_paths(paths) -> list[Path]:
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
    return paths


def read_table(path: Path, needed=(), check=None) -> pd.DataFrame:
    """A CSV/TSV file's rows, every cell a string; the header checked first (no duplicate or
    empty names), then its first rows (and `check` of them), then the whole file (and `check`)."""
    path = Path(path)
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle, delimiter=sep), None)
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{path}: not UTF-8 text ({err.reason})") from None
    if not header or not any(h.strip() for h in header):
        raise DataFormatError(f"{path}: empty file (a CSV needs a header line and rows)")
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise DataFormatError(f"{path}, line 1: column name{'s' if len(twice) > 1 else ''} "
                              f"{', '.join(map(repr, twice))} appear{'' if len(twice) > 1 else 's'} twice in the header")
    absent = [c for c in needed if c not in header]
    if absent:
        raise DataFormatError(f"{path}, line 1: header lacks columns {absent} (it has {header})")
    for nrows in (HEAD_ROWS, None):    # the first rows first: a malformed large file fails in seconds
        frame = _read_csv(path, sep, nrows)
        if frame.empty:
            raise DataFormatError(f"{path}: no rows below the header")
        if check is not None:
            check(frame)
        if nrows and len(frame) < nrows:
            break
    return frame


def _read_csv(path: Path, sep: str, nrows: int | None = None) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, nrows=nrows)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataFormatError(f"{path}: cannot parse as CSV: {err}") from None


def _feature_columns(paths, frames, target, fields) -> list:
    if fields:
        if target in fields:
            raise ValueError(f"--fields names the target {target!r} among the features: it would be its own "
                             "answer; leave it out")
        if len(set(fields)) != len(fields):
            raise ValueError(f"--fields names {sorted({f for f in fields if fields.count(f) > 1})} twice")
    columns = None
    for p, frame in zip(paths, frames):
        mine = list(fields) if fields else [c for c in frame.columns if c != target]
        if columns is not None and set(mine) != set(columns):
            raise DataFormatError(f"{p}, line 1: feature columns {sorted(mine)} differ from {paths[0].name}'s "
                                  f"{sorted(columns)}: every file needs the same columns")
        columns = columns or mine
    if not columns:
        raise DataFormatError(f"{paths[0]}: no feature columns besides the target {target!r}")
    return columns


def _libfm_frames(paths) -> list[pd.DataFrame]:
    arrays = [read_libfm(paths[0])]
    h = arrays[0][0].shape[1]
    arrays += [read_libfm(p, h) for p in paths[1:]]
    columns = [np.unique(np.concatenate([x[:, j] for x, _ in arrays])) for j in range(h)]
    for j in range(h):
        for k in range(j + 1, h):
            shared = np.intersect1d(columns[j], columns[k])
            if len(shared):
                raise DataFormatError(f"{', '.join(map(str, paths))}: feature id {int(shared[0])} is in position "
                                      f"{j + 1} in one file and {k + 1} in another: each position must be one field")
    return [_libfm_frame(x, y) for x, y in arrays]


def libfm_table(path) -> pd.DataFrame:
    """One libfm file as a table: its label column and one column per position (field_1, ...)."""
    return _libfm_frame(*read_libfm(path))


def _libfm_frame(x, y) -> pd.DataFrame:
    return pd.DataFrame({LIBFM_TARGET: [f"{v:g}" for v in y],
                         **{f"field_{j + 1}": x[:, j].astype(str) for j in range(x.shape[1])}})


def _notes(encoding: Encoding, encoded) -> list[str]:
    """What the encoding did, in words: the task, numeric bins, missing values, rare values."""
    notes = [f"task: {encoding.task}" + (f" (target {encoding.target}: {encoding.target_map['negative']:g} is no "
                                         f"click, {encoding.target_map['positive']:g} a click)"
                                         if encoding.task == "ctr" else f" (target {encoding.target})")]
    for name in encoding.fields:
        if encoding.kinds[name] == "numeric":
            notes.append(f"{name}: numeric, cut into {len(encoding.vocab[name])} quantile bins of its training values")
    for role, e in zip(("train", "valid", "test"), encoded):
        missing = {f: n for f, n in e.missing.items() if n}
        rare = {f: n for f, n in e.rare.items() if n}
        if missing:
            notes.append(f"{role}: missing values (one 'missing' category per field): "
                         + ", ".join(f"{f} {n:,}" for f, n in missing.items()))
        if rare:
            notes.append(f"{role}: values unseen in training (the field's rare bucket): "
                         + ", ".join(f"{f} {n:,}" for f, n in rare.items()))
    return notes


__all__ += ["EncodingError"]
