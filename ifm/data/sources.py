"""Where a registered dataset's data comes from: finding, verifying and building its files,
in the order of precedence `ifm.data` describes (exact > reconstructed > raw > download >
partial). Every function returns a Dataset whose provenance says what it used."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import torch

from . import frappe_split, raw
from .download import fetch_verified, file_digests
from .libfm import read_libfm
from .registry import AVAZU_SAMPLE_NOTES, DATASETS, STAND_IN_FILES, STAND_IN_NOTES, DataNotFoundError, \
    how_to_get, make_dataset, random_split

__all__ = ["load_regression", "load_avazu"]


def load_regression(name, roots, cache_dir, split_seed, download, options):
    spec = DATASETS[name]
    loaded = _load_local(name, roots, split_seed, options, cache_dir)
    if loaded is not None:
        return loaded
    failures = []
    if download:
        opener = options.get("opener", urllib.request.urlopen)
        wanted = [(kind, dict(spec[kind])) for kind in ("ifm_authors", "nfm")]
        if spec.get("raw_download"):
            wanted.append(("raw", {"raw": spec["raw_download"]}))
        for kind, files in wanted:
            try:
                for f in files.values():
                    if _verified_path(f, cache_dir) is None:
                        fetch_verified(f["url"], cache_dir / f["local"], f["blob_id"], opener=opener)
                loaded = _load_local(name, roots, split_seed, options, cache_dir)
                if loaded is not None:
                    return loaded
            except (urllib.error.URLError, OSError, ValueError) as err:  # network trouble or bad bytes: next source
                failures.append(f"{kind}: {err}")
    partial = _load_partial(name, roots, split_seed)
    if partial is not None:
        return partial
    raise DataNotFoundError(how_to_get(name, roots, download, failures))


def _verified_path(f, cache_dir):
    """The cached copy of an upstream file if its bytes are right, else None (a wrong copy is
    left for the download to replace atomically)."""
    path = Path(cache_dir) / f["local"]
    return path if path.is_file() and file_digests(path)[1] == f["blob_id"] else None


def _find(files, roots, cache_dir):
    """Split -> (root label, path) of each file found, the first root first. Cached copies must
    match their blob id; a directory or a broken link where a file belongs is reported."""
    found = {}
    for split, f in files.items():
        for label, root in roots:
            path = root / f["local"]
            if path.is_symlink() and not path.exists():
                warnings.warn(f"{path} is a broken link: ignored")
            elif path.is_dir():
                warnings.warn(f"{path} is a directory where the {split} file belongs: ignored")
            elif path.is_file():
                if label.startswith("cache:") and _verified_path(f, cache_dir) is None:
                    warnings.warn(f"ignoring corrupted or partial cache file {path} (it will be fetched again)")
                    continue
                found[split] = (label, path)
                break
    return found


def _raw_files(name, roots):
    """(label, path) of raw releases, best first: for MovieLens the largest tags file."""
    found = [(label, path) for label, root in roots for pattern in DATASETS[name]["raw"]
             for path in sorted(root.glob(pattern)) if path.is_file()]     # the data directory first
    if name == "movielens":
        found.sort(key=lambda lp: -lp[1].stat().st_size)
    return found


def _load_local(name, roots, split_seed, options, cache_dir):
    """Sources 1-3 of the module docstring, from files already on disk; None if none applies."""
    spec = DATASETS[name]
    authors = _find(spec["ifm_authors"], roots, cache_dir)
    nfm = _find(spec["nfm"], roots, cache_dir)
    if len(authors) == 3:
        return _from_libfm(name, "ifm_authors", authors, split_seed)
    if name == "frappe" and len(nfm) == 3 and {"valid", "test"} <= set(authors):
        return _frappe_from_nfm_and_authors(nfm, authors)
    if len(nfm) == 3:
        return _from_libfm(name, "nfm", nfm, split_seed)
    raws = _raw_files(name, roots)
    seed = options.get("sample_seed", 0)
    if name == "frappe" and raws and {"valid", "test"} <= set(authors) and {"validation", "test"} <= set(nfm):
        return _frappe_reconstructed(raws[0], authors, nfm, seed)
    if raws:
        return _from_raw(name, *raws[0], cache_dir, split_seed, options)
    return None


def _load_partial(name, roots, split_seed):
    """Partial split files pooled and re-split: NFM's if any (the IFM authors' valid/test are
    subsets of NFM's validation + test, so pooling both would duplicate instances)."""
    spec = DATASETS[name]
    for kind in ("nfm", "ifm_authors"):
        for label, root in roots:
            found = _find(spec[kind], [(label, root)], roots[-1][1])
            if found:
                ds = _from_libfm(name, kind, found, split_seed)
                warnings.warn(f"{name}: only partial data found ({ds.provenance['notes'][0]}); "
                              "results on it are not comparable with the paper's")
                return ds
    return None


def _read_split(name, path):
    """A split file, checked: the task's labels (-1/+1), and for Frappe each field's id range."""
    spec = DATASETS[name]
    ranges = None
    if name == "frappe":
        bounds = np.cumsum([0] + raw.FRAPPE_FIELD_SIZES).tolist()
        ranges = list(zip(bounds[:-1], bounds[1:]))
    return read_libfm(path, spec["num_fields"], spec["num_features"], labels=(-1, 1),
                      field_ranges=ranges, field_names=spec["fields"])


def _from_libfm(name, kind, found, split_seed):
    spec = DATASETS[name]
    paths = {s: p for s, (_, p) in found.items()}
    arrays = {s: _read_split(name, p) for s, p in paths.items()}
    files = [_describe(p, role=s, expected=spec[kind][s]) for s, p in paths.items()]
    for f, s in zip(files, paths):
        f["instances"] = len(arrays[s][1])
    who = "IFM authors'" if kind == "ifm_authors" else "NFM's"
    notes, data_kind = [], "exact"
    if kind == "ifm_authors" and len(paths) == 3:
        splits, rule = (arrays["train"], arrays["valid"], arrays["test"]), f"{who} fixed 8:1:1 files"
    else:
        x = np.concatenate([a[0] for a in arrays.values()])
        y = np.concatenate([a[1] for a in arrays.values()])
        splits = random_split(x, y, split_seed)
        if len(paths) == 3:
            rule = (f"{who} 7:2:1 files pooled ({len(y):,} instances) and re-split by seeded "
                    f"random 8:1:1 (seed {split_seed}), as the paper did")
        else:
            data_kind = "partial"
            rule = f"seeded random 8:1:1 of {len(y):,} pooled instances (seed {split_seed})"
            notes.append(f"partial data: only {who} {', '.join(paths)} file(s) present, "
                         f"{len(y):,} of the paper's {spec['paper_instances']:,} instances")
    data_kind = _upstream_or_local(data_kind, files, notes)
    return make_dataset(name, spec["num_features"], splits, dict(
        source=_sources(found), data_kind=data_kind, files=files, split_rule=rule,
        split_seed=split_seed, notes=notes))


def _mark_raw_release(files: list, spec: dict) -> bool:
    """Say whether `files[0]`, the raw Frappe release, is the official download (its sha256), and
    return whether the split files after it are all the upstream bytes (the counts can be enforced)."""
    files[0].update(upstream=spec["raw_download"]["url"],
                    matches_upstream=files[0]["sha256"] == spec["raw_download"]["sha256"])
    return all(f.get("matches_upstream") for f in files[1:])


def _upstream_or_local(data_kind: str, files: list, notes: list) -> str:
    """'exact' only when every file is the upstream bytes (its git blob id matches the pinned one);
    else 'local', with a note naming the files that differ."""
    differ = [f"{Path(f['path']).name} ({f['role']})" for f in files if f.get("matches_upstream") is False]
    if not differ:
        return data_kind
    note = (f"local files, not the upstream bytes: {', '.join(differ)} differ from the pinned upstream files "
            "(git blob id); results on them are not the paper's data")
    notes.insert(0 if data_kind == "exact" else len(notes), note)     # a partial set's first note stays first
    return "local" if data_kind == "exact" else data_kind


def _sources(found) -> str:
    return " + ".join(dict.fromkeys(label for label, _ in found.values()))


def _frappe_from_nfm_and_authors(nfm, authors):
    """The authors' split exactly: their valid and test, and NFM's train + NFM's validation +
    test minus the authors' valid + test as train."""
    spec = DATASETS["frappe"]
    a = {s: _read_split("frappe", authors[s][1]) for s in ("valid", "test")}
    n = {s: _read_split("frappe", p) for s, (_, p) in nfm.items()}
    rest_x, rest_y = frappe_split.nfm_rest(n["validation"], n["test"], a["valid"], a["test"])
    train = (np.concatenate([n["train"][0], rest_x]), np.concatenate([n["train"][1], rest_y]))
    files = [_describe(p, role=f"nfm {s}", expected=spec["nfm"][s]) for s, (_, p) in nfm.items()] + \
        [_describe(authors[s][1], role=s, expected=spec["ifm_authors"][s]) for s in ("valid", "test")]
    notes = []
    data_kind = _upstream_or_local("exact", files, notes)
    return make_dataset("frappe", spec["num_features"], (train, a["valid"], a["test"]), dict(
        source=_sources({**nfm, **authors}), data_kind=data_kind, files=files, split_seed=None, notes=notes,
        split_rule=f"IFM authors' 8:1:1 split: their valid and test files; train = NFM's train + the "
                   f"{len(rest_y):,} lines of NFM's validation + test in neither of them"))


def _frappe_reconstructed(raw_found, authors, nfm, seed):
    spec = DATASETS["frappe"]
    label, raw_path = raw_found
    parts = dict(authors_valid=authors["valid"], authors_test=authors["test"],
                 nfm_validation=nfm["validation"], nfm_test=nfm["test"])
    arrays = {k: _read_split("frappe", p) for k, (_, p) in parts.items()}
    files = [_describe(raw_path, "raw", None)] + [
        _describe(p, role=k, expected=spec["ifm_authors" if k.startswith("authors") else "nfm"][
            k.split("_")[1]]) for k, (_, p) in parts.items()]
    upstream = _mark_raw_release(files, spec)
    out = frappe_split.reconstruct(raw_path, **arrays, seed=seed,
                                   expected=frappe_split.PAPER_COUNTS if upstream else None)
    c = out["counts"]
    exact = "byte-exact" if upstream else "NOT the upstream bytes"
    rule = (f"the IFM authors' 8:1:1 split, reconstructed: validation and test are the authors' files "
            f"({exact}); train: {c['exact_train']:,} lines exact ({c['nfm_rest']:,} of NFM's validation + "
            f"test in neither of the authors' files, {c['raw_positives']:,} positives of the raw release), "
            f"{c['resampled_negatives']:,} negatives resampled by NFM's rule (sample seed {seed})")
    return make_dataset("frappe", spec["num_features"], (out["train"], out["valid"], out["test"]), dict(
        source=_sources({"raw": raw_found, **parts}), data_kind="reconstructed", files=files,
        split_rule=rule, split_seed=None, sample_seed=seed, reconstruction=c, notes=[]))


def _from_raw(name, source, path, cache_dir, split_seed, options):
    sha256 = file_digests(path)[0]
    seed = options.get("sample_seed", 0)
    builder = raw.build_frappe if name == "frappe" else raw.build_movielens_tags
    built, cached = _cached_build(cache_dir, name, sha256, dict(sample_seed=seed),
                                  lambda: builder(path, seed=seed))
    x, y, meta = built.pop("x"), built.pop("y"), built
    positives = meta["positives"]
    notes = [f"built from the raw release with NFM's processing: {positives:,} positives, "
             f"2 sampled negatives each (sample seed {seed})"]
    data_kind = "raw"
    if name == "movielens":
        data_kind = "stand-in"
        notes.insert(0, STAND_IN_NOTES.get(sha256) or STAND_IN_NOTES.get(STAND_IN_FILES.get(path.name)) or
                     f"MovieLens stand-in: built from {path.name} ({positives:,} tag applications); the "
                     "paper's MovieLens has 668,953, so this is not the paper's MovieLens")
    return make_dataset(name, int(sum(meta["field_sizes"])), random_split(x, y, split_seed), dict(
        source=source, data_kind=data_kind, files=[_describe(path, "raw", None, sha256)],
        built_from_cache=cached, sample_seed=seed,
        split_rule=f"seeded random 8:1:1 of {len(y):,} built instances (seed {split_seed})",
        split_seed=split_seed, field_sizes=meta["field_sizes"], notes=notes))


def load_avazu(roots, cache_dir, split_seed, options):
    spec = DATASETS["avazu"]
    patterns = spec["sample"] if options.get("sample") else spec["raw"] + spec["sample"]
    found = [(label, root / p) for p in patterns for label, root in roots if (root / p).is_file()]
    if not found:
        raise DataNotFoundError(how_to_get("avazu", roots, False, []))
    source, path = found[0]
    sample = next((p for p in spec["sample"] if str(path).endswith(p)), None)
    sha256 = file_digests(path)[0]
    params = dict(min_count=options.get("min_count", 20), nrows=options.get("nrows"),
                  split_seed=split_seed)
    built, cached = _cached_build(cache_dir, "avazu", sha256, params, lambda: _flatten_avazu(
        raw.build_avazu(path, params["min_count"], split_seed, params["nrows"])))
    splits = [(built[f"{s}_x"], built[f"{s}_y"]) for s in ("train", "valid", "test")]
    notes = [AVAZU_SAMPLE_NOTES[sample]] if sample else []
    notes.append("the paper gives no validation split: 10% of the training part is held out "
                 "for early stopping")
    return make_dataset("avazu", int(sum(built["field_sizes"])), splits, dict(
        source=source, data_kind="sample" if sample else "exact",
        files=[_describe(path, "raw", None, sha256)], built_from_cache=cached,
        split_rule=f"seeded random 4:1 train/test of {built['rows']:,} rows (seed {split_seed}), "
                   f"then 10% of train held out as validation",
        split_seed=split_seed, min_count=params["min_count"], field_sizes=built["field_sizes"],
        rare_rule=f"values seen fewer than {params['min_count']} times in the training rows "
                  "share one rare id per field", notes=notes))


def _flatten_avazu(built):
    out = {k: v for k, v in built.items() if k != "splits"}
    for s, (x, y) in built["splits"].items():
        out[f"{s}_x"], out[f"{s}_y"] = x, y
    return out


def _describe(path, role, expected, sha256=None):
    """Provenance entry of one file: hashes, and whether it is the pinned upstream file."""
    digests = file_digests(path) if sha256 is None else (sha256, None)
    entry = dict(role=role, path=str(Path(path).resolve()), sha256=digests[0])
    if expected is not None:
        entry.update(git_blob_id=digests[1], upstream=expected["upstream"],
                     matches_upstream=digests[1] == expected["blob_id"])
    return entry


def _cached_build(cache_dir, name, sha256, params, build):
    """Build once per (source bytes, builder version, params); later loads read tensors.
    Written to a temp file and renamed, so a crash never leaves a half-written cache."""
    key = hashlib.sha256(json.dumps(dict(sha256=sha256, version=raw.BUILDER_VERSION, **params),
                                    sort_keys=True).encode()).hexdigest()[:20]
    path = Path(cache_dir) / "built" / f"{name}-{key}.pt"
    if path.is_file():
        try:
            return _to_numpy(torch.load(path, weights_only=True)), True
        except Exception as err:  # unreadable cache entry: rebuild it
            warnings.warn(f"rebuilding unreadable cache file {path}: {err}")
    built = build()
    to_save = {k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
               for k, v in built.items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        with os.fdopen(fd, "wb") as f:
            torch.save(to_save, f)
        os.replace(tmp, path)
    except OSError as err:  # a read-only cache only costs speed
        warnings.warn(f"could not cache the build in {path.parent}: {err}")
    return _to_numpy(to_save), False


def _to_numpy(d):
    return {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in d.items()}
