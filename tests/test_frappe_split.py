"""The paper's Frappe split rebuilt from the raw release: rules on a hand-made frappe.csv
(expected lines worked out by hand below), refusals, and the counts on the mirror."""
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ifm.data import frappe_split, raw
from ifm.data import load_dataset
from ifm.data.libfm import DataFormatError

MIRROR = os.environ.get("IFM_DATA_DIR")
needs_mirror = pytest.mark.skipif(not (MIRROR and Path(MIRROR, "frappe/raw/Mobile_Frappe.zip").is_file()),
                                  reason="local dataset mirror with the raw Frappe release not available")

HEADER = "user\titem\tcnt\tdaytime\tweekday\tisweekend\thomework\tcost\tweather\tcountry\tcity\n"
LOGS = [("u1", "a1", "morning", 0), ("u1", "a2", "morning", 0), ("u1", "a1", "evening", 0),
        ("u2", "a3", "night", 7), ("u2", "a1", "night", 7), ("u3", "a5", "noon", 0)]


def frappe_csv(path):
    path.write_text(HEADER + "".join(f"{u}\t{a}\t1\t{d}\tmonday\tworkday\tunknown\tfree\tsunny\tSpain\t{c}\n"
                                     for u, a, d, c in LOGS))
    return path


# NFM's encoding, by hand: fields numbered by first appearance, offsets the running sum of sizes.
USER = {"u1": 0, "u2": 1, "u3": 2}
ITEM = {"a1": 3, "a2": 4, "a3": 5, "a5": 6}
TIME = {"morning": 7, "evening": 8, "night": 9, "noon": 10}
CITY = {0: 17, 7: 18}        # weekday 11, isweekend 12, homework 13, cost 14, weather 15, country 16


def line(user, item, daytime, city):
    return [USER[user], ITEM[item], TIME[daytime], 11, 12, 13, 14, 15, 16, CITY[city]]


def split(*lines):
    return (np.array([l for l, _ in lines], dtype=np.int64), np.array([y for _, y in lines], dtype=np.float32))


POS = {i: (line(*log), 1.0) for i, log in enumerate(LOGS, 1)}
NFM_VALIDATION = split(POS[1], POS[4], (line("u1", "a3", "morning", 0), -1.0), (line("u2", "a2", "night", 7), -1.0))
NFM_TEST = split(POS[6], (line("u3", "a1", "noon", 0), -1.0), (line("u3", "a2", "noon", 0), -1.0))
AUTHORS_VALID = split(POS[1], (line("u1", "a3", "morning", 0), -1.0))
AUTHORS_TEST = split(POS[6], (line("u3", "a1", "noon", 0), -1.0))


def rebuild(tmp_path, seed=0, **changes):
    parts = dict(authors_valid=AUTHORS_VALID, authors_test=AUTHORS_TEST,
                 nfm_validation=NFM_VALIDATION, nfm_test=NFM_TEST)
    parts.update(changes)
    return frappe_split.reconstruct(frappe_csv(tmp_path / "frappe.csv"), **parts, seed=seed)


def test_reconstruction_follows_the_rules_worked_out_by_hand(tmp_path):
    out = rebuild(tmp_path)
    x, y = out["train"]
    lines = Counter((tuple(r), t) for r, t in zip(x.tolist(), y.tolist()))
    # NFM's validation + test minus the authors' valid + test: log 4 and two negatives.
    exact = Counter({(tuple(line("u2", "a3", "night", 7)), 1.0): 1,
                     (tuple(line("u2", "a2", "night", 7)), -1.0): 1,
                     (tuple(line("u3", "a2", "noon", 0)), -1.0): 1,
                     # the logs whose positives are not in NFM's validation + test: 2, 3, 5
                     (tuple(POS[2][0]), 1.0): 1, (tuple(POS[3][0]), 1.0): 1, (tuple(POS[5][0]), 1.0): 1})
    assert lines & exact == exact and sum(lines.values()) == 14
    negatives = [r for r, t in zip(x.tolist(), y.tolist()) if t < 0][2:]   # after the two exact ones
    # 2 per log minus those in NFM's validation + test, per (user, context) key.
    keys = Counter((r[0], r[2], r[9]) for r in negatives)
    assert keys == {(0, 7, 17): 3, (0, 8, 17): 2, (1, 9, 18): 3}
    never_used = {0: {5, 6}, 1: {4, 6}, 2: {3, 4, 5}}                      # items each user never used
    assert all(r[1] in never_used[r[0]] for r in negatives)
    assert out["counts"] == dict(train=14, valid=2, test=2, exact_train=6, resampled_negatives=8,
                                 nfm_rest=3, raw_positives=3)
    assert out["valid"] is AUTHORS_VALID and out["test"] is AUTHORS_TEST


def test_reconstruction_is_determined_by_its_seed(tmp_path):
    a, b = rebuild(tmp_path, seed=3)["train"][0], rebuild(tmp_path, seed=3)["train"][0]
    assert np.array_equal(a, b)
    assert not all(np.array_equal(rebuild(tmp_path, seed=s)["train"][0], a) for s in range(4, 9))


@pytest.mark.parametrize("change, words", [
    (dict(authors_test=split(POS[5], (line("u3", "a1", "noon", 0), -1.0))), "not in NFM's validation + test"),
    (dict(nfm_test=split(POS[6], (line("u3", "a1", "noon", 0), -1.0), (line("u3", "a2", "noon", 0), -1.0),
                         (line("u3", "a3", "noon", 0), -1.0))), "more negatives"),
    (dict(nfm_test=split(POS[6], (line("u3", "a1", "noon", 0), -1.0), (line("u3", "a5", "noon", 0), -1.0))),
     "an item that user used"),
    (dict(nfm_test=split((line("u3", "a1", "noon", 0), 1.0), (line("u3", "a1", "noon", 0), -1.0))),
     "not logs of frappe.csv"),
])
def test_reconstruction_refuses_files_that_break_the_rules(tmp_path, change, words):
    if "authors_test" not in change:
        change.setdefault("authors_test", split((line("u3", "a1", "noon", 0), -1.0)))
    with pytest.raises(DataFormatError, match=re.escape(words)):
        rebuild(tmp_path, **change)


def test_reconstruction_refuses_unexpected_counts(tmp_path):
    with pytest.raises(DataFormatError, match=r"reconstruction refused: train 14 \(expected 230,925\)"):
        frappe_split.reconstruct(frappe_csv(tmp_path / "frappe.csv"), AUTHORS_VALID, AUTHORS_TEST,
                                 NFM_VALIDATION, NFM_TEST, expected=frappe_split.PAPER_COUNTS)


def test_raw_release_alone_gives_nfm_processing_and_a_seeded_8_1_1_split(tmp_path):
    d = tmp_path / "d"
    (d / "frappe" / "raw").mkdir(parents=True)
    frappe_csv(d / "frappe" / "raw" / "frappe.csv")
    ds = load_dataset("frappe", d, cache_dir=tmp_path / "c", download=False)
    assert ds.provenance["data_kind"] == "raw" and ds.provenance["sizes"]["total"] == 18
    assert "seeded random 8:1:1" in ds.provenance["split_rule"]


# ---------------------------------------------------------------- the mirror

@needs_mirror
def test_mirror_reconstruction_has_the_paper_counts(tmp_path):
    ds = load_dataset("frappe", MIRROR, cache_dir=tmp_path, download=False)
    p = ds.provenance
    assert p["data_kind"] == "reconstructed"
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (230_925, 28_842, 28_842)
    assert p["reconstruction"] == frappe_split.PAPER_COUNTS
    assert all(f["matches_upstream"] for f in p["files"])
    assert "96,502 lines exact" in p["split_rule"] and "134,423 negatives resampled" in p["split_rule"]
    assert "sample seed 0" in p["split_rule"]
    # every positive of train is a raw log; no split shares a line-occurrence beyond the data's duplicates
    codes, sizes = raw.read_frappe_logs(Path(MIRROR, "frappe/raw/Mobile_Frappe.zip"))
    logs = Counter(map(tuple, (codes + np.cumsum([0] + sizes[:-1])).tolist()))
    train_pos = Counter(map(tuple, ds.train.x[ds.train.y > 0].tolist()))
    assert not (train_pos - logs)
    other = load_dataset("frappe", MIRROR, cache_dir=tmp_path, download=False, sample_seed=1)
    assert (other.train.x[:96_502] == ds.train.x[:96_502]).all()          # the exact part
    assert not (other.train.x[96_502:] == ds.train.x[96_502:]).all()      # only the negatives differ
