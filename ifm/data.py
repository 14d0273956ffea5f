"""Datasets: registry, source resolution, splits and provenance.

``load_dataset(name)`` looks in a data directory (``data_dir`` argument, else
``IFM_DATA_DIR``, laid out like the project's mirror: see data/README.md), then in the user
cache (``cache_dir``, else ``IFM_CACHE_DIR``, else ``~/.cache/ifm``), and takes the best
source it finds, in this order (``provenance["data_kind"]`` says which):
  1. ``exact``: a complete set of split files: the IFM authors' three; for Frappe, NFM's
     three plus the authors' valid and test, which give the authors' train exactly; else
     NFM's three pooled and re-split 8:1:1;
  2. ``reconstructed`` (Frappe): the authors' split rebuilt from the raw release and the
     four public valid/test files (``ifm.frappe_split``);
  3. ``raw``: a raw public release built by NFM's processing and split 8:1:1 by seed
     (MovieLens from tags alone is a ``stand-in``: it is never the paper's MovieLens);
  4. with ``download=True``, the same files fetched into the cache, each verified byte for
     byte (git blob id, or sha256 for the raw Frappe zip), then 1-3 again;
  5. ``partial``: whatever split files there are, pooled and re-split, with a warning.
Files in a data directory are never modified or deleted; their hashes go into the provenance.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import frappe_split, raw
from .download import fetch_verified, file_digests
from .libfm import DataFormatError, read_libfm
from .synthetic import SYNTHETIC_DEFAULTS, make_synthetic

__all__ = ["Split", "Dataset", "DATASETS", "load_dataset", "DataFormatError", "DataNotFoundError"]


class DataNotFoundError(FileNotFoundError):
    """No usable copy of a dataset was found or could be downloaded."""


@dataclass
class Split:
    x: torch.Tensor  # int64 [N, h]: global feature ids, column j = field j
    y: torch.Tensor  # float32 [N]

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Dataset:
    name: str
    task: str
    num_features: int
    num_fields: int
    train: Split
    valid: Split
    test: Split
    provenance: dict = field(default_factory=dict)

    def summary(self) -> str:
        p = self.provenance
        sizes = p.get("sizes", {})
        lines = [f"{self.name} ({self.task}): {self.num_fields} fields, {self.num_features:,} features",
                 f"data: {p.get('data_kind')} (source {p.get('source')})", f"split: {p.get('split_rule')}",
                 "sizes: " + " | ".join(f"{k} {sizes.get(k, 0):,}" for k in ("train", "valid", "test"))
                 + f" (total {sizes.get('total', 0):,})"]
        if p.get("fraction_of_paper") is not None:
            lines.append(f"fraction of the paper's data: {100 * p['fraction_of_paper']:.3g}%"
                         f" of {p['paper_instances']:,} instances")
        for f in p.get("files", []):
            origin = f" = {f['upstream']}" if f.get("matches_upstream") else ""
            lines.append(f"file: {f['path']} (sha256 {f['sha256'][:12]}){origin}")
        if p.get("generator"):
            lines.append("generator: " + json.dumps(p["generator"]))
        lines += [f"note: {n}" for n in p.get("notes", [])]
        return "\n".join(lines)


_IFM = ("gulyfish/Input-aware-Factorization-Machine", "436d11aa4d3bf4084a782533d4d99703e6ed269c")
_NFM = ("hexiangnan/neural_factorization_machine", "ca2a5d11b929816aa44c6e470e795af144608507")


def _files(local_dir, repo_commit, upstream_dir, names_and_blobs):
    """Split name -> where it lives locally, where upstream, and its git blob id."""
    repo, commit = repo_commit
    return {split: dict(local=f"{local_dir}/{name}", upstream=f"{repo}@{commit}:{upstream_dir}/{name}",
                        url=f"https://raw.githubusercontent.com/{repo}/{commit}/{upstream_dir}/{name}",
                        blob_id=blob)
            for split, (name, blob) in names_and_blobs.items()}


DATASETS: dict = {
    "frappe": dict(
        task="regression", num_fields=10, fields=raw.FRAPPE_FIELDS, num_features=5382,
        paper_instances=288_609,
        ifm_authors=_files("frappe/ifm-authors", _IFM, "data/frappe", {
            "train": ("frappe.train.libfm", "dd6ab1670a30f31dba25330f0dcaacd6108a387b"),
            "valid": ("frappe.valid.libfm", "1be925f5e92bb5c0f095e060f4da13514f1b879c"),
            "test": ("frappe.test.libfm", "2515136f9b1f69902962e3f72e341a7b174568aa")}),
        nfm=_files("frappe/nfm", _NFM, "data/frappe", {
            "train": ("frappe.train.libfm", "176b2aaf1f63dd13d3e66a5c17c8ec8186e91893"),
            "validation": ("frappe.validation.libfm", "50b9c04bcf58dcb46d0b0070d3d6f88b45c9baab"),
            "test": ("frappe.test.libfm", "d7cdd03f0e2415c97618de617f20bedd50e8fce7")}),
        raw=["frappe/raw/Mobile_Frappe.zip", "frappe/raw/frappe.csv", "frappe-raw/frappe.csv"],
        # The official release; other dataset loaders pin this sha256 for this download.
        raw_download=dict(
            local="frappe/raw/Mobile_Frappe.zip",
            url="https://www.baltrunas.info/_files/archives/be17b7_474755a5e9684a749a012516d04fb456.zip"
                "?dn=Mobile_Frappe.zip",
            sha256="4adc616de57170f282397f6e6e30215f97fa7ad1b7f40bd12ef5dceaaf3e9b4e",
            blob_id="0ea24a03e4ded5be53e80c28299c1cdacb5edb43")),
    "movielens": dict(
        task="regression", num_fields=3, fields=raw.MOVIELENS_FIELDS, num_features=90_445,
        paper_instances=2_006_859,
        # The IFM authors' folder is spelt "moivelens" upstream.
        ifm_authors=_files("movielens/ifm-authors", _IFM, "data/moivelens", {
            "train": ("ml-tag.train.libfm", "59c7a81e3cd0336d79b55abaef02163ccf2785a0"),
            "valid": ("ml-tag.valid.libfm", "bb96985637f27675a12f99d0f393f9c71225227a"),
            "test": ("ml-tag.test.libfm", "c302f0b4b0420f5e79c8f567e0e9327fcf71d7c5")}),
        nfm=_files("movielens/nfm", _NFM, "data/ml-tag", {
            "train": ("ml-tag.train.libfm", "45c9017ca7cb14b3df2b7378f3a935577a8a102f"),
            "validation": ("ml-tag.validation.libfm", "0950186b80ca3158f40c3734e28d236785ad77ac"),
            "test": ("ml-tag.test.libfm", "aef8f29a1a396d6ea34e692d26eec9bba2f7ae8b")}),
        # GroupLens tags files; the largest one found wins (the paper's has 668,953 applications).
        raw=["movielens-raw/*.csv", "movielens-raw/*.dat"]),
    "avazu": dict(
        task="binary", num_fields=22, fields=raw.AVAZU_FIELDS, num_features=None,
        paper_instances=40_428_967, raw=["avazu/train.gz", "avazu/train", "avazu/train.csv"],
        sample=["avazu-sample/avazu_head_10k.csv", "avazu-sample/avazu_sample.txt"],
        url="https://www.kaggle.com/c/avazu-ctr-prediction/data"),
    "synthetic": dict(task="regression", num_fields=SYNTHETIC_DEFAULTS["num_fields"],
                      fields=None, num_features=None, paper_instances=None,
                      options=dict(SYNTHETIC_DEFAULTS)),
}

# The mirror's MovieLens files are not the paper's data; results on them must never pass as it.
_STAND_IN_NOTES = {
    "4a94cc4ba1705ca8ec63649bd5cb504f4658202d19aeb82c7d04fa6dfd0e2081":
        "MovieLens stand-in (25,758-tag subset of ml-20m tags.csv), not the paper's MovieLens",
    "2ac9b3706900ce183af8085a167635128234253ee6b82664184e7f55a962b6ec":
        "MovieLens stand-in (the complete ml-10M100K tags.dat, 95,580 tag applications), "
        "not the paper's MovieLens (ml-latest, 668,953)",
}
_AVAZU_SAMPLE_NOTES = {
    "avazu-sample/avazu_head_10k.csv": "Avazu 9,999-row head (the first hour of the competition's train "
                                       "file), a pipeline check, not the paper's 40M rows",
    "avazu-sample/avazu_sample.txt": "Avazu 100-row sample, not the paper's 40M rows",
}
_OPTIONS = {"frappe": {"sample_seed", "opener"}, "movielens": {"sample_seed", "opener"},
            "avazu": {"min_count", "nrows", "sample"}, "synthetic": set(SYNTHETIC_DEFAULTS)}


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *, split_seed: int = 0,
                 cache_dir=None, download: bool = True, **options) -> Dataset:
    """Load a registered dataset as tensors with train/valid/test splits.

    ``split_seed`` only drives random splits (never model initialisation). Options:
    frappe/movielens: ``sample_seed`` (negative sampling when building from a raw
    release, default 0), ``opener`` (URL opener for the download); avazu: ``min_count``
    (20), ``nrows`` (read at most this many rows), ``sample`` (True: the mirror's 9,999-row
    head, else its 100-row sample, even if the full file is present); synthetic: see :func:`ifm.synthetic.make_synthetic`.
    """
    name = name.lower()
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    unknown = set(options) - _OPTIONS[name]
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)} for {name}; allowed: {sorted(_OPTIONS[name])}")
    if name == "synthetic":
        return _load_synthetic(split_seed, options)
    data_dir = data_dir or os.environ.get("IFM_DATA_DIR") or None
    if data_dir:
        data_dir = Path(data_dir).expanduser()
        if data_dir.exists() and not data_dir.is_dir():
            raise DataNotFoundError(f"data directory {data_dir} is a file, not a directory")
        if not data_dir.is_dir():
            warnings.warn(f"data directory {data_dir} does not exist; trying the cache and download")
    cache_dir = Path(cache_dir or os.environ.get("IFM_CACHE_DIR") or Path.home() / ".cache" / "ifm").expanduser()
    if data_dir and _overlap(data_dir, cache_dir):
        # The cache replaces files it finds corrupted; a user's data files must never be touched.
        raise ValueError(f"cache directory {cache_dir} and data directory {data_dir} overlap: the cache "
                         "rewrites the files it manages, and a data directory is never modified. Give "
                         "IFM_CACHE_DIR (cache_dir) a directory of its own.")
    roots = ([(f"mirror:{data_dir.resolve()}", data_dir)] if data_dir else []) + \
        [(f"cache:{cache_dir.resolve()}", cache_dir)]
    if name == "avazu":
        return _load_avazu(roots, cache_dir, split_seed, options)
    return _load_regression(name, roots, cache_dir, split_seed, download, options)


def _overlap(data_dir: Path, cache_dir: Path) -> bool:
    """Whether a file the cache manages could be a file of the data directory."""
    data_dir, cache_dir = data_dir.resolve(), cache_dir.resolve()
    return data_dir == cache_dir or cache_dir in data_dir.parents


def _load_regression(name, roots, cache_dir, split_seed, download, options):
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
    raise DataNotFoundError(_how_to_get(name, roots, download, failures))


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
    found = [(label, path) for pattern in DATASETS[name]["raw"] for label, root in roots
             for path in sorted(root.glob(pattern)) if path.is_file()]
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
    for label, root in roots:
        for kind in ("nfm", "ifm_authors"):
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
        splits = _split(x, y, split_seed)
        if len(paths) == 3:
            rule = (f"{who} 7:2:1 files pooled ({len(y):,} instances) and re-split by seeded "
                    f"random 8:1:1 (seed {split_seed}), as the paper did")
        else:
            data_kind = "partial"
            rule = f"seeded random 8:1:1 of {len(y):,} pooled instances (seed {split_seed})"
            notes.append(f"partial data: only {who} {', '.join(paths)} file(s) present, "
                         f"{len(y):,} of the paper's {spec['paper_instances']:,} instances")
    return _dataset(name, spec["num_features"], splits, dict(
        source=_sources(found), data_kind=data_kind, files=files, split_rule=rule,
        split_seed=split_seed, notes=notes))


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
    return _dataset("frappe", spec["num_features"], (train, a["valid"], a["test"]), dict(
        source=_sources({**nfm, **authors}), data_kind="exact", files=files, split_seed=None, notes=[],
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
    official = spec["raw_download"]["sha256"]
    files[0].update(upstream=spec["raw_download"]["url"], matches_upstream=files[0]["sha256"] == official)
    upstream = all(f.get("matches_upstream") for f in files[1:])
    out = frappe_split.reconstruct(raw_path, **arrays, seed=seed,
                                   expected=frappe_split.PAPER_COUNTS if upstream else None)
    c = out["counts"]
    exact = "byte-exact" if upstream else "NOT the upstream bytes"
    rule = (f"the IFM authors' 8:1:1 split, reconstructed: validation and test are the authors' files "
            f"({exact}); train: {c['exact_train']:,} lines exact ({c['nfm_rest']:,} of NFM's validation + "
            f"test in neither of the authors' files, {c['raw_positives']:,} positives of the raw release), "
            f"{c['resampled_negatives']:,} negatives resampled by NFM's rule (sample seed {seed})")
    return _dataset("frappe", spec["num_features"], (out["train"], out["valid"], out["test"]), dict(
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
        notes.insert(0, _STAND_IN_NOTES.get(sha256) or
                     ("MovieLens stand-in (25,758-tag subset of ml-20m tags.csv), not the paper's MovieLens"
                      if path.name == "ml-20m-tags-subset.csv" else
                      f"MovieLens stand-in: built from {path.name} ({positives:,} tag applications); the "
                      "paper's MovieLens has 668,953, so this is not the paper's MovieLens"))
    return _dataset(name, int(sum(meta["field_sizes"])), _split(x, y, split_seed), dict(
        source=source, data_kind=data_kind, files=[_describe(path, "raw", None, sha256)],
        built_from_cache=cached, sample_seed=seed,
        split_rule=f"seeded random 8:1:1 of {len(y):,} built instances (seed {split_seed})",
        split_seed=split_seed, field_sizes=meta["field_sizes"], notes=notes))


def _load_avazu(roots, cache_dir, split_seed, options):
    spec = DATASETS["avazu"]
    patterns = spec["sample"] if options.get("sample") else spec["raw"] + spec["sample"]
    found = [(label, root / p) for p in patterns for label, root in roots if (root / p).is_file()]
    if not found:
        raise DataNotFoundError(_how_to_get("avazu", roots, False, []))
    source, path = found[0]
    sample = next((p for p in spec["sample"] if str(path).endswith(p)), None)
    sha256 = file_digests(path)[0]
    params = dict(min_count=options.get("min_count", 20), nrows=options.get("nrows"),
                  split_seed=split_seed)
    built, cached = _cached_build(cache_dir, "avazu", sha256, params, lambda: _flatten_avazu(
        raw.build_avazu(path, params["min_count"], split_seed, params["nrows"])))
    splits = [(built[f"{s}_x"], built[f"{s}_y"]) for s in ("train", "valid", "test")]
    notes = [_AVAZU_SAMPLE_NOTES[sample]] if sample else []
    notes.append("the paper gives no validation split: 10% of the training part is held out "
                 "for early stopping")
    return _dataset("avazu", int(sum(built["field_sizes"])), splits, dict(
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


def _load_synthetic(split_seed, options):
    x, y, params = make_synthetic(**options)
    return _dataset("synthetic", params["num_fields"] * params["vocab_per_field"],
                    _split(x, y, split_seed), dict(
                        source="generated", data_kind="synthetic", files=[], generator=params,
                        split_seed=split_seed,
                        split_rule=f"seeded random 8:1:1 of {len(y):,} instances (seed {split_seed})",
                        notes=["synthetic data with a planted input-aware effect: each feature's "
                               f"weight is rescaled by a factor set by the other features; "
                               f"a perfect model's RMSE is the noise level {params['noise']}"]))


def _split(x, y, seed):
    """Seeded random 8:1:1 split (independent of any model seed)."""
    perm = np.random.default_rng(seed).permutation(len(y))
    n_eval = int(round(len(y) / 10))
    parts = (perm[2 * n_eval:], perm[:n_eval], perm[n_eval:2 * n_eval])
    return [(x[p], y[p]) for p in parts]


def _dataset(name, num_features, splits, provenance) -> Dataset:
    spec = DATASETS[name]
    train, valid, test = (Split(torch.as_tensor(np.asarray(x), dtype=torch.int64),
                                torch.as_tensor(np.asarray(y), dtype=torch.float32))
                          for x, y in splits)
    total = len(train) + len(valid) + len(test)
    paper = spec["paper_instances"]
    provenance = dict(dataset=name, task=spec["task"], **provenance,
                      sizes=dict(train=len(train), valid=len(valid), test=len(test), total=total),
                      num_features=num_features, num_fields=train.x.shape[1],
                      fields=spec["fields"], paper_instances=paper,
                      fraction_of_paper=total / paper if paper else None)
    return Dataset(name, spec["task"], num_features, train.x.shape[1], train, valid, test, provenance)


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


def _how_to_get(name, roots, download, failures):
    spec = DATASETS[name]
    looked = ", ".join(str(root) for _, root in roots)
    if name == "avazu":
        return (f"No Avazu data found (looked in {looked}). Avazu cannot be downloaded "
                f"automatically: it needs a Kaggle account. Download train.gz from {spec['url']} "
                "and put it at <data dir>/avazu/train.gz, then pass data_dir=... (CLI --data-dir) or "
                "set IFM_DATA_DIR; the 100-row sample is read from <data dir>/avazu-sample/avazu_sample.txt.")
    layouts = [f["local"] for kind in ("ifm_authors", "nfm") for f in spec[kind].values()] + spec["raw"]
    urls = [f["url"] for kind in ("ifm_authors", "nfm") for f in spec[kind].values()]
    why = ("the download failed: " + "; ".join(failures)) if download else "download is off (download=False)"
    return (f"No {name} data found (looked in {looked}) and {why}. Either pass data_dir=... "
            f"(CLI --data-dir) or set IFM_DATA_DIR to a directory holding any of: {', '.join(layouts)}; "
            f"or set IFM_CACHE_DIR / cache_dir and call with download=True to fetch and verify: "
            + " ".join(urls))
