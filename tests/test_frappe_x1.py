"""`frappe_x1` (BARS's Frappe_x1: NFM's 7:2:1 split, labels 0/1): on a small fake mirror (a
frappe.csv made here, NFM's processing applied to it by hand, its validation and test files
written out), the rules of the rebuild checked against what is worked out here; its refusals;
and the counts on the real mirror when IFM_DATA_DIR holds it."""
import os
import re
import urllib.error
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ifm.data import DataNotFoundError, load_dataset, raw
from ifm.data.libfm import DataFormatError, read_libfm

MIRROR = os.environ.get("IFM_DATA_DIR")
needs_mirror = pytest.mark.skipif(
    not (MIRROR and all(Path(MIRROR, f).is_file() for f in (
        "frappe/raw/Mobile_Frappe.zip", "frappe/nfm/frappe.validation.libfm", "frappe/nfm/frappe.test.libfm"))),
    reason="local dataset mirror with NFM's Frappe files and the raw release not available")

HEADER = "user\titem\tcnt\tdaytime\tweekday\tisweekend\thomework\tcost\tweather\tcountry\tcity\n"
ITEM = raw.FRAPPE_FIELDS.index("item")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Never touch ~/.cache; tests that want a data directory pass it explicitly."""
    monkeypatch.setenv("IFM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("IFM_DATA_DIR", raising=False)


def fake_logs(n=240, seed=0):
    """n logs: 25 users, 40 apps (each user uses a few), contexts varied enough that some
    (user, context) keys repeat; one log repeated exactly, as in the real release."""
    rng = np.random.default_rng(seed)
    logs = []
    for _ in range(n):
        u = int(rng.integers(25))
        logs.append((f"u{u}", f"a{(3 * u + int(rng.integers(6))) % 40}", ["morning", "noon", "night"][rng.integers(3)],
                     ["monday", "sunday"][rng.integers(2)], ["Spain", "Italy"][u % 2], f"c{rng.integers(3)}"))
    return logs + [logs[5]]


def encode(logs):
    """NFM's encoding by hand: per field, values numbered by first appearance; global ids by
    the running sum of the field sizes. Columns: user item daytime weekday isweekend homework
    cost weather country city (isweekend follows weekday; homework, cost, weather constant)."""
    rows = [(u, a, d, w, "weekend" if w == "sunday" else "workday", "unknown", "free", "sunny", c, city)
            for u, a, d, w, c, city in logs]
    tables = [{} for _ in range(10)]
    local = [[tables[j].setdefault(v, len(tables[j])) for j, v in enumerate(r)] for r in rows]
    offsets = np.cumsum([0] + [len(t) for t in tables[:-1]])
    return np.array(local) + offsets, [len(t) for t in tables]


def nfm_files(logs, seed=1):
    """NFM's processing: each log a positive and two negatives with its user and context and an
    item the user never used; all lines shuffled and cut 7:2:1. Returns (x, y) of each part."""
    x, sizes = encode(logs)
    rng = np.random.default_rng(seed)
    items = np.arange(sizes[0], sizes[0] + sizes[1])
    used = {(r[0], r[ITEM]) for r in x.tolist()}
    lines = []
    for r in x.tolist():
        lines.append((r, 1))
        for _ in range(2):
            neg = list(r)
            neg[ITEM] = int(rng.choice([i for i in items if (r[0], i) not in used]))
            lines.append((neg, -1))
    order = rng.permutation(len(lines))
    n_valid, n_test = round(0.2 * len(lines)), round(0.1 * len(lines))
    parts = np.split(order, [len(lines) - n_valid - n_test, len(lines) - n_test])
    return x, [(np.array([lines[i][0] for i in p]), np.array([lines[i][1] for i in p])) for p in parts]


def libfm_text(part):
    x, y = part
    return "".join(f"{t:+d} " + " ".join(f"{i}:1" for i in r) + "\n" for r, t in zip(x.tolist(), y.tolist()))


def fake_mirror(root, logs=None, drop=()):
    logs = logs or fake_logs()
    (root / "frappe/raw").mkdir(parents=True)
    (root / "frappe/nfm").mkdir(parents=True)
    (root / "frappe/raw/frappe.csv").write_text(HEADER + "".join(
        f"{u}\t{a}\t1\t{d}\t{w}\t{'weekend' if w == 'sunday' else 'workday'}\tunknown\tfree\tsunny\t{c}\t{city}\n"
        for u, a, d, w, c, city in logs))
    x, (_, valid, test) = nfm_files(logs)
    (root / "frappe/nfm/frappe.validation.libfm").write_text(libfm_text(valid))
    (root / "frappe/nfm/frappe.test.libfm").write_text(libfm_text(test))
    for rel in drop:
        (root / rel).unlink()
    return x, valid, test


def load(d, tmp_path, **options):
    return load_dataset("frappe_x1", d, cache_dir=tmp_path / "c", download=False, **options)


def test_validation_and_test_are_nfm_files_with_labels_0_1(tmp_path):
    _, valid, test = fake_mirror(tmp_path / "d")
    ds = load(tmp_path / "d", tmp_path)
    assert ds.task == "binary" and ds.num_fields == 10
    for split, (x, y) in ((ds.valid, valid), (ds.test, test)):
        assert split.x.tolist() == x.tolist()                          # same rows, same order
        assert split.y.tolist() == [1.0 if t == 1 else 0.0 for t in y.tolist()]
    assert set(ds.train.y.tolist()) == {0.0, 1.0}


def test_train_is_nfm_train_rebuilt_by_the_rules(tmp_path):
    logs_x, valid, test = fake_mirror(tmp_path / "d")
    ds = load(tmp_path / "d", tmp_path)
    x, y = ds.train.x.numpy(), ds.train.y.numpy()
    vt_x, vt_y = np.concatenate([valid[0], test[0]]), np.concatenate([valid[1], test[1]])
    # positives: exactly the raw logs that are not among the validation + test positives (a multiset)
    rows = lambda a: Counter(map(tuple, a.tolist()))   # noqa: E731
    assert rows(x[y == 1]) == rows(logs_x) - rows(vt_x[vt_y == 1])
    # negatives: per (user, context) key, 2 x logs - validation + test negatives; an item never used
    key = lambda a: Counter(tuple(r[:ITEM] + r[ITEM + 1:]) for r in a.tolist())   # noqa: E731
    need = Counter({k: 2 * n for k, n in key(logs_x).items()})
    need.subtract(key(vt_x[vt_y == -1]))
    assert key(x[y == 0]) == +need and sum(need.values()) == (y == 0).sum()
    used = {(r[0], r[ITEM]) for r in logs_x.tolist()}
    assert not any((r[0], r[ITEM]) in used for r in x[y == 0].tolist())
    # NFM's 288,609 lines in miniature: 3 per log in all
    assert len(ds.train) + len(ds.valid) + len(ds.test) == 3 * len(logs_x)
    assert ds.provenance["reconstruction"] == dict(
        train=len(y), valid=len(valid[1]), test=len(test[1]), raw_positives=int((y == 1).sum()),
        resampled_negatives=int((y == 0).sum()))
    assert ds.num_features == int(logs_x.max()) + 1                   # the raw release's encoding


def test_only_the_resampled_items_depend_on_the_sample_seed(tmp_path):
    fake_mirror(tmp_path / "d")
    a, b = load(tmp_path / "d", tmp_path), load(tmp_path / "d", tmp_path, sample_seed=1)
    assert a.train.x.tolist() == load(tmp_path / "d", tmp_path, sample_seed=0).train.x.tolist()
    assert a.train.y.tolist() == b.train.y.tolist()
    neg = (a.train.y == 0).numpy()
    ax, bx = a.train.x.numpy(), b.train.x.numpy()
    assert (ax[~neg] == bx[~neg]).all() and (np.delete(ax[neg], ITEM, 1) == np.delete(bx[neg], ITEM, 1)).all()
    assert not (ax[neg][:, ITEM] == bx[neg][:, ITEM]).all()
    assert "sample seed 1" in b.provenance["split_rule"] and b.provenance["sample_seed"] == 1


def test_provenance_says_exact_valid_test_reconstructed_train_and_bars(tmp_path):
    fake_mirror(tmp_path / "d")
    p = load(tmp_path / "d", tmp_path).provenance
    assert p["dataset"] == "frappe_x1" and p["task"] == "binary" and p["data_kind"] == "reconstructed"
    rule = p["split_rule"]
    for words in ("BARS's Frappe_x1 split", "labels 0/1", "train reconstructed", "validation and test are exact",
                  "NFM's frappe.validation.libfm and frappe.test.libfm", "positives exact",
                  "resampled by NFM's rule (sample seed 0)"):
        assert words in rule, words
    assert [f["role"] for f in p["files"]] == ["raw", "nfm validation", "nfm test"]
    # these fake files are not the upstream bytes, and the provenance says so
    assert "NOT the upstream bytes" in rule
    assert any(n.startswith("local files, not the upstream bytes") for n in p["notes"])
    assert any("BARS's Frappe_x1" in n and "-1 written as 0" in n for n in p["notes"])
    assert p["split_seed"] is None


def test_nfm_three_files_are_used_as_they_are(tmp_path):
    rng = np.random.default_rng(0)
    offsets = np.cumsum([0] + raw.FRAPPE_FIELD_SIZES[:-1])
    d = tmp_path / "d"
    parts = {}
    for s, n in (("train", 70), ("validation", 20), ("test", 10)):
        x = (rng.random((n, 10)) * raw.FRAPPE_FIELD_SIZES).astype(np.int64) + offsets
        parts[s] = (x, rng.choice([-1, 1], n))
        path = d / f"frappe/nfm/frappe.{s}.libfm"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(libfm_text(parts[s]))
    ds = load(d, tmp_path)
    for split, s in ((ds.train, "train"), (ds.valid, "validation"), (ds.test, "test")):
        assert split.x.tolist() == parts[s][0].tolist()
        assert split.y.tolist() == [float(t == 1) for t in parts[s][1].tolist()]
    p = ds.provenance
    assert ds.num_features == 5382 and "NFM's 7:2:1 files as they are" in p["split_rule"]
    assert p["data_kind"] == "local"          # laid out as NFM's, but not its bytes: never "exact"


@pytest.mark.parametrize("drop, missing", [
    (["frappe/raw/frappe.csv"], "the raw release (frappe/raw/Mobile_Frappe.zip or"),
    (["frappe/nfm/frappe.validation.libfm"], "missing: frappe/nfm/frappe.validation.libfm"),
    (["frappe/nfm/frappe.test.libfm", "frappe/raw/frappe.csv"], "missing: frappe/nfm/frappe.test.libfm, the raw"),
])
def test_refuses_without_the_files_it_needs(tmp_path, drop, missing):
    d = tmp_path / "d"
    fake_mirror(d, drop=drop)
    with pytest.raises(DataNotFoundError) as err:
        load(d, tmp_path)
    said = str(err.value)
    assert "\n" not in said and str(d) in said and missing in said and "download is off" in said
    assert "frappe/nfm/frappe.validation.libfm and frappe/nfm/frappe.test.libfm" in said


def test_a_failed_download_is_said(tmp_path):
    def offline(url, timeout):
        raise urllib.error.URLError("no network")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="the download failed: nfm: .*no network.*raw: "):
        load_dataset("frappe_x1", tmp_path / "empty", cache_dir=tmp_path / "c", opener=offline)


def test_refuses_files_that_are_not_nfm_processing_of_the_raw_release(tmp_path):
    d = tmp_path / "d"
    logs_x, valid, test = fake_mirror(d)
    x, y = test[0].copy(), test[1].copy()
    neg = np.flatnonzero(y == -1)[0]
    y[neg] = 1                              # a negative line relabelled positive is no log
    (d / "frappe/nfm/frappe.test.libfm").write_text(libfm_text((x, y)))
    with pytest.raises(DataFormatError, match=re.escape("not logs of frappe.csv")):
        load(d, tmp_path)


def test_unknown_options_are_refused(tmp_path):
    with pytest.raises(TypeError, match="min_count"):
        load_dataset("frappe_x1", tmp_path, min_count=3)


# ---------------------------------------------------------------- the mirror

@needs_mirror
def test_mirror_frappe_x1_has_bars_sizes(tmp_path):
    ds = load_dataset("frappe_x1", MIRROR, cache_dir=tmp_path, download=False)
    p = ds.provenance
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (202_027, 57_722, 28_860)
    assert ds.num_features == 5382 and ds.num_fields == 10 and ds.task == "binary"
    assert int(ds.train.y.sum()) == 67_604 and int((ds.train.y == 0).sum()) == 134_423
    has_nfm_train = Path(MIRROR, "frappe/nfm/frappe.train.libfm").is_file()
    assert p["data_kind"] == ("exact" if has_nfm_train else "reconstructed")
    assert all(f["matches_upstream"] for f in p["files"]) and not p["notes"][1:]
    for split, name in ((ds.valid, "validation"), (ds.test, "test")):
        x, y = read_libfm(Path(MIRROR, f"frappe/nfm/frappe.{name}.libfm"), 10, 5382, labels=(-1, 1))
        assert (split.x.numpy() == x).all() and (split.y.numpy() == (y > 0)).all()
    if not has_nfm_train:
        # the paper's split (`frappe`) is the same rebuilt NFM train plus NFM's lines the authors moved to train
        frappe = load_dataset("frappe", MIRROR, cache_dir=tmp_path, download=False)
        rest = frappe.provenance["reconstruction"]["nfm_rest"]
        assert (frappe.train.x[rest:] == ds.train.x).all()
        assert ((frappe.train.y[rest:] > 0) == (ds.train.y > 0)).all()


def test_the_book_never_labels_frappe_x1_as_the_papers_split_or_data():
    from ifm.book.rows import dataset_label
    from ifm.book.scorecard import on_papers_data

    x1 = dataset_label({"dataset": "frappe_x1", "data_kind": "reconstructed"})
    paper = dataset_label({"dataset": "frappe", "data_kind": "reconstructed"})
    assert x1 == "Frappe_x1 (BARS split, reconstructed)" and not on_papers_data(x1)
    assert paper == "Frappe (paper split, reconstructed)" and on_papers_data(paper)
