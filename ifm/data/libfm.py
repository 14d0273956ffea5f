"""Strict, vectorised reader for the libfm files of the NFM and IFM authors.

A line is ``label id:1 id:1 ...`` with one active feature per field. ``read_libfm``
raises :class:`DataFormatError`, naming the file and the 1-based line, on

* a byte that is not printable ASCII text (tabs, CRLF endings and a UTF-8 byte-order
  mark at the start of the file are accepted);
* an empty line, a non-numeric label, a token that is not ``id:value``, the wrong
  number of features, an id beyond int64;
* a label that is not finite, or not among the allowed ``labels``;
* a feature value other than 1, a negative id, an id outside ``[0, vocab_size)``;
* an id twice on one line, and an id outside its field: with ``field_ranges`` the j-th
  feature must lie in the j-th range; without, each id must keep its position on every
  line (else the columns are swapped or shifted).

MovieLens has 2M lines, so the fast path checks the layout of the whole file with numpy,
parses all numbers with pandas' C tokenizer and checks the values as arrays. Only when
the layout or a number defeats it does a slow per-line parse take over, up to the first
line it cannot store. Bytes that are not text are reported first; otherwise the error
is about the first bad line.
"""
from __future__ import annotations

import csv
import io
import os
import re
from array import array
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

__all__ = ["DataFormatError", "read_libfm"]


class DataFormatError(ValueError):
    """A data file does not have the expected format (message names file and line)."""


_BOM = b"\xef\xbb\xbf"
_TEXT = bytes(range(32, 127)) + b"\t\n"
_NUMBER = re.compile(rb"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INT = re.compile(rb"[+-]?\d+")


HEAD_BYTES = 1 << 20    # a file larger than this has its first lines checked before it is read whole


def read_libfm(path: str | os.PathLike, num_fields: int | None = None,
               vocab_size: int | None = None, *, labels: Iterable[float] | None = None,
               field_ranges: Sequence[tuple[int, int]] | None = None,
               field_names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a libfm file into ``(x int64 [N, h], y float32 [N])``.

    ``num_fields`` (h) is taken from ``field_ranges`` or ``field_names`` or else the first
    line when not given; every line must have exactly h features, each with value 1 and an
    id in ``[0, vocab_size)``. ``labels``, e.g. ``(-1, 1)``, lists the allowed labels (any
    finite number when None). ``field_ranges[j] = (lo, hi)`` says the j-th feature of a
    line has an id in ``[lo, hi)``; ``field_names`` name the fields in messages.
    """
    path = os.fspath(path)
    h = _count_fields(num_fields, field_ranges, field_names)
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
            if len(head) == HEAD_BYTES and b"\n" in head:     # a large file: its first lines are checked first,
                _parse(path, head[: head.rindex(b"\n") + 1], h, vocab_size, labels, field_ranges, field_names)
                data = head + f.read()                          # so a malformed one fails in seconds
            else:
                data = head
    except OSError as err:
        raise DataFormatError(f"{path}: cannot read it ({err.strerror or err})") from None
    return _parse(path, data, h, vocab_size, labels, field_ranges, field_names)


def _parse(path, data: bytes, h, vocab_size, labels, field_ranges, field_names):
    data = data.removeprefix(_BOM).replace(b"\r\n", b"\n")
    _check_text(path, data)
    # The last line need not end in a newline; trailing blank lines are ignored.
    data = data.replace(b"\t", b" ").rstrip(b" \n") + b"\n"
    if data == b"\n":
        raise DataFormatError(f"{path}: file holds no instances")
    if h is None:
        h = len(data[: data.index(b"\n")].split()) - 1
    parsed, stop = _fast_parse(data, h), None
    if parsed is None:
        # Runs of spaces or leading/trailing blanks are legal but defeat the fixed layout
        # the fast path relies on; normalising keeps line numbers (blank lines stay blank).
        tidy = b"\n".join(b" ".join(line.split()) for line in data.split(b"\n"))
        parsed = _fast_parse(tidy, h) if tidy != data else None
        if parsed is None:
            parsed, stop = _slow_parse(tidy, h, vocab_size)
    y, ids, vals = parsed
    _check_values(path, y, ids, vals, vocab_size, labels, field_ranges, field_names)
    if stop is not None:
        raise DataFormatError(f"{path}, line {stop[0] + 1}: {stop[1]}")
    return ids, y.astype(np.float32)


def _count_fields(num_fields, field_ranges, field_names):
    counts = {len(x) for x in (field_ranges, field_names) if x is not None}
    counts |= {num_fields} if num_fields is not None else set()
    if len(counts) > 1:
        raise ValueError(f"num_fields, field_ranges and field_names give different numbers "
                         f"of fields: {sorted(counts)}")
    if counts and min(counts) < 1:
        raise ValueError("a libfm line needs at least one field")
    return counts.pop() if counts else None


def _check_text(path, data: bytes):
    stray = data.translate(None, _TEXT)
    if not stray:
        return
    pos = min(data.find(byte) for byte in set(stray))
    line, column = data.count(b"\n", 0, pos) + 1, pos - data.rfind(b"\n", 0, pos)
    byte = data[pos]
    if byte < 128:
        problem = f"control character 0x{byte:02x} at column {column} is not text"
    else:
        problem = f"byte 0x{byte:02x} at column {column} is not ASCII/UTF-8 text"
        for n in (2, 3, 4):
            try:
                char = data[pos:pos + n].decode("utf-8")
            except UnicodeDecodeError:
                continue
            problem = (f"non-ASCII character {char!r} (U+{ord(char):04X}) at column {column};"
                       " a libfm file is ASCII text")
            break
    raise DataFormatError(f"{path}, line {line}: {problem}")


def _fast_parse(data: bytes, h: int):
    """Parse with array operations; return None if the file is not laid out exactly as
    ``label id:value ... id:value`` with single spaces and h features on every line, or
    if pandas cannot store a number."""
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
    # Labels and values are read as floats; ids are left to pandas' inference, which
    # yields int64 only for plain integers that fit (not '3.0', '1e3' or 2**63).
    floats = {c: np.float64 for c in range(0, 2 * h + 1, 2)}
    try:
        table = pd.read_csv(io.BytesIO(data.replace(b":", b" ")), sep=" ", header=None,
                            engine="c", na_filter=False, quoting=csv.QUOTE_NONE, dtype=floats)
    except (ValueError, OverflowError):
        return None
    if table.shape != (n, 2 * h + 1) or any(t != np.int64 for t in table.dtypes.iloc[1::2]):
        return None
    return (table[0].to_numpy(), table.iloc[:, 1::2].to_numpy(np.int64),
            table.iloc[:, 2::2].to_numpy(np.float64))


def _slow_parse(data: bytes, h: int, vocab_size):
    """Parse line by line with Python's own number parsing. Returns the arrays of the
    lines before the first line that cannot be stored, and ``(its index, the problem)``
    (None if every line parsed)."""
    y, ids, vals = array("d"), array("q"), array("d")
    stop = None
    for i, line in enumerate(data.split(b"\n")[:-1]):
        row = _parse_line(line.split(), h, vocab_size)
        if isinstance(row, str):
            stop = (i, row)
            break
        y.append(row[0])
        ids.extend(row[1])
        vals.extend(row[2])
    shape = (len(y), max(h, 0))
    return (np.array(y), np.array(ids, np.int64).reshape(shape),
            np.array(vals).reshape(shape)), stop


def _parse_line(tokens: list[bytes], h: int, vocab_size):
    """``(label, ids, values)`` of one line, or what is wrong with it as a string."""
    if not tokens:
        return "empty line"
    if not _NUMBER.fullmatch(tokens[0]):
        return f"label {_show(tokens[0])} is not numeric"
    if len(tokens) == 1:
        return "no features on the line"
    if len(tokens) - 1 != h:
        return (f"{len(tokens) - 1} features, expected {h} (IFM reads one active feature per field, so every "
                "line needs one per field, as many as the first line)")
    ids, vals = [], []
    for tok in tokens[1:]:
        idx, colon, val = tok.partition(b":")
        if not (colon and _INT.fullmatch(idx) and _NUMBER.fullmatch(val)):
            return f"malformed token {_show(tok)}, expected id:1"
        digits = (b"-" if idx.startswith(b"-") else b"") + (idx.lstrip(b"+-").lstrip(b"0") or b"0")
        value = int(digits) if len(digits) <= 20 else None  # int() refuses 4301+ digits
        if value is None or not -2 ** 63 <= value < 2 ** 63:
            shown = _clip(digits.decode())
            if digits.startswith(b"-"):
                return f"negative feature id {shown}"
            if vocab_size is not None:
                return f"feature id {shown} out of range [0, {vocab_size})"
            return f"feature id {shown} is too large"
        ids.append(value)
        vals.append(float(val))
    return float(tokens[0]), ids, vals


def _check_values(path, y, ids, vals, vocab_size, labels, field_ranges, field_names):
    """Checks on parsed arrays, reported at the first bad line (row i is line i + 1); a
    line with several problems gets the first one listed here."""
    def field(j):
        return f"field {field_names[j]!r}" if field_names is not None else f"field {j + 1}"

    def position(j):
        return f"position {j + 1}" + (f" ({field(j)})" if field_names is not None else "")

    checks = [(~np.isfinite(y), lambda i: f"label is not a finite number (it reads as {_num(y[i])})")]
    if labels is not None:
        allowed = np.array(sorted(set(labels)), dtype=np.float64)
        checks.append((~np.isin(y, allowed), lambda i: (
            f"label {_num(y[i])} is not one of the allowed labels ({', '.join(map(_num, allowed))})")))
    negative = ids < 0
    checks += [
        ((vals != 1).any(axis=1), lambda i: f"feature value {_num(vals[i][vals[i] != 1][0])} is not 1"),
        (negative.any(axis=1), lambda i: f"negative feature id {int(ids[i].min())}"),
    ]
    usable = ~negative
    if vocab_size is not None:
        beyond = ids >= vocab_size
        usable &= ~beyond
        checks.append((beyond.any(axis=1), lambda i: (
            f"feature id {int(ids[i].max())} out of range [0, {vocab_size})")))
    repeated = np.zeros(len(y), dtype=bool)
    for a in range(ids.shape[1]):  # pairs of columns: far faster than sorting each line
        for b in range(a + 1, ids.shape[1]):
            repeated |= ids[:, a] == ids[:, b]

    def twice(i):
        values, counts = np.unique(ids[i], return_counts=True)
        v, count = values[counts > 1][0], counts[counts > 1][0]
        return f"feature id {v} appears {'twice' if count == 2 else f'{count} times'} on the line"

    checks.append((repeated, twice))
    if field_ranges is not None:
        lo, hi = np.array(field_ranges, dtype=np.int64).reshape(-1, 2).T
        outside = (ids < lo) | (ids >= hi)

        def out_of_field(i):
            j = int(np.argmax(outside[i]))
            return (f"position {j + 1} holds feature id {ids[i, j]}, but {field(j)} has ids "
                    f"in [{lo[j]}, {hi[j]})")

        checks.append((outside.any(axis=1), out_of_field))
    else:
        moved = _moved_id(ids, usable)
        if moved is not None:
            (row, col), (earlier_row, earlier_col) = moved
            bad = np.zeros(len(y), dtype=bool)
            bad[row] = True
            checks.append((bad, lambda i: (
                f"feature id {ids[row, col]} is at {position(col)}, but was at "
                f"{position(earlier_col)} on line {earlier_row + 1}: each position must "
                f"hold one field (columns swapped or shifted?)")))
    found = [(int(np.argmax(bad)), describe) for bad, describe in checks if bad.any()]
    if found:
        i, describe = min(found, key=lambda t: t[0])
        raise DataFormatError(f"{path}, line {i + 1}: {describe(i)}")


def _moved_id(ids, usable):
    """``((row, col), (earlier row, col))`` of the first id, in file order, that sits in
    a column other than the one where it first appeared, or None. Ids that ``usable``
    masks out are left to the other checks."""
    h = ids.shape[1]
    if not usable.any():
        return None
    v = np.where(usable, ids, -1)  # -1: ignored, lands in the spare last row of `seen`
    if v.max() > 8 * v.size:  # sparse huge ids: renumber so that `seen` stays small
        v = np.unique(v, return_inverse=True)[1].reshape(v.shape)
        v[~usable] = -1
    seen = np.zeros((int(v.max()) + 2, h), dtype=bool)  # seen[id, column]
    seen[v, np.arange(h)] = True
    seen[-1] = False
    shared = seen.sum(axis=1) > 1
    if not shared.any():
        return None
    rows, cols = np.nonzero(shared[v])  # in file order
    v = v[rows, cols]
    _, first = np.unique(v * h + cols, return_index=True)  # where each id enters each column
    first.sort()
    _, home = np.unique(v[first], return_index=True)  # ... the earliest is its own column
    strayed = np.ones(first.size, dtype=bool)
    strayed[home] = False
    k = first[np.argmax(strayed)]
    e = int(np.argmax(v == v[k]))
    return (int(rows[k]), int(cols[k])), (int(rows[e]), int(cols[e]))


def _num(x) -> str:
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


def _clip(text: str, show=str) -> str:
    if len(text) <= 40:
        return show(text)
    return f"{show(text[:20] + '...' + text[-10:])} ({len(text)} characters)"


def _show(token: bytes) -> str:
    return _clip(token.decode("ascii"), repr)
