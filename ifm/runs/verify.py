"""A run record is checked before anything reads it. The book's numbers are only as good as the
records it reads, and a record is a JSON file anyone can edit: `record_problem` says what is wrong
with one (None: nothing), and the run cache ignores such a record with that reason, so that the
run is trained again (`fill`, a notebook) or listed as missing (the book), never shown.

A record passes when it has a run record's shape, its key is the hash of its own key material
and names its file, the configuration it reports is the one its key hashes, and its metrics are
finite numbers (a diverged run's may be null, and the record says it diverged).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

# What the cache and the rows read from a run record: its objects and the keys they must hold.
_RECORD_SHAPE = {"config": ("model", "seed"), "dataset": ("provenance",), "cache": ("key", "stem", "material")}
_KEY = re.compile(r"[0-9a-f]{20}")


def not_object(value) -> str:
    kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")
    return f"{kind}, not a JSON object"


def material_key(material: dict) -> str:
    """The key that `material` hashes to (as `ifm.runs.records.run_key` computes it)."""
    blob = json.dumps(material, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def record_problem(record, path: str | Path | None = None) -> str | None:
    """What keeps `record` (read from `path`) from being a trustworthy run record (None: nothing)."""
    return _shape(record) or _key(record, path) or _config(record) or _metrics(record) or _history(record)


def _shape(record) -> str | None:
    if not isinstance(record, dict):
        return not_object(record)
    for name, keys in _RECORD_SHAPE.items():
        part = record.get(name)
        if not isinstance(part, dict):
            return f"no {name!r} object"
        missing = [k for k in keys if k not in part]
        if missing:
            return f"its {name!r} has no {', '.join(map(repr, missing))}"
    material = record["cache"]["material"]
    if not (isinstance(material, dict) and isinstance(material.get("config"), dict)
            and isinstance(material.get("data"), dict) and "name" in material["data"]):
        return "its cache 'material' lacks the run's config or data"
    return None


def _key(record: dict, path) -> str | None:
    cache = record["cache"]
    key, stem = cache["key"], cache["stem"]
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        return f"its cache key {key!r} is not 20 hex digits"
    try:
        expected = material_key(cache["material"])
    except (TypeError, ValueError) as err:
        return f"its cache material cannot be hashed ({err})"
    if key != expected:
        return f"its cache key {key} is not the hash of its key material ({expected}): it was edited"
    if not isinstance(stem, str) or not stem.endswith(key):
        return f"its cache stem {stem!r} does not end with its key {key}"
    if path is not None and Path(path).stem != stem:
        return f"its cache stem {stem!r} is not its file name {Path(path).name!r}"
    return None


def _config(record: dict) -> str | None:
    """The reported configuration against the one the key hashes (`pretrain_fm` is resolved in the
    key: None there means the paper's choice)."""
    reported, hashed = record["config"], record["cache"]["material"]["config"]
    for name in sorted(set(reported) | set(hashed)):
        if name == "pretrain_fm" and reported.get(name) is None:
            continue
        if _same(reported.get(name), hashed.get(name)) is False:
            return (f"its config {name} is {reported.get(name)!r} but its key was made with "
                    f"{hashed.get(name)!r}: it was edited")
    return None


def _same(a, b) -> bool:
    """Equal as JSON values, with 1 and 1.0 the same and tuples as lists."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _metrics(record: dict) -> str | None:
    diverged = record.get("diverged") is True
    for part in ("valid", "test"):
        values = record.get(part)
        if values is None and part not in record:
            continue
        if not isinstance(values, dict):
            return f"its {part!r} is {not_object(values)}"
        for name, value in values.items():
            if value is None and diverged:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"its {part} {name!r} is {json.dumps(value)}, not a number"
            if not math.isfinite(value):
                return f"its {part} {name!r} is {value}, not a finite number"
    return None


def _history(record: dict) -> str | None:
    """The reported metrics against the per-epoch curves at the epoch the run kept."""
    history, kept = record.get("history"), record.get("kept_epoch", record.get("best_epoch"))
    if not isinstance(history, list) or kept is None:
        return None
    rows = [row for row in history if isinstance(row, dict) and row.get("epoch") == kept]
    if not rows:
        return f"its history has no epoch {kept!r}, the epoch it says it kept"
    for part in ("valid", "test"):
        for name, value in (record.get(part) or {}).items():
            logged = rows[0].get(f"{part}_{name}")
            if value is None or not isinstance(logged, (int, float)):
                continue
            if not math.isclose(value, logged, rel_tol=1e-9, abs_tol=1e-12):
                return (f"its {part} {name!r} ({value}) is not the one its history logged at the epoch it kept "
                        f"({logged}, epoch {kept}): it was edited")
    return None
