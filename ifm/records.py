"""Run records on disk, written atomically, so no reader ever sees half a file."""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path


def _clean(value):
    """JSON has no NaN or infinity: write them as null rather than emit invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, data) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(_clean(data), f, indent=1, sort_keys=True, allow_nan=False)
        f.write("\n")
    return Path(path)


def save_state_atomic(state: dict, path: str | os.PathLike) -> Path:
    """torch.save of a state_dict, atomically."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def read_json(path: str | os.PathLike):
    with open(path) as f:
        return json.load(f)
