"""What datasets there are and what a loaded one is: the registry of public files (pinned
upstream commits and git blob ids), the Dataset and Split types, the seeded 8:1:1 split, and
the provenance every loaded dataset carries."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from . import raw
from .synthetic import SYNTHETIC_DEFAULTS

__all__ = ["DATASETS", "DATASET_NAMES", "Dataset", "Split", "DataNotFoundError", "OPTIONS", "random_split", "make_dataset",
           "how_to_get"]


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
    encoding: object = None         # your own data: its ifm.data.encoding.Encoding, fitted on the training rows

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


def _frappe_nfm():
    return _files("frappe/nfm", _NFM, "data/frappe", {
        "train": ("frappe.train.libfm", "176b2aaf1f63dd13d3e66a5c17c8ec8186e91893"),
        "validation": ("frappe.validation.libfm", "50b9c04bcf58dcb46d0b0070d3d6f88b45c9baab"),
        "test": ("frappe.test.libfm", "d7cdd03f0e2415c97618de617f20bedd50e8fce7")})


_FRAPPE_RAW = ["frappe/raw/Mobile_Frappe.zip", "frappe/raw/frappe.csv", "frappe-raw/frappe.csv"]
# The official release; other dataset loaders pin this sha256 for this download.
_FRAPPE_RAW_DOWNLOAD = dict(
    local="frappe/raw/Mobile_Frappe.zip",
    url="https://www.baltrunas.info/_files/archives/be17b7_474755a5e9684a749a012516d04fb456.zip"
        "?dn=Mobile_Frappe.zip",
    sha256="4adc616de57170f282397f6e6e30215f97fa7ad1b7f40bd12ef5dceaaf3e9b4e",
    blob_id="0ea24a03e4ded5be53e80c28299c1cdacb5edb43")

# Every registered dataset and its name in the book.
DATASET_NAMES = {"frappe": "Frappe", "frappe_x1": "Frappe_x1", "movielens": "MovieLens", "avazu": "Avazu",
                 "synthetic": "Synthetic"}

DATASETS: dict = {
    "frappe": dict(
        task="regression", num_fields=10, fields=raw.FRAPPE_FIELDS, num_features=5382,
        paper_instances=288_609,
        ifm_authors=_files("frappe/ifm-authors", _IFM, "data/frappe", {
            "train": ("frappe.train.libfm", "dd6ab1670a30f31dba25330f0dcaacd6108a387b"),
            "valid": ("frappe.valid.libfm", "1be925f5e92bb5c0f095e060f4da13514f1b879c"),
            "test": ("frappe.test.libfm", "2515136f9b1f69902962e3f72e341a7b174568aa")}),
        nfm=_frappe_nfm(), raw=list(_FRAPPE_RAW), raw_download=dict(_FRAPPE_RAW_DOWNLOAD)),
    # BARS's Frappe_x1 (reczoo/Datasets): NFM's 7:2:1 files with the label -1 written as 0.
    "frappe_x1": dict(
        task="binary", num_fields=10, fields=raw.FRAPPE_FIELDS, num_features=5382,
        paper_instances=None, ifm_authors={}, nfm=_frappe_nfm(), raw=list(_FRAPPE_RAW),    # not the IFM paper's data
        raw_download=dict(_FRAPPE_RAW_DOWNLOAD), bars="reczoo/Datasets: Frappe_x1 (the BARS open CTR benchmark)"),
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
_ML20M_SUBSET = "4a94cc4ba1705ca8ec63649bd5cb504f4658202d19aeb82c7d04fa6dfd0e2081"
STAND_IN_NOTES = {
    _ML20M_SUBSET:
        "MovieLens stand-in (25,758-tag subset of ml-20m tags.csv), not the paper's MovieLens",
    "2ac9b3706900ce183af8085a167635128234253ee6b82664184e7f55a962b6ec":
        "MovieLens stand-in (the complete ml-10M100K tags.dat, 95,580 tag applications), "
        "not the paper's MovieLens (ml-latest, 668,953)",
}
# A mirror file known by its name too (a copy whose bytes differ is still that stand-in).
STAND_IN_FILES = {"ml-20m-tags-subset.csv": _ML20M_SUBSET}
AVAZU_SAMPLE_NOTES = {
    "avazu-sample/avazu_head_10k.csv": "Avazu 9,999-row head (the first hour of the competition's train "
                                       "file), a pipeline check, not the paper's 40M rows",
    "avazu-sample/avazu_sample.txt": "Avazu 100-row sample, not the paper's 40M rows",
}
OPTIONS = {"frappe": {"sample_seed", "opener", "train_fraction"},
           "frappe_x1": {"sample_seed", "opener", "train_fraction"},
           "movielens": {"sample_seed", "opener", "train_fraction"},
           "avazu": {"min_count", "nrows", "sample"}, "synthetic": set(SYNTHETIC_DEFAULTS) | {"train_fraction"}}


def random_split(x, y, seed):
    """Seeded random 8:1:1 split (independent of any model seed)."""
    perm = np.random.default_rng(seed).permutation(len(y))
    n_eval = int(round(len(y) / 10))
    parts = (perm[2 * n_eval:], perm[:n_eval], perm[n_eval:2 * n_eval])
    return [(x[p], y[p]) for p in parts]


def to_split(x, y) -> Split:
    """A Split of int64 ids and float32 labels from arrays."""
    return Split(torch.as_tensor(np.asarray(x), dtype=torch.int64), torch.as_tensor(np.asarray(y), dtype=torch.float32))


def make_dataset(name, num_features, splits, provenance) -> Dataset:
    spec = DATASETS[name]
    train, valid, test = (to_split(x, y) for x, y in splits)
    total = len(train) + len(valid) + len(test)
    paper = spec["paper_instances"]
    provenance = dict(dataset=name, task=spec["task"], **provenance,
                      sizes=dict(train=len(train), valid=len(valid), test=len(test), total=total),
                      num_features=num_features, num_fields=train.x.shape[1],
                      fields=spec["fields"], paper_instances=paper,
                      fraction_of_paper=total / paper if paper else None)
    return Dataset(name, spec["task"], num_features, train.x.shape[1], train, valid, test, provenance)


def how_to_get(name, roots, download, failures):
    spec = DATASETS[name]
    looked = ", ".join(os.path.abspath(root) for _, root in roots)
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


def with_train_fraction(ds: Dataset, fraction: float, seed: int) -> Dataset:
    """The same dataset with a seeded share of its training instances (validation and test
    unchanged): the data-scaling study's smaller training sets. 1 returns ``ds`` itself."""
    if not (isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and 0 < fraction <= 1):
        raise ValueError(f"train_fraction must be a number in (0, 1], got {fraction!r}")
    if fraction == 1:
        return ds
    n = len(ds.train)
    keep = torch.from_numpy(np.sort(np.random.default_rng(seed).permutation(n)[:max(1, round(fraction * n))]))
    train = Split(ds.train.x[keep], ds.train.y[keep])
    sizes = dict(ds.provenance["sizes"], train=len(train), total=len(train) + len(ds.valid) + len(ds.test))
    prov = dict(ds.provenance, sizes=sizes, train_fraction=fraction,
                notes=list(ds.provenance.get("notes", [])) + [
                    f"train: a seeded {fraction:g} of its {n:,} instances ({len(train):,}; seed {seed}), "
                    "validation and test unchanged"])
    return Dataset(ds.name, ds.task, ds.num_features, ds.num_fields, train, ds.valid, ds.test, prov)


def portable_provenance(provenance: dict) -> dict:
    """A provenance as a record keeps it: no path of the machine that made it. The source keeps
    its kind ("mirror", "cache", "download"), and each file's path becomes its path relative to the
    directory it was found in (its name alone when it lay elsewhere); the hashes say which bytes."""
    out = dict(provenance)
    source = str(out.get("source", ""))
    kind, _, root = source.partition(":")
    if root.startswith("/"):
        out["source"] = kind
    files = []
    for f in out.get("files", []):
        f = dict(f)
        path = str(f.get("path", ""))
        if path.startswith("/") or (len(path) > 2 and path[1] == ":"):
            inside = root.startswith("/") and (path + "/").startswith(root.rstrip("/") + "/")
            f["path"] = os.path.relpath(path, root) if inside else os.path.basename(path)
        files.append(f)
    if files:
        out["files"] = files
    return out
