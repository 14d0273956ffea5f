"""`load_dataset(name)`: the one entry to the data, with the order of its sources and provenance.

``load_dataset(name)`` looks in a data directory (``data_dir`` argument, else
``IFM_DATA_DIR``, laid out like the project's mirror: see data/README.md), then in the user
cache (``cache_dir``, else ``IFM_CACHE_DIR``, else ``~/.cache/ifm``), and takes the best
source it finds, in this order (``provenance["data_kind"]`` says which):
  1. ``exact``: a complete set of split files: the IFM authors' three; for Frappe, NFM's
     three plus the authors' valid and test, which give the authors' train exactly; else
     NFM's three pooled and re-split 8:1:1;
  2. ``reconstructed`` (Frappe): the authors' split rebuilt from the raw release and the
     four public valid/test files (``ifm.data.frappe_split``);
  3. ``raw``: a raw public release built by NFM's processing and split 8:1:1 by seed
     (MovieLens from tags alone is a ``stand-in``: it is never the paper's MovieLens);
  4. with ``download=True``, the same files fetched into the cache, each verified byte for
     byte (git blob id, or sha256 for the raw Frappe zip), then 1-3 again;
  5. ``partial``: whatever split files there are, pooled and re-split, with a warning.
``frappe_x1`` (BARS's Frappe_x1: NFM's fixed 7:2:1 split, labels 0/1) takes NFM's three files
(exact), else NFM's validation and test with its train rebuilt from the raw release
(reconstructed), else refuses: see ``ifm.data.frappe_x1``.
Files in a data directory are never modified or deleted; their hashes go into the provenance.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from .libfm import DataFormatError
from .registry import DATASETS, OPTIONS, DataNotFoundError, Dataset, Split, make_dataset, random_split, \
    with_train_fraction
from .frappe_x1 import load_frappe_x1
from .sources import load_avazu, load_regression
from .synthetic import make_synthetic

__all__ = ["Split", "Dataset", "DATASETS", "load_dataset", "DataFormatError", "DataNotFoundError"]


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *, split_seed: int = 0,
                 cache_dir=None, download: bool = True, **options) -> Dataset:
    """Load a registered dataset as tensors with train/valid/test splits.

    ``split_seed`` only drives random splits (never model initialisation). Options:
    frappe/frappe_x1/movielens: ``sample_seed`` (negative sampling when building from a raw
    release, default 0), ``opener`` (URL opener for the download); avazu: ``min_count``
    (20), ``nrows`` (read at most this many rows), frappe/movielens: ``train_fraction`` (a seeded
    share of the training instances, the split seed's; validation and test unchanged), ``sample`` (True: the mirror's 9,999-row
    head, else its 100-row sample, even if the full file is present); synthetic: see :func:`ifm.data.synthetic.make_synthetic`.
    """
    name = name.lower()
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    unknown = set(options) - OPTIONS[name]
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)} for {name}; allowed: {sorted(OPTIONS[name])}")
    fraction = options.pop("train_fraction", 1)
    if fraction != 1:
        return with_train_fraction(load_dataset(name, data_dir, split_seed=split_seed, cache_dir=cache_dir,
                                                download=download, **options), fraction, split_seed)
    if name == "synthetic":
        return _load_synthetic(split_seed, options)
    data_dir = data_dir or os.environ.get("IFM_DATA_DIR") or None
    if data_dir:
        data_dir = Path(os.path.abspath(Path(data_dir).expanduser()))
        _check_data_dir(data_dir)
    cache_dir = Path(cache_dir or os.environ.get("IFM_CACHE_DIR") or Path.home() / ".cache" / "ifm").expanduser()
    if data_dir and _overlap(data_dir, cache_dir):
        # The cache replaces files it finds corrupted; a user's data files must never be touched.
        raise ValueError(f"cache directory {cache_dir} and data directory {data_dir} overlap: the cache "
                         "rewrites the files it manages, and a data directory is never modified. Give "
                         "IFM_CACHE_DIR (cache_dir) a directory of its own.")
    roots = ([(f"mirror:{data_dir.resolve()}", data_dir)] if data_dir else []) + \
        [(f"cache:{cache_dir.resolve()}", cache_dir)]
    if name == "avazu":
        return load_avazu(roots, cache_dir, split_seed, options)
    if name == "frappe_x1":
        return load_frappe_x1(roots, cache_dir, download, options)
    return load_regression(name, roots, cache_dir, split_seed, download, options)


def _check_data_dir(data_dir: Path) -> None:
    """A one-line error for a data directory that is a file, a symlink loop or unreadable; a
    warning for one that does not exist (the cache and download are tried next)."""
    try:
        data_dir.resolve(strict=False)
    except RuntimeError:
        raise DataNotFoundError(f"data directory {data_dir}: a symlink loop") from None
    if data_dir.exists() and not data_dir.is_dir():
        raise DataNotFoundError(f"data directory {data_dir} is a file, not a directory")
    if not data_dir.is_dir():
        warnings.warn(f"data directory {data_dir} does not exist; trying the cache and download")
        return
    try:
        next(os.scandir(data_dir), None)
    except OSError as err:
        raise DataNotFoundError(f"data directory {data_dir}: cannot read it ({err.strerror or err})") from None


def _overlap(data_dir: Path, cache_dir: Path) -> bool:
    """Whether a file the cache manages could be a file of the data directory."""
    data_dir, cache_dir = data_dir.resolve(), cache_dir.resolve()
    return data_dir == cache_dir or cache_dir in data_dir.parents


def _load_synthetic(split_seed, options):
    x, y, params = make_synthetic(**options)
    return make_dataset("synthetic", params["num_fields"] * params["vocab_per_field"],
                    random_split(x, y, split_seed), dict(
                        source="generated", data_kind="synthetic", files=[], generator=params,
                        split_seed=split_seed,
                        split_rule=f"seeded random 8:1:1 of {len(y):,} instances (seed {split_seed})",
                        notes=["synthetic data with a planted input-aware effect: each feature's "
                               f"weight is rescaled by a factor set by the other features; "
                               f"a perfect model's RMSE is the noise level {params['noise']}"]))


DIRECTORY_VARIABLES = ("IFM_DATA_DIR", "IFM_RESULTS_DIR", "IFM_CACHE_DIR")


def pin_directories() -> None:
    """Make the directories named by relative paths in `DIRECTORY_VARIABLES` absolute, against this
    process's working directory: notebook kernels inherit them but run in the notebooks' folder,
    where `../shared/datasets` would name another place."""
    for var in DIRECTORY_VARIABLES:
        if os.environ.get(var):
            os.environ[var] = os.path.abspath(os.path.expanduser(os.environ[var]))
