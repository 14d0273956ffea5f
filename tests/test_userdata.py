"""Your own data: libfm or CSV files through `load_files` and `python -m ifm train --data`."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from ifm.cli import main
from ifm.data.libfm import DataFormatError
from ifm.data.userdata import load_files


def write(path, text):
    Path(path).write_text(text)
    return Path(path)


def libfm_lines(n, seed=0, labels=(-1, 1)):
    rng = np.random.default_rng(seed)
    return "".join(f"{rng.choice(labels)} {rng.integers(0, 5)}:1 {5 + rng.integers(0, 7)}:1 {12 + rng.integers(0, 3)}:1\n"
                   for _ in range(n))


def test_one_libfm_file_is_split_8_1_1_by_seed(tmp_path):
    f = write(tmp_path / "mine.libfm", libfm_lines(100))
    ds = load_files(f, split_seed=3, task="regression")
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (80, 10, 10)
    # each position a field: its ids seen in training, a missing and a rare id
    assert ds.task == "regression" and ds.num_fields == 3 and ds.num_features <= 15 + 3 * 2
    assert ds.provenance["data_kind"] == "user" and "seed 3" in ds.provenance["split_rule"]
    assert not np.array_equal(load_files(f, split_seed=4, task="regression").test.x.numpy(), ds.test.x.numpy())
    with pytest.raises(ValueError, match=r"target label takes 2 values \(-1, 1\), not 0/1: say --task regression"):
        load_files(f)


def test_three_libfm_files_are_train_valid_test_and_zero_one_labels_make_a_ctr_task(tmp_path):
    files = [write(tmp_path / f"{s}.txt", libfm_lines(n, seed=n, labels=(0, 1)))
             for s, n in (("tr", 40), ("va", 7), ("te", 9))]
    ds = load_files(files)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (40, 7, 9) and ds.task == "binary"


def test_ids_that_change_position_between_files_are_refused(tmp_path):
    a = write(tmp_path / "a.libfm", "1 0:1 5:1\n-1 1:1 6:1\n")
    b = write(tmp_path / "b.libfm", "1 5:1 0:1\n")
    c = write(tmp_path / "c.libfm", "1 0:1 6:1\n")
    with pytest.raises(DataFormatError, match="feature id 0 is in position 1 in one file and 2 in another"):
        load_files([a, b, c])


def test_a_csv_of_categorical_columns_is_encoded_field_by_field(tmp_path):
    f = write(tmp_path / "mine.csv", "user,item,hour,click\n" + "".join(
        f"u{i % 3},i{i % 4},{i % 2},{i % 2}\n" for i in range(20)))
    ds = load_files(f, target="click", split_seed=0)
    x = np.concatenate([ds.train.x.numpy(), ds.valid.x.numpy(), ds.test.x.numpy()])
    # user: 3 values (ids 0-2, then missing 3 and rare 4), item: 4 (5-8, 9, 10), hour: 2 (11-12, 13, 14),
    # numbered by first appearance in the training rows
    assert ds.num_fields == 3 and ds.num_features == 15 and ds.task == "binary"
    assert x[:, 0].max() < 3 and 5 <= x[:, 1].min() and x[:, 1].max() < 9 and 11 <= x[:, 2].min() < 13
    assert ds.provenance["fields"] == ["user", "item", "hour"]
    only = load_files(f, target="click", fields=["item"])
    assert only.num_fields == 1 and only.num_features == 4 + 2


@pytest.mark.parametrize("text, kwargs, words", [
    ("a,b\n1,2\n", {}, "--target is required"),
    ("a,b\n1,2\n", {"target": "y"}, "line 1: header lacks columns ['y']"),
    ("a,y\n1,2\n3,x\n", {"target": "y"}, "bad.csv, line 3: target y is 'x', not a number"),
    ("y\n1\n", {"target": "y"}, "no feature columns"),
])
def test_bad_csv_input_names_file_line_and_problem(tmp_path, text, kwargs, words):
    f = write(tmp_path / "bad.csv", text)
    with pytest.raises((ValueError, DataFormatError)) as err:
        load_files(f, **kwargs)
    assert words in str(err.value)


def test_train_on_your_own_file_from_the_command_line_never_touches_it(tmp_path, capsys):
    f = write(tmp_path / "mine.csv", "user,item,click\n" + "".join(f"u{i % 7},i{i % 5},{(i % 7 + i % 5) % 2}\n"
                                                                   for i in range(300)))
    before = hashlib.sha256(f.read_bytes()).hexdigest()
    rc = main(["train", "--data", str(f), "--target", "click", "--model", "fm", "--epochs", "2",
               "--embedding-size", "4", "--quiet"])
    out = capsys.readouterr()
    assert rc == 0 and "data: mine, user: seeded random 8:1:1 of 300 instances" in out.err
    result = json.loads(out.out.strip().splitlines()[-1])
    assert result["data_kind"] == "user" and set(result["test"]) == {"auc", "logloss"}
    assert hashlib.sha256(f.read_bytes()).hexdigest() == before
    assert main(["train", "--model", "fm"]) == 2
    assert "--dataset NAME or --data" in capsys.readouterr().err


def test_csv_files_with_different_columns_are_refused(tmp_path):
    train = write(tmp_path / "tr.csv", "a,b,y\n1,2,1\n3,4,0\n")
    valid = write(tmp_path / "va.csv", "b,y\n2,1\n")
    test = write(tmp_path / "te.csv", "a,b,y\n1,2,1\n")
    with pytest.raises(DataFormatError, match=r"va\.csv, line 1: feature columns \['b'\] differ from tr\.csv's"):
        load_files([train, valid, test], target="y")
    reordered = write(tmp_path / "va2.csv", "b,a,y\n4,3,0\n")        # the same columns in another order
    ds = load_files([train, reordered, test], target="y")
    assert ds.valid.x.tolist() == [[1, 5]]      # a=3 is id 1, b=4 is id 5 (a: 2 values, missing, rare; then b)
