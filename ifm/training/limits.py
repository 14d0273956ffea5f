"""The accepted range of every numeric setting a user can give (a flag, a notebook override, a
profile field), and whether a device exists on this machine: checked in one place, before any
work starts, with a message that names the setting."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SEED_MAX = 2**32 - 1


@dataclass(frozen=True)
class Range:
    """The accepted values of one numeric setting: an int or a finite float within bounds."""
    kind: type
    low: float | None = None
    high: float | None = None
    above: bool = False     # strictly above low
    below: bool = False     # strictly below high

    def __str__(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        if self.high is not None:
            if self.kind is int:
                return f"{what} from {self.low} to {self.high}"
            return f"{what} in {'(' if self.above else '['}{self.low:g}, {self.high:g}{')' if self.below else ']'}"
        return f"{what} {'>' if self.above else '>='} {self.low:g}"

    def accepts(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if self.kind is int else (int, float)):
            return False
        return (math.isfinite(value) and (value > self.low if self.above else value >= self.low)
                and (self.high is None or (value < self.high if self.below else value <= self.high)))


# Every numeric setting a user can give (flag, notebook override or profile field), by its name.
LIMITS = {
    "epochs": Range(int, 1), "batch_size": Range(int, 1, 2**24), "embedding_size": Range(int, 1, 65536),
    "patience": Range(int, 1), "learning_rate": Range(float, 0, 100, above=True),
    "seed": Range(int, 0, SEED_MAX), "split_seed": Range(int, 0, SEED_MAX),
    "fen_layers": Range(int, 0), "dropout": Range(float, 0, 1, below=True),
    "max_batches": Range(int, 1), "threads": Range(int, 1), "timeout": Range(int, 1),
    "workers": Range(int, 1, 64), "runs_per_gpu": Range(int, 1, 64),
    "numeric_bins": Range(int, 2, 1000), "min_count": Range(int, 1, 10**9),
}
TABLE_COPIES = 4    # an embedding table lives as weights, gradients, Adagrad's sums and the best epoch's copy


def memory_problem(num_features: int, embedding_size: int) -> str | None:
    """Why a model with this feature table would not fit in this machine's memory (None: it fits),
    asked before anything is allocated."""
    import os

    need = TABLE_COPIES * 4 * num_features * (embedding_size + 1)
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):       # not a POSIX system: no check
        return None
    if need > have:
        return (f"{num_features:,} features x embedding size {embedding_size:,} need about {need / 2**30:,.1f} GiB "
                f"for the feature table while training; this machine has {have / 2**30:,.1f} GiB: lower "
                "--embedding-size")
    return None


def check(name: str, value, setting: str | None = None):
    """`value` of the setting `setting` (default: `name`), or a ValueError naming `name` and the range."""
    limit = LIMITS[setting or name]
    if not limit.accepts(value):
        raise ValueError(f"{name} must be {limit}, got {value!r}")
    return limit.kind(value)


def device_problem(text: str) -> str | None:
    """Why `text` names no device of this machine (None: it does)."""
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError):
        return f"{text!r} is not a device; use cpu, cuda or cuda:N"
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            return f"{text!r}: this machine has no CUDA device (torch.cuda.is_available() is False); use cpu"
        if (device.index or 0) >= count:
            return f"{text!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            return f"{text!r}: this machine has no MPS device; use cpu"
    elif device.type != "cpu":
        return f"{text!r} is not supported; use cpu, cuda or cuda:N"
    return None
