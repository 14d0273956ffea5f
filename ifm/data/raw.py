"""Build datasets from the raw public releases, following NFM's processing.

- Frappe ``frappe.csv`` (tab-separated, one row per logged app use in a context; read
  from the official ``Mobile_Frappe.zip`` or extracted): each log is a positive (+1); each
  log also gives two negatives (-1) with its user and context and an item drawn uniformly
  from the items that user never used. 10 fields.
- MovieLens tags (GroupLens ``tags.csv`` with a header, or ml-10M's ``tags.dat`` in
  ``UserID::MovieID::Tag::Timestamp``): each tag application (user, movie, tag) is a
  positive; two negatives per positive are tags the user has not put on that movie. 3 fields.

NFM's encoding (which the IFM authors' Frappe files share, checked on the mirror): within
a field, values are numbered in order of first appearance in the file.
- Avazu competition CSV: 22 categorical fields (all columns but id and click, hour
  reduced to hour of day), a seeded 4:1 train/test split with 10% of train held out
  for validation, and values seen fewer than ``min_count`` times in the training rows
  mapped to one rare id per field (as the paper: "remove the features appearing less
  than 20 times").

Every builder returns global ids: field j's values get ids ``offset_j + local`` with
offsets the running sum of field sizes, so column j of ``x`` is field j.
"""
from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import pandas as pd

from .libfm import DataFormatError

__all__ = ["BUILDER_VERSION", "FRAPPE_FIELDS", "FRAPPE_FIELD_SIZES", "MOVIELENS_FIELDS", "AVAZU_FIELDS",
           "sample_negatives", "nfm_negatives", "read_frappe_logs", "encode", "build_frappe", "build_movielens_tags", "build_avazu"]

# Bump whenever a builder's output changes, so cached builds are not reused.
BUILDER_VERSION = 2   # 2: NFM's first-appearance encoding and per-user negatives

FRAPPE_FIELDS = ["user", "item", "daytime", "weekday", "isweekend", "homework", "cost",
                 "weather", "country", "city"]
# Field sizes of the real release in NFM's encoding (offsets 0, 957, 5039, ..., 5149: 5,382 ids).
FRAPPE_FIELD_SIZES = [957, 4082, 7, 7, 2, 3, 2, 9, 80, 233]
MOVIELENS_FIELDS = ["userId", "movieId", "tag"]
AVAZU_FIELDS = ["hour", "C1", "banner_pos", "site_id", "site_domain", "site_category",
                "app_id", "app_domain", "app_category", "device_id", "device_ip",
                "device_model", "device_type", "device_conn_type", "C14", "C15", "C16",
                "C17", "C18", "C19", "C20", "C21"]


def _read_csv(path, sep, columns, **kw):
    """Read as strings: every column is a categorical token, and "NA" or "" are values
    (MovieLens has empty tags), not missing data. With ``chunksize``, returns a reader.
    ``path`` may be ``(zip path, member)``: the member is read without extracting it."""
    if isinstance(path, tuple):
        archive, member = path
        where = f"{os.fspath(archive)}:{member}"
        with zipfile.ZipFile(archive) as z:
            path = io.BytesIO(z.read(member))
    else:
        where = os.fspath(path)
    try:
        header = pd.read_csv(path, sep=sep, nrows=0).columns
        if hasattr(path, "seek"):
            path.seek(0)
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataFormatError(f"{where}, line 1: header lacks columns {missing}")
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, **kw)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataFormatError(f"{where}: cannot parse as CSV: {err}") from None


def encode(df: pd.DataFrame, fields: list[str]) -> tuple[np.ndarray, list[int]]:
    """Local codes per field, numbered by first appearance (NFM's encoding)."""
    codes, sizes = [], []
    for name in fields:
        c, uniques = pd.factorize(df[name], sort=False)
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


def nfm_negatives(users: np.ndarray, used: np.ndarray, num_items: int,
                  rng: np.random.Generator) -> np.ndarray:
    """NFM's negative rule: for each entry of ``users``, an item drawn uniformly from the
    items that user never used. ``used`` holds the keys ``user * num_items + item`` of
    every logged (user, item). Vectorised rejection sampling; int64 [len(users)]."""
    used = np.unique(used)
    free = num_items - np.bincount(used // num_items, minlength=int(users.max(initial=0)) + 1)
    if len(users) and (free[users] < 1).any():
        raise ValueError("a user has used every item: no negative can be drawn for them")
    items = np.empty(len(users), dtype=np.int64)
    todo = np.arange(len(users))
    while len(todo):
        items[todo] = rng.integers(0, num_items, size=len(todo))
        todo = todo[np.isin(users[todo] * num_items + items[todo], used)]
    return items


FRAPPE_ZIP_MEMBER = "Mobile_Frappe/frappe/frappe.csv"


def read_frappe_logs(path: str | os.PathLike) -> tuple[np.ndarray, list[int]]:
    """The logs of ``frappe.csv`` (or of the official zip) in NFM's encoding: local codes
    [N, 10] in field order and the field sizes."""
    source = (path, FRAPPE_ZIP_MEMBER) if os.fspath(path).endswith(".zip") else path
    if isinstance(source, tuple):
        try:
            with zipfile.ZipFile(path) as z:
                if FRAPPE_ZIP_MEMBER not in z.namelist():
                    raise DataFormatError(f"{os.fspath(path)}: no {FRAPPE_ZIP_MEMBER} in the archive")
        except zipfile.BadZipFile as err:
            raise DataFormatError(f"{os.fspath(path)}: not a readable zip archive ({err})") from None
    return encode(_read_csv(source, "\t", FRAPPE_FIELDS), FRAPPE_FIELDS)


def frappe_negatives(codes: np.ndarray, sizes: list[int], context_rows: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """Negative lines (local codes) for the given rows: each keeps its user and context and
    takes an item by NFM's rule, with the users' used items read from all logs ``codes``."""
    item = FRAPPE_FIELDS.index("item")
    n_items = sizes[item]
    neg = np.array(context_rows, dtype=np.int64, copy=True)
    neg[:, item] = nfm_negatives(neg[:, 0], codes[:, 0] * n_items + codes[:, item], n_items, rng)
    return neg


def build_frappe(path: str | os.PathLike, seed: int = 0) -> dict:
    """Frappe from the raw release by NFM's processing: 96,203 logs -> 288,609 lines, each
    log followed by its two negatives."""
    codes, sizes = read_frappe_logs(path)
    neg = frappe_negatives(codes, sizes, np.repeat(codes, 2, axis=0), np.random.default_rng(seed))
    rows = np.concatenate([codes[:, None, :], neg.reshape(len(codes), 2, -1)], axis=1)
    y = np.tile(np.array([1.0, -1.0, -1.0], dtype=np.float32), len(codes))
    x = rows.reshape(-1, codes.shape[1]) + np.concatenate(([0], np.cumsum(sizes)[:-1]))
    return dict(x=x, y=y, field_sizes=sizes, positives=len(codes), fields=FRAPPE_FIELDS)


def read_tags(path: str | os.PathLike) -> pd.DataFrame:
    """GroupLens tags as strings: ``tags.csv`` (header userId,movieId,tag,timestamp) or
    ml-10M's ``tags.dat`` (``UserID::MovieID::Tag::Timestamp``, no header; a tag may itself
    hold ``::``, so the line splits at its first two and its last separator)."""
    if not os.fspath(path).endswith(".dat"):
        return _read_csv(path, ",", MOVIELENS_FIELDS)
    rows = []
    with open(path, "rb") as f:
        for number, raw_line in enumerate(f, 1):
            try:
                line = raw_line.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                raise DataFormatError(f"{os.fspath(path)}, line {number}: not UTF-8 text ({err.reason} "
                                      f"at byte {err.start})") from None
            user, sep1, rest = line.partition("::")
            movie, sep2, rest = rest.partition("::")
            tag, sep3, _ = rest.rpartition("::")
            if not (sep1 and sep2 and sep3 and user.isdigit() and movie.isdigit()):
                raise DataFormatError(f"{os.fspath(path)}, line {number}: expected "
                                      f"UserID::MovieID::Tag::Timestamp, got {line[:80]!r}")
            rows.append((user, movie, tag))
    if not rows:
        raise DataFormatError(f"{os.fspath(path)}: no tag applications")
    return pd.DataFrame(rows, columns=MOVIELENS_FIELDS)


def build_movielens_tags(path: str | os.PathLike, seed: int = 0) -> dict:
    """MovieLens-tag from GroupLens tags (ml-10M: 95,580 applications -> 286,740 lines)."""
    df = read_tags(path)
    codes, sizes = encode(df, MOVIELENS_FIELDS)
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
