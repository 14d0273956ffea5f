"""Tests of the data layer: no network; the mirror is used only when IFM_DATA_DIR is set."""
import io
import json
import os
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from ifm.data import raw
from ifm.data import DATASETS, DataNotFoundError, Dataset, Split, load_dataset
from ifm.data.download import IntegrityError, fetch_verified, git_blob_id
from ifm.data.libfm import DataFormatError, read_libfm

MIRROR = os.environ.get("IFM_DATA_DIR")
needs_mirror = pytest.mark.skipif(not (MIRROR and Path(MIRROR, "README.md").is_file()),
                                  reason="local dataset mirror not available (set IFM_DATA_DIR)")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Never touch ~/.cache; tests that want a data directory pass it explicitly."""
    monkeypatch.setenv("IFM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("IFM_DATA_DIR", raising=False)


def write(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------- libfm reader

def test_read_libfm_parses_labels_and_ids(tmp_path):
    f = write(tmp_path / "ok.libfm", "1 0:1 5:1\n-1 2:1 7:1\r\n1 1:1.0 6:1")  # CRLF, no final \n
    x, y = read_libfm(f, 2, 8)
    assert x.dtype == np.int64 and y.dtype == np.float32
    assert x.tolist() == [[0, 5], [2, 7], [1, 6]]
    assert y.tolist() == [1, -1, 1]


def test_read_libfm_tolerates_irregular_whitespace(tmp_path):
    f = write(tmp_path / "ws.libfm", "1  0:1\t5:1 \n -1 2:1 7:1\n")
    x, y = read_libfm(f)
    assert x.tolist() == [[0, 5], [2, 7]] and y.tolist() == [1, -1]


BAD_LINES = {  # kind -> (third line of the file, words the message must contain)
    "malformed_token": ("1 3:1 x:1", "malformed token 'x:1'"),
    "missing_colon": ("1 3:1 4", "malformed token '4'"),
    "double_colon": ("1 3:1 4:1:1", "malformed token '4:1:1'"),
    "non_integer_id": ("1 3.5:1 4:1", "malformed token '3.5:1'"),
    "too_few_features": ("1 3:1", "1 features, expected 2"),
    "too_many_features": ("1 3:1 4:1 5:1", "3 features, expected 2"),
    "non_numeric_label": ("yes 3:1 4:1", "label 'yes' is not numeric"),
    "value_not_one": ("1 3:1 4:2", "feature value 2 is not 1"),
    "value_below_one": ("1 3:0.5 4:1", "feature value 0.5 is not 1"),
    "negative_id": ("1 -3:1 4:1", "negative feature id -3"),
    "id_beyond_vocab": ("1 3:1 10:1", "feature id 10 out of range [0, 10)"),
    "empty_line": ("", "empty line"),
}


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_read_libfm_names_file_and_line_of_each_problem(tmp_path, kind):
    bad, words = BAD_LINES[kind]
    f = write(tmp_path / f"{kind}.libfm", f"1 0:1 5:1\n-1 2:1 7:1\n{bad}\n1 1:1 6:1\n")
    with pytest.raises(DataFormatError) as err:
        read_libfm(f, vocab_size=10)
    assert str(err.value).startswith(f"{f}, line 3: ") and words in str(err.value)


def test_read_libfm_finds_a_bad_line_deep_in_a_large_file(tmp_path):
    lines = [f"{(-1) ** i} {i % 7}:1 {7 + i % 5}:1" for i in range(20_000)]
    lines[14_321] = "1 3:1 8:1 9:1"
    f = write(tmp_path / "big.libfm", "\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"big\.libfm, line 14322: 3 features, expected 2"):
        read_libfm(f, 2)


# ---------------------------------------------------------------- verified download

def test_git_blob_id_matches_git():
    assert git_blob_id(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"  # git hash-object


def test_fetch_verified_accepts_exact_bytes(tmp_path):
    src = write(tmp_path / "src.txt", "1 0:1\n")
    dest = fetch_verified(src.as_uri(), tmp_path / "out" / "f.libfm", git_blob_id(b"1 0:1\n"))
    assert dest.read_bytes() == b"1 0:1\n"
    assert os.listdir(dest.parent) == ["f.libfm"]  # no temp file left behind


def test_fetch_verified_refuses_and_deletes_altered_bytes(tmp_path):
    src = write(tmp_path / "src.txt", "1 0:1\n-1 1:1\n")  # one line more than the pinned file
    out = tmp_path / "out"
    with pytest.raises(IntegrityError, match="refused .*src.txt.*expected " + git_blob_id(b"1 0:1\n")):
        fetch_verified(src.as_uri(), out / "f.libfm", git_blob_id(b"1 0:1\n"))
    assert os.listdir(out) == []


def test_fetch_verified_with_a_fake_opener(tmp_path):
    def opener(url, timeout):
        assert url == "https://example.org/f"
        return io.BytesIO(b"tampered")
    with pytest.raises(IntegrityError):
        fetch_verified("https://example.org/f", tmp_path / "f", git_blob_id(b"original"), opener=opener)
    assert not (tmp_path / "f").exists()


def test_download_refuses_altered_files_and_keeps_nothing(tmp_path):
    served = []

    def opener(url, timeout):
        served.append(url)
        return io.BytesIO(b"1 0:1 1:1 2:1\n")
    with pytest.raises(DataNotFoundError, match="refused https://raw.githubusercontent.com/gulyfish"):
        load_dataset("movielens", data_dir=tmp_path, cache_dir=tmp_path / "c", opener=opener)
    assert served[0].startswith("https://raw.githubusercontent.com/gulyfish/Input-aware-Factorization"
                                "-Machine/436d11aa4d3bf4084a782533d4d99703e6ed269c/data/moivelens/")
    assert not any(p.is_file() for p in (tmp_path / "c").rglob("*"))


def test_download_falls_back_to_nfm_then_explains(tmp_path):
    served = []

    def offline(url, timeout):
        served.append(url)
        raise urllib.error.URLError("no network")
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("frappe", cache_dir=tmp_path / "c", opener=offline)
    assert any("hexiangnan/neural_factorization_machine" in u for u in served)
    for words in ("IFM_DATA_DIR", "data_dir", "download failed", "raw.githubusercontent.com"):
        assert words in str(err.value)


def test_not_found_without_download_says_how_to_get_data(tmp_path):
    with pytest.raises(DataNotFoundError, match="IFM_DATA_DIR.*frappe/ifm-authors/frappe.train.libfm"):
        load_dataset("frappe", data_dir=tmp_path, download=False)
    with pytest.raises(DataNotFoundError, match="Kaggle"):
        load_dataset("avazu", data_dir=tmp_path)


def test_corrupted_cache_file_is_never_used_and_is_fetched_again(tmp_path, monkeypatch):
    good = "".join(f"{(-1) ** i} " + " ".join(f"{o + i % 2}:1" for o in OFFSETS) + "\n" for i in range(30))
    files = {s: dict(f) for s, f in DATASETS["frappe"]["ifm_authors"].items()}
    for f in files.values():
        f["blob_id"] = git_blob_id(good.encode())
    monkeypatch.setitem(DATASETS["frappe"], "ifm_authors", files)
    cache = tmp_path / "c"
    for f in files.values():
        write(cache / f["local"], good)
    bad = write(cache / files["test"]["local"], good[: len(good) // 2])        # an interrupted download
    with pytest.warns(UserWarning) as caught:
        partial = load_dataset("frappe", cache_dir=cache, download=False)
    said = " ".join(str(w.message) for w in caught)
    assert "corrupted or partial cache file" in said and "only partial data" in said
    assert partial.provenance["data_kind"] == "partial" and partial.provenance["sizes"]["total"] == 60
    assert bad.read_text() == good[: len(good) // 2]                         # not deleted, not used
    served = []

    def opener(url, timeout):
        served.append(url)
        return io.BytesIO(good.encode())
    with pytest.warns(UserWarning, match="corrupted"):
        ds = load_dataset("frappe", cache_dir=cache, opener=opener)
    assert served == [files["test"]["url"]] and bad.read_text() == good      # fetched again, verified
    assert ds.provenance["data_kind"] == "exact" and len(ds.test) == 30


def test_a_data_directory_is_never_the_cache(tmp_path):
    d = make_dir(tmp_path / "d", {"frappe/nfm/frappe.test.libfm": 20})
    with pytest.raises(ValueError, match="overlap"):
        load_dataset("frappe", d, cache_dir=d, download=False)
    with pytest.raises(ValueError, match="overlap"):
        load_dataset("frappe", d / "frappe", cache_dir=d, download=False)
    assert Path(d, "frappe/nfm/frappe.test.libfm").read_text() == frappe_lines(20, seed=len("frappe/nfm/frappe.test.libfm") + 20)


def test_partial_data_is_never_silent(tmp_path):
    d = make_dir(tmp_path / "d", {"frappe/nfm/frappe.test.libfm": 20})
    (d / "frappe" / "nfm" / "frappe.validation.libfm").mkdir()
    (d / "frappe" / "ifm-authors").mkdir(parents=True)
    (d / "frappe" / "ifm-authors" / "frappe.valid.libfm").symlink_to(d / "nowhere")
    with pytest.warns(UserWarning) as caught:
        ds = load_dataset("frappe", d, cache_dir=tmp_path / "c", download=False)
    said = " ".join(str(w.message) for w in caught)
    assert "is a directory where the validation file belongs" in said and "is a broken link" in said
    assert "only partial data" in said and ds.provenance["data_kind"] == "partial"


@needs_mirror
def test_mirror_files_have_the_registered_blob_ids(tmp_path):
    checked = 0
    for name in ("frappe", "movielens"):
        for kind in ("ifm_authors", "nfm"):
            for f in DATASETS[name][kind].values():
                src = Path(MIRROR, f["local"])
                if src.is_file():
                    fetch_verified(src.resolve().as_uri(), tmp_path / f["local"], f["blob_id"])
                    checked += 1
    assert checked == 4


# ---------------------------------------------------------------- raw builders

FRAPPE_CSV = "user\titem\tcnt\tdaytime\tweekday\tisweekend\thomework\tcost\tweather\tcountry\tcity\n" + "".join(
    f"u{u}\ta{a}\t{c}\t{d}\tmonday\tworkday\tunknown\tfree\tsunny\tSpain\t{city}\n"
    for u, a, c, d, city in [(1, 1, 3, "morning", 0), (1, 2, 1, "morning", 0), (1, 1, 1, "evening", 0),
                             (2, 3, 5, "night", 7), (2, 1, 2, "night", 7), (3, 5, 1, "noon", 0)])


def check_negatives(x, y, item_col):
    pos = {tuple(r) for r in x[y == 1].tolist()}
    assert y.tolist() == [1, -1, -1] * (len(y) // 3)
    rows = x.reshape(-1, 3, x.shape[1])
    for p, n1, n2 in rows.tolist():
        assert tuple(n1) not in pos and tuple(n2) not in pos     # never an observed positive
        assert n1[item_col] != n2[item_col]                       # two distinct negatives
        for n in (n1, n2):                                       # same user and context
            assert [v for j, v in enumerate(n) if j != item_col] == [v for j, v in enumerate(p) if j != item_col]


def test_build_frappe_from_raw_csv_follows_nfm(tmp_path):
    f = write(tmp_path / "frappe.csv", FRAPPE_CSV)
    built = raw.build_frappe(f, seed=0)
    x, y = built["x"], built["y"]
    assert x.shape == (18, 10) and built["positives"] == 6
    sizes = built["field_sizes"]
    assert sizes == [3, 4, 4, 1, 1, 1, 1, 1, 1, 2]
    # numbered by first appearance: u1 a1 morning ... city 0 is the first of each field
    assert x[0].tolist() == [0, 3, 7, 11, 12, 13, 14, 15, 16, 17] and x[9].tolist()[:3] == [1, 5, 9]
    assert y.tolist() == [1, -1, -1] * 6
    never_used = {0: {5, 6}, 1: {4, 6}, 2: {3, 4, 5}}        # u1 used a1, a2; u2 a3, a1; u3 a5
    rows = x.reshape(6, 3, 10)
    for pos, *negs in rows.tolist():
        for n in negs:                                    # same user and context, an item never used
            assert n[1] in never_used[n[0]] and n[:1] + n[2:] == pos[:1] + pos[2:]
    assert np.array_equal(raw.build_frappe(f, seed=0)["x"], x)
    assert not all(np.array_equal(raw.build_frappe(f, seed=s)["x"], x) for s in range(1, 6))


def test_build_frappe_reads_the_official_zip(tmp_path):
    import zipfile
    with zipfile.ZipFile(tmp_path / "Mobile_Frappe.zip", "w") as z:
        z.writestr(raw.FRAPPE_ZIP_MEMBER, FRAPPE_CSV)
    built = raw.build_frappe(tmp_path / "Mobile_Frappe.zip", seed=0)
    assert np.array_equal(built["x"], raw.build_frappe(write(tmp_path / "f.csv", FRAPPE_CSV), seed=0)["x"])
    write(tmp_path / "other.zip", "not a zip")
    with pytest.raises(DataFormatError, match="other.zip: not a readable zip"):
        raw.build_frappe(tmp_path / "other.zip")


TAGS_CSV = "userId,movieId,tag,timestamp\n" + "".join(
    f"{u},{m},{t},1300000000\n" for u, m, t in
    [(1, 10, "funny"), (1, 10, "dark"), (1, 20, "funny"), (2, 10, "NA"), (2, 30, ""),
     (3, 20, "space"), (3, 30, "dark"), (3, 30, "slow")])


def test_build_movielens_from_tags_csv(tmp_path):
    f = write(tmp_path / "tags.csv", TAGS_CSV)
    built = raw.build_movielens_tags(f, seed=3)
    x, y = built["x"], built["y"]
    assert x.shape == (24, 3) and built["field_sizes"] == [3, 3, 6]  # "" and "NA" are tags
    check_negatives(x, y, item_col=2)
    assert np.array_equal(raw.build_movielens_tags(f, seed=3)["x"], x)


def test_sample_negatives_refuses_impossible_requests():
    with pytest.raises(ValueError, match="fewer than 2 unobserved"):
        raw.sample_negatives(np.array([0, 0]), np.array([0, 1]), 3, 2, np.random.default_rng(0))


def test_raw_csv_without_required_columns_is_a_format_error(tmp_path):
    f = write(tmp_path / "tags.csv", "user,movie,tag\n1,2,x\n")
    with pytest.raises(DataFormatError, match=r"tags\.csv, line 1: header lacks columns \['userId', 'movieId'\]"):
        raw.build_movielens_tags(f)


AVAZU_HEADER = "id,click," + ",".join(raw.AVAZU_FIELDS) + "\n"


def avazu_csv(path, n=500, clicks=None):
    rng = np.random.default_rng(1)
    lines = []
    for i in range(n):
        row = {name: "z" for name in raw.AVAZU_FIELDS}
        row["hour"] = f"1410{21 + i % 2}{(i // 2) % 24:02d}"              # two days, 24 hours
        row["site_id"] = "common" if i % 25 else f"rare{i}"               # 20 one-off values
        row["C1"] = str(rng.integers(3))
        lines.append(f"{i},{clicks[i] if clicks else i % 2}," + ",".join(row[k] for k in raw.AVAZU_FIELDS))
    return write(path, AVAZU_HEADER + "\n".join(lines) + "\n")


def test_build_avazu_rare_ids_hour_of_day_and_split(tmp_path):
    built = raw.build_avazu(avazu_csv(tmp_path / "train.csv"), min_count=20, seed=0)
    (xt, yt), (xv, yv), (xs, ys) = (built["splits"][k] for k in ("train", "valid", "test"))
    assert (len(yt), len(yv), len(ys)) == (360, 40, 100)                   # 4:1, then 10% valid
    assert xt.shape[1] == 22 and set(np.unique(np.concatenate([yt, yv, ys]))) == {0.0, 1.0}
    sizes = built["field_sizes"]
    offsets = np.cumsum([0] + sizes[:-1])
    hour, site = raw.AVAZU_FIELDS.index("hour"), raw.AVAZU_FIELDS.index("site_id")
    assert sizes[site] == 2             # "common" + the rare id shared by all one-off values
    x = np.concatenate([xt, xv, xs])
    assert (x[:, site] == offsets[site]).sum() == 20                      # local id 0 = rare
    assert sizes[raw.AVAZU_FIELDS.index("C20")] == 2                      # constant "z" + rare
    all_seen = raw.build_avazu(tmp_path / "train.csv", min_count=1, seed=0)
    assert all_seen["field_sizes"][hour] == 25     # 24 hours of day (+ rare id), not 48 day-hours
    assert all_seen["field_sizes"][site] > 2


def test_build_avazu_reports_bad_rows(tmp_path):
    f = avazu_csv(tmp_path / "bad.csv", n=10, clicks=[0, 1, 0, 0, 2, 0, 0, 0, 0, 0])
    with pytest.raises(DataFormatError, match=r"bad\.csv, line 6: click '2' is not 0 or 1"):
        raw.build_avazu(f)


def test_load_avazu_from_a_data_dir(tmp_path):
    avazu_csv(tmp_path / "data" / "avazu" / "train.csv")
    ds = load_dataset("avazu", tmp_path / "data", split_seed=1, min_count=5)
    assert ds.task == "binary" and ds.num_fields == 22
    assert ds.provenance["min_count"] == 5 and "rare id" in ds.provenance["rare_rule"]
    assert not any("sample" in n for n in ds.provenance["notes"])
    assert int(ds.train.x.max()) < ds.num_features


# ---------------------------------------------------------------- sources and splits

OFFSETS = np.cumsum([0] + raw.FRAPPE_FIELD_SIZES[:-1])


def frappe_lines(n, seed):
    """n libfm lines with one id of each of Frappe's fields."""
    rng = np.random.default_rng(seed)
    rows = (rng.random((n, 10)) * raw.FRAPPE_FIELD_SIZES).astype(np.int64) + OFFSETS
    return "".join(f"{rng.choice([-1, 1])} " + " ".join(f"{i}:1" for i in r) + "\n" for r in rows)


def make_dir(root, files):
    for rel, n in files.items():
        write(Path(root) / rel, frappe_lines(n, seed=len(rel) + n))
    return root


def test_fixed_ifm_authors_split_is_used_as_is(tmp_path):
    d = make_dir(tmp_path / "d", {"frappe/ifm-authors/frappe.train.libfm": 80,
                                  "frappe/ifm-authors/frappe.valid.libfm": 10,
                                  "frappe/ifm-authors/frappe.test.libfm": 11,
                                  "frappe/nfm/frappe.test.libfm": 7})
    ds = load_dataset("frappe", d, download=False)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (80, 10, 11)
    assert ds.provenance["split_rule"] == "IFM authors' fixed 8:1:1 files"
    assert ds.num_features == 5382 and ds.num_fields == 10
    # three files laid out as the authors' but not their bytes: local files, never "exact"
    from ifm.book.rows import data_note, dataset_label
    from ifm.book.scorecard import on_papers_data

    prov = ds.provenance
    assert prov["data_kind"] == "local" and all(f["matches_upstream"] is False for f in prov["files"])
    assert prov["notes"][0].startswith("local files, not the upstream bytes: frappe.train.libfm (train), "
                                       "frappe.valid.libfm (valid), frappe.test.libfm (test) differ")
    assert dataset_label(prov) == "Frappe (local files, not the upstream bytes)"
    assert "not the paper's data" in data_note(prov) and not on_papers_data(dataset_label(prov))


def test_nfm_files_are_pooled_and_resplit(tmp_path):
    d = make_dir(tmp_path / "d", {"frappe/nfm/frappe.train.libfm": 70,
                                  "frappe/nfm/frappe.validation.libfm": 20,
                                  "frappe/nfm/frappe.test.libfm": 10})
    ds = load_dataset("frappe", d, download=False)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (80, 10, 10)
    assert "7:2:1 files pooled (100 instances) and re-split" in ds.provenance["split_rule"]


def test_partial_files_prefer_nfm_and_do_not_mix_sources(tmp_path):
    d = make_dir(tmp_path / "d", {"frappe/ifm-authors/frappe.valid.libfm": 30,
                                  "frappe/nfm/frappe.validation.libfm": 40,
                                  "frappe/nfm/frappe.test.libfm": 20})
    with pytest.warns(UserWarning, match="frappe: only partial data found .*60 of the paper's 288,609"):
        ds = load_dataset("frappe", d, download=False)
    assert ds.provenance["sizes"]["total"] == 60
    assert [f["role"] for f in ds.provenance["files"]] == ["validation", "test"]
    assert "partial data" in ds.provenance["notes"][0]
    Path(d, "frappe/nfm/frappe.validation.libfm").unlink()
    Path(d, "frappe/nfm/frappe.test.libfm").unlink()
    with pytest.warns(UserWarning, match="only IFM authors' valid file"):
        assert load_dataset("frappe", d, download=False).provenance["sizes"]["total"] == 30


def rows(split):
    return {tuple(r) + (float(t),) for r, t in zip(split.x.tolist(), split.y.tolist())}


def test_random_split_is_8_1_1_disjoint_and_seeded():
    ds = load_dataset("synthetic", n=1000, split_seed=0)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (800, 100, 100)
    a, b, c = rows(ds.train), rows(ds.valid), rows(ds.test)
    assert len(a | b | c) == 1000 and not (a & b or a & c or b & c)
    same = load_dataset("synthetic", n=1000, split_seed=0)
    other = load_dataset("synthetic", n=1000, split_seed=1)
    assert torch.equal(same.test.x, ds.test.x)
    assert not torch.equal(other.test.x, ds.test.x)
    assert rows(other.train) | rows(other.valid) | rows(other.test) == a | b | c  # same data


def test_provenance_and_summary(tmp_path):
    d = make_dir(tmp_path / "d", {"frappe/nfm/frappe.test.libfm": 50})
    with pytest.warns(UserWarning, match="only NFM's test file"):
        partial = load_dataset("frappe", d, download=False)
    for ds in (partial, load_dataset("synthetic", n=200)):
        p = ds.provenance
        for key in ("dataset", "task", "source", "files", "split_rule", "split_seed", "sizes",
                    "notes", "num_features", "num_fields", "paper_instances", "fraction_of_paper"):
            assert key in p, key
        json.dumps(p)
        assert isinstance(ds, Dataset) and isinstance(ds.train, Split)
        text = ds.summary()
        assert p["source"] in text and f"train {len(ds.train):,}" in text
    assert p["source"] == "generated" and p["generator"]["seed"] == 0
    frappe = partial.provenance
    assert frappe["source"] == f"mirror:{d.resolve()}" and frappe["fraction_of_paper"] == 50 / 288_609
    assert len(frappe["files"][0]["sha256"]) == 64 and frappe["files"][0]["matches_upstream"] is False


def test_raw_build_is_cached_and_labelled(tmp_path):
    d = tmp_path / "d"
    write(d / "movielens-raw" / "tags.csv", TAGS_CSV)
    first = load_dataset("movielens", d, cache_dir=tmp_path / "c", download=False)
    second = load_dataset("movielens", d, cache_dir=tmp_path / "c", download=False)
    assert first.provenance["built_from_cache"] is False and second.provenance["built_from_cache"] is True
    assert torch.equal(first.train.x, second.train.x) and first.num_fields == 3
    assert [p.name for p in (tmp_path / "c" / "built").iterdir() if p.name.startswith(".")] == []
    assert "not the paper's MovieLens" in first.provenance["notes"][0]
    (d / "movielens-raw" / "tags.csv").rename(d / "movielens-raw" / "ml-20m-tags-subset.csv")
    stand_in = load_dataset("movielens", d, cache_dir=tmp_path / "c", download=False)
    assert stand_in.provenance["notes"][0].startswith("MovieLens stand-in (25,758-tag subset")


def test_unknown_names_and_options_are_refused():
    with pytest.raises(KeyError, match="known"):
        load_dataset("criteo")
    with pytest.raises(TypeError, match="min_count"):
        load_dataset("synthetic", min_count=3)


# ---------------------------------------------------------------- synthetic data

def test_synthetic_is_deterministic_and_standardised():
    a, b = load_dataset("synthetic", seed=5), load_dataset("synthetic", seed=5)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.train.y, b.train.y)
    assert not torch.equal(load_dataset("synthetic", seed=6).train.y, a.train.y)
    y = torch.cat([a.train.y, a.valid.y, a.test.y])
    assert abs(float(y.mean())) < 0.05 and abs(float(y.std()) - 1) < 0.05
    assert (a.num_fields, a.num_features, len(y)) == (5, 200, 20_000)
    offsets = torch.arange(5) * 40
    assert ((a.train.x >= offsets) & (a.train.x < offsets + 40)).all()


def second_order_r2(ds):
    """Held-out R^2 of the best unrestricted second-order model (what an FM of any rank
    can at most represent): least squares on all one-hot single and pairwise indicators.
    Each row has few active columns, so the normal equations are built by counting
    (no large dense matrix, no multithreaded BLAS on a shared CI machine)."""
    v, h = ds.num_features // ds.num_fields, ds.num_fields
    pairs = [(i, j) for i in range(h) for j in range(i + 1, h)]

    def active(x):  # [N, 1 + h + pairs] column indices of the ones in each design row
        local = (x % v).numpy()
        cols = [np.zeros(len(local), np.int64)] + [1 + i * v + local[:, i] for i in range(h)]
        base = 1 + h * v
        cols += [base + k * v * v + local[:, i] * v + local[:, j] for k, (i, j) in enumerate(pairs)]
        return np.stack(cols, axis=1)
    size = 1 + h * v + len(pairs) * v * v
    a, y = active(ds.train.x), ds.train.y.numpy().astype(np.float64)
    gram = np.bincount((a[:, :, None] * size + a[:, None, :]).ravel(), minlength=size * size)
    xty = np.bincount(a.ravel(), weights=np.repeat(y, a.shape[1]), minlength=size)
    coef = np.linalg.solve(gram.reshape(size, size) + 1e-3 * np.eye(size), xty)
    test_y = ds.test.y.numpy()
    resid = test_y - coef[active(ds.test.x)].sum(axis=1)
    return 1 - resid.var() / test_y.var()


def test_synthetic_effect_is_beyond_any_factorization_machine():
    # Few values per field, so that every pairwise cell is well estimated (about 0.77 and
    # 0.99 with seed 0; at the defaults a rank-8 FM reaches RMSE ~0.6, an IFM ~0.3).
    small = dict(n=20_000, num_fields=5, vocab_per_field=6, noise=0.1)
    assert second_order_r2(load_dataset("synthetic", strength=0.0, **small)) > 0.97  # plain FM truth
    assert second_order_r2(load_dataset("synthetic", **small)) < 0.9                 # planted effect


# ---------------------------------------------------------------- the local mirror

@needs_mirror
def test_mirror_frappe_from_cache(tmp_path):
    for rel in ("frappe/nfm/frappe.validation.libfm", "frappe/nfm/frappe.test.libfm"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(Path(MIRROR, rel).read_bytes())
    with pytest.warns(UserWarning, match="only partial data"):
        ds = load_dataset("frappe", cache_dir=tmp_path, download=False)
    assert ds.provenance["source"] == f"cache:{tmp_path.resolve()}" and len(ds.train) == 69_266
    assert ds.provenance["data_kind"] == "partial" and all(f["matches_upstream"] for f in ds.provenance["files"])


@needs_mirror
def test_mirror_movielens_is_the_ml10m_stand_in(tmp_path):
    ds = load_dataset("movielens", MIRROR, cache_dir=tmp_path, download=False)
    p = ds.provenance
    assert ds.num_fields == 3 and p["sizes"]["total"] == 3 * 95_580 == 286_740
    assert p["field_sizes"] == [4_009, 7_601, 16_529] and p["data_kind"] == "stand-in"
    assert p["notes"][0].startswith("MovieLens stand-in (the complete ml-10M100K tags.dat")
    assert "MovieLens stand-in" in ds.summary()


@needs_mirror
def test_mirror_avazu_head_by_default_and_the_100_row_sample(tmp_path):
    ds = load_dataset("avazu", MIRROR, cache_dir=tmp_path)
    assert ds.num_fields == 22 and ds.task == "binary" and ds.provenance["sizes"]["total"] == 9_999
    assert ds.provenance["data_kind"] == "sample" and "9,999-row head" in ds.provenance["notes"][0]
    assert set(torch.unique(ds.train.y).tolist()) == {0.0, 1.0}
    only = tmp_path / "d" / "avazu-sample"
    only.mkdir(parents=True)
    (only / "avazu_sample.txt").write_bytes(Path(MIRROR, "avazu-sample/avazu_sample.txt").read_bytes())
    small = load_dataset("avazu", tmp_path / "d", cache_dir=tmp_path / "c")
    assert small.provenance["sizes"]["total"] == 100
    assert "Avazu 100-row sample, not the paper's 40M rows" in small.provenance["notes"]


@pytest.mark.parametrize("bad, words", [
    (lambda l: "0" + l[l.index(" "):], "label 0 is not one of the allowed labels (-1, 1)"),
    (lambda l: " ".join([l.split()[0], l.split()[2], l.split()[1]] + l.split()[3:]) + "\n",
     "position 1 holds feature id"),                                     # user and item swapped
    (lambda l: " ".join(l.split()[:2] + [l.split()[1]] + l.split()[3:]) + "\n", "appears twice"),
])
def test_registered_split_files_are_checked_for_labels_and_fields(tmp_path, bad, words):
    d = make_dir(tmp_path / "d", {"frappe/ifm-authors/frappe.train.libfm": 30,
                                  "frappe/ifm-authors/frappe.valid.libfm": 10,
                                  "frappe/ifm-authors/frappe.test.libfm": 10})
    path = d / "frappe/ifm-authors/frappe.valid.libfm"
    lines = path.read_text().splitlines(keepends=True)
    lines[6] = bad(lines[6])
    path.write_text("".join(lines))
    with pytest.raises(DataFormatError) as err:
        load_dataset("frappe", d, cache_dir=tmp_path / "c", download=False)
    assert str(err.value).startswith(f"{path}, line 7: ") and words in str(err.value)


def test_build_movielens_from_ml10m_tags_dat_with_separators_inside_a_tag(tmp_path):
    f = write(tmp_path / "tags.dat", "15::4973::excellent!::1215184630\n20::1747::politics::1188263867\n"
                                     "20::1747::a::b::1188263880\n65::208::dark hero::1368150078\n")
    df = raw.read_tags(f)
    assert df.values.tolist() == [["15", "4973", "excellent!"], ["20", "1747", "politics"],
                                  ["20", "1747", "a::b"], ["65", "208", "dark hero"]]
    built = raw.build_movielens_tags(f, seed=0)
    assert built["x"].shape == (12, 3) and built["field_sizes"] == [3, 3, 4]
    check_negatives(built["x"], built["y"], item_col=2)
    bad = write(tmp_path / "bad.dat", "15::4973::ok::1\n15;4973;ok;1\n")
    with pytest.raises(DataFormatError, match=r"bad\.dat, line 2: expected UserID::MovieID::Tag::Timestamp"):
        raw.read_tags(bad)
    latin = tmp_path / "latin.dat"
    latin.write_bytes(b"1::2::ok::3\n1::2::caf\xe9::3\n")
    with pytest.raises(DataFormatError, match=r"latin\.dat, line 2: not UTF-8"):
        raw.read_tags(latin)


def test_the_largest_movielens_tags_file_wins_and_is_a_stand_in(tmp_path):
    d = tmp_path / "d"
    write(d / "movielens-raw" / "small.csv", TAGS_CSV)
    write(d / "movielens-raw" / "bigger.dat", "".join(f"{u}::{m}::t{(u * m) % 7}::1\n"
                                                      for u in range(1, 8) for m in range(1, 6)))
    ds = load_dataset("movielens", d, cache_dir=tmp_path / "c", download=False)
    assert ds.provenance["files"][0]["path"].endswith("bigger.dat") and ds.provenance["sizes"]["total"] == 105
    assert ds.provenance["data_kind"] == "stand-in" and "not the paper's MovieLens" in ds.provenance["notes"][0]


def test_a_file_as_data_directory_and_a_quoted_tilde_are_handled(tmp_path, monkeypatch):
    f = write(tmp_path / "not-a-dir", "x")
    with pytest.raises(DataNotFoundError, match="is a file, not a directory"):
        load_dataset("frappe", f, cache_dir=tmp_path / "c", download=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    make_dir(tmp_path / "home" / "data", {"frappe/nfm/frappe.test.libfm": 20})
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="only partial data"):
        ds = load_dataset("frappe", "~/data", cache_dir="~/cache", download=False)
    assert ds.provenance["sizes"]["total"] == 20 and not (tmp_path / "~").exists()


def test_a_records_provenance_names_no_path_of_the_machine():
    from ifm.data.registry import portable_provenance

    prov = {"source": "mirror:/home/me/data", "files": [
        {"role": "raw", "path": "/home/me/data/frappe/raw/frappe.csv", "sha256": "ab"},
        {"role": "test", "path": "/elsewhere/frappe.test.libfm", "sha256": "cd"}], "split_seed": 0}
    out = portable_provenance(prov)
    assert out["source"] == "mirror" and out["split_seed"] == 0
    assert [f["path"] for f in out["files"]] == ["frappe/raw/frappe.csv", "frappe.test.libfm"]
    assert [f["sha256"] for f in out["files"]] == ["ab", "cd"] and prov["files"][0]["path"].startswith("/")


def test_make_portable_rewrites_paths_only_and_keeps_every_key(tmp_path):
    import json

    from ifm.runs.records import make_portable, read_json, write_json_atomic

    record = {"cache": {"key": "k1", "material": {"data": {"name": "frappe"}}}, "valid": {"rmse": 0.3},
              "dataset": {"provenance": {"source": "cache:/root/.cache/ifm", "files": [
                  {"path": "/root/.cache/ifm/frappe/x.libfm", "sha256": "ab"}]}},
              "pretrain": {"from_file": "/tmp/ifm-states/fm.pt"}}
    write_json_atomic(tmp_path / "a.json", record)
    write_json_atomic(tmp_path / "b.json", {"kind": "factors", "fields": [2, 8]})
    assert make_portable(tmp_path) == {"read": 2, "rewritten": 1}
    out = read_json(tmp_path / "a.json")
    assert "/" not in json.dumps(out).replace("frappe/x.libfm", "")
    assert out["cache"] == record["cache"] and out["valid"] == record["valid"]
    assert out["dataset"]["provenance"]["files"][0]["path"] == "frappe/x.libfm"
    assert make_portable(tmp_path) == {"read": 2, "rewritten": 0}          # once is enough
