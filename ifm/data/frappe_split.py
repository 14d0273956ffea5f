"""Frappe at the paper's split, rebuilt from public files.

The IFM authors' 8:1:1 split is three libfm files; their valid and test files are public
(and in the mirror), their train file is not always at hand. It can be rebuilt, because
(measured on the mirror; `tests/test_frappe_split.py` checks it there):

- the authors' valid + test files are NFM's validation file minus 38 lines, so the authors'
  train split is NFM's train + NFM's test + those 38 lines (230,925 lines);
- NFM's files are the raw release (``frappe.csv``) in NFM's encoding: every log a positive
  line, each log also two negative lines with its user, its context and an item drawn
  uniformly from the items that user never used.

So train = (NFM validation + test) minus (authors' valid + test), exact (28,898 lines)
+ the raw positives that are not among NFM's validation + test positives, exact (67,604:
NFM's train positives) + for every (user, context) key, 2 x (logs with that key) minus
(NFM validation + test negatives with that key) negative lines, whose items are the only
unknown and are resampled by NFM's rule with a recorded seed (134,423).

NFM's train file itself (the positives and resampled negatives above, 202,027 lines) is the
train split of NFM's 7:2:1 split, BARS's Frappe_x1: ``nfm_train`` rebuilds it, and
``reconstruct`` adds the authors' part to it; both use the one step ``_nfm_train``.

``reconstruct`` and ``nfm_train`` check each step and refuses (``DataFormatError``) when the files do not
fit these rules, e.g. when a file is not the one expected.
"""
from __future__ import annotations

import numpy as np

from . import raw
from .libfm import DataFormatError

__all__ = ["PAPER_COUNTS", "NFM_COUNTS", "nfm_rest", "nfm_train", "reconstruct"]

# What the public files give (measured on the mirror; NFM's encoding of frappe.csv).
PAPER_COUNTS = dict(train=230_925, valid=28_842, test=28_842, exact_train=96_502,
                    resampled_negatives=134_423, nfm_rest=28_898, raw_positives=67_604)
# NFM's 7:2:1 split (BARS's Frappe_x1): its train file rebuilt, its validation and test files as they are.
NFM_COUNTS = dict(train=202_027, valid=57_722, test=28_860, raw_positives=67_604, resampled_negatives=134_423)


def _ids(*arrays: np.ndarray) -> list[np.ndarray]:
    """One integer per distinct row, shared across the arrays (rows compared whole)."""
    stacked = np.concatenate(arrays)
    _, inverse = np.unique(stacked, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    return np.split(inverse, np.cumsum([len(a) for a in arrays])[:-1])


def _minus(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int]:
    """Multiset difference of rows: (mask over ``a`` keeping a - b, rows of b missing from a).
    Of equal rows, the first ones in ``a`` are the ones removed."""
    ia, ib = _ids(a, b)
    size = max(ia.max(initial=-1), ib.max(initial=-1)) + 1
    in_b = np.bincount(ib, minlength=size)
    order = np.argsort(ia, kind="stable")
    sorted_ids = ia[order]
    starts = np.searchsorted(sorted_ids, sorted_ids, side="left")
    rank = np.empty(len(ia), dtype=np.int64)
    rank[order] = np.arange(len(ia)) - starts                 # occurrence number of each row
    missing = int(np.clip(in_b - np.bincount(ia, minlength=size), 0, None).sum())
    return rank >= in_b[ia], missing


def _rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.concatenate([x, y.astype(np.int64)[:, None]], axis=1)


def _stack(*splits: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of several (x, y) splits, one after the other."""
    return np.concatenate([x for x, _ in splits]), np.concatenate([y for _, y in splits])


def nfm_rest(nfm_validation: tuple, nfm_test: tuple, authors_valid: tuple, authors_test: tuple):
    """(x, y) of the lines of NFM's validation + test in neither of the authors' valid and test
    files (they belong to the authors' train split); refuses files that do not contain them."""
    return _rest(*_stack(nfm_validation, nfm_test), authors_valid, authors_test)


def _rest(nfm_x, nfm_y, authors_valid, authors_test):
    keep, missing = _minus(_rows(nfm_x, nfm_y), _rows(*_stack(authors_valid, authors_test)))
    if missing:
        raise DataFormatError(f"{missing:,} lines of the authors' valid + test files are not in NFM's "
                              "validation + test files: these are not the files the reconstruction needs")
    return nfm_x[keep], nfm_y[keep]


def _logs(logs) -> tuple[np.ndarray, list[int], np.ndarray]:
    """(local codes, field sizes, field offsets) of the raw logs: ``logs`` is the raw release's
    path or ``(codes, sizes)`` already read by ``raw.read_frappe_logs``."""
    codes, sizes = raw.read_frappe_logs(logs) if not isinstance(logs, tuple) else logs
    return codes, sizes, np.concatenate(([0], np.cumsum(sizes)[:-1]))


def _check_encoding(sizes, offsets, files: dict) -> None:
    for name, (x, y) in files.items():
        if x.shape[1] != len(sizes) or x.max(initial=0) >= offsets[-1] + sizes[-1]:
            raise DataFormatError(f"{name}: not in the encoding of this frappe.csv "
                                  f"({len(sizes)} fields, {int(sum(sizes)):,} features)")


def _nfm_train(codes, sizes, offsets, nfm_x, nfm_y, seed):
    """NFM's train file rebuilt, the one step both splits share: (positives, negatives) in global
    ids. Positives: the logs not among NFM's validation + test positives (exact). Negatives: per
    (user, context) key, 2 x (logs with that key) - (validation + test negatives with that key)
    lines with that user and context, their items drawn by NFM's rule (``seed``)."""
    logs = codes + offsets
    item = raw.FRAPPE_FIELDS.index("item")
    context = [j for j in range(codes.shape[1]) if j != item]
    positive = nfm_y > 0
    keep_logs, missing = _minus(logs, nfm_x[positive])
    if missing:
        raise DataFormatError(f"{missing:,} positive lines of NFM's validation + test are not logs of "
                              "frappe.csv in NFM's encoding")
    train_pos = logs[keep_logs]                                            # exact

    users = codes[:, 0]
    used = np.unique(users * sizes[item] + codes[:, item])
    neg_x = nfm_x[~positive]
    neg_keys = neg_x[:, 0] * sizes[item] + (neg_x[:, item] - offsets[item])
    if np.isin(neg_keys, used).any():
        raise DataFormatError("a negative line of NFM's validation + test pairs a user with an item "
                              "that user used: not NFM's negative rule")
    log_key, neg_key = _ids(logs[:, context], neg_x[:, context])
    size = max(log_key.max(initial=-1), neg_key.max(initial=-1)) + 1
    need = 2 * np.bincount(log_key, minlength=size) - np.bincount(neg_key, minlength=size)
    if (need < 0).any():
        raise DataFormatError(f"{int((need < 0).sum()):,} (user, context) keys have more negatives in NFM's "
                              "validation + test than 2 per log")
    keys, first = np.unique(log_key, return_index=True)                    # a log of each key
    template = codes[np.repeat(first, need[keys])]
    negatives = raw.frappe_negatives(codes, sizes, template, np.random.default_rng(seed)) + offsets
    return train_pos, negatives


def _refuse_unexpected(counts: dict, expected: dict | None) -> None:
    if expected is not None and any(counts[k] != v for k, v in expected.items()):
        wrong = ", ".join(f"{k} {counts[k]:,} (expected {v:,})" for k, v in expected.items() if counts[k] != v)
        raise DataFormatError(f"reconstruction refused: {wrong}")


def nfm_train(logs, nfm_validation: tuple, nfm_test: tuple, seed: int = 0, expected: dict | None = None) -> dict:
    """NFM's 7:2:1 split (BARS's Frappe_x1) from the raw release and NFM's validation and test
    files: ``train`` is NFM's train file rebuilt (its positives exact, then its negatives with
    exact user and context and resampled items), ``valid`` and ``test`` are the files as given.
    ``logs``: the raw release's path or ``(codes, sizes)``; splits ``(x, y)`` in global ids with
    labels -1/+1, as returned. ``expected``: counts to insist on (``NFM_COUNTS`` for the real files)."""
    codes, sizes, offsets = _logs(logs)
    _check_encoding(sizes, offsets, dict(nfm_validation=nfm_validation, nfm_test=nfm_test))
    train_pos, negatives = _nfm_train(codes, sizes, offsets, *_stack(nfm_validation, nfm_test), seed)
    train_y = np.concatenate([np.ones(len(train_pos)), -np.ones(len(negatives))]).astype(np.float32)
    counts = dict(train=len(train_y), valid=len(nfm_validation[1]), test=len(nfm_test[1]),
                  raw_positives=len(train_pos), resampled_negatives=len(negatives))
    _refuse_unexpected(counts, expected)
    return dict(train=(np.concatenate([train_pos, negatives]), train_y), valid=nfm_validation, test=nfm_test,
                counts=counts, field_sizes=sizes, seed=seed)


def reconstruct(raw_path, authors_valid: tuple, authors_test: tuple, nfm_validation: tuple,
                nfm_test: tuple, seed: int = 0, expected: dict | None = None) -> dict:
    """The authors' split from the raw release and the four public split files.

    Each split file is ``(x, y)`` in global ids with labels -1/+1. Returns ``train``,
    ``valid``, ``test`` as (x, y) and ``counts`` (what is exact, what resampled).
    ``expected``: counts to insist on (``PAPER_COUNTS`` for the real files).
    """
    codes, sizes, offsets = _logs(raw_path)
    _check_encoding(sizes, offsets, dict(authors_valid=authors_valid, authors_test=authors_test,
                                         nfm_validation=nfm_validation, nfm_test=nfm_test))
    nfm_x, nfm_y = _stack(nfm_validation, nfm_test)
    rest_x, rest_y = _rest(nfm_x, nfm_y, authors_valid, authors_test)     # exact
    train_pos, negatives = _nfm_train(codes, sizes, offsets, nfm_x, nfm_y, seed)

    train_x = np.concatenate([rest_x, train_pos, negatives])
    train_y = np.concatenate([rest_y, np.ones(len(train_pos), np.float32),
                              -np.ones(len(negatives), np.float32)]).astype(np.float32)
    counts = dict(train=len(train_y), valid=len(authors_valid[1]), test=len(authors_test[1]),
                  exact_train=len(rest_y) + len(train_pos), resampled_negatives=len(negatives),
                  nfm_rest=len(rest_y), raw_positives=len(train_pos))
    _refuse_unexpected(counts, expected)
    return dict(train=(train_x, train_y), valid=authors_valid, test=authors_test, counts=counts,
                field_sizes=sizes, seed=seed)
