"""``frappe_x1``: BARS's Frappe_x1 (reczoo/Datasets; the BARS open CTR benchmark), NFM's 7:2:1
split of Frappe's 288,609 lines (train 202,027, validation 57,722, test 28,860) with NFM's label
-1 written as 0 (labels 0/1), in NFM's encoding (5,382 features, the ids of ``frappe``).

Sources, best first (``provenance["data_kind"]`` says which):
  1. ``exact``: NFM's three files (``frappe/nfm/frappe.{train,validation,test}.libfm``) as they are
     (``local`` when their bytes are not the pinned upstream ones);
  2. ``reconstructed``: NFM's validation and test files as they are, and NFM's train file rebuilt
     from the raw release (``frappe_split.nfm_train``, the step the paper's split is rebuilt with):
     its positives exact, its negatives with exact user and context and their items resampled by
     NFM's rule (``sample_seed``, default 0); its lines are the positives, then the negatives;
  3. with ``download=True``: NFM's files, then the raw release, fetched into the cache and
     verified byte for byte, then 1-2 again.
Otherwise it refuses, naming the directories it looked in and the files it needs. There is no
partial fallback: a re-split of some of the files would not be Frappe_x1.
"""
from __future__ import annotations

import urllib.error
import urllib.request

import numpy as np

from . import frappe_split, raw
from .download import fetch_verified
from .libfm import read_libfm
from .registry import DATASETS, DataNotFoundError, make_dataset
from .sources import (_describe, _find, _mark_raw_release, _raw_files, _read_split, _sources, _upstream_or_local,
                      _verified_path)

__all__ = ["load_frappe_x1", "BARS_NOTE"]

NAME = "frappe_x1"
BARS_NOTE = ("BARS's Frappe_x1 split (reczoo/Datasets, the BARS open CTR benchmark): NFM's 7:2:1 split "
             "of Frappe, with NFM's label -1 written as 0 (labels 0/1)")


def load_frappe_x1(roots, cache_dir, download, options):
    spec = DATASETS[NAME]
    loaded = _load_local(roots, cache_dir, options)
    if loaded is not None:
        return loaded
    failures = []
    if download:
        opener = options.get("opener", urllib.request.urlopen)
        for kind, files in (("nfm", spec["nfm"]), ("raw", {"raw": spec["raw_download"]})):
            try:
                for f in files.values():
                    if _verified_path(f, cache_dir) is None:
                        fetch_verified(f["url"], cache_dir / f["local"], f["blob_id"], opener=opener)
            except (urllib.error.URLError, OSError, ValueError) as err:  # network trouble or bad bytes
                failures.append(f"{kind}: {err}")
                continue
            loaded = _load_local(roots, cache_dir, options)
            if loaded is not None:
                return loaded
    raise DataNotFoundError(_how_to_get(roots, cache_dir, download, failures))


def _load_local(roots, cache_dir, options):
    nfm = _find(DATASETS[NAME]["nfm"], roots, cache_dir)
    if len(nfm) == 3:
        return _from_nfm_files(nfm)
    raws = _raw_files(NAME, roots)
    if raws and {"validation", "test"} <= set(nfm):
        return _reconstructed(raws[0], nfm, options.get("sample_seed", 0))
    return None


def _binary(split):
    """NFM's labels -1/+1 as 0/1."""
    x, y = split
    return x, (y > 0).astype(np.float32)


def _from_nfm_files(nfm):
    spec = DATASETS[NAME]
    arrays = {s: _read_split("frappe", p) for s, (_, p) in nfm.items()}
    files = [_describe(p, role=f"nfm {s}", expected=spec["nfm"][s]) for s, (_, p) in nfm.items()]
    for f, s in zip(files, nfm):
        f["instances"] = len(arrays[s][1])
    notes = [BARS_NOTE]
    data_kind = _upstream_or_local("exact", files, notes)
    splits = [_binary(arrays[s]) for s in ("train", "validation", "test")]
    return make_dataset(NAME, spec["num_features"], splits, dict(
        source=_sources(nfm), data_kind=data_kind, files=files, split_seed=None, notes=notes,
        split_rule="BARS's Frappe_x1 split: NFM's 7:2:1 files as they are (train, validation, test), "
                   "the label -1 written as 0"))


def _reconstructed(raw_found, nfm, seed):
    spec = DATASETS[NAME]
    _, raw_path = raw_found
    codes, sizes = raw.read_frappe_logs(raw_path)
    bounds = np.cumsum([0] + list(sizes)).tolist()
    arrays = {s: read_libfm(nfm[s][1], len(sizes), bounds[-1], labels=(-1, 1), field_names=raw.FRAPPE_FIELDS,
                            field_ranges=list(zip(bounds[:-1], bounds[1:]))) for s in ("validation", "test")}
    files = [_describe(raw_path, "raw", None)] + [
        _describe(nfm[s][1], role=f"nfm {s}", expected=spec["nfm"][s]) for s in ("validation", "test")]
    upstream = _mark_raw_release(files, spec)
    out = frappe_split.nfm_train((codes, sizes), arrays["validation"], arrays["test"], seed=seed,
                                 expected=frappe_split.NFM_COUNTS if upstream else None)
    c = out["counts"]
    exact = "byte-exact" if upstream else "NOT the upstream bytes"
    rule = (f"BARS's Frappe_x1 split (NFM's 7:2:1 split, labels 0/1), its train reconstructed: validation and "
            f"test are exact, NFM's frappe.validation.libfm and frappe.test.libfm ({exact}); train is NFM's "
            f"train file rebuilt from the raw release: {c['raw_positives']:,} positives exact (the logs not "
            f"among the validation + test positives), {c['resampled_negatives']:,} negatives with exact user "
            f"and context, their items resampled by NFM's rule (sample seed {seed})")
    notes = [BARS_NOTE]
    data_kind = _upstream_or_local("reconstructed", files, notes)
    splits = [_binary(out[s]) for s in ("train", "valid", "test")]
    return make_dataset(NAME, bounds[-1], splits, dict(
        source=_sources({"raw": raw_found, **{s: nfm[s] for s in ("validation", "test")}}),
        data_kind=data_kind, files=files, split_rule=rule, split_seed=None, sample_seed=seed,
        reconstruction=c, notes=notes))


def _how_to_get(roots, cache_dir, download, failures):
    """One line: where it looked, what it needs, what is missing, how to get it."""
    spec = DATASETS[NAME]
    looked = ", ".join(str(root) for _, root in roots)
    nfm = {s: f["local"] for s, f in spec["nfm"].items()}
    found = set(_find(spec["nfm"], roots, cache_dir))
    missing = [nfm[s] for s in ("validation", "test") if s not in found]
    if not _raw_files(NAME, roots):
        missing.append("the raw release (" + " or ".join(spec["raw"]) + ")")
    why = ("the download failed: " + "; ".join(failures)) if download else "download is off (download=False)"
    urls = " ".join(f["url"] for f in spec["nfm"].values()) + " " + spec["raw_download"]["url"]
    return (f"No {NAME} data found (looked in {looked}): it needs NFM's {nfm['validation']} and {nfm['test']} "
            f"with the raw Frappe release ({' or '.join(spec['raw'])}), or NFM's three files "
            f"({', '.join(nfm.values())}); missing: {', '.join(missing) or nfm['train']}; and {why}. Pass "
            f"data_dir=... (CLI --data-dir) or set IFM_DATA_DIR to a directory holding them, or call with "
            f"download=True to fetch and verify: {urls}").replace("\n", " ")
