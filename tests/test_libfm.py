"""Tests of the libfm reader: every bad file is refused naming the file, the line and the problem."""
import re

import numpy as np
import pytest

from ifm.data import libfm
from ifm.data.libfm import DataFormatError, read_libfm

GOOD = "1 0:1 5:1\n-1 2:1 7:1\n"  # two fields: ids 0-4 and 5-9


def write(tmp_path, content, name="data.libfm"):
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def blame(tmp_path, content, line, *words, args=(), **kwargs):
    """Read a bad file; assert the error names it, the line and each of the words."""
    path = write(tmp_path, content)
    with pytest.raises(DataFormatError) as err:
        read_libfm(path, *args, **kwargs)
    message = str(err.value)
    assert message.startswith(f"{path}, line {line}: "), message
    for word in words:
        assert word in message, message
    return message


@pytest.fixture
def no_slow_path(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the slow per-line parse ran on a well-formed file")
    monkeypatch.setattr(libfm, "_slow_parse", refuse)


# ---------------------------------------------------------------- well-formed files

def test_a_valid_file_parses_exactly_on_the_fast_path(tmp_path, no_slow_path):
    f = write(tmp_path, "1 0:1 10:1 20:1\n-1 3:1 12:1 29:1\n-1 9:1 19:1 20:1\n1 0:1 11:1 21:1\n")
    x, y = read_libfm(f, 3, 30, labels=(-1, 1), field_ranges=[(0, 10), (10, 20), (20, 30)],
                      field_names=["user", "item", "tag"])
    assert x.dtype == np.int64 and y.dtype == np.float32
    np.testing.assert_array_equal(x, [[0, 10, 20], [3, 12, 29], [9, 19, 20], [0, 11, 21]])
    np.testing.assert_array_equal(y, [1, -1, -1, 1])


def test_a_large_valid_file_never_takes_the_slow_path(tmp_path, no_slow_path):
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 100, size=(50_000, 3)) + [0, 100, 200]
    text = "".join(f"{rng.choice([-1, 1])} {a}:1 {b}:1 {c}:1\n" for a, b, c in rows)
    x, y = read_libfm(write(tmp_path, text), 3, 300, labels=(-1, 1))
    np.testing.assert_array_equal(x, rows)


def test_irregular_but_legal_layouts_are_accepted_without_the_slow_path(tmp_path, no_slow_path):
    text = "\ufeff1\t0:1  5:1 \r\n -1 2:1 7:1\t\r\n1 1:1.0 6:+1\n\n"  # BOM, tabs, CRLF, blanks at the end
    x, y = read_libfm(write(tmp_path, text), labels=(-1, 1))
    assert x.tolist() == [[0, 5], [2, 7], [1, 6]] and y.tolist() == [1, -1, 1]


def test_last_line_needs_no_newline_and_labels_default_to_any_finite_number(tmp_path):
    x, y = read_libfm(write(tmp_path, "0.5 0:1 5:1\n3.25 2:1 7:1"))
    assert x.tolist() == [[0, 5], [2, 7]] and y.tolist() == [0.5, 3.25]


def test_ids_with_leading_zeros_are_read_whatever_their_length(tmp_path):
    x, _ = read_libfm(write(tmp_path, GOOD + "1 " + "0" * 10_000 + "1:1 6:1\n"), 2, 10)
    assert x.tolist() == [[0, 5], [2, 7], [1, 6]]


# ---------------------------------------------------------------- labels

def test_a_label_outside_the_allowed_ones_is_refused(tmp_path):
    blame(tmp_path, GOOD + "2 1:1 6:1\n1 3:1 8:1\n", 3, "label 2 ", "allowed labels (-1, 1)",
          labels=(-1, 1))


def test_ctr_labels_refuse_minus_one(tmp_path):
    blame(tmp_path, "0 0:1 5:1\n1 2:1 7:1\n-1 1:1 6:1\n", 3, "label -1 ", "allowed labels (0, 1)",
          labels=(1, 0))


def test_a_label_close_to_an_allowed_one_is_shown_in_full(tmp_path):
    blame(tmp_path, GOOD + "1.0000001 1:1 6:1\n", 3, "label 1.0000001 is not one of", labels=(-1, 1))


@pytest.mark.parametrize("label", ["inf", "-inf", "1e400"])
def test_a_label_that_is_not_finite_is_refused(tmp_path, label):
    blame(tmp_path, GOOD + f"{label} 1:1 6:1\n", 3, "label is not a finite number")


# ---------------------------------------------------------------- one feature per field

@pytest.mark.parametrize("kwargs", [{}, {"args": (3, 10)},
                                    {"field_ranges": [(0, 5), (0, 5), (5, 10)]}])
def test_an_id_twice_on_a_line_is_refused_whatever_the_arguments(tmp_path, kwargs):
    blame(tmp_path, "1 0:1 4:1 7:1\n1 3:1 3:1 7:1\n", 2, "feature id 3 appears twice", **kwargs)


def test_field_ranges_catch_a_duplicated_field(tmp_path):
    message = blame(tmp_path, GOOD + "1 1:1 2:1\n", 3, "position 2", "feature id 2", "field 'item'",
                    "[5, 10)", field_ranges=[(0, 5), (5, 10)], field_names=["user", "item"])
    assert "line 1" not in message.split(": ", 1)[1]


def test_field_ranges_catch_swapped_columns_without_names(tmp_path):
    blame(tmp_path, GOOD + "1 6:1 1:1\n", 3, "position 1 holds feature id 6", "field 1 has ids in [0, 5)",
          field_ranges=[(0, 5), (5, 10)])


def test_swapped_columns_are_found_without_field_ranges(tmp_path):
    blame(tmp_path, GOOD + "1 1:1 6:1\n1 7:1 3:1\n", 4, "feature id 7 is at position 1",
          "was at position 2 on line 2", "swapped or shifted")


def test_shifted_columns_are_found_and_fields_are_named(tmp_path):
    text = "1 0:1 5:1 10:1\n1 1:1 6:1 11:1\n1 2:1 7:1 12:1\n1 6:1 12:1 3:1\n"
    blame(tmp_path, text, 4, "feature id 6 is at position 1 (field 'user')",
          "position 2 (field 'item') on line 2", field_names=["user", "item", "tag"])


def test_swapped_columns_are_found_among_huge_sparse_ids(tmp_path):
    big = 10 ** 15
    text = f"1 {big}:1 {3 * big}:1\n1 {2 * big}:1 {4 * big}:1\n1 {4 * big}:1 {2 * big}:1\n"
    blame(tmp_path, text, 3, f"feature id {4 * big} is at position 1", "was at position 2 on line 2")


def test_inferred_fields_ignore_ids_refused_for_another_reason(tmp_path):
    # -1 sits in two positions but is reported as negative on its own line.
    blame(tmp_path, "1 -1:1 5:1\n1 2:1 -1:1\n", 1, "negative feature id -1")


def test_inconsistent_argument_lengths_are_a_caller_error(tmp_path):
    with pytest.raises(ValueError, match="different numbers of fields"):
        read_libfm(write(tmp_path, GOOD), 2, field_names=["user", "item", "tag"])


# ---------------------------------------------------------------- bytes that are not text

def test_a_latin1_byte_is_refused_with_line_and_column(tmp_path):
    blame(tmp_path, GOOD.encode() + b"1 1:1 6:1\xe9\n", 3, "byte 0xe9 at column 10", "not ASCII/UTF-8")


def test_a_utf8_character_is_named(tmp_path):
    blame(tmp_path, GOOD + "1 \u22121:1 6:1\n", 3, "non-ASCII character '\u2212' (U+2212) at column 3")


def test_a_control_character_is_refused(tmp_path):
    blame(tmp_path, GOOD.encode() + b"1 1:1 6:\x001\n", 3, "control character 0x00 at column 9")


def test_a_bom_starts_a_file_but_not_a_line_inside_it(tmp_path):
    x, _ = read_libfm(write(tmp_path, "\ufeff" + GOOD))
    assert x.tolist() == [[0, 5], [2, 7]]
    blame(tmp_path, GOOD + "\ufeff1 1:1 6:1\n", 3, "U+FEFF", "column 1")


def test_after_a_bom_a_bad_line_is_blamed_on_its_own_line(tmp_path):
    blame(tmp_path, "\ufeff" + GOOD + "1 1:1 6:1\nx 1:1 6:1\n", 4, "label 'x' is not numeric")


# ---------------------------------------------------------------- huge numbers and lines

def test_an_id_of_2_to_the_63_is_too_large_not_negative(tmp_path):
    blame(tmp_path, GOOD + "1 9223372036854775808:1 6:1\n", 3,
          "feature id 9223372036854775808 out of range [0, 5382)", args=(2, 5382))
    blame(tmp_path, GOOD + "1 99999999999999999999:1 6:1\n", 3, "feature id 99999999999999999999 is too large")
    blame(tmp_path, GOOD + "1 -9223372036854775809:1 6:1\n", 3, "negative feature id -9223372036854775809")


def test_a_10000_digit_id_is_blamed_on_its_line(tmp_path):
    blame(tmp_path, GOOD + "1 " + "1" * 10_000 + ":1 6:1\n", 3, "feature id 1111", "(10000 characters)",
          "out of range [0, 10)", args=(2, 10))


def test_a_10000_digit_label_is_blamed_on_its_line(tmp_path):
    blame(tmp_path, GOOD + "1" * 10_000 + " 1:1 6:1\n", 3, "label is not a finite number")


def test_a_10000_digit_value_is_blamed_on_its_line(tmp_path):
    blame(tmp_path, GOOD + "1 1:" + "1" * 10_000 + " 6:1\n", 3, "feature value inf is not 1")


def test_a_1mb_token_is_blamed_on_its_line_and_shown_short(tmp_path):
    message = blame(tmp_path, GOOD + "1 1:1 " + "x" * 1_000_000 + "\n", 3, "malformed token",
                    "(1000000 characters)")
    assert len(message) < 300


def test_a_1mb_line_of_features_is_blamed_on_its_line(tmp_path):
    blame(tmp_path, GOOD + "1" + " 1:1" * 250_000 + "\n", 3, "250000 features, expected 2")


def test_a_huge_id_deep_in_a_large_file(tmp_path):
    lines = [f"{(-1) ** i} {i % 7}:1 {7 + i % 5}:1" for i in range(20_000)]
    lines[14_321] = "1 3:1 18446744073709551616:1"
    blame(tmp_path, "\n".join(lines) + "\n", 14_322, "feature id 18446744073709551616 out of range [0, 12)",
          args=(2, 12))


# ---------------------------------------------------------------- other layouts

@pytest.mark.parametrize("content", ["", "\n\n", "  \n\t\n\r\n", "\ufeff"])
def test_a_file_without_lines_is_refused(tmp_path, content):
    path = write(tmp_path, content)
    with pytest.raises(DataFormatError, match=re.escape(f"{path}: file holds no instances")):
        read_libfm(path)


@pytest.mark.parametrize("text, line, words", [
    ("\n" + GOOD, 1, "empty line"),
    (GOOD + "\n1 1:1 6:1\n", 3, "empty line"),
    (GOOD + "   \n1 1:1 6:1\n", 3, "empty line"),
    ("1\n" + GOOD, 1, "no features on the line"),
    (GOOD + "1\n", 3, "no features on the line"),
    (GOOD + "1 1:1\n", 3, "1 features, expected 2"),
    (GOOD + "1 1:1 6:1 8:1\n", 3, "3 features, expected 2"),
    (GOOD + "1 1:0.5 6:1\n", 3, "feature value 0.5 is not 1"),
    (GOOD + "1 -1:1 6:1\n", 3, "negative feature id -1"),
    (GOOD + "1 3.0:1 6:1\n", 3, "malformed token '3.0:1'"),
    (GOOD + "1 1e3:1 6:1\n", 3, "malformed token '1e3:1'"),
    (GOOD + '1 "1:1 6:1"\n', 3, "malformed token '\"1:1'"),
    (GOOD + "nan 1:1 6:1\n", 3, "label 'nan' is not numeric"),
    (GOOD.encode() + b"1 1:1\r6:1\n", 3, "control character 0x0d at column 6"),  # CR without LF
])
def test_other_bad_layouts(tmp_path, text, line, words):
    blame(tmp_path, text, line, words)


def test_the_first_bad_line_is_named_when_a_later_one_defeats_the_fast_path(tmp_path):
    blame(tmp_path, "1 0:1 5:1\n1 0:2 5:1\n1 x:1 5:1\n", 2, "feature value 2 is not 1")
    blame(tmp_path, "1 0:1 5:1\n3 0:1 5:1\n1 99999999999999999999:1 5:1\n", 2, "label 3 ", labels=(-1, 1))
