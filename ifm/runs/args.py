"""The argument types the commands share (`python -m ifm train`, `fill`, `reproduce`): each
checks its value before any work starts and names the accepted range in its error."""
from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from ifm.training.limits import LIMITS, device_problem


def number_arg(setting: str):
    """An argparse type for a numeric setting: its range checked, its range in the error."""
    limit = LIMITS[setting]

    def parse(text: str):
        try:
            value = limit.kind(text)
        except ValueError:
            value = None
        if value is None or not limit.accepts(value):
            raise argparse.ArgumentTypeError(f"must be {limit}, got {text!r}")
        return value
    return parse


def device_arg(text: str) -> str:
    problem = device_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def path_arg(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path")
    return os.path.expanduser(text)


def duration_arg(text: str) -> float:
    """--time-limit: seconds, or a number with s, m or h (540, 90m, 2.5h)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"a duration above 0: seconds, or a number with s, m or h "
                                          f"(540, 90m, 2.5h), got {text!r}")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def recipes_arg(text: str) -> str:
    """--recipe: one recipe or several joined by commas, checked before any notebook runs."""
    from ifm.runs.experiment import parse_recipes

    try:
        recipes = parse_recipes(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if "legacy" in recipes and len(recipes) > 1:
        raise argparse.ArgumentTypeError("legacy only reads the old records: give it alone")
    return ",".join(recipes)


def scheduler_arg(text: str) -> str:
    """--scheduler: a Dask scheduler's address, tcp://HOST:PORT (or tls://, ws://...)."""
    if not re.fullmatch(r"(tcp|tls|ws|wss|inproc|ucx)://[^\s/:]+(:\d{1,5})?/?", text.strip()):
        raise argparse.ArgumentTypeError(f"a Dask scheduler's address such as tcp://HOST:8786, got {text!r}")
    return text.strip()


def output_problem(path: str) -> str | None:
    """Why a new file cannot be written at `path` (None: it can; missing parents are created)."""
    target = Path(path)
    if target.exists() and not target.is_file():
        return f"{path} is {'a directory' if target.is_dir() else 'not a regular file'}; give a file path"
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is a file, not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot write in {parent} (permission denied)"
    return None
