"""Build datasets from the raw public releases, following NFM's processing.

- Frappe ``frappe.csv`` (tab-separated, one row per logged app use in a context): each
  log is a positive (+1); two negatives (-1) per log keep the same user and context and
  swap in apps that user has not used in that context. 10 fields.
- MovieLens ``tags.csv`` (GroupLens format): each tag application (user, movie, tag) is
  a positive; two negatives per positive are tags the user has not put on that movie.
  3 fields.
- Avazu competition CSV: 22 categorical fields (all columns but id and click, hour
  reduced to hour of day), a seeded 4:1 train/test split with 10% of train held out
  for validation, and values seen fewer than ``min_count`` times in the training rows
  mapped to one rare id per field (as the paper: "remove the features appearing less
  than 20 times").

Every builder returns global ids: field j's values get ids ``offset_j + local`` with
offsets the running sum of field sizes, so column j of ``x`` is field j.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from .libfm import DataFormatError

__all__ = ["BUILDER_VERSION", "FRAPPE_FIELDS", "MOVIELENS_FIELDS", "AVAZU_FIELDS",
           "sample_negatives", "build_frappe", "build_movielens_tags", "build_avazu"]

# Bump whenever a builder's output changes, so cached builds are not reused.
BUILDER_VERSION = 1

FRAPPE_FIELDS = ["user", "item", "daytime", "weekday", "isweekend", "homework", "cost",
                 "weather", "country", "city"]
MOVIELENS_FIELDS = ["userId", "movieId", "tag"]
AVAZU_FIELDS = ["hour", "C1", "banner_pos", "site_id", "site_domain", "site_category",
                "app_id", "app_domain", "app_category", "device_id", "device_ip",
                "device_model", "device_type", "device_conn_type", "C14", "C15", "C16",
                "C17", "C18", "C19", "C20", "C21"]


def _read_csv(path, sep, columns, **kw):
    """Read as strings: every column is a categorical token, and "NA" or "" are values
    (MovieLens has empty tags), not missing data. With ``chunksize``, returns a reader."""
    where = os.fspath(path)
    try:
        header = pd.read_csv(path, sep=sep, nrows=0).columns
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataFormatError(f"{where}, line 1: header lacks columns {missing}")
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, **kw)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataFormatError(f"{where}: cannot parse as CSV: {err}") from None


def _encode(df: pd.DataFrame, fields: list[str]) -> tuple[np.ndarray, list[int]]:
    """Local codes per field (sorted values, so the result does not depend on row order)."""
    codes, sizes = [], []
    for name in fields:
        c, uniques = pd.factorize(df[name], sort=True)
        codes.append(c)
        sizes.append(len(uniques))
    return np.stack(codes, axis=1).astype(np.int64), sizes


def sample_negatives(group: np.ndarray, item: np.ndarray, num_items: int, k: int,
                     rng: np.random.Generator) -> np.ndarray:
    """For each positive (group, item), draw k distinct items never observed as a
    positive in that group. Returns int64 [N, k]. Vectorised rejection sampling."""
    pos_keys = np.unique(group * num_items + item)
    free = num_items - np.bincount(pos_keys // num_items, minlength=int(group.max()) + 1)
    if (free[group] < k).any():
        raise ValueError(f"some context has fewer than {k} unobserved items to sample")
    neg = np.empty((len(group), k), dtype=np.int64)
    for j in range(k):
        todo = np.arange(len(group))
        while len(todo):
            cand = rng.integers(0, num_items, size=len(todo))
            neg[todo, j] = cand
            bad = np.isin(group[todo] * num_items + cand, pos_keys)
            bad |= (neg[todo, :j] == cand[:, None]).any(axis=1)
            todo = todo[bad]
    return neg


def _with_negatives(codes, sizes, item_col, seed, k=2):
    """Positives plus k negatives each, grouped by every column except ``item_col``."""
    context = np.delete(codes, item_col, axis=1)
    _, group = np.unique(context, axis=0, return_inverse=True)
    neg = sample_negatives(group.ravel(), codes[:, item_col], sizes[item_col], k,
                           np.random.default_rng(seed))
    rows = np.repeat(codes[:, None, :], k + 1, axis=1)     # [N, 1 + k, h]: pos, neg, neg
    rows[:, 1:, item_col] = neg
    y = np.tile(np.array([1.0] + [-1.0] * k, dtype=np.float32), len(codes))
    offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    x = rows.reshape(-1, codes.shape[1]) + offsets
    return x, y


def build_frappe(path: str | os.PathLike, seed: int = 0) -> dict:
    """Frappe from the raw ``frappe.csv``; NFM's version has 96,203 logs -> 288,609 rows."""
    df = _read_csv(path, "\t", FRAPPE_FIELDS)
    codes, sizes = _encode(df, FRAPPE_FIELDS)
    x, y = _with_negatives(codes, sizes, FRAPPE_FIELDS.index("item"), seed)
    return dict(x=x, y=y, field_sizes=sizes, positives=len(df), fields=FRAPPE_FIELDS)


def build_movielens_tags(path: str | os.PathLike, seed: int = 0) -> dict:
    """MovieLens-tag from a GroupLens ``tags.csv`` (userId,movieId,tag,timestamp)."""
    df = _read_csv(path, ",", MOVIELENS_FIELDS)
    codes, sizes = _encode(df, MOVIELENS_FIELDS)
    x, y = _with_negatives(codes, sizes, MOVIELENS_FIELDS.index("tag"), seed)
    return dict(x=x, y=y, field_sizes=sizes, positives=len(df), fields=MOVIELENS_FIELDS)


def build_avazu(path: str | os.PathLike, min_count: int = 20, seed: int = 0,
                nrows: int | None = None, chunksize: int = 1_000_000) -> dict:
    """Avazu CSV (plain or .gz) -> train/valid/test tensors with rare-value mapping.

    Read in chunks of strings, so the 40M-row file is coded field by field without
    holding it as Python objects; ``nrows`` limits the rows read.
    """
    vocab = [dict() for _ in AVAZU_FIELDS]
    code_chunks, label_chunks, first_line = [], [], 2
    reader = _read_csv(path, ",", ["click"] + AVAZU_FIELDS, usecols=["click"] + AVAZU_FIELDS,
                       nrows=nrows, chunksize=chunksize)
    for chunk in reader:
        clicks = chunk["click"].to_numpy()
        bad = ~np.isin(clicks, ["0", "1"])
        if bad.any():
            raise DataFormatError(f"{os.fspath(path)}, line {first_line + int(np.argmax(bad))}:"
                                  f" click {clicks[bad][0]!r} is not 0 or 1")
        hour = chunk["hour"]
        bad = ~hour.str.fullmatch(r"\d{8}").to_numpy()
        if bad.any():
            raise DataFormatError(f"{os.fspath(path)}, line {first_line + int(np.argmax(bad))}:"
                                  f" hour {hour.to_numpy()[bad][0]!r} is not YYMMDDHH")
        chunk = chunk.assign(hour=hour.str[-2:])            # YYMMDDHH -> hour of day
        cols = []
        for j, name in enumerate(AVAZU_FIELDS):
            local, uniques = pd.factorize(chunk[name])
            seen = vocab[j]
            ids = np.array([seen.setdefault(u, len(seen)) for u in uniques], dtype=np.int64)
            cols.append(ids[local])
        code_chunks.append(np.stack(cols, axis=1).astype(np.int32))  # halves memory on 40M rows
        label_chunks.append((clicks == "1").astype(np.float32))
        first_line += len(chunk)
    if not code_chunks:
        raise DataFormatError(f"{os.fspath(path)}: no rows")
    codes, y = np.concatenate(code_chunks), np.concatenate(label_chunks)
    n = len(y)
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n / 5))
    rest = perm[n_test:]
    n_valid = int(round(len(rest) / 10))
    parts = dict(train=rest[n_valid:], valid=rest[:n_valid], test=perm[:n_test])
    # Vocabulary from the rows the model is fitted on; local 0 is each field's rare id,
    # which also takes values never seen in training.
    fitted = codes[parts["train"]]
    local = np.empty_like(codes)
    sizes, rare_values = [], []
    for j in range(len(AVAZU_FIELDS)):
        counts = np.bincount(fitted[:, j], minlength=len(vocab[j]))
        keep = counts >= min_count
        remap = np.where(keep, np.cumsum(keep), 0)
        local[:, j] = remap[codes[:, j]]
        sizes.append(int(keep.sum()) + 1)
        rare_values.append(int((~keep).sum()))
    x = local + np.concatenate(([0], np.cumsum(sizes)[:-1]))
    return dict(splits={k: (x[idx], y[idx]) for k, idx in parts.items()}, field_sizes=sizes,
                rows=n, rare_values_per_field=rare_values, fields=AVAZU_FIELDS)
