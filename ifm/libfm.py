"""Strict, vectorised reader for the libfm files of the NFM and IFM authors.

A line is ``label id:1 id:1 ...`` with one active feature per field. MovieLens has
2M such lines, so the fast path checks the layout of the whole file with numpy and
parses all numbers with pandas' C tokenizer; only if a check fails does a slow
per-line scan look for the first offending line, so that the error names the file,
the 1-based line number and the problem.
"""
from __future__ import annotations

import io
import os
import re

import numpy as np
import pandas as pd

__all__ = ["DataFormatError", "read_libfm"]


class DataFormatError(ValueError):
    """A data file does not have the expected format (message names file and line)."""


_NUMBER = re.compile(rb"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INT = re.compile(rb"-?\d+")


def read_libfm(path: str | os.PathLike, num_fields: int | None = None,
               vocab_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a libfm file into ``(x int64 [N, h], y float32 [N])``.

    ``num_fields`` (h) is inferred from the first line when not given; every line must
    then have exactly h features, each with value 1 and an id in ``[0, vocab_size)``.
    Raises :class:`DataFormatError` naming the file and line on any violation.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    # CR of CRLF files and tabs are harmless; the last line need not end in a newline.
    data = data.replace(b"\r", b"").replace(b"\t", b" ").rstrip(b" \n") + b"\n"
    if data == b"\n":
        raise DataFormatError(f"{path}: file holds no instances")
    if num_fields is None:
        num_fields = len(data[: data.index(b"\n")].split()) - 1
    parsed = _fast_parse(data, num_fields)
    if parsed is None:
        # Runs of spaces or leading/trailing blanks are legal but defeat the fixed layout
        # the fast path relies on; normalising keeps line numbers (blank lines stay blank).
        tidy = b"\n".join(b" ".join(line.split()) for line in data.split(b"\n"))
        parsed = _fast_parse(tidy, num_fields) if tidy != data else None
        if parsed is None:
            _scan_for_error(path, tidy, num_fields)
            raise DataFormatError(f"{path}: malformed libfm file (no single line to blame)")
    y, ids, vals = parsed
    _check_values(path, y, ids, vals, vocab_size)
    return ids, y.astype(np.float32)


def _fast_parse(data: bytes, h: int):
    """Parse with array operations; return None if the file is not laid out exactly as
    ``label id:value ... id:value`` with single spaces and h features on every line."""
    if h < 1:
        return None
    buf = np.frombuffer(data, dtype=np.uint8)
    seps = np.flatnonzero((buf == 32) | (buf == 58) | (buf == 10))
    n = int(np.count_nonzero(buf[seps] == 10))
    # Every line's separators must read ' ', then ':' ' ' (h - 1 times), ':' then '\n',
    # and no two separators may touch (that would be an empty token).
    if len(seps) != n * (2 * h + 1) or seps[0] == 0 or (np.diff(seps) == 1).any():
        return None
    pattern = np.frombuffer(b" " + b": " * (h - 1) + b":\n", dtype=np.uint8)
    if not (buf[seps].reshape(n, 2 * h + 1) == pattern).all():
        return None
    table = pd.read_csv(io.BytesIO(data.replace(b":", b" ")), sep=" ", header=None,
                        engine="c", na_filter=False)
    kinds = [t.kind if isinstance(t, np.dtype) else "O" for t in table.dtypes]  # "O": text
    # Labels and values may be any number; ids must have parsed as integers.
    if table.shape != (n, 2 * h + 1) or any(k not in "iuf" for k in kinds) \
            or any(k not in "iu" for k in kinds[1::2]):
        return None
    a = table.to_numpy()
    return a[:, 0].astype(np.float64), a[:, 1::2].astype(np.int64), a[:, 2::2]


def _check_values(path, y, ids, vals, vocab_size):
    """Checks on parsed arrays, reported at the first bad line (row i is line i + 1)."""
    checks = [
        (~np.isfinite(y), lambda i: f"label {y[i]!r} is not a finite number"),
        ((vals != 1).any(axis=1), lambda i: f"feature value {vals[i][vals[i] != 1][0]:g} is not 1"),
        ((ids < 0).any(axis=1), lambda i: f"negative feature id {int(ids[i].min())}"),
    ]
    if vocab_size is not None:
        checks.append(((ids >= vocab_size).any(axis=1), lambda i: (
            f"feature id {int(ids[i].max())} out of range [0, {vocab_size})")))
    found = [(int(np.argmax(bad)), describe) for bad, describe in checks if bad.any()]
    if found:
        i, describe = min(found, key=lambda t: t[0])
        raise DataFormatError(f"{path}, line {i + 1}: {describe(i)}")


def _scan_for_error(path, data: bytes, h: int):
    """Slow path: walk the lines in Python and raise at the first structural problem."""
    if h < 1:
        raise DataFormatError(f"{path}, line 1: no features on the line")
    for i, line in enumerate(data.split(b"\n")[:-1]):
        where = f"{path}, line {i + 1}"
        tokens = line.split()
        if not tokens:
            raise DataFormatError(f"{where}: empty line")
        if not _NUMBER.fullmatch(tokens[0]):
            raise DataFormatError(f"{where}: label {_show(tokens[0])} is not numeric")
        if len(tokens) - 1 != h:
            raise DataFormatError(f"{where}: {len(tokens) - 1} features, expected {h}")
        for tok in tokens[1:]:
            idx, colon, val = tok.partition(b":")
            if not (colon and _INT.fullmatch(idx) and _NUMBER.fullmatch(val)):
                raise DataFormatError(f"{where}: malformed token {_show(tok)}, expected id:1")


def _show(token: bytes) -> str:
    return repr(token.decode("utf-8", "replace"))
