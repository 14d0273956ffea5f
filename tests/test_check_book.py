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
             '<table><tr><td>0.47</td></tr></table><img src="../_images/fig.png"></html>')
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
])
def test_each_problem_is_reported(tmp_path, html, complaint):
    root, build = make_book(tmp_path, html)
    problems = check_book.check(build, root)
    assert len(problems) == 1 and complaint in problems[0], problems


def test_incomplete_allowed_on_request_but_listed(tmp_path):
    root, build = make_book(tmp_path, INCOMPLETE_PAGE)
    listed = []
    assert check_book.check(build, root, allow_incomplete=True, incomplete=listed) == []
    assert listed == ["notebooks/study.html: 2 run(s) missing"]
    # a page that hides its missing runs (no stamp) fails even then
    root, build = make_book(tmp_path / "hidden", GOOD_PAGE.replace("Complete:", ""))
    assert "says neither" in check_book.check(build, root, allow_incomplete=True)[0]


def test_missing_page_and_missing_build(tmp_path):
    root, build = make_book(tmp_path, GOOD_PAGE)
    (build / "intro.html").unlink()
    assert any("page missing" in p for p in check_book.check(build, root))
    assert "was the book built" in check_book.check(tmp_path / "nowhere", root)[0]
