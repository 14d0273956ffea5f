"""The book checker itself (tests/check_book.py), on tiny hand-made builds: it must catch what
CI relies on it to catch, and pass a clean page."""
import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("check_book", Path(__file__).with_name("check_book.py"))
check_book = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_book)

GOOD_PAGE = ('<html><p>Frappe, <strong>profile</strong> paper, cpu, 3 seeds. <strong>Complete:</strong> every run '
             'this page asks for is in the records.</p>'
             '<div class="cell_output"><div class="output text_html"><table><tr><td>0.47</td></tr></table></div></div>'
             '<div class="cell"><details class="hide"><div class="cell_input">exp = ...</div>'
             '<div class="output stream"><pre>depth: 30 of 30 runs read</pre></div></details></div>'
             '<img src="../_images/fig.png"></html>')
INCOMPLETE_PAGE = GOOD_PAGE.replace("<strong>Complete:</strong> every run this page asks for is in the records.",
                                    "<strong>Incomplete:</strong> 2 run(s) of this page are not in the records yet")


def make_book(tmp_path: Path, page_html: str) -> tuple[Path, Path]:
    """A project root with one notebook in its _toc.yml and a build holding that page."""
    root, build = tmp_path / "root", tmp_path / "root" / "_build" / "html"
    (root / "notebooks").mkdir(parents=True)
    (root / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n- file: notebooks/study\n")
    (root / "notebooks" / "study.ipynb").write_text("{}")
    (build / "notebooks").mkdir(parents=True)
    (build / "_images").mkdir()
    (build / "_images" / "fig.png").write_bytes(b"png")
    (build / "index.html").write_text("<html></html>")
    (build / "intro.html").write_text("<html><p>intro</p></html>")
    (build / "notebooks" / "study.html").write_text(page_html)
    return root, build


def test_clean_page_passes(tmp_path):
    root, build = make_book(tmp_path, GOOD_PAGE)
    assert check_book.check(build, root) == []


@pytest.mark.parametrize("html, complaint", [
    (GOOD_PAGE.replace("paper", "smoke"), "does not say that profile paper"),
    (GOOD_PAGE.replace("fig.png", "gone.png"), "does not exist"),
    (GOOD_PAGE + "<pre>Traceback (most recent call last)</pre>", "traceback"),
    ("<html><p>profile paper <strong>Complete:</strong> every run this page asks for is in the records</p></html>",
     "without any figure or table"),
    (INCOMPLETE_PAGE, "2 run(s) are not in the records"),
    (GOOD_PAGE.replace("Complete:", "Done:"), "says neither that its runs are complete nor which are missing"),
    (GOOD_PAGE + '<div class="cell"><div class="cell_input">df = study(exp)</div></div>', "shows 1 code cell(s)"),
    (GOOD_PAGE + '<pre>/venv/lib/tqdm/auto.py:21: TqdmWarning: IProgress not found</pre>', "shows a warning"),
    (GOOD_PAGE + '<div class="output stderr"><pre>progress</pre></div>', "shows a warning"),
    (GOOD_PAGE + '<div class="cell"><div class="cell_output"><div class="output stream highlight-myst-ansi">'
     '<pre>depth: 27 of 30 runs read from results/paper</pre></div></div></div>', "shows 1 printed log(s)"),
    (GOOD_PAGE + '<p>a wide table:</p><table><tr><td>1</td></tr></table>', "outside a box that scrolls sideways"),
    (GOOD_PAGE.replace("<td>0.47</td>", "<td>IFM − rival: FM -0.0007 ± 0.0051, p_Holm 0.62 ...</td>"),
     "1 table cell(s) cut short, e.g. 'rival: FM -0.0007"),
])
def test_each_problem_is_reported(tmp_path, html, complaint):
    root, build = make_book(tmp_path, html)
    problems = check_book.check(build, root)
    assert len(problems) == 1 and complaint in problems[0], problems


def test_a_page_that_trains_its_own_model_on_a_file_needs_no_profile_or_records_line(tmp_path):
    own = GOOD_PAGE.replace("<strong>profile</strong> paper, cpu, 3 seeds. ", "").replace(
        "<strong>Complete:</strong> every run this page asks for is in the records.", "Trained on your file.")
    root, build = make_book(tmp_path / "book", own)
    problems = check_book.check(build, root)
    assert len(problems) == 2 and "profile paper" in problems[0] and "neither" in problems[1]
    (root / "notebooks" / "study.ipynb").write_text('{"metadata": {"ifm": {"records": false}}}')
    assert check_book.check(build, root) == []
    hidden_code = own + '<div class="cell"><div class="cell_input">model = ifm.fit(...)</div></div>'
    (build / "notebooks" / "study.html").write_text(hidden_code)
    assert "shows 1 code cell(s)" in check_book.check(build, root)[0]


def test_incomplete_allowed_on_request_but_listed(tmp_path):
    root, build = make_book(tmp_path, INCOMPLETE_PAGE)
    listed = []
    assert check_book.check(build, root, allow_incomplete=True, incomplete=listed) == []
    assert listed == ["notebooks/study.html: 2 run(s) missing"]
    # a page that hides its missing runs (no stamp) fails even then
    root, build = make_book(tmp_path / "hidden", GOOD_PAGE.replace("Complete:", ""))
    assert "says neither" in check_book.check(build, root, allow_incomplete=True)[0]


def test_a_path_of_the_building_machine_in_a_page_or_a_record_is_reported(tmp_path):
    root, build = make_book(tmp_path, GOOD_PAGE.replace("<p>", f"<p>data read from {tmp_path}/datasets. ", 1))
    assert any("names a path of the building machine" in p for p in check_book.check(build, root))
    root, build = make_book(tmp_path / "records", GOOD_PAGE)
    (root / "results" / "paper").mkdir(parents=True)
    (root / "results" / "paper" / "fm-x.json").write_text('{"dataset": {"provenance": {"source": "mirror:/work/data"}}}')
    problems = check_book.check(build, root)
    assert problems == ["record results/paper/fm-x.json: names /work/data"]


def test_missing_page_and_missing_build(tmp_path):
    root, build = make_book(tmp_path, GOOD_PAGE)
    (build / "intro.html").unlink()
    assert any("page missing" in p for p in check_book.check(build, root))
    assert "was the book built" in check_book.check(tmp_path / "nowhere", root)[0]
